"""The XInput2 backend on a real Xvfb, driven by real XTEST input."""

from __future__ import annotations

import struct
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from Xlib import X, Xatom
from Xlib.display import Display

from capture.clock import now_ns
from capture.inputs import _xi2
from capture.inputs._xorg import ServerClock, XorgInputBackend, keysym_name, parse_raw_event
from capture.inputs.xtest import XTestInjector
from capture.xserver import Xvfb
from tests.inputs.recorder import EventRecorder

pytestmark = pytest.mark.x11

MS = 1_000_000
MakeWindow = Callable[..., Any]  # the make_window fixture
WAIT_S = 2.0


@contextmanager
def capturing(xvfb: Xvfb, game: str,
              **scope: bool) -> Iterator[tuple[XorgInputBackend, EventRecorder]]:
    backend = XorgInputBackend(game, display=xvfb.display, **scope)
    recorder = EventRecorder(timeout_s=WAIT_S)
    backend.start(recorder, recorder.on_focus)
    try:
        yield backend, recorder
    finally:
        backend.stop()
    assert not [note for note in backend.notes if "stopped early" in note], backend.notes


@pytest.fixture
def game_and_other(make_window: MakeWindow) -> tuple[int, int]:
    game = make_window("testgame", "TestGame", 0, 0)
    other = make_window("other", "Other", 400, 0)
    return game.id, other.id


def timed(action: Callable[[], None]) -> tuple[int, int]:
    before = now_ns()
    action()
    return before, now_ns()


def test_injected_script_is_captured_exactly(
        xvfb: Xvfb, injector: XTestInjector, game_and_other: tuple[int, int]) -> None:
    game, _ = game_and_other
    injector.focus(game)
    moves = [(40, 0), (-40, 10), (7, -3), (120, 55), (-1, -1)]
    with capturing(xvfb, "testgame") as (backend, recorder):
        recorder.wait_kind("focus_in")
        start = now_ns()
        w_down = timed(lambda: injector.key_down("w"))
        time.sleep(0.08)
        w_up = timed(lambda: injector.key_up("w"))
        space_down = timed(lambda: injector.key_down("space"))
        time.sleep(0.02)
        space_up = timed(lambda: injector.key_up("space"))
        for dx, dy in moves:
            injector.move_relative(dx, dy)
        for button in ("left", "right", "back", 10):
            injector.click(button)
        injector.wheel(2, 0)
        injector.wheel(-1, 1)
        injector.wheel(0, -1)
        injector.tap("Escape", hold_s=0)
        end = now_ns()
        recorder.wait_kind("key_release", "Escape")
        assert backend.info()["name"] == "xorg-xi2"

    events = recorder.events
    inputs = [e for e in events if e.kind not in ("focus_in", "focus_out", "pointer")]
    assert {e.time_source for e in inputs} == {"x_server"}
    assert all(start - MS <= e.t_ns <= end + MS for e in inputs)
    assert [e.t_ns for e in events] == sorted(e.t_ns for e in events)
    assert not any(e.synthetic for e in events)

    keys = [(e.kind, e.key) for e in inputs if e.kind.startswith("key_")]
    assert keys == [("key_press", "w"), ("key_release", "w"), ("key_press", "space"),
                    ("key_release", "space"), ("key_press", "Escape"),
                    ("key_release", "Escape")]
    w_press, w_release, space_press, space_release = (
        e for e in inputs if e.kind.startswith("key_") and e.key != "Escape")
    for event, (before, after) in ((w_press, w_down), (w_release, w_up),
                                   (space_press, space_down), (space_release, space_up)):
        assert before - MS <= event.t_ns <= after + MS
    for press, release, down, up in ((w_press, w_release, w_down, w_up),
                                     (space_press, space_release, space_down, space_up)):
        injected_hold = (up[0] + up[1]) / 2 - (down[0] + down[1]) / 2
        call_jitter = (up[1] - up[0] + down[1] - down[0]) / 2
        assert abs((release.t_ns - press.t_ns) - injected_hold) <= 2 * MS + call_jitter
    assert w_press.keysym == ord("w") and w_press.keycode and w_press.device

    motions = [e for e in inputs if e.kind == "motion"]
    assert [(e.dx, e.dy) for e in motions] == [(float(dx), float(dy)) for dx, dy in moves]
    assert sum(e.dx or 0 for e in motions) == 126 and sum(e.dy or 0 for e in motions) == 61

    buttons = [(e.kind, e.button) for e in inputs if e.kind.startswith("button_")]
    assert buttons == [(kind, name) for name in ("left", "right", "back", "button10")
                       for kind in ("button_press", "button_release")]
    wheel = [(e.dx, e.dy) for e in inputs if e.kind == "wheel"]
    assert wheel == [(0.0, 1.0), (0.0, 1.0), (0.0, -1.0), (1.0, 0.0), (-1.0, 0.0)]

    pointer = [e for e in events if e.kind == "pointer"]
    assert pointer and pointer[-1].x is not None and pointer[-1].y is not None


