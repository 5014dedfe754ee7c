"""Gamepad capture driven by SDL virtual joysticks through SDL's real GameController path."""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from capture.export.vocabulary import GAMEPAD_AXIS_ALIASES, GAMEPAD_BUTTONS
from capture.inputs import InputEvent
from capture.inputs.gamepad import AXIS_NAMES, BUTTON_NAMES, GamepadCapture, normalise_axis
from capture.inputs.gamepad import sdl2 as sdl  # the SDL instance the capture runs in

AXIS = {name: number for number, name in AXIS_NAMES.items()}
BUTTON = {name: number for number, name in BUTTON_NAMES.items()}
FULL = 32767


class VirtualPad:
    """An SDL virtual game controller, attached and driven on the capture's SDL thread."""

    def __init__(self, capture: GamepadCapture, name: str = "Test Pad") -> None:
        self.capture = capture

        def attach() -> tuple[int, Any]:
            desc = sdl.SDL_VirtualJoystickDesc()
            desc.version = sdl.SDL_VIRTUAL_JOYSTICK_DESC_VERSION
            desc.type = sdl.SDL_JOYSTICK_TYPE_GAMECONTROLLER
            desc.naxes, desc.nbuttons = len(AXIS_NAMES), 15
            desc.vendor_id, desc.product_id = 0x1234, 0x5678
            desc.name = name.encode()
            index = sdl.SDL_JoystickAttachVirtualEx(ctypes.byref(desc))
            assert index >= 0, sdl.SDL_GetError()
            joystick = sdl.SDL_JoystickOpen(index)  # SetVirtual* need an open handle
            return sdl.SDL_JoystickInstanceID(joystick), joystick

        self.instance_id, self.joystick = capture.run_on_sdl_thread(attach)
        sync(capture)

    def axis(self, name: str, raw: int) -> None:
        self.capture.run_on_sdl_thread(
            lambda: sdl.SDL_JoystickSetVirtualAxis(self.joystick, AXIS[name], raw))
        sync(self.capture)

    def button(self, name: str, pressed: bool) -> None:
        self.capture.run_on_sdl_thread(
            lambda: sdl.SDL_JoystickSetVirtualButton(self.joystick, BUTTON[name], int(pressed)))
        sync(self.capture)

    def detach(self) -> None:
        def detach() -> None:
            index = next(i for i in range(sdl.SDL_NumJoysticks())
                         if sdl.SDL_JoystickGetDeviceInstanceID(i) == self.instance_id)
            sdl.SDL_JoystickClose(self.joystick)
            assert sdl.SDL_JoystickDetachVirtual(index) == 0, sdl.SDL_GetError()

        self.capture.run_on_sdl_thread(detach)
        sync(self.capture)


def sync(capture: GamepadCapture) -> None:
    """Return after a full poll has run since the call: calls run at the top of each loop."""
    capture.run_on_sdl_thread(lambda: None)
    capture.run_on_sdl_thread(lambda: None)


class Setup:
    def __init__(self) -> None:
        self.events: list[InputEvent] = []
        self.focused = threading.Event()
        self.focused.set()
        self.capture = GamepadCapture(is_focused=self.focused.is_set)

    def start(self) -> None:
        self.capture.start(self.events.append)

    def take(self) -> list[tuple[str, str | None, float | None, bool]]:
        """(kind, name, value, synthetic) of the events since the last take."""
        taken, self.events[:] = list(self.events), []
        return [(e.kind, e.axis, e.value, e.synthetic) for e in taken]


@pytest.fixture
def setup() -> Iterator[Setup]:
    running = Setup()
    running.start()
    yield running
    running.capture.stop()


def test_vocabulary_names_are_sdls_names() -> None:
    """SDL's own string for each axis and button is the vocabulary's name (or its alias)."""
    for number, name in AXIS_NAMES.items():
        assert GAMEPAD_AXIS_ALIASES[sdl.SDL_GameControllerGetStringForAxis(number).decode()] == (
            name)
    for number, name in BUTTON_NAMES.items():
        assert sdl.SDL_GameControllerGetStringForButton(number).decode() == name
    assert len(BUTTON_NAMES) == sdl.SDL_CONTROLLER_BUTTON_MAX
    assert [BUTTON_NAMES[n] for n in range(len(GAMEPAD_BUTTONS))] == list(GAMEPAD_BUTTONS)


def test_normalise_axis() -> None:
    assert normalise_axis(AXIS["left_x"], -32768) == -1.0
    assert normalise_axis(AXIS["left_x"], FULL) == 1.0
    assert normalise_axis(AXIS["left_y"], 16384) == 0.5
    assert normalise_axis(AXIS["left_x"], 300) == 0.0       # inside the deadband
    assert normalise_axis(AXIS["left_x"], -16384) == -0.5
    assert normalise_axis(AXIS["trigger_left"], -16384) == 0.0   # a trigger never goes below 0


