"""Session bundles: schema conformance, bad input, crash salvage, listing, deletion, revocation."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jsonschema
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from capture import consent, formats
from capture.cli import cli
from capture.errors import BadInputError
from capture.journal import JournalWriter, read_journal
from capture.session import store
from capture.session.manifest import (
    read_manifest,
    write_manifest,
)
from capture.session.reader import needs_recovery, open_session
from tests.factories import SessionScript, build_recording, build_session, gameplay_script


def _schema(name: str) -> dict:
    return json.loads((formats.schemas_dir() / name).read_text())


def test_what_we_write_validates_against_schemas(tmp_path: Path) -> None:
    session_dir = build_session(tmp_path, gameplay_script(seconds=2))
    manifest = json.loads((session_dir / formats.MANIFEST).read_text())
    jsonschema.validate(manifest, _schema(formats.MANIFEST_SCHEMA))
    events = pq.read_table(session_dir / formats.EVENTS_TABLE)
    frames = pq.read_table(session_dir / formats.FRAMES_TABLE)
    assert events.schema.remove_metadata().equals(
        formats.arrow_schema(formats.EVENTS_SCHEMA).remove_metadata(), check_metadata=False)
    assert frames.schema.remove_metadata().equals(
        formats.arrow_schema(formats.FRAMES_SCHEMA).remove_metadata(), check_metadata=False)
    assert set(manifest["files"]) == {formats.VIDEO, formats.EVENTS_TABLE, formats.FRAMES_TABLE}
    assert not (session_dir / formats.EVENTS_JOURNAL).exists()


def test_write_manifest_rejects_invalid_manifest(tmp_path: Path) -> None:
    session_dir = build_session(tmp_path, gameplay_script(seconds=1))
    manifest = read_manifest(session_dir)
    with pytest.raises(BadInputError, match="status"):
        write_manifest(session_dir, manifest.updated(status="finished-ish"))
    assert read_manifest(session_dir).status == "complete"  # nothing was damaged


@pytest.mark.parametrize("content, problem", [
    ("{not json", "not valid JSON"),
    ("[]", "not a JSON object"),
    ('{"schema_version": 99}', "schema_version is 99"),
])
def test_malformed_manifest_is_named_with_its_problem(tmp_path, capture_home, content,
                                                      problem) -> None:
    session_dir = build_session(tmp_path, gameplay_script(seconds=1))
    (session_dir / formats.MANIFEST).write_text(content)
    result = CliRunner().invoke(cli, ["sessions", "show", str(session_dir)])
    assert result.exit_code == BadInputError.exit_code
    assert str(session_dir / formats.MANIFEST) in result.output
    assert problem in result.output


def test_journal_with_damage_in_the_middle_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_text('{"t_ns": 1, "kind": "motion"}\n{"t_ns": 2, "ki\n{"t_ns": 3, "kind": "x"}\n')
    with pytest.raises(BadInputError, match="line 2") as err:
        list(read_journal(path, salvage=True))
    assert str(path) in str(err.value)


def test_journal_cut_off_at_the_end_is_salvaged(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    writer = JournalWriter(path)
    for i in range(5):
        writer.append({"t_ns": i, "kind": "motion"})
    writer.close()
    with open(path, "a") as f:
        f.write('{"t_ns": 5, "kin')
    with pytest.raises(BadInputError, match="line 6"):
        list(read_journal(path))
    assert [r["t_ns"] for r in read_journal(path, salvage=True)] == [0, 1, 2, 3, 4]


def _crashed_session(root: Path, script: SessionScript, extra_logged_frames: int) -> Path:
    """A bundle as a killed recorder leaves it: manifest 'recording', journals, a dead pid."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    return build_recording(root, script, extra_logged_frames=extra_logged_frames,
                           torn_event=True, recorder_pid=dead.pid)


def test_recover_salvages_journals_and_keeps_only_decodable_frames(tmp_path, capture_home) -> None:
    script = gameplay_script(seconds=2)
    session_dir = _crashed_session(tmp_path, script, extra_logged_frames=3)
    assert needs_recovery(session_dir)
    result = CliRunner().invoke(cli, ["sessions", "recover", str(session_dir)])
    assert result.exit_code == 0, result.output
    manifest = read_manifest(session_dir)
    assert manifest.status == "recovered"
    rec = manifest.recovery
    assert rec is not None
    assert rec.frames_logged == len(script.capture_times_ns) + 3
    assert rec.frames_decodable == len(script.capture_times_ns)
    assert rec.events_journal_truncated_tail is True
    session = open_session(session_dir)
    assert session.frames().num_rows == len(script.capture_times_ns)
    assert session.events().num_rows == len(script.events)


def test_recover_refuses_a_finished_session(tmp_path, capture_home) -> None:
    session_dir = build_session(tmp_path, gameplay_script(seconds=1))
    result = CliRunner().invoke(cli, ["sessions", "recover", str(session_dir)])
    assert result.exit_code != 0
    assert "nothing to recover" in result.output