def test_input_is_delivered_only_while_the_game_has_focus(
        xvfb: Xvfb, injector: XTestInjector, game_and_other: tuple[int, int]) -> None:
    game, other = game_and_other
    injector.focus(other)
    with capturing(xvfb, "testgame") as (_, recorder):
        injector.tap("a", hold_s=0)
        injector.move_relative(5, 5)
        injector.click("left")
        injector.focus(game)
        focus_in = recorder.wait_kind("focus_in")
        injector.key_down("Shift_L")
        injector.button_down("right")
        recorder.wait_kind("button_press")
        injector.focus(other)
        focus_out = recorder.wait_kind("focus_out")
        injector.tap("b", hold_s=0)          # other window focused: not ours
        injector.move_relative(9, 9)
        injector.key_up("Shift_L")           # already closed at focus_out
        injector.button_up("right")
        injector.focus(game)
        refocus = recorder.wait_kind("focus_in", after=focus_out.t_ns)
        injector.tap("c", hold_s=0)
        recorder.wait_kind("key_release", "c")

    assert [k for k in recorder.kinds() if k != "pointer"] == [
        "focus_in", "key_press:Shift_L", "button_press:right",
        "key_release:Shift_L", "button_release:right", "focus_out",
        "focus_in", "key_press:c", "key_release:c",
    ]
    releases = [e for e in recorder.events if e.synthetic]
    assert [(e.key, e.button) for e in releases] == [("Shift_L", None), (None, "right")]
    assert all(e.t_ns == focus_out.t_ns and e.time_source == "derived" for e in releases)
    assert focus_in.window == focus_out.window == refocus.window == "TestGame"
    assert [(focused, w.wm_class if w else None) for focused, w in recorder.focus_calls] == [
        (True, ("testgame", "TestGame")), (False, ("testgame", "TestGame")),
        (True, ("testgame", "TestGame"))]


def test_a_second_press_of_a_held_key_is_dropped(
        xvfb: Xvfb, injector: XTestInjector, game_and_other: tuple[int, int]) -> None:
    injector.focus(game_and_other[0])
    with capturing(xvfb, "testgame") as (_, recorder):
        injector.key_down("d")
        injector.key_down("d")   # the X server reports this as a second raw press
        injector.key_up("d")
        injector.key_up("d")     # and this one as a release of a key no longer down
        injector.tap("e", hold_s=0)
        recorder.wait_kind("key_release", "e")
    assert [k for k in recorder.kinds() if k.endswith(":d")] == ["key_press:d", "key_release:d"]


@pytest.mark.parametrize("game", ["TestGame", "TESTGAME", "testgame"])
def test_game_matches_instance_or_class_case_insensitively(
        xvfb: Xvfb, injector: XTestInjector, game_and_other: tuple[int, int], game: str) -> None:
    injector.focus(game_and_other[0])
    with capturing(xvfb, game) as (backend, recorder):
        found = backend.find_game_window()
        assert found is not None and found.wm_class == ("testgame", "TestGame")
        assert found.geometry == (0, 0, 320, 240)
        recorder.wait_kind("focus_in")
        injector.tap("x", hold_s=0)
        recorder.wait_kind("key_release", "x")


def test_other_games_do_not_match(
        xvfb: Xvfb, injector: XTestInjector, game_and_other: tuple[int, int]) -> None:
    injector.focus(game_and_other[0])
    with capturing(xvfb, "othergame") as (backend, recorder):
        assert backend.find_game_window() is None
        injector.tap("x", hold_s=0)
        injector.move_relative(3, 0)
        time.sleep(0.25)  # two focus polls: enough for a wrong match to show
    assert recorder.events == []


def test_keyboard_out_of_scope_is_never_captured(
        xvfb: Xvfb, injector: XTestInjector, game_and_other: tuple[int, int]) -> None:
    injector.focus(game_and_other[0])
    with capturing(xvfb, "testgame", keyboard=False) as (_, recorder):
        recorder.wait_kind("focus_in")
        injector.key_down("w")
        injector.tap("q", hold_s=0)
        injector.move_relative(11, 0)   # a barrier: the keys went out before it
        recorder.wait_kind("motion")
        injector.key_up("w")
    assert not [e for e in recorder.events if e.kind.startswith("key_")]


