"""Gamepad buttons, triggers and sticks through SDL2's GameController API, gated on focus."""

from __future__ import annotations

import ctypes
import threading
import warnings
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from queue import Empty, SimpleQueue
from typing import Any, TypeVar

from capture.clock import now_ns
from capture.errors import CaptureError
from capture.export.vocabulary import GAMEPAD_AXES, GAMEPAD_BUTTONS, GAMEPAD_JOURNAL_ONLY_BUTTONS
from capture.inputs._base import EventKind, EventSink, Holds, InputEvent

with warnings.catch_warnings():
    # pysdl2 announces the SDL binary it loaded with a UserWarning; the test suite fails on those.
    warnings.filterwarnings("ignore", message="Using SDL2 binaries", category=UserWarning)
    import sdl2

__all__ = ["AXIS_NAMES", "BUTTON_NAMES", "GamepadCapture", "GamepadDevice", "normalise_axis"]

T = TypeVar("T")

# SDL's axes and buttons in the order of the dataset vocabulary's names for them.
AXIS_NAMES: dict[int, str] = dict(zip((
    sdl2.SDL_CONTROLLER_AXIS_LEFTX, sdl2.SDL_CONTROLLER_AXIS_LEFTY,
    sdl2.SDL_CONTROLLER_AXIS_RIGHTX, sdl2.SDL_CONTROLLER_AXIS_RIGHTY,
    sdl2.SDL_CONTROLLER_AXIS_TRIGGERLEFT, sdl2.SDL_CONTROLLER_AXIS_TRIGGERRIGHT,
), GAMEPAD_AXES, strict=True))
TRIGGER_AXES = frozenset({sdl2.SDL_CONTROLLER_AXIS_TRIGGERLEFT,
                          sdl2.SDL_CONTROLLER_AXIS_TRIGGERRIGHT})
BUTTON_NAMES: dict[int, str] = dict(zip((
    sdl2.SDL_CONTROLLER_BUTTON_A, sdl2.SDL_CONTROLLER_BUTTON_B, sdl2.SDL_CONTROLLER_BUTTON_X,
    sdl2.SDL_CONTROLLER_BUTTON_Y, sdl2.SDL_CONTROLLER_BUTTON_BACK,
    sdl2.SDL_CONTROLLER_BUTTON_GUIDE, sdl2.SDL_CONTROLLER_BUTTON_START,
    sdl2.SDL_CONTROLLER_BUTTON_LEFTSTICK, sdl2.SDL_CONTROLLER_BUTTON_RIGHTSTICK,
    sdl2.SDL_CONTROLLER_BUTTON_LEFTSHOULDER, sdl2.SDL_CONTROLLER_BUTTON_RIGHTSHOULDER,
    sdl2.SDL_CONTROLLER_BUTTON_DPAD_UP, sdl2.SDL_CONTROLLER_BUTTON_DPAD_DOWN,
    sdl2.SDL_CONTROLLER_BUTTON_DPAD_LEFT, sdl2.SDL_CONTROLLER_BUTTON_DPAD_RIGHT,
    sdl2.SDL_CONTROLLER_BUTTON_MISC1, sdl2.SDL_CONTROLLER_BUTTON_PADDLE1,
    sdl2.SDL_CONTROLLER_BUTTON_PADDLE2, sdl2.SDL_CONTROLLER_BUTTON_PADDLE3,
    sdl2.SDL_CONTROLLER_BUTTON_PADDLE4, sdl2.SDL_CONTROLLER_BUTTON_TOUCHPAD,
), (*GAMEPAD_BUTTONS, *GAMEPAD_JOURNAL_ONLY_BUTTONS), strict=True))
AXIS_DEADBAND = 0.01
AXIS_DECIMALS = 3  # values are rounded to this, and only changes are emitted
EVENT_BATCH = 64

_sdl_in_use = threading.Lock()  # SDL's state is per process: one capture at a time


def normalise_axis(axis: int, raw: int) -> float:
    """An SDL axis reading as a stick value in [-1, 1] or a trigger value in [0, 1].

    Values within AXIS_DEADBAND of 0 become 0. Y axes keep SDL's sign: positive is down.
    """
    value = round(max(-1.0, min(1.0, raw / 32767)), AXIS_DECIMALS)
    if axis in TRIGGER_AXES:
        value = max(0.0, value)
    return 0.0 if abs(value) < AXIS_DEADBAND else value


