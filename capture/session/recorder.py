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
from typing import TYPE_CHECKING

from capture import formats, inputs, paths, video
from capture.clock import ClockPair, now_ns
from capture.consent import require_consent
from capture.errors import CaptureError
from capture.inputs import InputEvent, WindowInfo

if TYPE_CHECKING:
    from capture.video.obs.settings import ObsSettings
from capture.journal import JournalWriter
from capture.session import bundle, store

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
    obs: ObsSettings | None = None
    extra_notes: list[str] = field(default_factory=list)


def make_video_backend(opts: RecordOptions) -> video.VideoBackend:
    """The chosen video backend; OBS gets its connection settings (never stored anywhere)."""
    cls = video.backend(opts.backend)
    if opts.backend == "obs":
        from capture.video.obs.settings import resolve

        return cls(settings=opts.obs or resolve())  # type: ignore[call-arg]
    return cls()


class _EventWriter:
    """Drains the input queue into the events journal on its own thread (sinks only enqueue)."""

    def __init__(self, journal: JournalWriter) -> None:
        self.journal = journal
        self.queue: queue.SimpleQueue[InputEvent | None] = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._run, name="event-writer", daemon=True)
        self.thread.start()

    def sink(self, event: InputEvent) -> None:
        self.queue.put(event)

    def _run(self) -> None:
        while (event := self.queue.get()) is not None:
            self.journal.append(event.to_record())

    def close(self) -> None:
        self.queue.put(None)
        self.thread.join()
        self.journal.close()


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


def record(opts: RecordOptions, *, stop: threading.Event | None = None,
           say: Callable[[str], None] = print,
           on_started: Callable[[Path], None] | None = None) -> Path:
    """Record the game until the duration passes, `stop` is set or the game exits.

    Nothing is written unless a valid consent covers the game and every kind in opts.scope.
    Returns the finalised session directory.
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

    session_id = bundle.new_session_id(opts.game)
    parent = opts.out or paths.sessions_dir()
    session_dir = parent / session_id
    session_dir.mkdir(parents=True)
    (session_dir / formats.LOCK).write_text(str(os.getpid()))
    start = ClockPair.now()
    manifest = bundle.initial_manifest(
        session_id=session_id, player=receipt.player, receipt=receipt, game=opts.game,
        window=window, video_backend=opts.backend, input_info=input_backend.info(),
        fps=opts.fps, start=start)
    bundle.write_manifest(session_dir, manifest)
    store.register(session_dir)

    recorder = make_video_backend(opts)
    try:
        recorder.start(video.CaptureTarget(display=display, window_id=window.window_id),
                       session_dir, video.VideoSettings(fps=opts.fps))
    except BaseException:
        # Nothing was recorded yet (input starts after video): leave no empty session behind.
        with contextlib.suppress(Exception):
            recorder.stop()
        shutil.rmtree(session_dir, ignore_errors=True)
        raise
    events = _EventWriter(JournalWriter(session_dir / formats.EVENTS_JOURNAL))
    focused = threading.Event()
    gamepad = None
    if "gamepad" in opts.scope:
        from capture.inputs.gamepad import GamepadCapture  # loads SDL: only when consented

        gamepad = GamepadCapture(sink=events.sink, is_focused=focused.is_set)

    def on_focus(is_focused: bool, _window: WindowInfo | None) -> None:
        if is_focused:
            focused.set()
        else:
            focused.clear()
        recorder.set_capturing(is_focused)

    error: str | None = None
    video_result = None
    try:
        recorder.set_capturing(False)
        input_backend.start(events.sink, on_focus)
        if gamepad is not None:
            gamepad.start()
        if focused.wait(0.5):
            recorder.set_capturing(True)
        say(f"recording {opts.game!r} into {session_dir}")
        if on_started is not None:
            on_started(session_dir)
        deadline = None if opts.duration_s is None else now_ns() + int(opts.duration_s * 1e9)
        next_game_check = time.monotonic() + GAME_POLL_S
        while not stop.is_set():
            if deadline is not None and now_ns() >= deadline:
                break
            if not recorder.alive():
                error = "the video recorder stopped unexpectedly"
                break
            if opts.stop_when_game_exits and time.monotonic() >= next_game_check:
                next_game_check = time.monotonic() + GAME_POLL_S
                if input_backend.find_game_window() is None:
                    say("the game exited; stopping")
                    break
            stop.wait(0.05)
    finally:
        if gamepad is not None:
            gamepad.stop()  # before the journal closes, so its closing releases are kept
        input_backend.stop()
        events.close()
        result = recorder.stop()
        video_result = result.to_dict()
        error = error or result.error
    end = ClockPair.now()
    input_info = input_backend.info()
    if gamepad is not None:
        input_info["gamepad"] = gamepad.info()
    bundle.finalise(session_dir, status="incomplete" if error else "complete",
                    video_result=video_result, input_info=input_info, end=end, error=error)
    if error:
        say(f"warning: {error}; the session was kept and marked incomplete")
    return session_dir
