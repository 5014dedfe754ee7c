"""The one test sink for input backends: keeps every event and focus call, waits for events."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from capture.inputs import InputEvent, WindowInfo


class EventRecorder:
    """A sink (and on_focus callback) that keeps everything and lets a test wait for events."""

    def __init__(self, timeout_s: float = 5.0) -> None:
        self.events: list[InputEvent] = []
        self.focus_calls: list[tuple[bool, WindowInfo | None]] = []
        self.timeout_s = timeout_s
        self._changed = threading.Condition()

    def __call__(self, event: InputEvent) -> None:
        with self._changed:
            self.events.append(event)
            self._changed.notify_all()

    def on_focus(self, focused: bool, window: WindowInfo | None) -> None:
        self.focus_calls.append((focused, window))

    def focus_ids(self) -> list[tuple[bool, int | None]]:
        return [(focused, w.window_id if w else None) for focused, w in self.focus_calls]

    def wait_for(self, predicate: Callable[[InputEvent], bool], count: int = 1,
                 timeout_s: float | None = None) -> InputEvent:
        """The `count`-th event (seen or still to come) matching `predicate`."""
        deadline = time.monotonic() + (self.timeout_s if timeout_s is None else timeout_s)
        with self._changed:
            while True:
                matches = [e for e in self.events if predicate(e)]
                if len(matches) >= count:
                    return matches[count - 1]
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"no matching event; got {self.kinds()}")
                self._changed.wait(remaining)

    def wait_kind(self, kind: str, key: str | None = None, after: int = 0) -> InputEvent:
        return self.wait_for(lambda e: e.kind == kind and e.t_ns >= after
                             and (key is None or e.key == key))

    def kinds(self) -> list[str]:
        return [e.kind if e.key is None and e.button is None else f"{e.kind}:{e.key or e.button}"
                for e in self.events]

    def of_kind(self, kind: str) -> list[InputEvent]:
        return [e for e in self.events if e.kind == kind]