def test_button_press_and_release_once_each_with_device(setup: Setup) -> None:
    pad = VirtualPad(setup.capture)
    [device] = setup.capture.devices()
    assert device["name"] == "Test Pad" and device["instance_id"] == pad.instance_id
    setup.take()
    pad.button("a", True)
    pad.button("a", False)
    pad.button("dpright", True)
    events = list(setup.events)
    assert setup.take() == [("gamepad_button_press", "a", None, False),
                            ("gamepad_button_release", "a", None, False),
                            ("gamepad_button_press", "dpright", None, False)]
    assert {e.device for e in events} == {device["device"]}
    assert device["device"] == f"Test Pad [{device['guid']}]#{device['player_index']}"
    assert all(e.time_source == "receive" for e in events)
    assert [e.t_ns for e in events] == sorted(e.t_ns for e in events)


def test_axes_are_normalised_and_only_changes_are_emitted(setup: Setup) -> None:
    pad = VirtualPad(setup.capture)
    setup.take()
    pad.axis("left_x", 16384)
    pad.axis("left_x", 16384)          # no change: nothing new
    pad.axis("left_y", -32768)
    pad.axis("left_x", 200)            # inside the deadband: back to 0
    pad.axis("trigger_right", FULL)
    # A virtual axis spans -32768..32767 and SDL maps a trigger's full travel onto 0..32767.
    pad.axis("trigger_right", 0)
    assert setup.take() == [("gamepad_axis", "left_x", 0.5, False),
                            ("gamepad_axis", "left_y", -1.0, False),
                            ("gamepad_axis", "left_x", 0.0, False),
                            ("gamepad_axis", "trigger_right", 1.0, False),
                            ("gamepad_axis", "trigger_right", 0.5, False)]


def test_unfocused_input_is_dropped_and_held_axes_reported_on_focus(setup: Setup) -> None:
    pad = VirtualPad(setup.capture)
    setup.take()
    setup.focused.clear()
    pad.button("x", True)
    pad.axis("right_x", -16384)
    assert setup.take() == []
    setup.focused.set()
    sync(setup.capture)
    # The stick is still pushed: reported; the press happened outside the game: not.
    assert setup.take() == [("gamepad_axis", "right_x", -0.5, False)]
    pad.button("x", False)
    assert setup.take() == []


def test_focus_loss_releases_held_buttons_and_centres_axes(setup: Setup) -> None:
    pad = VirtualPad(setup.capture)
    pad.button("b", True)
    pad.axis("trigger_left", FULL)
    setup.take()
    setup.focused.clear()
    sync(setup.capture)
    events = list(setup.events)
    assert setup.take() == [("gamepad_button_release", "b", None, True),
                            ("gamepad_axis", "trigger_left", 0.0, True)]
    assert all(e.time_source == "derived" for e in events)
    pad.button("b", False)
    assert setup.take() == []


def test_hot_plug_is_seen_and_identical_pads_stay_apart(setup: Setup) -> None:
    assert setup.capture.devices() == []
    first, second = VirtualPad(setup.capture), VirtualPad(setup.capture)  # the same model twice
    by_instance = {d["instance_id"]: d for d in setup.capture.devices()}
    assert set(by_instance) == {first.instance_id, second.instance_id}
    one, two = by_instance[first.instance_id], by_instance[second.instance_id]
    assert (one["name"], one["vendor_id"], one["product_id"]) == ("Test Pad", 0x1234, 0x5678)
    assert one["guid"] == two["guid"] and one["device"] != two["device"]
    second.button("start", True)
    assert [e.device for e in setup.events] == [two["device"]]
    setup.take()
    second.detach()
    assert setup.take() == [("gamepad_button_release", "start", None, False)]
    assert [d["instance_id"] for d in setup.capture.devices()] == [first.instance_id]
    seen = {d["device"] for d in setup.capture.info()["devices"]}
    assert seen == {one["device"], two["device"]}
    first.detach()
    assert setup.capture.devices() == []


def test_stop_releases_held_buttons_and_joins_the_thread() -> None:
    running = Setup()
    running.start()
    with pytest.raises(RuntimeError, match="another gamepad capture"):
        GamepadCapture(is_focused=lambda: True).start(print)
    pad = VirtualPad(running.capture)
    pad.button("leftshoulder", True)
    running.take()
    running.capture.stop()
    assert running.take() == [("gamepad_button_release", "leftshoulder", None, True)]
    assert not any(t.name == "gamepad-input" for t in threading.enumerate())
    assert running.capture.devices() == []
    with pytest.raises(RuntimeError, match="not running"):
        running.capture.run_on_sdl_thread(lambda: None)
    running.start()  # SDL starts again in the same process
    VirtualPad(running.capture)
    assert len(running.capture.devices()) == 1
    running.capture.stop()