def test_open_session_detects_a_changed_file(tmp_path: Path) -> None:
    session_dir = build_session(tmp_path, gameplay_script(seconds=1))
    video = session_dir / formats.VIDEO
    data = bytearray(video.read_bytes())
    data[len(data) // 2] ^= 0xFF
    video.write_bytes(bytes(data))
    with pytest.raises(BadInputError, match="SHA-256") as err:
        open_session(session_dir)
    assert str(video) in str(err.value)


def test_list_delete_and_revoke(tmp_path, capture_home) -> None:
    elsewhere = tmp_path / "elsewhere"
    kept = build_session(capture_home / "sessions", gameplay_script(
        seconds=1, player="bob", session_id="20250301T120000Z-factorygame-bbbbbb"))
    mine = build_session(elsewhere, gameplay_script(
        seconds=1, player="alice", session_id="20250301T120000Z-factorygame-aaaaaa"))
    store.register(mine)
    runner = CliRunner()
    listed = json.loads(runner.invoke(cli, ["sessions", "list", "--json"]).output)
    assert {r["id"] for r in listed} == {kept.name, mine.name}
    row = next(r for r in listed if r["id"] == mine.name)
    assert row["game"] == "factorygame" and row["status"] == "complete"
    assert row["duration_s"] > 0.5

    consent.grant("alice", ["factorygame"], ["video", "keyboard", "mouse"])
    result = runner.invoke(cli, ["consent", "revoke", "--player", "alice", "--yes"])
    assert result.exit_code == 0, result.output
    assert not mine.exists() and kept.exists()
    assert "deleted 1" in result.output.lower() or str(mine) in result.output

    result = runner.invoke(cli, ["sessions", "delete", "--yes", kept.name])
    assert result.exit_code == 0, result.output
    assert not kept.exists()
    assert json.loads(runner.invoke(cli, ["sessions", "list", "--json"]).output) == []


def test_cli_help_reads_well() -> None:
    env = {**os.environ}
    out = subprocess.run([sys.executable, "-m", "capture", "--help"], capture_output=True,
                         text=True, env=env, check=True).stdout
    for command in ("consent", "record", "sessions", "export", "dataset", "demo"):
        assert command in out


def test_unreadable_manifests_are_named_and_the_rest_carry_on(tmp_path, capture_home) -> None:
    sessions = capture_home / "sessions"
    good = build_session(sessions, gameplay_script(seconds=1, session_id="20250301T120000Z-g-1"))
    bad = build_session(sessions, gameplay_script(seconds=1, session_id="20250301T120000Z-g-2"))
    raw = (bad / formats.MANIFEST).read_bytes()
    (bad / formats.MANIFEST).write_bytes(raw[:40] + b"\xff\xfe" + raw[42:])
    runner = CliRunner()
    listed = runner.invoke(cli, ["sessions", "list"])
    assert listed.exit_code == 0, listed.output
    assert good.name in listed.output and "not UTF-8" in listed.output
    shown = runner.invoke(cli, ["sessions", "show", str(bad)])
    assert shown.exit_code == BadInputError.exit_code
    assert str(bad / formats.MANIFEST) in shown.output and "Traceback" not in shown.output
    recovered = runner.invoke(cli, ["sessions", "recover"])
    assert recovered.exit_code == 0 and "no session needs recovery" in recovered.output
    exported = runner.invoke(cli, ["export", str(bad), "--out", str(tmp_path / "d")])
    assert exported.exit_code == BadInputError.exit_code
    assert "not UTF-8" in exported.output and "Traceback" not in exported.output


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_a_damaged_manifest_is_refused_by_name_or_read_whole(tmp_path_factory, data) -> None:
    """Fuzzed manifests (bytes flipped, cut, inserted): reading either returns a valid record
    or raises BadInputError naming the file; never another exception."""
    root = tmp_path_factory.getbasetemp() / "fuzz-manifest"
    session_dir = root / "s"
    if not session_dir.exists():
        build_session(root, gameplay_script(seconds=1, session_id="s"))
        (root / "original.json").write_bytes((session_dir / formats.MANIFEST).read_bytes())
    raw = bytearray((root / "original.json").read_bytes())
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(raw) - 1))
        action = data.draw(st.sampled_from(["flip", "cut", "insert"]))
        if action == "flip":
            raw[at] = data.draw(st.integers(0, 255))
        elif action == "cut":
            del raw[at:at + data.draw(st.integers(1, 200))]
        else:
            raw[at:at] = data.draw(st.binary(min_size=1, max_size=8))
    (session_dir / formats.MANIFEST).write_bytes(bytes(raw))
    try:
        manifest = read_manifest(session_dir)
    except BadInputError as exc:
        assert str(session_dir / formats.MANIFEST) in str(exc)
    else:
        assert manifest.to_dict()["session_id"] == manifest.session_id
