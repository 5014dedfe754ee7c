"""Background uploads for the agent: a delay to delete first, a bandwidth cap, local retention."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from capture.errors import CaptureError
from capture.session.manifest import read_manifest

from . import enrollment, tus
from .http import Unreachable
from .outbox import flush_outbox
from .uploader import (
    UploadResult,
    forget_release,
    is_released,
    mark_released,
    read_state,
    state_dir,
    upload_session,
)


@dataclass(frozen=True)
class UploadSettings:
    """How the agent uploads: when, how fast, and what it keeps afterwards."""

    delay_minutes: float = 0.0     # wait after a segment is finalised, so the player can delete
    after_review: bool = False     # upload only what the player released on the page
    bandwidth_kib_s: int = 0       # at most this many KiB/s (0: no limit)
    keep_days: float | None = None  # delete the local copy this long after acceptance (None: keep)


@dataclass(frozen=True)
class SessionUpload:
    """What the page shows for one session."""

    session_id: str
    path: str
    status: str  # waiting | queued | uploading | accepted | rejected | refused
    percent: float = 0.0
    reason: str | None = None
    due_monotonic: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"session_id": self.session_id, "status": self.status,
                "percent": round(self.percent, 1), "reason": self.reason}


class Pacer:
    """Keeps an average rate: after `spent(n)` bytes it sleeps until the rate allows more."""

    def __init__(self, bytes_per_s: float, *, sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.rate, self.sleep, self.clock = bytes_per_s, sleep, clock
        self.start = clock()
        self.sent = 0

    def spent(self, n: int) -> None:
        self.sent += n
        if self.rate <= 0:
            return
        ahead = self.sent / self.rate - (self.clock() - self.start)
        if ahead > 0:
            self.sleep(ahead)


class UploadWorker:
    """Uploads queued sessions one at a time on its own thread; never touches the recorder."""

    def __init__(self, settings: UploadSettings, *,
                 say: Callable[[str], None] = lambda _m: None) -> None:
        self.settings, self.say = settings, say
        self._items: dict[str, SessionUpload] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    # -- what the agent and the page call --
    def queue(self, session_dir: Path) -> bool:
        """Queue a finalised segment if an enrolled consent covers it; False if none does."""
        record = read_manifest(session_dir)
        if not record.is_final or enrollment.for_receipt(record.consent.receipt_id) is None:
            return False
        previous = read_state(record.session_id)
        if previous is not None and previous["status"] in ("accepted", "rejected"):
            status, reason = previous["status"], previous.get("reason")
        else:
            status, reason = "waiting", None
        due = time.monotonic() + self.settings.delay_minutes * 60
        with self._lock:
            self._items[record.session_id] = SessionUpload(
                record.session_id, str(session_dir), status, 100.0 if status == "accepted"
                else 0.0, reason, due)
        self._wake.set()
        return True

    def release(self, session_id: str) -> None:
        """The player reviewed the session: upload it (with `after_review`)."""
        mark_released(session_id)
        self._wake.set()

    def forget(self, session_id: str) -> None:
        """The player deleted the session: drop it from the queue."""
        forget_release(session_id)
        with self._lock:
            self._items.pop(session_id, None)

    def states(self) -> list[dict[str, Any]]:
        with self._lock:
            return [item.to_dict() for item in self._items.values()]

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run, args=(self._stop,), daemon=True,
                                        name="capture-uploads")
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    # -- the loop --
    def run(self, stop: threading.Event) -> None:
        failures = 0
        while not stop.is_set():
            item = self._next_due()
            if item is None:
                self._apply_retention()
                self._wake.wait(1.0)
                self._wake.clear()
                continue
            try:
                flush_outbox()
                self._upload(item)
                failures = 0
            except Unreachable as exc:
                failures += 1
                self._set(item.session_id, status="queued", reason=f"waiting for the "
                          f"collector: {exc}")
                stop.wait(min(2.0 ** failures, 60.0))
            except CaptureError as exc:
                self._set(item.session_id, status="refused", reason=str(exc))

    def _next_due(self) -> SessionUpload | None:
        now = time.monotonic()
        with self._lock:
            for item in self._items.values():
                if item.status not in ("waiting", "queued"):
                    continue
                if self.settings.after_review and not is_released(item.session_id):
                    continue
                if item.due_monotonic <= now:
                    return item
        return None

    def _upload(self, item: SessionUpload) -> None:
        rate = self.settings.bandwidth_kib_s * 1024
        pacer = Pacer(rate)
        chunk = tus.DEFAULT_CHUNK if rate <= 0 else max(16 << 10, min(tus.DEFAULT_CHUNK,
                                                                      int(rate)))
        done = {"total": 1, "sent": 0}

        def total(size: int, confirmed: int) -> None:
            done["total"], done["sent"] = max(size, 1), confirmed
            self._set(item.session_id, status="uploading",
                      percent=100.0 * confirmed / done["total"], reason=None)

        def progress(n: int) -> None:
            done["sent"] += n
            self._set(item.session_id, percent=100.0 * done["sent"] / done["total"])
            pacer.spent(n)

        result: UploadResult = upload_session(Path(item.path), chunk_size=chunk,
                                              progress=progress, total=total)
        self._set(item.session_id, status=result.status, reason=result.reason,
                  percent=100.0 if result.status == "accepted" else 0.0)
        self.say(f"upload of {item.session_id}: {result.status}"
                 + (f" ({result.reason})" if result.reason else ""))

    def _set(self, session_id: str, **changes: Any) -> None:
        with self._lock:
            if session_id in self._items:
                self._items[session_id] = replace(self._items[session_id], **changes)

    def _apply_retention(self) -> list[Path]:
        """Delete local copies accepted more than keep_days ago."""
        if self.settings.keep_days is None:
            return []
        from capture.session import store

        cutoff = datetime.now(UTC) - timedelta(days=self.settings.keep_days)
        deleted = []
        for path in sorted(state_dir().glob("*.json")) if state_dir().is_dir() else []:
            state = read_state(path.stem)
            if not state or state["status"] != "accepted" or not state.get("finished_utc"):
                continue
            finished = datetime.strptime(state["finished_utc"], "%Y-%m-%dT%H:%M:%SZ")
            session_dir = Path(state["path"])
            if finished.replace(tzinfo=UTC) <= cutoff and session_dir.is_dir():
                store.delete_session(session_dir)
                deleted.append(session_dir)
                self.say(f"deleted the local copy of {state['session_id']} (accepted by the "
                         f"collector {state['finished_utc']}; kept {self.settings.keep_days:g} "
                         "days)")
        return deleted
