"""Journals on a really full filesystem (a small tmpfs): whole lines, nothing after a failure."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from capture.errors import DiskFullError
from capture.journal import JournalDamage, JournalWriter, read_journal

RECORD_PAD = "y" * 40


class SmallDisk:
    """A tmpfs of `size` bytes mounted on a fresh directory (needs root), with a filler file."""

    def __init__(self, root: Path, size: int) -> None:
        self.root, self.size = root, size
        self.filler = root / "filler"

    def fill(self, leave: int) -> None:
        """Leave about `leave` bytes free."""
        free = os.statvfs(self.root).f_bavail * os.statvfs(self.root).f_frsize
        with open(self.filler, "ab") as f:
            f.write(b"x" * max(0, free - leave))

    def free(self) -> None:
        self.filler.unlink(missing_ok=True)


def mount_small_disk(where: Path, size: int) -> Iterator[SmallDisk]:
    where.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield SmallDisk(where, size)
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[SmallDisk]:
    yield from mount_small_disk(tmp_path / "disk", 1024 * 1024)


def record(i: int) -> dict[str, object]:
    return {"t_ns": i, "kind": "motion", "dx": 1, "dy": 2, "pad": RECORD_PAD}


def test_full_disk_keeps_whole_lines_and_writes_nothing_after(small_disk: SmallDisk) -> None:
    small_disk.fill(leave=40 * 1024)
    path = small_disk.root / "events.jsonl"
    thread_errors: list[threading.ExceptHookArgs] = []
    old_hook, threading.excepthook = threading.excepthook, thread_errors.append
    try:
        writer = JournalWriter(path, flush_interval_ns=5_000_000)
        for i in range(8000):
            writer.append(record(i))
            if i == 4000:
                assert writer.error is not None, "40 kB cannot hold 4000 records"
                small_disk.free()  # space comes back: still nothing more may be written
            if i % 50 == 0:
                time.sleep(0.002)
        size_after_error = path.stat().st_size
        writer.close()
    finally:
        threading.excepthook = old_hook
    assert not thread_errors, "no thread died with a traceback"
    assert isinstance(writer.error, DiskFullError)
    assert str(writer.error).startswith(f"{path}: disk full")
    with pytest.raises(DiskFullError):
        writer.raise_if_failed()
    kept = [r["t_ns"] for r in read_journal(path)]  # strict: every line whole
    assert kept == list(range(len(kept))), "the records kept are the first ones, with no gap"
    assert 100 < len(kept) < 4000
    assert writer.dropped == 8000 - len(kept) and writer.count == 8000
    assert path.stat().st_size == size_after_error, "nothing written after the failure"
    assert path.read_bytes().endswith(b"\n")


def test_reopening_a_journal_with_a_torn_last_line_drops_it(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_text("".join(json.dumps(record(i)) + "\n" for i in range(3)) + '{"t_ns": 3, "ki')
    writer = JournalWriter(path)
    assert writer.torn_tail_dropped
    writer.append(record(4))
    writer.close()
    assert [r["t_ns"] for r in read_journal(path)] == [0, 1, 2, 4]
    clean = JournalWriter(path)
    clean.close()
    assert not clean.torn_tail_dropped and len(list(read_journal(path))) == 4


def test_salvage_drops_only_a_torn_last_line(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_bytes(b'{"t_ns": 0}\n{"t_ns": 1}\n{"t_ns": 2, "k\xff')
    damage = JournalDamage()
    assert [r["t_ns"] for r in read_journal(path, salvage=True, damage=damage)] == [0, 1]
    assert damage.truncated_tail


def test_recover_on_a_full_disk_is_a_plain_error_and_changes_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from capture.cli import cli
    from capture.session.manifest import read_manifest
    from tests.factories import gameplay_script
    from tests.session.test_bundle import _crashed_session

    for disk in mount_small_disk(tmp_path / "disk", 8 * 1024 * 1024):
        monkeypatch.setenv("CAPTURE_HOME", str(disk.root / "home"))
        session = _crashed_session(disk.root / "home" / "sessions",
                                   gameplay_script(seconds=2), extra_logged_frames=1)
        before = {p.name: p.read_bytes() for p in session.iterdir()}
        disk.fill(leave=0)
        result = CliRunner().invoke(cli, ["sessions", "recover", str(session)])
        assert result.exit_code != 0
        assert isinstance(result.exception, SystemExit), result.exception  # no traceback
        assert "disk full" in result.output and "free some space" in result.output, \
            result.output
        after = {p.name: p.read_bytes() for p in session.iterdir()}
        assert after == before, "every file of the session is as it was, and no other"
        assert read_manifest(session).status == "recording"

        disk.free()
        result = CliRunner().invoke(cli, ["sessions", "recover", str(session)])
        assert result.exit_code == 0, result.output
        manifest = read_manifest(session)
        assert manifest.status == "recovered" and manifest.qa is not None and manifest.qa.frames > 0


@pytest.mark.x11
@pytest.mark.slow
def test_recording_onto_a_disk_that_fills_keeps_what_was_written(tmp_path: Path) -> None:
    """A real recording (the demo's game on a private Xvfb) into a tmpfs with ~250 kB free."""
    import sys

    from capture import formats
    from capture.session.manifest import read_manifest
    from capture.session.reader import open_session

    for disk in mount_small_disk(tmp_path / "disk", 4 * 1024 * 1024):
        disk.fill(leave=250 * 1024)
        out = disk.root / "demo"
        env = {**os.environ, "CAPTURE_HOME": str(out / "home")}
        done = subprocess.run([sys.executable, "-m", "capture", "demo", "--out", str(out),
                               "--duration", "8"], env=env, capture_output=True, text=True,
                              timeout=240)
        assert done.returncode != 0, done.stderr[-2000:]
        assert "Traceback" not in done.stderr and "Exception in thread" not in done.stderr, \
            done.stderr[-4000:]
        assert "disk full" in done.stderr.splitlines()[-1], done.stderr[-2000:]
        (session,) = (out / "sessions").iterdir()
        for name in (formats.EVENTS_JOURNAL, formats.FRAMES_JOURNAL):
            if (session / name).exists():  # every line whole: readable without salvage
                assert list(read_journal(session / name)), name

        disk.free()
        if read_manifest(session).status == "recording":  # the disk filled while recording
            recovered = subprocess.run([sys.executable, "-m", "capture", "sessions", "recover",
                                        str(session)], env=env, capture_output=True, text=True,
                                       timeout=120)
            assert recovered.returncode == 0, recovered.stderr
            assert read_manifest(session).status == "recovered"
        # else it filled while exporting: the session was finalised before, and is whole
        manifest = open_session(session).manifest
        assert manifest.qa is not None and manifest.qa.frames > 0
