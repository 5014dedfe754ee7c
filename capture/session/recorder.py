"""One recording from start to finish: consent check, wait for the game, capture, finalise."""

from __future__ import annotations

import contextlib
import os
import queue
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from capture import inputs, paths, video
from capture.clock import ClockPair, now_ns
from capture.consent import ConsentReceipt, receipt_status, require_consent
from capture.errors import CaptureError, ConsentError, DiskFullError
from capture.inputs import EventKind, InputEvent, WindowInfo
from capture.journal import JournalWriter
from capture.session import store, writer
from capture.session.manifest import ComponentInfo, ConsentRef, GameInfo, InputInfo, RunInfo

if TYPE_CHECKING:
    from capture.inputs.gamepad import GamepadCapture

DEFAULT_SCOPE = frozenset({"video", "keyboard", "mouse"})
GAME_POLL_S = 0.5


@dataclass
class RecordOptions:
    game: str
    backend: str = "builtin"
    fps: int = 30
    duration_s: float | None = None
    out: Path | None = None
    scope: frozenset[str] = DEFAULT_SCOPE
    player: str | None = None
    display: str | None = None
    wait_timeout_s: float | None = None
    stop_when_game_exits: bool = True
    video_options: Any | None = None       # the video backend's own settings (None: defaults)
    idle_pause_s: float | None = None      # pause video after this long without input
    max_segment_s: float | None = None     # start a new segment bundle after this long
    extra_notes: list[str] = field(default_factory=list)


def make_video_backend(opts: RecordOptions) -> video.VideoBackend:
    """The chosen video backend, built from its own settings (never stored in a session)."""
    try:
        cls = video.backend(opts.backend)
    except (ValueError, ImportError) as exc:
        raise CaptureError(str(exc)) from None
    return cls.create(opts.video_options)


# Input a player makes (not what we derive: pointer positions, focus changes).
ACTIVITY_KINDS = frozenset(EventKind) - {EventKind.POINTER, EventKind.FOCUS_IN,
                                         EventKind.FOCUS_OUT}


_BEGIN_HANDOVER = object()
HANDOVER_TIMEOUT_S = 3.0


class _EventWriter:
    """Drains the input queue into the current segment's journal on its own thread.

    Sinks only enqueue. The writer knows what is held and whether the game has focus, so a
    segment boundary can close holds in the old journal and reopen them in the new one.
    """

    def __init__(self, journal: JournalWriter, on_activity: Callable[[], None]) -> None:
        self.journal = journal
        self.on_activity = on_activity
        self.queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.held: dict[tuple[EventKind, str | None, str | None], InputEvent] = {}
        self.focus: InputEvent | None = None
        self.thread = threading.Thread(target=self._run, name="event-writer", daemon=True)
        self.thread.start()

    def sink(self, event: InputEvent) -> None:
        self.queue.put(event)

    def begin_handover(self) -> None:
        """Until finish_handover says at which instant to split them, new events go on into
        the current journal (so a crash loses none) and are kept to sort out at the split."""
        self.queue.put(_BEGIN_HANDOVER)

    def finish_handover(self, journal: JournalWriter, boundary_ns: int) -> None:
        """Events from boundary_ns on go (again) to `journal`, which is on disk when this
        returns; the current segment's finalise leaves them out (finalise's frames_before_ns)."""
        done = threading.Event()
        self.queue.put((journal, boundary_ns, done))
        done.wait()

    def _track(self, event: InputEvent) -> None:
        if event.kind.release_of() is not None:
            self.held[(event.kind, event.key or event.button or event.axis, event.device)] = event
        elif (press := event.kind.press_of()) is not None:
            self.held.pop((press, event.key or event.button or event.axis, event.device), None)
        elif event.kind in (EventKind.FOCUS_IN, EventKind.FOCUS_OUT):
            self.focus = event if event.kind == EventKind.FOCUS_IN else None

    def _switch(self, journal: JournalWriter, t_ns: int) -> None:
        def copy(event: InputEvent, kind: EventKind | None) -> dict[str, Any]:
            record = event.to_record()
            record.update(kind=kind, t_ns=t_ns, synthetic=True, time_source="derived")
            return record

        for event in self.held.values():
            self.journal.append(copy(event, event.kind.release_of()))
        self.journal.close()
        self.journal = journal
        if self.focus is not None:
            journal.append(copy(self.focus, EventKind.FOCUS_IN))
        for event in self.held.values():
            journal.append(copy(event, event.kind))

    def _write(self, event: InputEvent) -> None:
        self._track(event)
        self.journal.append(event.to_record())

    def _run(self) -> None:
        handing_over: list[InputEvent] | None = None
        while (item := self.queue.get()) is not None:
            if item is _BEGIN_HANDOVER:
                handing_over = []
            elif isinstance(item, tuple):
                journal, boundary_ns, done = item
                for event in handing_over or []:
                    if event.t_ns < boundary_ns:
                        self._track(event)       # already in the current journal
                self._switch(journal, boundary_ns)
                for event in handing_over or []:
                    if event.t_ns >= boundary_ns:
                        self._write(event)
                self.journal.flush()
                handing_over = None
                done.set()
            else:
                assert isinstance(item, InputEvent)
                if handing_over is not None:
                    handing_over.append(item)
                    self.journal.append(item.to_record())
                else:
                    self._write(item)
                if item.kind in ACTIVITY_KINDS and not item.synthetic:
                    self.on_activity()

    def close(self) -> None:
        self.queue.put(None)
        self.thread.join()
        self.journal.close()


