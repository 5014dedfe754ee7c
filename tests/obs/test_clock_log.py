"""Taking OBS's clock log into the session: nothing written after the take reaches the session."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from pathlib import Path

from capture.video.obs.backend import _held_open, _take_clock_log, _wait_closed


class ScriptLikeWriter:
    """Appends a tick line to a file every few ms from a thread, as the clock script does while
    its log is open (here: until told to stop, or with an "end" line when asked to close)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.file = path.open("a", encoding="utf-8")
        self.stop = threading.Event()
        self.close_after: float | None = None
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.lines = 0

    def run(self) -> None:
        while not self.stop.wait(0.003):
            self.file.write(json.dumps(["t", self.lines, time.monotonic_ns(), 0, 0]) + "\n")
            self.file.flush()
            self.lines += 1
            if self.close_after is not None and time.monotonic() >= self.close_after:
                self.file.write(json.dumps(["end", {"host_ns": time.monotonic_ns()}]) + "\n")
                break
        self.file.close()

    def __enter__(self) -> ScriptLikeWriter:
        self.thread.start()
        time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()


def digest(path: Path) -> tuple[int, str]:
    data = path.read_bytes()
    return len(data), hashlib.sha256(data).hexdigest()


def test_a_log_still_being_written_is_copied_and_later_writes_miss_the_session(
        tmp_path: Path) -> None:
    script_log = tmp_path / "video.mkv.capture-clock.jsonl"
    kept = tmp_path / "obs-clock.jsonl"
    with ScriptLikeWriter(script_log) as writer:
        assert not _wait_closed(script_log, None, 0.2)     # no "end": not closed in time
        note = _take_clock_log(script_log, kept, closed=False)
        taken = digest(kept)
        written_at_take = writer.lines
        time.sleep(0.3)                                     # the writer goes on, as OBS did
        assert writer.lines > written_at_take + 10
        assert digest(kept) == taken
    assert note is not None and "had not closed" in note
    assert not script_log.exists()
    text = kept.read_text()
    assert text.endswith("\n") and all(json.loads(line) for line in text.splitlines())


def test_a_closed_log_is_moved_whole(tmp_path: Path) -> None:
    script_log = tmp_path / "video.mkv.capture-clock.jsonl"
    kept = tmp_path / "obs-clock.jsonl"
    with ScriptLikeWriter(script_log) as writer:
        writer.close_after = time.monotonic() + 0.1
        assert _wait_closed(script_log, None, 5.0)
        writer.thread.join(5)
        before = digest(script_log)
        assert _take_clock_log(script_log, kept, closed=True) is None
    assert digest(kept) == before and not script_log.exists()


def test_an_open_file_is_seen_through_proc(tmp_path: Path) -> None:
    import os

    path = tmp_path / "log"
    with path.open("w"):
        assert _held_open(path, os.getpid())
    assert not _held_open(path, os.getpid())
