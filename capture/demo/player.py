"""A scripted player: real X11 input through XTEST, and a tally of what it sent to the game."""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field

from capture.clock import now_ns
from capture.inputs.xtest import XTestInjector


@dataclass
class Tally:
    """What the player sent while the game had focus, to compare with what was recorded."""

    mouse_dx: float = 0.0
    mouse_dy: float = 0.0
    wheel_vertical: float = 0.0
    clicks: Counter[str] = field(default_factory=Counter)
    key_presses: Counter[str] = field(default_factory=Counter)
    # Sent to another window: how many of each kind (key, move, click, wheel), and the host-clock
    # spans in which they were sent, to look for them among the recorded events.
    elsewhere: Counter[str] = field(default_factory=Counter)
    elsewhere_spans_ns: list[tuple[int, int]] = field(default_factory=list)

    @property
    def sent_while_unfocused(self) -> int:
        return sum(self.elsewhere.values())


class ScriptedPlayer:
    """Plays the demo game for `duration_s`, spending a stretch in another window."""

    def __init__(self, display: str, game_window: int, other_window: int | None) -> None:
        self.injector = XTestInjector(display)
        self.game_window = game_window
        self.other_window = other_window
        self.tally = Tally()
        self._focused = False

    def _focus(self, window: int, is_game: bool) -> None:
        self.injector.focus(window)
        self._focused = is_game
        # Video resumes a few ms after focus returns; input before its first frame has no frame.
        time.sleep(0.4)

    def _hold(self, key: str, seconds: float, stop: threading.Event) -> None:
        self.injector.key_down(key)
        if self._focused:
            self.tally.key_presses[key] += 1
        else:
            self.tally.elsewhere["key"] += 1
        stop.wait(seconds)
        self.injector.key_up(key)

    def _move(self, dx: int, dy: int, steps: int, seconds: float, stop: threading.Event) -> None:
        for _ in range(steps):
            if stop.is_set():
                return
            self.injector.move_relative(dx, dy)
            if self._focused:
                self.tally.mouse_dx += dx
                self.tally.mouse_dy += dy
            else:
                self.tally.elsewhere["move"] += 1
            time.sleep(seconds / steps)

    def _click(self, button: str) -> None:
        self.injector.click(button)
        if self._focused:
            self.tally.clicks[button] += 1
        else:
            self.tally.elsewhere["click"] += 1

    def _wheel(self, clicks: int) -> None:
        self.injector.wheel(clicks)
        if self._focused:
            self.tally.wheel_vertical += clicks
        else:
            self.tally.elsewhere["wheel"] += 1

    def play(self, duration_s: float, stop: threading.Event) -> Tally:
        """Run the script until duration_s has passed (minus a margin) or stop is set."""
        start = time.monotonic()
        self._focus(self.game_window, True)
        round_number = 0
        while not stop.is_set() and time.monotonic() - start < duration_s - 3.5:
            self._hold("d", 0.6, stop)
            self._move(6, -2, 20, 0.5, stop)
            self._click("left")
            self._hold("s", 0.4, stop)
            self._wheel(2)
            self._hold("w", 0.5, stop)
            self._move(-4, 3, 25, 0.5, stop)
            self._click("right")
            self._hold("a", 0.5, stop)
            self._hold("space", 0.3, stop)
            self._wheel(-1)
            round_number += 1
            if round_number == 2 and self.other_window is not None:
                # A stretch in another window: none of this may reach the recording.
                self._focus(self.other_window, False)
                span_start = now_ns()
                self._hold("d", 0.4, stop)
                self._move(10, 10, 10, 0.4, stop)
                self._click("left")
                self._wheel(1)
                self.tally.elsewhere_spans_ns.append((span_start, now_ns()))
                self._focus(self.game_window, True)
        stop.wait(0.3)
        self.injector.close()
        return self.tally
