"""Crash consistency of finalise and recovery: a SIGKILL at every file operation, then recovery.

After each kill the session must recover (or already be final) with every input event and every
decodable frame it had, open with all hashes matching, export and verify, and a second recovery
must change nothing.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from capture import formats
from capture.errors import CaptureError
from capture.export import export_dataset, verify_dataset
from capture.session import writer
from capture.session.manifest import read_manifest
from capture.session.reader import needs_recovery, open_session
from tests.export.conftest import stub_consent
from tests.factories import build_recording, factory_video_result, gameplay_script
from tests.killpoints import run_killed_at

SCRIPT = gameplay_script(seconds=2)
EXPORT_EVERY = 4  # export and verify every 4th trial (each export takes ~0.5 s)


@pytest.fixture
def consent_active(monkeypatch: pytest.MonkeyPatch) -> None:
    stub_consent(monkeypatch, "active")


def _dead_pid() -> int:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    return dead.pid


@pytest.fixture(scope="module")
def recordings(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Templates copied for every trial: as a recorder leaves a session at a clean stop (just
    before finalise) and after a crash (torn journal line, frames the video lacks)."""
    root = tmp_path_factory.mktemp("templates")
    return {
        "clean": build_recording(root / "clean", SCRIPT, recorder_pid=_dead_pid()),
        "crashed": build_recording(root / "crashed", SCRIPT, extra_logged_frames=3,
                                   torn_event=True, recorder_pid=_dead_pid()),
    }


def _copy(template: Path, where: Path) -> Path:
    return Path(shutil.copytree(template, where / template.name))


def _state(session_dir: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(session_dir.iterdir()) if p.is_file()}


def _check_after_crash(session_dir: Path, trial: int, consent_active: None,
                       tmp_path: Path) -> None:
    """Recover if needed, then the invariants every crash must keep."""
    manifest = read_manifest(session_dir)
    if manifest.status == "recording":
        assert needs_recovery(session_dir)
        writer.recover(session_dir)
    manifest = read_manifest(session_dir)
    assert manifest.is_final
    session = open_session(session_dir)  # every file present, sizes and SHA-256 match
    assert session.events().num_rows == len(SCRIPT.events), "input events lost"
    assert session.frames().num_rows == len(SCRIPT.capture_times_ns), "frames lost or invented"
    assert not (session_dir / formats.EVENTS_JOURNAL).exists() or manifest.is_final
    before = _state(session_dir)
    with pytest.raises(CaptureError, match="nothing to recover"):
        writer.recover(session_dir)
    assert _state(session_dir) == before, "a second recovery changed the session"
    if trial % EXPORT_EVERY == 0:
        out = tmp_path / f"dataset-{trial}"
        export_dataset([session_dir], out)
        assert verify_dataset(out).ok


def test_finalise_killed_at_every_file_operation(recordings, tmp_path, consent_active) -> None:
    trials = []
    point = 0
    while True:
        point += 1
        work = _copy(recordings["clean"], tmp_path / f"finalise-{point}")
        outcome = run_killed_at(
            point, lambda w=work: writer.finalise(w, video_result=factory_video_result(SCRIPT)),
            tmp_path)
        assert outcome.error is None, outcome.error
        _check_after_crash(work, point, consent_active, tmp_path)
        trials.append(outcome)
        if not outcome.killed:
            break
    killed = [t for t in trials if t.killed]
    assert len(killed) >= 8, [t.operation for t in trials]
    assert any("manifest" in (t.operation or "") for t in killed)


def test_recovery_killed_at_every_file_operation(recordings, tmp_path, consent_active) -> None:
    point, killed = 0, 0
    while True:
        point += 1
        work = _copy(recordings["crashed"], tmp_path / f"recover-{point}")
        outcome = run_killed_at(point, lambda w=work: writer.recover(w), tmp_path)
        assert outcome.error is None, outcome.error
        _check_after_crash(work, point, consent_active, tmp_path)
        killed += outcome.killed
        if not outcome.killed:
            break
    assert killed >= 8


def test_recovery_uses_tables_a_killed_older_finalise_left(recordings, tmp_path,
                                                         consent_active) -> None:
    """The state an older finalise left when killed after deleting the journals (manifest still
    'recording', tables written): recovery must keep the tables, not rewrite them empty."""
    work = _copy(recordings["clean"], tmp_path)
    writer.finalise(work, video_result=factory_video_result(SCRIPT))
    manifest = read_manifest(work)
    from capture.session.manifest import write_manifest

    write_manifest(work, manifest.updated(status="recording", files={}, qa=None))
    (work / formats.LOCK).write_text(str(_dead_pid()))
    final = writer.recover(work)
    assert final.recovery is not None
    assert (final.recovery.events_source, final.recovery.frames_source) == ("table", "table")
    _check_after_crash(work, 0, consent_active, tmp_path)


def test_finalise_and_recovery_killed_at_random_instants(recordings, tmp_path,
                                                         consent_active) -> None:
    """Kills at random wall-clock instants (inside pyarrow's and PyAV's own writes too)."""
    rng = random.Random(8)
    for trial in range(40):
        kind = "clean" if trial % 2 == 0 else "crashed"
        work = _copy(recordings[kind], tmp_path / f"random-{trial}")

        def operation(w: Path = work, k: str = kind) -> None:
            if k == "clean":
                writer.finalise(w, video_result=factory_video_result(SCRIPT))
            else:
                writer.recover(w)

        pid = os.fork()
        if pid == 0:
            try:
                operation()
            finally:
                os._exit(0)
        time.sleep(rng.uniform(0.0, 0.25))
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        _check_after_crash(work, trial, consent_active, tmp_path)
