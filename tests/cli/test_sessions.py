"""`capture sessions` and `capture export` by id or path, and which directories may be deleted."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from click.testing import CliRunner, Result

from capture.cli import cli
from capture.cli.record import session_summary
from capture.session import store
from tests.cli.conftest import MakeSession


def run(*args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), input=input)


# --- delete: only what is provably one of our sessions ------------------------------------------
def test_delete_refuses_a_directory_that_merely_holds_a_manifest(capture_home: Path,
                                                                 tmp_path: Path) -> None:
    stranger = tmp_path / "photos"
    stranger.mkdir()
    (stranger / "manifest.json").write_text('{"name": "x"}')
    (stranger / "holiday.jpg").write_bytes(b"\xff\xd8 precious")
    result = run("sessions", "delete", "--yes", str(stranger))
    assert result.exit_code == 1
    assert "not one of capture's sessions" in result.stderr
    assert (stranger / "holiday.jpg").exists()
    assert "Traceback" not in result.output


def test_delete_refuses_a_valid_session_outside_the_known_places(
        capture_home: Path, tmp_path: Path, make_session: MakeSession) -> None:
    copy = make_session("alice", "minetest", root=tmp_path / "copies")  # never registered
    result = run("sessions", "delete", "--yes", str(copy))
    assert result.exit_code == 1 and "not one of capture's sessions" in result.stderr
    assert copy.exists()


def test_delete_a_session_recorded_with_out(capture_home: Path, tmp_path: Path,
                                            make_session: MakeSession) -> None:
    session = make_session("alice", "minetest", root=tmp_path / "out")
    store.register(session)
    result = run("sessions", "delete", "--yes", session.name)  # by id
    assert result.exit_code == 0, result.output
    assert not session.exists()
    assert list((tmp_path / "out").iterdir()) == []  # no tombstone left behind


def test_delete_refuses_a_registered_directory_whose_manifest_is_not_ours(
        capture_home: Path, tmp_path: Path, make_session: MakeSession) -> None:
    session = make_session("alice", "minetest", root=tmp_path / "out")
    store.register(session)
    (session / "manifest.json").write_text('{"name": "x"}')
    result = run("sessions", "delete", "--yes", str(session))
    assert result.exit_code == 1 and "manifest cannot be checked" in result.stderr
    assert session.exists()


def test_a_damaged_session_in_the_sessions_folder_can_be_deleted_by_id(
        capture_home: Path, make_session: MakeSession) -> None:
    damaged = make_session("alice", "minetest")
    (damaged / "manifest.json").write_bytes(b'{"player": "\xff')
    missing = make_session("alice", "minetest")
    (missing / "manifest.json").unlink()
    listed = run("sessions", "list")
    assert listed.exit_code == 0, listed.output
    assert f"{damaged.name}  " in listed.stdout and "not UTF-8" in listed.stdout
    assert f"{missing.name}  " in listed.stdout and "manifest.json is missing" in listed.stdout
    shown = run("sessions", "show", damaged.name)
    assert shown.exit_code == 4 and shown.stderr.count("\n") == 1
    assert "not UTF-8" in shown.stderr
    result = run("sessions", "delete", damaged.name, missing.name, input="y\n")
    assert result.exit_code == 0, result.output
    assert "2 of them damaged" in result.stdout
    assert not damaged.exists() and not missing.exists()


def test_delete_refuses_a_session_being_recorded(capture_home: Path,
                                                 make_session: MakeSession) -> None:
    import os

    session = make_session("alice", "minetest")
    manifest = json.loads((session / "manifest.json").read_text())
    manifest["status"] = "recording"
    (session / "manifest.json").write_text(json.dumps(manifest))
    (session / "recording.lock").write_text(str(os.getpid()))  # a live recorder
    result = run("sessions", "delete", "--yes", session.name)
    assert result.exit_code == 1 and "still being recorded" in result.stderr
    assert session.exists()


def test_an_unknown_or_ambiguous_id_is_a_plain_error(capture_home: Path,
                                                     make_session: MakeSession) -> None:
    make_session("alice", "minetest")
    make_session("alice", "minetest")
    unknown = run("sessions", "delete", "--yes", "nope")
    assert unknown.exit_code == 1 and "no session called 'nope'" in unknown.stderr
    ambiguous = run("sessions", "show", "2025")
    assert ambiguous.exit_code == 1 and "matches 2 sessions" in ambiguous.stderr


# --- one name for a session -----------------------------------------------------------------
def test_list_prints_ids_that_show_export_and_delete_accept(
        capture_home: Path, tmp_path: Path, make_session: MakeSession) -> None:
    from capture import consent
    from tests.factories import build_session, gameplay_script

    receipt = consent.grant("Alice Example", ["factorygame"],
                            ["video", "keyboard", "mouse", "gamepad"])
    session = build_session(capture_home / "sessions",
                            gameplay_script(seconds=2, receipt_id=receipt.receipt_id))
    make_session("bob", "quake")
    listed = run("sessions", "list").stdout.splitlines()
    ids = [line.split()[0] for line in listed]
    assert session.name in ids
    prefix = session.name[: len(session.name) - 3]
    assert sum(i.startswith(prefix) for i in ids) == 1
    shown = run("sessions", "show", prefix)
    assert shown.exit_code == 0 and json.loads(shown.stdout)["session_id"] == session.name
    exported = run("export", prefix, "--out", str(tmp_path / "by-id"))
    assert exported.exit_code == 0, exported.output
    by_path = run("export", str(session), "--out", str(tmp_path / "by-path"))
    assert by_path.exit_code == 0, by_path.output
    ours = sorted(p.relative_to(tmp_path / "by-id") for p in (tmp_path / "by-id").rglob("*"))
    assert ours == sorted(p.relative_to(tmp_path / "by-path")
                          for p in (tmp_path / "by-path").rglob("*"))
    unknown = run("export", "nope", "--out", str(tmp_path / "none"))
    assert unknown.exit_code == 1 and "no session called 'nope'" in unknown.stderr
    assert not (tmp_path / "none").exists()
    damaged = make_session("bob", "quake")
    (damaged / "manifest.json").write_bytes(b"\xff\xfe")
    refused = run("export", session.name, damaged.name, "--out", str(tmp_path / "none"))
    assert refused.exit_code == 4 and refused.stderr.count("\n") == 1
    assert f"{damaged / 'manifest.json'}: manifest is not UTF-8" in refused.stderr
    assert not (tmp_path / "none").exists()


def test_recover_carries_on_past_an_unreadable_session(capture_home: Path,
                                                       make_session: MakeSession) -> None:
    damaged = make_session("alice", "minetest")
    (damaged / "manifest.json").write_bytes(b"\xff")
    result = run("sessions", "recover")
    assert result.exit_code == 0, result.output
    assert "no session needs recovery" in result.stdout


# --- what `capture record` prints ------------------------------------------------------------
def test_record_summary_prints_each_failed_check(capture_home: Path,
                                                 make_session: MakeSession) -> None:
    session = make_session("alice", "minetest")  # 3 frames, no input: too short, idle
    lines = session_summary(session)
    assert lines[0].startswith("complete, ")
    assert "check(s) failed" in lines[0]
    failed = [line for line in lines if line.startswith("check failed: ")]
    assert any(line.startswith("check failed: Length: ") for line in failed), lines
    assert any(line.startswith("check failed: Input activity: ") for line in failed), lines
    manifest = json.loads((session / "manifest.json").read_text())
    assert len(failed) == sum(not c["ok"] for c in manifest["qa"]["checks"])
    shutil.rmtree(session)
