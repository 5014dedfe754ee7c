"""Crash-safe append-only JSON Lines journals: written while recording, salvaged after a crash."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from capture.clock import now_ns
from capture.errors import BadInputError, CaptureError, DiskFullError, is_disk_full

log = logging.getLogger(__name__)

FLUSH_INTERVAL_NS = 100_000_000  # well under the 250 ms we promise


class JournalWriter:
    """Appends one JSON object per line; writes and fsyncs at least every FLUSH_INTERVAL_NS.

    Thread-safe. `append` buffers; a background thread writes the buffered lines and fsyncs them
    even when no further record arrives. The file only ever holds whole lines: a write that fails
    (a full disk, a quota) is cut back to the last whole line, and nothing is written after it.
    The writer then keeps `error` (a DiskFullError for ENOSPC/EDQUOT) and counts the records it
    could not keep in `dropped`; `append`, `flush` and `close` never raise for it, so the
    threads that feed a journal carry on and whoever owns the recording decides (see
    `raise_if_failed`).
    """

    def __init__(self, path: Path, flush_interval_ns: int = FLUSH_INTERVAL_NS) -> None:
        self.path = path
        self.count = 0              # records appended
        self.dropped = 0            # records appended but not on disk (after a failed write)
        self.torn_tail_dropped = False  # opening cut a torn last line off an existing file
        self.error: CaptureError | None = None
        self._lock = threading.Lock()
        self._buffer = bytearray()
        self._buffered = 0
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
        try:
            self._size = self._drop_torn_tail()  # bytes on disk, all of them whole lines
        except BaseException:
            os.close(self._fd)
            raise
        self._interval_s = flush_interval_ns / 1e9
        self._stop = threading.Event()
        self._flusher = threading.Thread(target=self._flush_loop, name="journal-flush", daemon=True)
        self._flusher.start()

    def append(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, separators=(",", ":"), allow_nan=False).encode("utf-8") + b"\n"
        with self._lock:
            self.count += 1
            if self.error is not None:
                self.dropped += 1
                return
            self._buffer += line
            self._buffered += 1

    def flush(self) -> None:
        """Write and fsync what is buffered (a failure is kept in `error`, not raised)."""
        with self._lock:
            if self.error is not None or not self._buffer:
                return
            try:
                view = memoryview(self._buffer)
                written = 0
                while written < len(view):
                    written += os.write(self._fd, view[written:])
                view.release()
                os.fsync(self._fd)
            except OSError as exc:
                view.release()
                self._fail(exc)
                return
            self._size += len(self._buffer)
            self._buffer.clear()
            self._buffered = 0

    def raise_if_failed(self) -> None:
        """Raise the write error (DiskFullError for a full disk), if there was one."""
        if self.error is not None:
            raise self.error

    def close(self) -> None:
        """Stop the flusher, write what is buffered and close the file (never raises for a
        failed write: see `error`)."""
        self._stop.set()
        if self._flusher.is_alive() and self._flusher is not threading.current_thread():
            self._flusher.join()
        self.flush()
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1

    def _flush_loop(self) -> None:
        while not self._stop.wait(self._interval_s):
            self.flush()

    def _fail(self, exc: OSError) -> None:
        """After a failed write: cut the file back to its last whole line; write no more."""
        if is_disk_full(exc):
            self.error = DiskFullError(self.path, "free some space; the records written before "
                                       "are kept")
        else:
            self.error = CaptureError(f"cannot write the journal ({exc.strerror or exc})",
                                      self.path)
        with contextlib.suppress(OSError):  # shrinking a file needs no space
            os.ftruncate(self._fd, self._size)
        self.dropped += self._buffered
        self._buffer.clear()
        self._buffered = 0
        log.debug("%s", self.error)  # the owner of the recording reports it (see `error`)

    def _drop_torn_tail(self) -> int:
        """Cut a last line without its newline (a write a crash or a full disk cut off) from an
        existing file, so appended records never join it; the size of the whole lines."""
        size = os.fstat(self._fd).st_size
        if size == 0:
            return 0
        with open(self.path, "rb") as f:
            tail_start = max(0, size - 65536)
            while True:
                f.seek(tail_start)
                chunk = f.read(size - tail_start)
                if chunk.endswith(b"\n"):
                    return size
                newline = chunk.rfind(b"\n")
                if newline >= 0 or tail_start == 0:
                    keep = tail_start + newline + 1
                    break
                tail_start = max(0, tail_start - 65536)
        os.ftruncate(self._fd, keep)
        self.torn_tail_dropped = True
        log.warning("%s: dropped a torn last line (%d bytes) before appending", self.path,
                    size - keep)
        return keep


class JournalDamage:
    """What salvaging a journal found: a cut-off last line is normal after a crash."""

    def __init__(self) -> None:
        self.truncated_tail = False


def read_journal(path: Path, *, salvage: bool = False,
                 damage: JournalDamage | None = None) -> Iterator[dict[str, Any]]:
    """Yield the records of a journal.

    A malformed line raises BadInputError naming the file and line. With `salvage`, a malformed
    *last* line (a write cut off by a crash) is dropped and reported through `damage` instead.
    A malformed line elsewhere is damage, never a torn write (JournalWriter writes nothing
    after a failed write), and is refused even when salvaging.
    """
    try:
        lines = path.read_bytes().split(b"\n")
    except FileNotFoundError:
        raise BadInputError("journal file is missing", path) from None
    except OSError as exc:
        raise BadInputError(f"journal cannot be read ({exc.strerror or exc})", path) from None
    if lines and lines[-1] == b"":
        lines.pop()
    last = len(lines) - 1
    for number, raw in enumerate(lines):
        try:
            record = json.loads(raw)
            if not isinstance(record, dict):
                raise ValueError("not a JSON object")
        except (ValueError, RecursionError) as exc:
            if salvage and number == last:
                if damage is not None:
                    damage.truncated_tail = True
                return
            raise BadInputError(f"line {number + 1} is not a valid record ({exc})", path) from None
        yield record


def stamp() -> int:
    """Host-clock time for a journal record."""
    return now_ns()


@dataclass(frozen=True, slots=True)
class TimelineJournal:
    """The frame-timeline journal of one video file: one frames.v1 record per frame written, in
    file order (schemas/frames.v1.arrow.json).

    The session bundle creates it and hands it to the video backend, which writes through it
    and never names the file itself. It is picklable, so a recorder's child process can open it.
    """

    path: Path

    def writer(self) -> JournalWriter:
        """Append records as frames are written (the built-in recorder's encoder)."""
        return JournalWriter(self.path)

    def rewrite(self, records: Iterable[dict[str, Any]]) -> int:
        """Replace the whole timeline atomically (a backend that learns it only at stop);
        returns the number of records."""
        tmp = self.path.with_name(self.path.name + ".tmp")
        count = 0
        try:
            with open(tmp, "w", encoding="utf-8") as out:
                for record in records:
                    out.write(json.dumps(record, separators=(",", ":"), allow_nan=False) + "\n")
                    count += 1
                out.flush()
                os.fsync(out.fileno())
        except OSError as exc:  # the old timeline stays as it was
            tmp.unlink(missing_ok=True)
            if is_disk_full(exc):
                raise DiskFullError(self.path, "free some space and try again; the timeline "
                                    "is unchanged") from None
            raise
        os.replace(tmp, self.path)
        return count

    def exists(self) -> bool:
        return self.path.exists()

    def records(self, *, salvage: bool = True) -> Iterator[dict[str, Any]]:
        """The records so far (none if nothing was written yet); a cut-off last line is skipped."""
        if not self.path.exists():
            return iter(())
        return read_journal(self.path, salvage=salvage)

    def first_capture_time_ns(self) -> int | None:
        """Capture time of the first frame, once one is written."""
        try:
            first = self.path.read_bytes().split(b"\n", 1)[0]
            if first.endswith(b"}"):
                return int(json.loads(first)["capture_time_ns"])
        except (FileNotFoundError, ValueError, KeyError):
            pass
        return None