def test_mouse_out_of_scope_is_never_captured(
        xvfb: Xvfb, injector: XTestInjector, game_and_other: tuple[int, int]) -> None:
    injector.focus(game_and_other[0])
    with capturing(xvfb, "testgame", mouse=False) as (_, recorder):
        recorder.wait_kind("focus_in")
        injector.move_relative(11, 0)
        injector.click("left")
        injector.wheel(1)
        injector.tap("z", hold_s=0)      # a barrier: the mouse input went out before it
        recorder.wait_kind("key_release", "z")
    assert {e.kind for e in recorder.events} == {"focus_in", "key_press", "key_release"}


def test_stop_while_focused_closes_held_keys_and_buttons(
        xvfb: Xvfb, injector: XTestInjector, game_and_other: tuple[int, int]) -> None:
    injector.focus(game_and_other[0])
    with capturing(xvfb, "testgame") as (_, recorder):
        injector.key_down("Control_L")
        injector.button_down("middle")
        recorder.wait_kind("button_press")
        stop_after = now_ns()
    injector.key_up("Control_L")
    injector.button_up("middle")
    last_two = recorder.events[-2:]
    assert [(e.kind, e.key, e.button, e.synthetic) for e in last_two] == [
        ("key_release", "Control_L", None, True), ("button_release", None, "middle", True)]
    assert all(e.t_ns >= stop_after and e.time_source == "derived" for e in last_two)


def test_a_game_window_that_appears_later_is_picked_up(
        xvfb: Xvfb, injector: XTestInjector, x_display: Display,
        make_window: MakeWindow) -> None:
    with capturing(xvfb, "lategame") as (_, recorder):
        late = make_window("lategame", "LateGame", 50, 50)
        injector.focus(late.id)
        recorder.wait_kind("focus_in")
        injector.tap("l", hold_s=0)
        recorder.wait_kind("key_release", "l")
        # A window that had no WM_CLASS when first seen is looked at again when it is mapped.
        unnamed = x_display.screen().root.create_window(
            0, 0, 50, 50, 0, X.CopyFromParent, X.InputOutput, X.CopyFromParent)
        x_display.sync()
        time.sleep(0.15)
        unnamed.set_wm_class("lategame", "LateGame")
        unnamed.map()
        x_display.sync()
        injector.focus(unnamed.id)
        recorder.wait_kind("focus_in", after=recorder.wait_kind("focus_out").t_ns)
        unnamed.destroy()
        x_display.sync()


def test_focus_on_a_framed_client_and_destroying_the_focused_game(
        xvfb: Xvfb, injector: XTestInjector, x_display: Display,
        make_window: MakeWindow) -> None:
    with capturing(xvfb, "FramedGame") as (_, recorder):
        # What a reparenting window manager does: a bare frame, then the client moved into it.
        frame = make_window("", "", 20, 20)
        frame.delete_property(Xatom.WM_CLASS)
        client = x_display.screen().root.create_window(
            0, 0, 100, 100, 0, X.CopyFromParent, X.InputOutput, X.CopyFromParent)
        client.set_wm_class("framedgame", "FramedGame")
        x_display.sync()
        time.sleep(0.15)               # let a focus poll look at the frame while it is empty
        client.reparent(frame, 0, 20)
        client.map()
        x_display.sync()
        injector.focus(client.id)
        focus_in = recorder.wait_kind("focus_in")
        injector.key_down("k")
        recorder.wait_kind("key_press", "k")
        frame.destroy()
        x_display.sync()
        focus_out = recorder.wait_kind("focus_out")
        injector.key_up("k")
    assert focus_in.window == focus_out.window == "FramedGame"
    assert [(k, e.synthetic) for k, e in zip(recorder.kinds(), recorder.events, strict=True)
            if k.startswith("key_release")] == [("key_release:k", True)]


def test_a_keyboard_grab_by_another_client_counts_as_focus_loss(
        xvfb: Xvfb, injector: XTestInjector, x_display: Display,
        game_and_other: tuple[int, int]) -> None:
    root = x_display.screen().root
    injector.focus(game_and_other[0])
    with capturing(xvfb, "testgame") as (backend, recorder):
        recorder.wait_kind("focus_in")
        assert root.grab_keyboard(False, X.GrabModeAsync, X.GrabModeAsync,
                                  X.CurrentTime) == X.GrabSuccess
        focus_out = recorder.wait_kind("focus_out")
        injector.tap("g", hold_s=0)        # goes to the grabbing client, not the game
        time.sleep(0.25)                   # two focus polls: GetInputFocus still names the game
        x_display.ungrab_keyboard(X.CurrentTime)
        x_display.sync()
        recorder.wait_kind("focus_in", after=focus_out.t_ns)
        injector.tap("h", hold_s=0)
        recorder.wait_kind("key_release", "h")
    assert [k for k in recorder.kinds() if k != "pointer"] == [
        "focus_in", "focus_out", "focus_in", "key_press:h", "key_release:h"]
    assert any("keyboard grabbed" in note for note in backend.notes)