@dataclass(frozen=True, slots=True)
class GamepadDevice:
    """One connected controller, as SDL identifies it."""

    instance_id: int    # SDL's id for this connection; a replugged pad gets a new one
    name: str
    guid: str           # SDL joystick GUID: bus, vendor, product and version of the model
    vendor_id: int
    product_id: int
    serial: str | None
    player_index: int   # SDL's player slot: the lowest free one when the pad connected

    @property
    def identity(self) -> str:
        """The `device` of this pad's events: '<name> [<guid>]#<player index>'.

        Name and GUID say which model it is; the player index tells apart pads of the same
        model connected together, and a pad replugged into a free slot keeps its identity.
        """
        return f"{self.name} [{self.guid}]#{self.player_index}"

    def to_dict(self) -> dict[str, Any]:
        return {"device": self.identity, "instance_id": self.instance_id, "name": self.name,
                "guid": self.guid, "vendor_id": self.vendor_id, "product_id": self.product_id,
                "serial": self.serial, "player_index": self.player_index}


class GamepadCapture:
    """Captures every SDL GameController on a thread of its own, delivering events to a sink.

    As with the keyboard and mouse backends (capture/inputs/_base.py), `start(sink)` begins
    delivery, in time order, and `info()` gives name and notes (and the controllers seen) for
    the manifest. Events go to the sink only while `is_focused()` is True when a poll drains
    them; when it turns False, buttons still held get synthetic releases and moved axes go back
    to 0, so no hold leaks past focus. When it turns True again, axes already away from centre
    are reported.
    """

    name = "sdl2-gamecontroller"

    def __init__(self, *, is_focused: Callable[[], bool], poll_hz: int = 250) -> None:
        if poll_hz <= 0:
            raise ValueError(f"poll_hz must be positive, not {poll_hz}")
        self.sink: EventSink = lambda event: None
        self.is_focused = is_focused
        self.poll_hz = poll_hz
        self.notes: list[str] = [
            f"gamepad events are stamped on receipt at up to {poll_hz} polls per second: SDL2 "
            "stamps them in whole ms when it reads the device, which is during our poll, so its "
            "timestamps would add nothing"]
        self._devices_lock = threading.Lock()
        self._connected: dict[int, GamepadDevice] = {}
        self._seen: dict[str, GamepadDevice] = {}
        self._loop: _SdlLoop | None = None
        self._thread: threading.Thread | None = None

    def start(self, sink: EventSink) -> None:
        """Initialise SDL on the capture thread and begin polling; returns once SDL is ready."""
        if self._thread is not None:
            raise RuntimeError("gamepad capture is already running")
        if not _sdl_in_use.acquire(blocking=False):
            raise RuntimeError("another gamepad capture is running in this process")
        self.sink = sink
        self._loop = _SdlLoop(self)
        self._thread = threading.Thread(target=self._loop.run, name="gamepad-input", daemon=True)
        self._thread.start()
        self._loop.ready.wait()
        if self._loop.start_error is not None:
            error = self._loop.start_error
            self.stop()
            raise error

    def stop(self) -> None:
        """Release held buttons if focused, close SDL and join the capture thread."""
        if self._loop is None or self._thread is None:
            return
        self._loop.stopping.set()
        self._thread.join()
        self._loop = self._thread = None
        with self._devices_lock:
            self._connected.clear()
        _sdl_in_use.release()

    def devices(self) -> list[dict[str, Any]]:
        """The controllers connected now (see GamepadDevice.to_dict)."""
        with self._devices_lock:
            return [device.to_dict() for device in self._connected.values()]

    def run_on_sdl_thread(self, fn: Callable[[], T], timeout_s: float = 2.0) -> T:
        """Call `fn` on the capture thread, before its next poll, and return its result.

        SDL calls belong on the thread that initialised SDL; tests attach virtual pads this way.
        """
        loop = self._loop
        if loop is None:
            raise RuntimeError("gamepad capture is not running")
        future: Future[T] = Future()
        loop.calls.put((fn, future))
        return future.result(timeout_s)

    def info(self) -> dict[str, Any]:
        """Name, notes and every controller seen, for the session manifest."""
        with self._devices_lock:
            seen = [device.to_dict() for device in self._seen.values()]
        return {"name": self.name, "notes": list(self.notes), "devices": seen}

    def _connect(self, device: GamepadDevice) -> None:
        with self._devices_lock:
            self._connected[device.instance_id] = device
            self._seen.setdefault(device.identity, device)

    def _disconnect(self, instance_id: int) -> None:
        with self._devices_lock:
            self._connected.pop(instance_id, None)