@dataclass
class _Segment:
    index: int
    session_dir: Path
    video: video.VideoBackend
    started_ns: int


def _first_frame_ns(session_dir: Path, timeout_s: float) -> int | None:
    """Capture time of the first frame in a segment's timeline, once it is there."""
    timeline = writer.video_output(session_dir).timeline
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        first = timeline.first_capture_time_ns()
        if first is not None:
            return first
        time.sleep(0.02)
    return None


def wait_for_game(backend: inputs.InputBackend, stop: threading.Event,
                  timeout_s: float | None, say: Callable[[str], None]) -> WindowInfo | None:
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    announced = False
    while not stop.is_set():
        window = backend.find_game_window()
        if window is not None:
            return window
        if not announced:
            say(f"waiting for a window of {backend.game!r} to appear ...")
            announced = True
        if deadline is not None and time.monotonic() > deadline:
            raise CaptureError(f"no window of {backend.game!r} appeared within {timeout_s:g} s")
        stop.wait(GAME_POLL_S)
    return None


class Recording:
    """A recording of one game: segments one after another, paused while the game is not focused
    or the player is idle. Input capture runs across segment boundaries without a gap."""

    def __init__(self, opts: RecordOptions, *, receipt: ConsentReceipt,
                 input_backend: inputs.InputBackend, window: WindowInfo, display: str,
                 say: Callable[[str], None] = print) -> None:
        self.opts = opts
        self.receipt = receipt
        self.input_backend = input_backend
        self.window = window
        self.display = display
        self.say = say
        self.run_id = writer.new_session_id(opts.game) if opts.max_segment_s else None
        self.segment: _Segment | None = None
        self.finished: list[Path] = []
        self.error: str | None = None
        self.focused = threading.Event()
        self.idle_paused = False
        self.last_activity_ns = now_ns()
        self._lock = threading.Lock()
        self._handing_over: _Segment | None = None
        self._frozen = False
        self._early_lock = threading.Lock()
        self._early_events: list[InputEvent] = []
        self.events: _EventWriter | None = None
        self.gamepad: GamepadCapture | None = None
        self.discard = False  # consent withdrawn: stop and keep nothing
        self.disk_full: str | None = None  # why a segment could not be finalised

    # --- lifecycle ----------------------------------------------------------------------------
    def start(self) -> Path:
        # Input starts first, so the first segment opens knowing whether the game has focus
        # (pausing an external recorder right after its start and resuming it at once has
        # been seen to hang it).
        self.input_backend.start(self._sink, self._on_focus)
        self.focused.wait(0.5)
        try:
            segment = self._open_segment(0)
        except BaseException:
            self.input_backend.stop()
            raise
        with self._early_lock:
            self.segment = segment
            self.events = _EventWriter(writer.events_journal(segment.session_dir),
                                       self._on_activity)
            for event in self._early_events:
                self.events.sink(event)
            self._early_events.clear()
        if "gamepad" in self.opts.scope:
            from capture.inputs.gamepad import GamepadCapture  # loads SDL: only when consented

            self.gamepad = GamepadCapture(is_focused=self.focused.is_set)
            self.gamepad.start(self.events.sink)
        self._apply_capture()
        return segment.session_dir

    def _sink(self, event: InputEvent) -> None:
        """Input goes to the event writer; before it exists (start-up) it waits in a list."""
        events = self.events
        if events is None:
            with self._early_lock:
                if self.events is None:
                    self._early_events.append(event)
                    return
                events = self.events
        events.sink(event)

    def poll(self) -> bool:
        """Housekeeping, called often: idle pause, segment rotation. False once it failed."""
        segment = self.segment
        if segment is None or self.error:
            return False
        if not segment.video.alive():
            self.error = "the video recorder stopped unexpectedly"
            return False
        journal_error = self.events.journal.error if self.events is not None else None
        if journal_error is not None:  # the disk is full: stop now, keep what was written
            self.error = str(journal_error)
            return False
        idle_ns = None if self.opts.idle_pause_s is None else int(self.opts.idle_pause_s * 1e9)
        if (idle_ns is not None and self.focused.is_set() and not self.idle_paused
                and now_ns() - self.last_activity_ns >= idle_ns):
            self.idle_paused = True
            self._apply_capture()
            self.say(f"paused: no input for {self.opts.idle_pause_s:g} s")
        if (self.opts.max_segment_s is not None
                and now_ns() - segment.started_ns >= self.opts.max_segment_s * 1e9):
            self.rotate()
        return self.error is None

    def rotate(self) -> None:
        """Close the current segment and continue in a new one, with no gap in input or video.

        The new video starts while the old one still records; the boundary is the new video's
        first frame: the old segment keeps frames and input before it, the new one from it on.
        """
        old = self.segment
        assert old is not None and self.events is not None
        if not old.video.capabilities.overlapping_segments:
            # A backend that records one file at a time cannot overlap two segments, and
            # restarting it between segments proved unreliable: keep one segment.
            self.opts.max_segment_s = None
            self.say(f"note: the {old.video.name} backend records one file at a time; this "
                     "play session stays in one segment")
            return
        try:
            new = self._open_segment(old.index + 1)
        except Exception as exc:  # keep recording into the old segment rather than lose data
            self.say(f"warning: could not start a new segment ({exc}); continuing the current one")
            return
        self.events.begin_handover()
        with self._lock:
            self._handing_over = old
            self.segment = new
        capturing = self._apply_capture()
        boundary = _first_frame_ns(new.session_dir, HANDOVER_TIMEOUT_S) if capturing else None
        with self._lock:
            old.video.set_capturing(False)
            self._handing_over = None
        boundary = boundary or now_ns()
        self.events.finish_handover(writer.events_journal(new.session_dir), boundary)
        self._finish_segment(old, frames_before_ns=boundary)
        self.say(f"segment {new.index}: {new.session_dir}")

    def stop(self) -> list[Path]:
        """Stop everything and finalise the last segment; returns every segment's directory."""
        with self._lock:
            self._frozen = True  # capture state stays as it is while everything stops (a
            # paused external recorder does not always stop cleanly)
        if self.gamepad is not None:
            self.gamepad.stop()  # before the journal closes, so its closing releases are kept
        self.input_backend.stop()
        if self.events is not None:
            self.events.close()
        if self.segment is not None:
            self._finish_segment(self.segment)
            self.segment = None
        return list(self.finished)

    # --- state for the agent ------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        segment = self.segment
        if not self.focused.is_set():
            state, reason = "paused", "paused: another window has focus"
        elif self.idle_paused:
            state, reason = "paused", f"paused: no input for {self.opts.idle_pause_s:g} s"
        else:
            state, reason = "recording", f"{self.opts.game} is focused"
        return {"state": state, "reason": reason,
                "session_id": segment.session_dir.name if segment else None,
                "segment": segment.index if segment else None}

    # --- internals ----------------------------------------------------------------------------
    def _open_segment(self, index: int) -> _Segment:
        session_id = writer.new_session_id(self.opts.game)
        session_dir = (self.opts.out or paths.sessions_dir()) / session_id
        # Known to list, recover and withdraw before its first byte exists.
        store.register(session_dir)
        receipt = self.receipt
        manifest = writer.initial_manifest(
            session_id=session_id, player=receipt.player,
            consent=ConsentRef(receipt_id=receipt.receipt_id, license=receipt.license,
                               scope=tuple(sorted(receipt.scope)),
                               synthetic=bool(receipt.synthetic)),
            game=GameInfo(name=self.opts.game, window_class=tuple(self.window.wm_class),
                          executable=self.window.executable, title=self.window.title),
            video_backend=self.opts.backend, input_info=self._input_info(), fps=self.opts.fps,
            start=ClockPair.now(),
            run=RunInfo(id=self.run_id, segment=index) if self.run_id is not None else None)
        writer.create_session(session_dir, manifest, recorder_pid=os.getpid())
        recorder = make_video_backend(self.opts)
        try:
            recorder.start(video.CaptureTarget(display=self.display,
                                               window_id=self.window.window_id),
                           writer.video_output(session_dir),
                           video.VideoSettings(fps=self.opts.fps))
            if not (self.focused.is_set() and not self.idle_paused):
                recorder.set_capturing(False)
        except BaseException:
            # Nothing was recorded into it yet: leave no empty session behind.
            with contextlib.suppress(Exception):
                recorder.stop()
            shutil.rmtree(session_dir, ignore_errors=True)
            raise
        return _Segment(index, session_dir, recorder, now_ns())

    def _input_info(self) -> InputInfo:
        gamepad = ComponentInfo.from_dict(self.gamepad.info()) if self.gamepad else None
        return InputInfo(backend=ComponentInfo.from_dict(self.input_backend.info()),
                         gamepad=gamepad)

    def _finish_segment(self, segment: _Segment, frames_before_ns: int | None = None) -> None:
        result = segment.video.stop()
        if self.discard:
            shutil.rmtree(segment.session_dir, ignore_errors=True)
            return
        error = result.error or self.error  # the backend's own reason is the more precise
        try:
            manifest = writer.finalise(segment.session_dir, video_result=result,
                                       input_info=self._input_info(), end=ClockPair.now(),
                                       error=error, frames_before_ns=frames_before_ns)
        except CaptureError as exc:
            if not isinstance(exc, DiskFullError) and "disk full" not in str(exc):
                raise
            # Finalising needs space too: leave the session for `capture sessions recover`.
            self.disk_full = (f"{segment.session_dir}: disk full: recording stopped; free some "
                              "space and run `capture sessions recover`")
            self.say(f"error: {self.disk_full}")
            return
        if manifest.status == "incomplete":
            self.say(f"warning: {manifest.error}; the session was kept and marked incomplete")
        self.finished.append(segment.session_dir)

    def _apply_capture(self) -> bool:
        """Grab video only while the game is focused and the player is not idle."""
        on = self.focused.is_set() and not self.idle_paused
        with self._lock:
            if self._frozen:
                return on
            for segment in (self.segment, self._handing_over):
                if segment is not None:
                    segment.video.set_capturing(on)
        return on

    def _on_focus(self, is_focused: bool, _window: WindowInfo | None) -> None:
        if is_focused:
            self.focused.set()
            self.last_activity_ns = now_ns()
            self.idle_paused = False  # returning to the game resumes a paused recording
        else:
            self.focused.clear()
        self._apply_capture()

    def _on_activity(self) -> None:
        self.last_activity_ns = now_ns()
        if self.idle_paused:
            self.idle_paused = False
            self._apply_capture()