def test_net_active_window_must_agree_when_a_window_manager_sets_it(
        xvfb: Xvfb, injector: XTestInjector, x_display: Display,
        game_and_other: tuple[int, int]) -> None:
    game, other = game_and_other
    root = x_display.screen().root
    active = x_display.intern_atom("_NET_ACTIVE_WINDOW")

    def set_active(window_id: int) -> None:
        root.change_property(active, Xatom.WINDOW, 32, [window_id])
        x_display.sync()

    injector.focus(game)
    set_active(game)
    try:
        with capturing(xvfb, "testgame") as (_, recorder):
            recorder.wait_kind("focus_in")
            set_active(other)          # X focus still on the game: the manager's word counts
            focus_out = recorder.wait_kind("focus_out")
            assert focus_out.time_source == "x_server"
            injector.tap("n", hold_s=0)
            set_active(game)
            recorder.wait_kind("focus_in", after=focus_out.t_ns)
            injector.tap("y", hold_s=0)
            recorder.wait_kind("key_release", "y")
        assert "key_press:n" not in recorder.kinds()
    finally:
        root.delete_property(active)
        x_display.sync()


def test_server_clock_agrees_with_host_clock_on_xvfb(xvfb: Xvfb) -> None:
    display = Display(xvfb.display)
    notes: list[str] = []
    try:
        clock = ServerClock.calibrate(display, notes)
    finally:
        display.close()
    assert clock.offset_ns == 0
    assert "host monotonic" in notes[0]


def test_server_clock_estimates_an_offset_when_the_clocks_differ(
        xvfb: Xvfb, monkeypatch: pytest.MonkeyPatch) -> None:
    host_ahead_ns = 3_600 * 10**9
    monkeypatch.setattr(_xi2, "now_ns", lambda: time.monotonic_ns() + host_ahead_ns)
    display = Display(xvfb.display)
    notes: list[str] = []
    try:
        clock = ServerClock.calibrate(display, notes)
    finally:
        display.close()
    assert clock.offset_ns is not None
    assert abs(clock.offset_ns - host_ahead_ns) < 5 * MS
    assert "not host monotonic" in notes[0]


def test_server_clock_unwraps_32_bit_milliseconds() -> None:
    clock = ServerClock(0)
    wrap_ns = (1 << 32) * MS
    receive = 3 * wrap_ns + 5 * MS           # the host is past its third wrap
    assert clock.host_ns(4, receive) == (3 * wrap_ns + 4 * MS + MS // 2, "x_server")
    just_before_wrap = (1 << 32) - 2          # stamped before the wrap, received after it
    assert clock.host_ns(just_before_wrap, receive)[0] == 3 * wrap_ns - 2 * MS + MS // 2
    assert clock.host_ns(5, receive)[0] == receive  # never later than receipt

    offset_clock = ServerClock(1_000 * MS)
    assert offset_clock.host_ns(10, 1_020 * MS) == (1_010 * MS + MS // 2, "x_server")
    assert ServerClock(None).host_ns(10, 77) == (77, "receive")


def test_parse_raw_event_reads_the_raw_values_of_masked_valuators() -> None:
    header = struct.pack("=HIIHHI4x", 2, 123456, 0, 4, 2, 0)
    mask = struct.pack("=II", 0b101, 1 << 1)   # valuators 0, 2 and 33
    accelerated = struct.pack("=iIiIiI", 99, 0, 99, 0, 99, 0)
    raw = struct.pack("=iIiIiI", -3, 1 << 31, 7, 0, 0, 1 << 30)
    event = parse_raw_event(header + mask + accelerated + raw + b"\0" * 4)
    assert (event.deviceid, event.time_ms, event.sourceid) == (2, 123456, 4)
    assert event.values == {0: -2.5, 2: 7.0, 33: 0.25}


@pytest.mark.parametrize(("keysym", "name"), [
    (ord("w"), "w"), (0x20, "space"), (X.NoSymbol, None), (0xFF1B, "Escape"),
    (0xFFE1, "Shift_L"), (0xFF0D, "Return"), (0xFF55, "Prior"), (0xFE20, "ISO_Left_Tab"),
    (0x1008FF12, "XF86AudioMute"), (0x010020AC, "U20AC"), (0x0EFFFFFF, "0x0effffff"),
])
def test_keysym_names_are_the_x11_names(keysym: int, name: str | None) -> None:
    assert keysym_name(keysym) == name
