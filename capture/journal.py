"""Crash-safe append-only JSON Lines journals: written while recording, salvaged after a crash."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from capture.clock import now_ns
from capture.errors import BadInputError

FLUSH_INTERVAL_NS = 100_000_000  # well under the 250 ms we promise


class JournalWriter:
    """Appends one JSON object per line; flushes and fsyncs at least every FLUSH_INTERVAL_NS.

    Thread-safe. `append` buffers; a background thread makes sure buffered lines reach the disk
    even when no further record arrives.
    """

    def __init__(self, path: Path, flush_interval_ns: int = FLUSH_INTERVAL_NS) -> None:
        self.path = path
        self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
        self._lock = threading.Lock()
        self._pending = 0
        self._interval_s = flush_interval_ns / 1e9
        self._stop = threading.Event()
        self._flusher = threading.Thread(target=self._flush_loop, name="journal-flush", daemon=True)
        self._flusher.start()
        self.count = 0

    def append(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, separators=(",", ":"), allow_nan=False)
        with self._lock:
            self._file.write(line + "\n")
            self._pending += 1
            self.count += 1

    def flush(self) -> None:
        with self._lock:
            if self._pending:
                self._file.flush()
                os.fsync(self._file.fileno())
                self._pending = 0

    def _flush_loop(self) -> None:
        while not self._stop.wait(self._interval_s):
            self.flush()

    def close(self) -> None:
        self._stop.set()
        self._flusher.join()
        self.flush()
        self._file.close()


class JournalDamage:
    """What salvaging a journal found: a cut-off last line is normal after a crash."""

    def __init__(self) -> None:
        self.truncated_tail = False


def read_journal(path: Path, *, salvage: bool = False,
                 damage: JournalDamage | None = None) -> Iterator[dict[str, Any]]:
    """Yield the records of a journal.

    A malformed line raises BadInputError naming the file and line. With `salvage`, a malformed
    *last* line (a write cut off by a crash) is dropped and reported through `damage` instead.
    """
    try:
        lines = path.read_bytes().split(b"\n")
    except FileNotFoundError:
        raise BadInputError("journal file is missing", path) from None
    if lines and lines[-1] == b"":
        lines.pop()
    last = len(lines) - 1
    for number, raw in enumerate(lines):
        try:
            record = json.loads(raw)
            if not isinstance(record, dict):
                raise ValueError("not a JSON object")
        except ValueError as exc:
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
        with open(tmp, "w", encoding="utf-8") as out:
            for record in records:
                out.write(json.dumps(record, separators=(",", ":"), allow_nan=False) + "\n")
                count += 1
            out.flush()
            os.fsync(out.fileno())
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
