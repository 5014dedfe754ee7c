"""`capture consent grant | show | revoke` through click's test runner."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

import capture.consent as consent
from capture.cli.consent import consent as consent_group
from capture.consent.terms import terms_text


def run(*args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(consent_group, list(args), input=input)


@pytest.fixture
def deleted_sessions(monkeypatch: pytest.MonkeyPatch, capture_home: Path) -> list[tuple]:
    """Stands in for capture.session.store; records each call, 'deletes' one session per game."""
    calls: list[tuple] = []

    def delete_sessions_of(player: str, games: list[str] | None) -> list[Path]:
        calls.append((player, games))
        return [capture_home / "sessions" / f"{player}-{g}" for g in (games or ["all"])]

    store = types.ModuleType("capture.session.store")
    store.delete_sessions_of = delete_sessions_of  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "capture.session.store", store)
    return calls


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
    result = run("grant", "--player", "alice", "--game", "minetest", "--scope", "video,audio",
                 "--license", "CC0-1.0", input="y\n")
    assert result.exit_code == 0, result.output
    assert terms_text() in result.stdout
    assert "You are about to consent to this:" in result.stdout
    assert "not recorded  keyboard, mouse, gamepad" in result.stdout
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


# --- revoke -----------------------------------------------------------------------------------
def test_revoke_revokes_and_deletes_sessions(capture_home: Path,
                                             deleted_sessions: list[tuple]) -> None:
    receipt = consent.grant("alice", ["minetest"], ["video"])
    result = run("revoke", "--player", "alice", "--yes")
    assert result.exit_code == 0, result.output
    assert "Revoked 1 grant(s)" in result.stdout
    assert "Deleted 1 local session(s)" in result.stdout
    assert "can no longer be exported" in result.stdout
    assert deleted_sessions == [("alice", None)]
    assert consent.receipt_status(receipt.receipt_id) == "revoked"
    [_, revocation] = consent.all_entries()
    assert revocation.method == "cli-scripted"


def test_revoke_some_games(capture_home: Path, deleted_sessions: list[tuple]) -> None:
    consent.grant("alice", ["minetest", "Quake"], ["video"])
    result = run("revoke", "--player", "alice", "--game", "quake", "--yes")
    assert result.exit_code == 0, result.output
    assert deleted_sessions == [("alice", ["Quake"])]
    assert consent.require_consent("minetest", {"video"}).player == "alice"


def test_revoke_by_receipt_keeps_sessions_another_grant_covers(
        capture_home: Path, deleted_sessions: list[tuple]) -> None:
    old = consent.grant("alice", ["minetest", "quake"], ["video"])
    consent.grant("alice", ["minetest"], ["video", "mouse"])
    result = run("revoke", "--player", "alice", "--receipt", old.receipt_id, "--yes")
    assert result.exit_code == 0, result.output
    assert deleted_sessions == [("alice", ["quake"])]
    assert "Kept local sessions of minetest" in result.stdout


def test_revoke_asks_first(capture_home: Path, deleted_sessions: list[tuple]) -> None:
    consent.grant("alice", ["minetest"], ["video"])
    declined = run("revoke", "--player", "alice", input="n\n")
    assert declined.exit_code == 1
    assert deleted_sessions == []
    assert consent.active_grants() != []
    accepted = run("revoke", "--player", "alice", input="y\n")
    assert accepted.exit_code == 0, accepted.output
    assert consent.active_grants() == []
    assert consent.all_entries()[-1].method == "cli-interactive"


def test_revoke_again_retries_deletion(capture_home: Path, deleted_sessions: list[tuple]) -> None:
    consent.grant("alice", ["minetest"], ["video"])
    consent.revoke("alice")
    result = run("revoke", "--player", "alice", "--game", "minetest", "--yes")
    assert result.exit_code == 0, result.output
    assert "nothing new was revoked" in result.stdout
    assert deleted_sessions == [("alice", ["minetest"])]
    assert len(consent.all_entries()) == 2


def test_revoke_with_damaged_ledger_still_deletes(capture_home: Path,
                                                  deleted_sessions: list[tuple]) -> None:
    consent.grant("alice", ["minetest"], ["video"])
    ledger = capture_home / "consent" / "ledger.jsonl"
    ledger.write_text(ledger.read_text().replace('"alice"', '"mallory"'))
    result = run("revoke", "--player", "alice", "--game", "minetest", "--yes")
    assert result.exit_code == 4
    assert deleted_sessions == [("alice", ["minetest"])]
    assert "error:" in result.stderr and str(ledger) in result.stderr


def test_revoke_someone_elses_receipt_fails(capture_home: Path,
                                            deleted_sessions: list[tuple]) -> None:
    bobs = consent.grant("bob", ["minetest"], ["video"])
    result = run("revoke", "--player", "alice", "--receipt", bobs.receipt_id, "--yes")
    assert result.exit_code == 3
    assert result.stderr.startswith("error: receipt")
    assert deleted_sessions == []


def test_revoke_without_session_store_says_so(capture_home: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "capture.session.store", None)  # import fails
    consent.grant("alice", ["minetest"], ["video"])
    result = run("revoke", "--player", "alice", "--yes")
    assert result.exit_code == 1
    assert "session store is unavailable" in result.stderr
    assert consent.active_grants() == []  # the withdrawal itself is recorded first