def record(opts: RecordOptions, *, stop: threading.Event | None = None,
           say: Callable[[str], None] = print,
           on_started: Callable[[Path], None] | None = None) -> Path:
    """Record the game until the duration passes, `stop` is set or the game exits.

    Nothing is written unless a valid consent covers the game and every kind in opts.scope.
    Returns the (last) finalised session directory.
    """
    stop = stop or threading.Event()
    receipt = require_consent(opts.game, set(opts.scope), opts.player)
    display = opts.display or os.environ.get("DISPLAY")
    if not display:
        raise CaptureError("no X display: set DISPLAY or pass --display")
    input_backend = inputs.backend()(
        opts.game, keyboard="keyboard" in opts.scope, mouse="mouse" in opts.scope,
        display=display)
    window = wait_for_game(input_backend, stop, opts.wait_timeout_s, say)
    if window is None:
        raise CaptureError("stopped before the game appeared; nothing was recorded")

    recording = Recording(opts, receipt=receipt, input_backend=input_backend, window=window,
                          display=display, say=say)
    watch = ConsentWatch(receipt.receipt_id, opts.game)
    first = recording.start()
    withdrawn: str | None = None
    try:
        say(f"recording {opts.game!r} into {first}")
        if on_started is not None:
            on_started(first)
        deadline = None if opts.duration_s is None else now_ns() + int(opts.duration_s * 1e9)
        next_check = time.monotonic() + GAME_POLL_S
        while not stop.is_set():
            if deadline is not None and now_ns() >= deadline:
                break
            if not recording.poll():
                break
            if time.monotonic() >= next_check:
                next_check = time.monotonic() + GAME_POLL_S
                withdrawn = watch.withdrawn()
                if withdrawn is not None:
                    recording.discard = True
                    break
                if opts.stop_when_game_exits and input_backend.find_game_window() is None:
                    say("the game exited; stopping")
                    break
            stop.wait(0.05)
    finally:
        segments = recording.stop()
    if withdrawn is not None:
        for session_dir in segments:
            shutil.rmtree(session_dir, ignore_errors=True)
        raise ConsentError(f"{withdrawn}: the recording was stopped and nothing of it was kept")
    if recording.disk_full is not None:
        raise CaptureError(recording.disk_full)
    if not segments:
        raise CaptureError("the recording stopped before any segment was finalised")
    return segments[-1]


class ConsentWatch:
    """Notices a withdrawal of the consent a recording runs under (e.g. `capture consent revoke`
    in another terminal): the ledger is re-read whenever its file changes."""

    def __init__(self, receipt_id: str, game: str) -> None:
        self.receipt_id, self.game = receipt_id, game
        self._stamp = self._ledger_stamp()

    @staticmethod
    def _ledger_stamp() -> tuple[int, int] | None:
        try:
            st = paths.ledger_path().stat()
        except FileNotFoundError:
            return None
        return st.st_mtime_ns, st.st_size

    def withdrawn(self) -> str | None:
        """None while the consent holds; else why recording must stop (fails closed)."""
        stamp = self._ledger_stamp()
        if stamp == self._stamp:
            return None
        self._stamp = stamp
        try:
            status = receipt_status(self.receipt_id, game=self.game)
        except CaptureError as exc:
            return f"the consent ledger cannot be read any more ({exc})"
        if status != "active":
            return f"consent {self.receipt_id} for {self.game!r} was withdrawn"
        return None