class _SdlLoop:
    """SDL's state for one capture run; everything but `calls` and `stopping` is thread-local."""

    def __init__(self, capture: GamepadCapture) -> None:
        self.capture = capture
        self.ready = threading.Event()
        self.stopping = threading.Event()
        self.start_error: BaseException | None = None
        self.calls: SimpleQueue[tuple[Callable[[], Any], Future[Any]]] = SimpleQueue()
        self.controllers: dict[int, tuple[Any, GamepadDevice]] = {}  # instance id -> (handle, ..)
        self.focused = False
        self.holds = Holds()
        self.last_emitted_ns = 0
        self.axis_values: dict[tuple[int, int], float] = {}  # (instance, axis) -> last emitted
        self.events = (sdl2.SDL_Event * EVENT_BATCH)()

    def run(self) -> None:
        try:
            self._init_sdl()
        except BaseException as exc:
            self.start_error = exc
            self.ready.set()
            return
        self.ready.set()
        try:
            period_s = 1 / self.capture.poll_hz
            while not self.stopping.is_set():
                self._run_calls()
                self._poll()
                self.stopping.wait(period_s)
        except Exception as exc:  # held buttons must still be released, whatever failed
            self.capture.notes.append(f"gamepad capture stopped early: {exc!r}")
        finally:
            if self.focused:
                self._release_all(now_ns())
            self._run_calls(cancel=True)
            for handle, _device in self.controllers.values():
                sdl2.SDL_GameControllerClose(handle)
            self.controllers.clear()
            sdl2.SDL_Quit()

    def _init_sdl(self) -> None:
        sdl2.SDL_SetHint(sdl2.SDL_HINT_JOYSTICK_ALLOW_BACKGROUND_EVENTS, b"1")
        # Otherwise SDL takes over SIGINT/SIGTERM and Ctrl+C no longer reaches Python.
        sdl2.SDL_SetHint(sdl2.SDL_HINT_NO_SIGNAL_HANDLERS, b"1")
        if sdl2.SDL_Init(sdl2.SDL_INIT_GAMECONTROLLER | sdl2.SDL_INIT_JOYSTICK) != 0:
            message = sdl2.SDL_GetError().decode(errors="replace")
            sdl2.SDL_Quit()
            raise CaptureError(f"SDL could not start its game controller support: {message}")
        for index in range(sdl2.SDL_NumJoysticks()):
            self._open(index)

    def _run_calls(self, cancel: bool = False) -> None:
        while True:
            try:
                fn, future = self.calls.get_nowait()
            except Empty:
                return
            if cancel:
                future.set_exception(RuntimeError("gamepad capture stopped"))
                continue
            try:
                future.set_result(fn())
            except BaseException as exc:
                future.set_exception(exc)

    def _poll(self) -> None:
        sdl2.SDL_PumpEvents()  # reads the devices: SDL's state and queue are current after it
        receive_ns = now_ns()
        focused = bool(self.capture.is_focused())
        if self.focused and not focused:
            self._release_all(receive_ns)
        gained = focused and not self.focused
        self.focused = focused
        while (count := sdl2.SDL_PeepEvents(self.events, EVENT_BATCH, sdl2.SDL_GETEVENT,
                                            sdl2.SDL_FIRSTEVENT, sdl2.SDL_LASTEVENT)) > 0:
            for event in self.events[:count]:
                self._handle(event, receive_ns)
        if gained:
            self._report_axes(receive_ns)

    def _handle(self, event: Any, receive_ns: int) -> None:
        kind = event.type
        if kind == sdl2.SDL_CONTROLLERAXISMOTION:
            if self.focused:
                axis = event.caxis
                self._emit_axis(axis.which, axis.axis, normalise_axis(axis.axis, axis.value),
                                receive_ns)
        elif kind in (sdl2.SDL_CONTROLLERBUTTONDOWN, sdl2.SDL_CONTROLLERBUTTONUP):
            if self.focused:
                self._on_button(event.cbutton.which, event.cbutton.button,
                                kind == sdl2.SDL_CONTROLLERBUTTONDOWN, receive_ns)
        elif kind == sdl2.SDL_CONTROLLERDEVICEADDED:
            self._open(event.cdevice.which)  # a device index here, an instance id elsewhere
        elif kind == sdl2.SDL_CONTROLLERDEVICEREMOVED:
            self._close(event.cdevice.which, receive_ns)
        elif kind == sdl2.SDL_JOYDEVICEADDED and not sdl2.SDL_IsGameController(event.jdevice.which):
            name = (sdl2.SDL_JoystickNameForIndex(event.jdevice.which) or b"?").decode(
                errors="replace")
            self.capture.notes.append(f"joystick {name!r} has no game controller mapping: "
                                      "not captured")

    def _on_button(self, instance_id: int, button: int, pressed: bool, t_ns: int) -> None:
        kind = EventKind.GAMEPAD_BUTTON_PRESS if pressed else EventKind.GAMEPAD_BUTTON_RELEASE
        event = InputEvent(t_ns=t_ns, kind=kind, axis=BUTTON_NAMES.get(button, f"button{button}"),
                           device=self._device(instance_id))
        if self.holds.press(event) if pressed else self.holds.release(event):
            self._emit(event)

    def _emit_axis(self, instance_id: int, axis: int, value: float, t_ns: int,
                   synthetic: bool = False) -> None:
        if self.axis_values.get((instance_id, axis), 0.0) == value:
            return
        self.axis_values[(instance_id, axis)] = value
        self._emit(InputEvent(t_ns=t_ns, kind=EventKind.GAMEPAD_AXIS,
                              axis=AXIS_NAMES.get(axis, f"axis{axis}"), value=value,
                              device=self._device(instance_id), synthetic=synthetic,
                              time_source="derived" if synthetic else "receive"))

    def _report_axes(self, t_ns: int) -> None:
        """Report axes already away from where we last left them (held while unfocused)."""
        for instance_id, (handle, _device) in self.controllers.items():
            for axis in AXIS_NAMES:
                raw = sdl2.SDL_GameControllerGetAxis(handle, axis)
                self._emit_axis(instance_id, axis, normalise_axis(axis, raw), t_ns)

    def _release_all(self, t_ns: int, instance_id: int | None = None) -> None:
        """Synthetic releases and re-centred axes for one controller, or for all."""
        device = None if instance_id is None else self._device(instance_id)
        for release in self.holds.release_all(
                t_ns, only=lambda press: device is None or press.device == device):
            self._emit(release)
        for key in list(self.axis_values):
            if instance_id is None or key[0] == instance_id:
                self._emit_axis(key[0], key[1], 0.0, t_ns, synthetic=True)
                del self.axis_values[key]

    def _device(self, instance_id: int) -> str:
        entry = self.controllers.get(instance_id)
        return entry[1].identity if entry else f"instance{instance_id}"

    def _emit(self, event: InputEvent) -> None:
        # Delivery order = time order, as the keyboard and mouse backends keep it.
        event.t_ns = self.last_emitted_ns = max(self.last_emitted_ns, event.t_ns)
        self.capture.sink(event)

    def _open(self, device_index: int) -> None:
        if not sdl2.SDL_IsGameController(device_index):
            return
        if sdl2.SDL_JoystickGetDeviceInstanceID(device_index) in self.controllers:
            return  # opened at start, and now announced by its added event
        handle = sdl2.SDL_GameControllerOpen(device_index)
        if not handle:
            message = sdl2.SDL_GetError().decode(errors="replace")
            self.capture.notes.append(f"could not open game controller {device_index}: "
                                      f"{message}")
            return
        device = _describe(handle)
        self.controllers[device.instance_id] = (handle, device)
        self.capture._connect(device)

    def _close(self, instance_id: int, t_ns: int) -> None:
        if instance_id not in self.controllers:
            return
        if self.focused:
            self._release_all(t_ns, instance_id)
        handle, _device = self.controllers.pop(instance_id)
        sdl2.SDL_GameControllerClose(handle)
        self.capture._disconnect(instance_id)


def _describe(handle: Any) -> GamepadDevice:
    joystick = sdl2.SDL_GameControllerGetJoystick(handle)
    guid = ctypes.create_string_buffer(33)
    sdl2.SDL_JoystickGetGUIDString(sdl2.SDL_JoystickGetGUID(joystick), guid, len(guid))
    serial = sdl2.SDL_GameControllerGetSerial(handle)
    instance_id = sdl2.SDL_JoystickInstanceID(joystick)
    player_index = sdl2.SDL_GameControllerGetPlayerIndex(handle)
    return GamepadDevice(
        instance_id=instance_id,
        name=(sdl2.SDL_GameControllerName(handle) or b"unknown").decode(errors="replace"),
        guid=guid.value.decode(),
        vendor_id=sdl2.SDL_GameControllerGetVendor(handle),
        product_id=sdl2.SDL_GameControllerGetProduct(handle),
        serial=serial.decode(errors="replace") if serial else None,
        player_index=player_index if player_index >= 0 else instance_id)
