"""The input backend interface and the event record every backend produces."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(slots=True)
class InputEvent:
    """One input event; field meanings are documented in schemas/events.v1.arrow.json."""

    t_ns: int
    kind: str
    time_source: str = "receive"
    synthetic: bool = False
    key: str | None = None
    keycode: int | None = None
    keysym: int | None = None
    button: str | None = None
    dx: float | None = None
    dy: float | None = None
    x: int | None = None
    y: int | None = None
    axis: str | None = None
    value: float | None = None
    device: str | None = None
    window: str | None = None

    def to_record(self) -> dict[str, Any]:
        """The journal/table row: None fields are left out to keep journals small."""
        return {k: v for k, v in asdict(self).items() if v is not None}


def release_held(held_keys: dict[Any, InputEvent], held_buttons: dict[Any, InputEvent],
                 t_ns: int) -> list[InputEvent]:
    """Synthetic releases at `t_ns` for every held key and button (by their presses); empties
    both maps. Backends close holds this way when focus is lost or capture stops."""
    derived: dict[str, Any] = {"t_ns": t_ns, "time_source": "derived", "synthetic": True}
    releases = [InputEvent(kind="key_release", key=press.key, keycode=press.keycode,
                           keysym=press.keysym, device=press.device, **derived)
                for press in held_keys.values()]
    releases += [InputEvent(kind="button_release", button=press.button, device=press.device,
                            **derived) for press in held_buttons.values()]
    held_keys.clear()
    held_buttons.clear()
    return releases


@dataclass(frozen=True, slots=True)
class WindowInfo:
    """A top-level window and what identifies its game."""

    window_id: int
    wm_class: tuple[str, ...] = ()   # (instance, class) on X11
    title: str = ""
    pid: int | None = None
    executable: str | None = None    # process name, e.g. 'minetest'
    geometry: tuple[int, int, int, int] = (0, 0, 0, 0)  # x, y, width, height on the root

    def matches(self, game: str) -> bool:
        """True if `game` names this window's executable or window class (case-insensitive)."""
        g = game.lower()
        names = [c.lower() for c in self.wm_class]
        if self.executable:
            names.append(self.executable.lower())
        return g in names


@dataclass(slots=True)
class FocusState:
    """Whether the consented game has focus, and since when (host ns)."""

    focused: bool = False
    since_ns: int = 0
    window: WindowInfo | None = None
    extra: dict[str, Any] = field(default_factory=dict)


EventSink = Callable[[InputEvent], None]
FocusSink = Callable[[bool, WindowInfo | None], None]


class InputBackend(ABC):
    """Captures input for one game while its window has focus.

    `start` begins delivering events to `sink` from a backend thread (the sink only queues);
    events are delivered only while a window matching `game` has focus. Focus changes are
    delivered to `sink` as focus_in/focus_out events and to `on_focus`. On focus loss, keys and
    buttons still held are closed with synthetic releases at the focus_out time.
    """

    name: str = "base"

    def __init__(self, game: str, *, keyboard: bool = True, mouse: bool = True,
                 display: str | None = None) -> None:
        self.game = game
        self.keyboard = keyboard
        self.mouse = mouse
        self.display = display
        self.notes: list[str] = []  # fallbacks and anything the manifest should record

    @abstractmethod
    def find_game_window(self) -> WindowInfo | None:
        """The top-level window of the game, if one exists now."""

    @abstractmethod
    def start(self, sink: EventSink, on_focus: FocusSink | None = None) -> None:
        """Begin capturing; returns at once."""

    @abstractmethod
    def stop(self) -> None:
        """Stop capturing, close held keys if focused, and join the backend thread."""

    def info(self) -> dict[str, Any]:
        """Name and notes for the session manifest."""
        return {"name": self.name, "notes": list(self.notes)}
