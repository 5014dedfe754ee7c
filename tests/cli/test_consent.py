"""`capture consent grant | show | revoke` through click's test runner."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

import capture.consent as consent
from capture.cli.consent import consent as consent_group
from capture.consent.terms import terms_text
from capture.errors import ConsentError
from tests.cli.conftest import MakeSession


def run(*args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(consent_group, list(args), input=input)


# --- grant ------------------------------------------------------------------------------------
def test_scripted_grant_prints_the_receipt_id(capture_home: Path) -> None:
    result = run("grant", "--player", "alice", "--game", "minetest", "--game", "quake",
                 "--scope", "video,keyboard", "--scope", "mouse", "--yes")
    assert result.exit_code == 0, result.output
    [receipt] = consent.all_entries()
    assert receipt.receipt_id in result.stdout
    assert receipt.games == ("minetest", "quake")
    assert receipt.scope == ("video", "keyboard", "mouse")
    assert receipt.method == "cli-scripted"
    assert terms_text() not in result.stdout


def test_scripted_grant_without_scope_fails(capture_home: Path) -> None:
    result = run("grant", "--player", "alice", "--game", "minetest", "--yes")
    assert result.exit_code != 0
    assert "missing: --scope" in result.output
    assert consent.all_entries() == []


def test_scripted_grant_without_anything_names_every_missing_flag(capture_home: Path) -> None:
    result = run("grant", "--yes")
    assert result.exit_code != 0
    assert "missing: --player, --game, --scope" in result.output


def test_unknown_scope_is_rejected_naming_it(capture_home: Path) -> None:
    result = run("grant", "--player", "alice", "--game", "minetest", "--scope", "video,smell",
                 "--yes")
    assert result.exit_code == 1
    assert result.stderr.startswith("error: unknown scope kind 'smell'")
    assert consent.all_entries() == []


def test_interactive_grant_shows_terms_and_choices(capture_home: Path) -> None:
    result = run("grant", "--player", "alice", "--game", "minetest", "--scope", "video,gamepad",
                 "--license", "CC0-1.0", input="y\n")
    assert result.exit_code == 0, result.output
    assert terms_text() in result.stdout
    assert "You are about to consent to this:" in result.stdout
    assert "not recorded  keyboard, mouse" in result.stdout
    assert str(capture_home) in result.stdout
    [receipt] = consent.all_entries()
    assert receipt.method == "cli-interactive"
    assert receipt.license == "CC0-1.0"
    assert f"receipt {receipt.receipt_id}" in result.stdout


def test_interactive_grant_declined_records_nothing(capture_home: Path) -> None:
    result = run("grant", "--player", "alice", "--game", "minetest", "--scope", "video",
                 input="n\n")
    assert result.exit_code == 1
    assert "Nothing was recorded" in result.stdout
    assert consent.all_entries() == []


def test_interactive_grant_prompts_for_missing_choices(capture_home: Path) -> None:
    result = run("grant", input="alice\nminetest, Quake\nvideo,smell\nvideo,mouse\ny\n")
    assert result.exit_code == 0, result.output
    assert "unknown scope kind 'smell'" in result.stderr  # asked again, not recorded
    [receipt] = consent.all_entries()
    assert (receipt.player, receipt.games, receipt.scope) == (
        "alice", ("minetest", "Quake"), ("video", "mouse"))


def test_controller_flags_are_recorded(capture_home: Path) -> None:
    result = run("grant", "--player", "alice", "--game", "minetest", "--scope", "video", "--yes",
                 "--controller-name", "Lab X", "--controller-contact", "lab@example.org",
                 "--jurisdiction", "DE")
    assert result.exit_code == 0, result.output
    [receipt] = consent.all_entries()
    assert (receipt.controller.name, receipt.controller.contact) == ("Lab X", "lab@example.org")
    assert receipt.jurisdiction == "DE"


# --- show -------------------------------------------------------------------------------------
def test_show_lists_grants_and_revocations(capture_home: Path) -> None:
    receipt = consent.grant("alice", ["minetest", "quake"], ["video"])
    consent.grant("bob", ["minetest"], ["video"])
    consent.revoke("alice", games=["quake"])
    result = run("show", "--player", "alice")
    assert result.exit_code == 0, result.output
    assert f"grant {receipt.receipt_id} [partly revoked]" in result.stdout
    assert "quake (withdrawn " in result.stdout
    assert f"withdrew quake from grant {receipt.receipt_id}" in result.stdout
    assert "bob" not in result.stdout


def test_show_json(capture_home: Path) -> None:
    receipt = consent.grant("alice", ["minetest"], ["video"])
    consent.revoke("alice")
    result = run("show", "--json")
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    assert shown["grants"][0]["receipt_id"] == receipt.receipt_id
    assert shown["grants"][0]["status"] == "revoked"
    assert shown["grants"][0]["active_games"] == []
    assert shown["revocations"][0]["withdrawn"][0]["receipt_id"] == receipt.receipt_id


def test_show_empty(capture_home: Path) -> None:
    result = run("show")
    assert result.exit_code == 0
    assert "No consent recorded." in result.stdout


def test_show_reports_a_tampered_ledger(capture_home: Path) -> None:
    consent.grant("alice", ["minetest"], ["video"])
    ledger = capture_home / "consent" / "ledger.jsonl"
    ledger.write_text(ledger.read_text() + "garbage\n")
    result = run("show")
    assert result.exit_code == 4
    assert result.stderr.startswith(f"error: {ledger}: line 2 is not valid JSON")


def test_grant_without_a_terminal_says_how_to_script_it(capture_home: Path) -> None:
    result = run("grant", "--player", "alice", "--game", "minetest", "--scope", "video",
                 input="")
    assert result.exit_code == 1
    assert "Aborted" not in result.output
    assert "--yes with every choice" in result.stderr
    assert consent.all_entries() == []


def test_grant_cannot_include_audio(capture_home: Path) -> None:
    result = run("grant", "--player", "alice", "--game", "minetest", "--scope", "video,audio",
                 "--yes")
    assert result.exit_code == 1
    assert "'audio' cannot be chosen: nothing in capture records sound" in result.stderr
    assert consent.all_entries() == []
    with pytest.raises(ConsentError, match="cannot be recorded"):
        consent.require_consent("minetest", {"video", "audio"})


def test_record_refuses_audio_before_anything_starts(capture_home: Path) -> None:
    consent.grant("alice", ["minetest"], ["video", "keyboard", "mouse"])
    result = run_cli("record", "--game", "minetest", "--scope", "video,audio",
                     "--display", ":4399")
    assert result.exit_code == 2
    assert "'audio' cannot be recorded: nothing in capture records sound" in result.stderr
    assert not (capture_home / "sessions").exists()


def test_old_grant_with_audio_still_parses_and_is_shown_as_never_recorded(
        capture_home: Path) -> None:
    """A ledger written before audio was retired: the entry is appended with the hash chain
    as it was then (scope 'audio' was valid), and stays readable."""
    from capture.consent.ledger import append_entry

    receipt = consent.grant("alice", ["minetest"], ["video"])
    old = receipt.model_dump(mode="json")
    for key in ("seq", "prev_hash", "hash"):
        old.pop(key)
    old.update(receipt_id="0b9a3c1e-2d4f-4a6b-8c7d-9e0f1a2b3c4d", scope=["video", "audio"],
               sensitive=True, sensitive_categories=["voice"])
    append_entry(capture_home / "consent" / "ledger.jsonl", lambda _entries: old)
    entries = consent.all_entries()  # verifies the chain
    assert entries[-1].scope == ("video", "audio")
    result = run("show", "--player", "alice")
    assert result.exit_code == 0, result.output
    assert "audio (never recorded: nothing in capture records sound" in result.stdout
    shown = json.loads(run("show", "--json").stdout)
    assert [g["never_recorded"] for g in shown["grants"]] == [[], ["audio"]]
    assert consent.require_consent("minetest", {"video"}).player == "alice"


# --- revoke (real sessions, real ledger) -------------------------------------------------------
def test_revoke_revokes_and_deletes_sessions(capture_home: Path,
                                             make_session: MakeSession) -> None:
    receipt = consent.grant("alice", ["minetest"], ["video"])
    mine = [make_session("alice", "minetest"), make_session("alice", "quake")]
    bobs = make_session("bob", "minetest")
    result = run("revoke", "--player", "alice", "--yes")
    assert result.exit_code == 0, result.output
    assert "Revoked 1 grant(s)" in result.stdout
    assert "Deleted 2 local session(s)" in result.stdout
    assert all(str(d) in result.stdout for d in mine)
    assert "can no longer be exported" in result.stdout
    assert not any(d.exists() for d in mine) and bobs.exists()
    assert consent.receipt_status(receipt.receipt_id) == "revoked"
    [_, revocation] = consent.all_entries()
    assert revocation.method == "cli-scripted"


def test_revoke_some_games(capture_home: Path, make_session: MakeSession) -> None:
    consent.grant("alice", ["minetest", "Quake"], ["video"])
    quake, minetest = make_session("alice", "quake"), make_session("alice", "minetest")
    result = run("revoke", "--player", "alice", "--game", "quake", "--yes")
    assert result.exit_code == 0, result.output
    assert not quake.exists() and minetest.exists()
    assert consent.require_consent("minetest", {"video"}).player == "alice"


def test_revoke_by_receipt_keeps_sessions_another_grant_covers(
        capture_home: Path, make_session: MakeSession) -> None:
    old = consent.grant("alice", ["minetest", "quake"], ["video"])
    consent.grant("alice", ["minetest"], ["video", "mouse"])
    quake, minetest = make_session("alice", "quake"), make_session("alice", "minetest")
    result = run("revoke", "--player", "alice", "--receipt", old.receipt_id, "--yes")
    assert result.exit_code == 0, result.output
    assert not quake.exists() and minetest.exists()
    assert "Kept 1 local session(s) of minetest" in result.stdout


def test_revoke_asks_first(capture_home: Path, make_session: MakeSession) -> None:
    consent.grant("alice", ["minetest"], ["video"])
    session = make_session("alice", "minetest")
    declined = run("revoke", "--player", "alice", input="n\n")
    assert declined.exit_code == 1
    assert session.exists()
    assert consent.active_grants() != []
    accepted = run("revoke", "--player", "alice", input="y\n")
    assert accepted.exit_code == 0, accepted.output
    assert consent.active_grants() == [] and not session.exists()
    assert consent.all_entries()[-1].method == "cli-interactive"


def test_revoke_again_retries_deletion(capture_home: Path, make_session: MakeSession) -> None:
    consent.grant("alice", ["minetest"], ["video"])
    consent.revoke("alice")
    session = make_session("alice", "minetest")  # e.g. left behind by an earlier failure
    result = run("revoke", "--player", "alice", "--game", "minetest", "--yes")
    assert result.exit_code == 0, result.output
    assert "nothing new was revoked" in result.stdout
    assert not session.exists()
    assert len(consent.all_entries()) == 2


def test_revoke_with_damaged_ledger_still_deletes(capture_home: Path,
                                                  make_session: MakeSession) -> None:
    consent.grant("alice", ["minetest"], ["video"])
    session, other = make_session("alice", "minetest"), make_session("alice", "quake")
    ledger = capture_home / "consent" / "ledger.jsonl"
    ledger.write_text(ledger.read_text().replace('"alice"', '"mallory"'))
    result = run("revoke", "--player", "alice", "--game", "minetest", "--yes")
    assert result.exit_code == 4
    assert not session.exists() and other.exists()
    assert "Deleted 1 local session(s)" in result.stdout
    assert "error:" in result.stderr and str(ledger) in result.stderr


def test_revoke_someone_elses_receipt_fails(capture_home: Path,
                                            make_session: MakeSession) -> None:
    bobs = consent.grant("bob", ["minetest"], ["video"])
    consent.grant("alice", ["minetest"], ["video"])
    session = make_session("alice", "minetest")
    result = run("revoke", "--player", "alice", "--receipt", bobs.receipt_id, "--yes")
    assert result.exit_code == 3
    assert result.stderr.startswith("error: receipt")
    assert session.exists()


def test_revoke_of_an_unknown_player_fails_listing_the_known_ones(
        capture_home: Path, make_session: MakeSession) -> None:
    consent.grant("alice", ["minetest"], ["video"])
    consent.grant("bob", ["minetest"], ["video"])
    session = make_session("alice", "minetest")
    result = run("revoke", "--player", "alcie", "--yes")
    assert result.exit_code == 3
    assert "'alcie'" in result.stderr and "'alice', 'bob'" in result.stderr
    assert len(consent.all_entries()) == 2 and session.exists()


def test_revoke_of_a_game_never_consented_names_the_consented_ones(
        capture_home: Path, make_session: MakeSession) -> None:
    consent.grant("alice", ["minetest", "Quake"], ["video"])
    result = run("revoke", "--player", "alice", "--game", "doom", "--yes")
    assert result.exit_code == 3
    assert "no consent of 'alice' for game 'doom'" in result.stderr
    assert "minetest, Quake" in result.stderr
    assert consent.active_grants() != []


def test_a_damaged_manifest_does_not_stop_the_withdrawal(
        capture_home: Path, make_session: MakeSession) -> None:
    """The issue's reproduction: a session whose manifest.json is `[]` made the revoke raise
    AttributeError after recording it, and every retry failed the same way."""
    consent.grant("alice", ["minetest"], ["video"])
    damaged = make_session("alice", "minetest")
    (damaged / "manifest.json").write_text("[]")
    good = make_session("alice", "minetest")
    first = run("revoke", "--player", "alice", "--yes")
    assert first.exit_code == 1, first.output
    assert not good.exists() and damaged.exists()
    assert f"not deleted: {damaged}: manifest is not a JSON object" in first.stderr
    assert "Traceback" not in first.output
    again = run("revoke", "--player", "alice", "--yes")
    assert again.exit_code == 1 and "nothing new was revoked" in again.stdout
    deleted = run_cli("sessions", "delete", "--yes", damaged.name)
    assert deleted.exit_code == 0, deleted.output
    last = run("revoke", "--player", "alice", "--yes")
    assert last.exit_code == 0, last.output


def run_cli(*args: str) -> Result:
    from capture.cli import cli

    return CliRunner().invoke(cli, list(args))


def test_revoke_as_a_subprocess_exits_with_one_line(capture_home: Path) -> None:
    result = subprocess.run(["capture", "consent", "revoke", "--player", "nobody", "--yes"],
                            capture_output=True, text=True, env=_env(capture_home))
    assert result.returncode == 3
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: ")


def _env(home: Path) -> dict[str, str]:
    import os
    import sys

    bin_dir = str(Path(sys.executable).parent)
    return {**os.environ, "CAPTURE_HOME": str(home),
            "PATH": bin_dir + os.pathsep + os.environ.get("PATH", "")}
