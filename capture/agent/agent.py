"""The agent's loop: find a consented game, record it while it is played, report its state."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from capture import consent, inputs, paths
from capture.agent.notify import ANNOUNCE_S, Notifier
from capture.agent.settings import AgentSettings
from capture.clock import utc_iso
from capture.consent import ConsentReceipt
from capture.errors import CaptureError
from capture.session import store, writer
from capture.session.check_words import check_line, check_title
from capture.session.manifest import read_manifest
from capture.session.reader import needs_recovery
from capture.session.recorder import Recording, RecordOptions
from capture.uploader.uploader import is_released, queued_sessions
from capture.uploader.worker import UploadSettings, UploadWorker

log = logging.getLogger(__name__)

RECORDABLE = frozenset({"video", "keyboard", "mouse", "gamepad"})
POLL_S = 0.25
GAME_CHECK_S = 1.0


@dataclass
class _Active:
    """The game being recorded now."""

    game: str
    receipt: ConsentReceipt
    backend: inputs.InputBackend
    recording: Recording
    since_utc: str
    reported: int = 0


class Agent:
    """Watches for consented games and records them; the local page reads status() from it."""

    def __init__(self, settings: AgentSettings, *, display: str | None = None,
                 say: Callable[[str], None] = print,
                 video_options: Any | None = None, notifier: Notifier | None = None) -> None:
        self.settings = settings
        watched = display or settings.display or os.environ.get("DISPLAY")
        if not watched:
            raise CaptureError("no X display to watch: set DISPLAY or [agent] display")
        self.display: str = watched
        self.say = say
        self.video_options = video_options
        self._lock = threading.RLock()
        self._active: _Active | None = None
        self._watchers: dict[str, inputs.InputBackend] = {}
        self._grants: list[ConsentReceipt] = []
        self._reason = "starting"
        self._last_checks: list[dict[str, Any]] | None = None
        self._last_checks_dir: Path | None = None  # the segment they belong to
        self._announcing: tuple[str, float, int] | None = None  # game, due, notification id
        self.notifier = notifier if notifier is not None else Notifier(say=say)
        self._consent_dirty = True
        self._ledger_stamp: int | None = None
        self._stopping = False
        self.uploads = UploadWorker(UploadSettings(
            delay_minutes=settings.upload_delay_minutes,
            after_review=settings.upload_after_review,
            bandwidth_kib_s=settings.upload_kib_per_s,
            keep_days=settings.keep_days_after_upload), say=say)

    # --- the page's view ----------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        with self._lock:
            active = self._active
            backend = {"name": self.settings.backend, "state": "idle", "detail": ""}
            if self._last_checks_dir is not None and not self._last_checks_dir.exists():
                self._last_checks, self._last_checks_dir = None, None  # deleted meanwhile
            common = {"last_segment_checks": self._last_checks, "uploads": self._upload_states(),
                      "upload_after_review": self.settings.upload_after_review,
                      "notifications": self.notifier.problem}
            if active is None:
                return {"state": "stopping" if self._stopping else "waiting", "game": None,
                        "reason": self._reason, "backend": backend, "session_id": None,
                        "segment": None, "since_utc": None, **common}
            rec = active.recording.status()
            backend.update(state="recording" if rec["state"] == "recording" else "paused",
                           detail=f"segment {rec['segment']}")
            return {"state": rec["state"], "game": active.game, "reason": rec["reason"],
                    "backend": backend, "session_id": rec["session_id"],
                    "segment": rec["segment"], "since_utc": active.since_utc, **common}

    def _upload_states(self) -> list[dict[str, Any]]:
        return [{**u, "released": is_released(u["session_id"])} for u in self.uploads.states()]

    def release_upload(self, session_id: str) -> bool:
        """The player reviewed a queued session and sends it; False if it is not queued."""
        with self._lock:
            waiting = {u["session_id"] for u in self.uploads.states()
                       if u["status"] in ("waiting", "queued")}
            if session_id not in waiting:
                return False
        self.uploads.release(session_id)
        return True

    def session_deleted(self, session_id: str) -> None:
        """A session was deleted on the page: forget its upload and, if shown, its checks."""
        with self._lock:
            self.uploads.forget(session_id)
            if self._last_checks_dir is not None and not self._last_checks_dir.exists():
                self._last_checks, self._last_checks_dir = None, None

    def waiting_for(self) -> str:
        """One plain line: which consented games the agent watches, or how to give consent."""
        with self._lock:
            self._refresh_grants()
            return self._waiting_line("on the agent's page (or with `capture consent grant`)")

    def _waiting_line(self, where_to_consent: str) -> str:
        if self._grants:
            names = sorted({g for grant in self._grants for g in grant.games}, key=str.casefold)
            return "waiting for a consented game to run: watching " + ", ".join(names)
        if consent.active_grants():
            return ("waiting for consent: the consent given does not include video, which "
                    f"recording needs; give one that does {where_to_consent}")
        return ("waiting for consent: no one has consented to a game being recorded yet; give "
                f"consent {where_to_consent}")

    def consent_changed(self) -> None:
        """Re-read the ledger now; a recording whose consent is gone stops before this returns."""
        with self._lock:
            self._consent_dirty = True
            self._refresh_grants()
            active = self._active
            if active is not None and not self._still_consented(active):
                self._stop_active("consent was withdrawn")

    # --- the loop -----------------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        self.say(self.waiting_for())
        self.notifier.check()  # no notification service: said now, once
        self.recover_crashed()
        self._queue_uploads(queued_sessions())  # what a restart interrupted resumes
        self.uploads.start()
        next_game_check = 0.0
        try:
            while not stop.is_set():
                with self._lock:
                    if self._consent_dirty or self._ledger_changed():
                        self._refresh_grants()
                        active = self._active
                        if active is not None and not self._still_consented(active):
                            self._stop_active("consent was withdrawn")
                    active = self._active
                    if active is not None:
                        self._report_new_segments(active)
                        if not active.recording.poll():
                            self._stop_active(active.recording.error or "recording failed")
                        elif time.monotonic() >= next_game_check:
                            next_game_check = time.monotonic() + GAME_CHECK_S
                            if active.backend.find_game_window() is None:
                                self._stop_active(f"{active.game} exited")
                    elif time.monotonic() >= next_game_check:
                        next_game_check = time.monotonic() + GAME_CHECK_S
                        self._start_if_a_game_runs()
                stop.wait(POLL_S)
        finally:
            with self._lock:
                self._stopping = True
                if self._active is not None:
                    self._stop_active("the agent is stopping")
                for watcher in self._watchers.values():
                    watcher.stop()  # only closes its window-lookup connection
                self._watchers.clear()
            self.uploads.stop()

    def recover_crashed(self) -> list[Path]:
        """Finalise sessions a crash left behind (called once at start).

        A session that cannot be read or recovered is reported (by path) and skipped: the agent
        carries on with the others and starts anyway.
        """
        recovered: list[Path] = []
        try:
            candidates = store.session_dirs()
        except Exception as exc:  # an unreadable index or sessions folder must not stop the agent
            log.debug("listing sessions failed", exc_info=True)
            self.say(f"warning: could not list the sessions to recover: {_plain(exc)}")
            return recovered
        for session_dir in candidates:
            try:
                if not needs_recovery(session_dir):
                    continue
                writer.recover(session_dir)
            except Exception as exc:  # one bad session never hides the rest
                log.debug("recovering %s failed", session_dir, exc_info=True)
                self.say(f"warning: could not recover {session_dir}: {_plain(exc)}")
                continue
            recovered.append(session_dir)
            self.say(f"recovered a session left by a crash: {session_dir}")
        return recovered

    # --- internals ----------------------------------------------------------------------------
    def _ledger_changed(self) -> bool:
        """True when the ledger file changed on disk (e.g. `capture consent` in a terminal)."""
        try:
            stamp = paths.ledger_path().stat().st_mtime_ns
        except FileNotFoundError:
            stamp = None
        changed = stamp != self._ledger_stamp
        self._ledger_stamp = stamp
        return changed

    def _refresh_grants(self) -> None:
        self._grants = [g for g in consent.active_grants() if "video" in g.scope]
        self._consent_dirty = False
        if not self._grants:
            self._reason = self._waiting_line("on this page")

    def _still_consented(self, active: _Active) -> bool:
        return any(g.receipt_id == active.receipt.receipt_id and
                   any(game.casefold() == active.game.casefold() for game in g.games)
                   for g in self._grants)

    def _watcher(self, game: str) -> inputs.InputBackend:
        if game not in self._watchers:
            self._watchers[game] = inputs.backend()(game, display=self.display)
        return self._watchers[game]

    def _start_if_a_game_runs(self) -> None:
        for grant in self._grants:
            for game in grant.games:
                window = self._watcher(game).find_game_window()
                if window is None:
                    continue
                if not self._announced_before_recording(game):
                    return
                scope = frozenset(grant.scope) & RECORDABLE
                opts = RecordOptions(
                    game=game, backend=self.settings.backend, fps=self.settings.fps,
                    scope=scope, player=grant.player, display=self.display,
                    video_options=self.video_options,
                    idle_pause_s=self.settings.idle_pause_seconds,
                    max_segment_s=self.settings.segment_minutes * 60)
                backend = inputs.backend()(game, keyboard="keyboard" in scope,
                                           mouse="mouse" in scope, display=self.display)
                recording = Recording(opts, receipt=grant, input_backend=backend,
                                      window=window, display=self.display, say=self.say)
                try:
                    first = recording.start()
                except CaptureError as exc:
                    self._reason = f"could not record {game}: {exc}"
                    self.say(f"warning: {self._reason}")
                    return
                self._active = _Active(game, grant, backend, recording, utc_iso())
                self.say(f"{game} is running: recording into {first} (paused while it is not "
                         "focused)")
                return
        self._announcing = None  # the announced game is gone again
        if self._grants:
            self._reason = self._waiting_line("on this page")

    def _announced_before_recording(self, game: str) -> bool:
        """True once the "recording starts" notice for `game` has been shown and taken down
        (or cannot be shown), so the recording may begin: the notice is never in the frames."""
        now = time.monotonic()
        if self._announcing is None or self._announcing[0] != game:
            shown = self.notifier.announce_recording(game)
            if shown is None:
                return True  # no notification service (said once): record without the notice
            self._announcing = (game, now + ANNOUNCE_S, shown)
            self._reason = (f"{game} is running: recording starts in {ANNOUNCE_S:g} s, once the "
                            "desktop notification has gone")
            self.say(self._reason)
            return False
        _, due, shown = self._announcing
        if now < due:
            return False
        self.notifier.close(shown)
        self._announcing = None
        return True

    def _stop_active(self, why: str) -> None:
        active = self._active
        if active is None:
            return
        self._active = None
        active.recording.stop()
        self._reason = f"stopped: {why}"
        self.say(f"stopped recording {active.game}: {why}")
        self.notifier.in_background(partial(self.notifier.recording_stopped, active.game,
                                                   why))
        self._report_new_segments(active)

    def _report_new_segments(self, active: _Active) -> None:
        finished = active.recording.finished
        while active.reported < len(finished):
            self._report_checks(finished[active.reported])
            active.reported += 1

    def _report_checks(self, session_dir: Path) -> None:
        """Show the record-time checks right after a segment is finalised."""
        try:
            qa = read_manifest(session_dir).qa
            checks = [c.to_dict() for c in qa.checks] if qa else []
        except CaptureError as exc:
            self.say(f"warning: {exc}")
            return
        self._last_checks, self._last_checks_dir = checks, session_dir
        marks = ", ".join(f"{check_title(c['name'])} {'ok' if c['ok'] else 'WARNING'}"
                          for c in checks)
        self.say(f"checks for {session_dir.name}: {marks}")
        for check in checks:
            if not check["ok"]:
                self.say(f"  {check_line(check['name'], False, check['detail'])}")
        self._queue_uploads([session_dir])

    def _queue_uploads(self, session_dirs: list[Path]) -> None:
        """Queue finalised segments recorded under an enrolled study's consent for upload."""
        for session_dir in session_dirs:
            try:
                if self.uploads.queue(session_dir):
                    self.say(f"{session_dir.name} is queued for upload")
            except CaptureError as exc:
                self.say(f"warning: {session_dir.name} cannot be queued for upload: {exc}")


def _plain(exc: BaseException) -> str:
    """An error in plain words: a CaptureError as it is, anything else with its kind named."""
    if isinstance(exc, CaptureError):
        return str(exc)
    if isinstance(exc, UnicodeDecodeError):
        return "a file in it is not UTF-8 text"
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.strerror}" + (f" ({exc.filename})" if exc.filename else "")
    return f"{type(exc).__name__}: {exc}"
