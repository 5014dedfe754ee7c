"""The Windows Raw Input backend on Linux: RAWINPUT parsing, and the backend on a fake user32."""

from __future__ import annotations

import ctypes
import queue
import re
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from capture import inputs
from capture.align import key_slot
from capture.export.vocabulary import KEY_NAMES, OTHER
from capture.inputs import _rawinput, _win32, _win32api, win32_focus
from capture.inputs._base import InputEvent, WindowInfo
from capture.inputs._rawinput import (
    RAWINPUT,
    RAWINPUTHEADER,
    RAWKEYBOARD,
    RAWMOUSE,
    RI_KEY_BREAK,
    RI_KEY_E0,
    RI_KEY_E1,
    RI_MOUSE_HWHEEL,
    RI_MOUSE_WHEEL,
    RIM_TYPEHID,
    RIM_TYPEKEYBOARD,
    RIM_TYPEMOUSE,
    KeyState,
    ScreenArea,
    device_label,
    keysym_of,
    layout_key_names,
    parse_rawinput,
)
from capture.inputs._win32 import Win32InputBackend
from capture.inputs.win32_focus import Libraries
from tests.inputs.recorder import EventRecorder

ROOT = Path(__file__).resolve().parents[2]
MOUSE = 0x1003F
KEYBOARD = 0x10041
LEFT_DOWN, LEFT_UP, RIGHT_DOWN, RIGHT_UP, MIDDLE_DOWN, MIDDLE_UP = 1, 2, 4, 8, 0x10, 0x20
X1_DOWN, X1_UP, X2_DOWN, X2_UP = 0x40, 0x80, 0x100, 0x200
ABSOLUTE, VIRTUAL_DESKTOP = 0x01, 0x02
VK_SHIFT, VK_CONTROL, VK_MENU, VK_RETURN, VK_UP, VK_PAUSE = 0x10, 0x11, 0x12, 0x0D, 0x26, 0x13
VK_W, VK_OEM_1, VK_OEM_5, VK_OEM_6 = 0x57, 0xBA, 0xDC, 0xDD
pointer_is_64_bit = pytest.mark.skipif(ctypes.sizeof(ctypes.c_void_p) != 8,
                                       reason="the layouts checked are those of 64-bit Windows")


# --- RAWINPUT reports, built with the ctypes structures -----------------------------------------

def mouse_report(buttons: int = 0, data: int = 0, dx: int = 0, dy: int = 0, flags: int = 0,
                 device: int = MOUSE) -> bytes:
    report = RAWINPUT()
    report.header.dwType, report.header.dwSize = RIM_TYPEMOUSE, ctypes.sizeof(RAWINPUT)
    report.header.hDevice = device
    mouse = report.data.mouse
    mouse.usFlags, mouse.usButtonFlags, mouse.usButtonData = flags, buttons, data & 0xFFFF
    mouse.lLastX, mouse.lLastY = dx, dy
    return bytes(report)


def key_report(make_code: int, vkey: int, flags: int = 0, device: int = KEYBOARD) -> bytes:
    report = RAWINPUT()
    size = ctypes.sizeof(RAWINPUTHEADER) + ctypes.sizeof(RAWKEYBOARD)  # what Windows copies
    report.header.dwType, report.header.dwSize, report.header.hDevice = (
        RIM_TYPEKEYBOARD, size, device)
    keyboard = report.data.keyboard
    keyboard.MakeCode, keyboard.Flags, keyboard.VKey = make_code, flags, vkey
    keyboard.Message = 0x0101 if flags & RI_KEY_BREAK else 0x0100  # WM_KEYUP / WM_KEYDOWN
    return bytes(report)[:size]


def parse_all(reports: list[bytes], state: KeyState | None = None) -> list[InputEvent]:
    state = state if state is not None else KeyState()
    return [event for t, report in enumerate(reports)
            for event in parse_rawinput(report, 1000 + t, state)]


def gated(reports: list[bytes], state: KeyState | None = None) -> list[InputEvent]:
    """What the sink gets of parse_all's events: through the focus gate, the game focused."""
    backend, delivered = Win32InputBackend("game"), []
    backend._reset(delivered.append, None)
    backend._set_focus(True, None, 0)
    backend._settle()
    delivered.clear()  # the focus_in
    for event in parse_all(reports, state):
        backend._input(event)
    return delivered


def summary(events: list[InputEvent]) -> list[tuple[Any, ...]]:
    return [(e.kind, e.key or e.button) if e.key or e.button else (e.kind, e.dx, e.dy)
            for e in events]


# --- structure layout ---------------------------------------------------------------------------

@pointer_is_64_bit
def test_structures_have_the_64_bit_windows_layout() -> None:
    assert ctypes.sizeof(RAWINPUTHEADER) == 24
    assert (ctypes.sizeof(RAWMOUSE), ctypes.sizeof(RAWKEYBOARD), ctypes.sizeof(RAWINPUT)) == (
        24, 16, 48)
    assert [RAWINPUTHEADER.hDevice.offset, RAWINPUTHEADER.wParam.offset] == [8, 16]
    assert [RAWMOUSE.usButtonFlags.offset, RAWMOUSE.usButtonData.offset, RAWMOUSE.lLastX.offset,
            RAWMOUSE.lLastY.offset, RAWMOUSE.ulExtraInformation.offset] == [4, 6, 12, 16, 20]
    assert [RAWKEYBOARD.Flags.offset, RAWKEYBOARD.VKey.offset, RAWKEYBOARD.Message.offset] == [
        2, 6, 8]


@pointer_is_64_bit
def test_reports_packed_by_hand_parse_like_the_structures_say() -> None:
    header = struct.Struct("<IIQQ")  # dwType, dwSize, hDevice, wParam
    mouse = header.pack(RIM_TYPEMOUSE, 48, MOUSE, 0) + struct.pack(
        "<HxxHHIiiI", 0, LEFT_DOWN | RI_MOUSE_WHEEL, 0x10000 - 240, 0, -5, 7, 0)
    key = header.pack(RIM_TYPEKEYBOARD, 40, KEYBOARD, 0) + struct.pack(
        "<HHHHII", 0x1D, RI_KEY_E0, 0, VK_CONTROL, 0x0100, 0)
    assert mouse == mouse_report(LEFT_DOWN | RI_MOUSE_WHEEL, -240, -5, 7)
    assert key == key_report(0x1D, VK_CONTROL, RI_KEY_E0)
    events = parse_all([mouse, key])
    assert summary(events) == [("motion", -5.0, 7.0), ("button_press", "left"),
                               ("wheel", 0.0, -2.0), ("key_press", "Control_R")]
    assert events[0].device == f"rawinput@{MOUSE:#x}"
    assert events[-1].keycode == 0xE01D


def test_short_reports_are_refused_and_other_devices_ignored() -> None:
    with pytest.raises(ValueError, match="too short"):
        parse_rawinput(key_report(0x11, VK_W)[:30], 0, KeyState())
    hid = RAWINPUT()
    hid.header.dwType = RIM_TYPEHID
    assert parse_rawinput(bytes(hid), 0, KeyState()) == []


# --- mouse --------------------------------------------------------------------------------------

def test_relative_motion_is_raw_device_deltas() -> None:
    events = parse_all([mouse_report(dx=3, dy=-2), mouse_report(dx=-400, dy=0),
                        mouse_report(buttons=LEFT_DOWN)])
    assert summary(events) == [("motion", 3.0, -2.0), ("motion", -400.0, 0.0),
                               ("button_press", "left")]
    assert {e.time_source for e in events} == {"receive"}
    assert [e.t_ns for e in events] == [1000, 1001, 1002]


def test_absolute_devices_give_pointer_positions_never_deltas() -> None:
    state = KeyState(screen=ScreenArea(virtual_desktop=(-1920, 0, 3840, 1080),
                                       primary_size=(1920, 1080)))
    events = gated([
        mouse_report(dx=32768, dy=65535, flags=ABSOLUTE | VIRTUAL_DESKTOP),
        mouse_report(dx=32768, dy=65535, flags=ABSOLUTE | VIRTUAL_DESKTOP),  # same place
        mouse_report(dx=16384, dy=16384, flags=ABSOLUTE),                    # primary monitor
    ], state)
    assert [(e.kind, e.x, e.y) for e in events] == [("pointer", 0, 1079), ("pointer", 480, 270)]
    assert len(state.notes) == 1 and "absolute positions" in state.notes[0]
    unknown_screen = KeyState()
    assert parse_all([mouse_report(dx=100, dy=100, flags=ABSOLUTE)], unknown_screen) == []


@pytest.mark.parametrize(("down", "up", "button"), [
    (LEFT_DOWN, LEFT_UP, "left"), (RIGHT_DOWN, RIGHT_UP, "right"),
    (MIDDLE_DOWN, MIDDLE_UP, "middle"), (X1_DOWN, X1_UP, "back"), (X2_DOWN, X2_UP, "forward")])
def test_each_button_goes_down_and_up(down: int, up: int, button: str) -> None:
    events = parse_all([mouse_report(buttons=down), mouse_report(buttons=up)])
    assert summary(events) == [("button_press", button), ("button_release", button)]
    assert events[0].device == events[1].device == f"rawinput@{MOUSE:#x}"


def test_several_button_flags_in_one_report_come_out_in_bit_order() -> None:
    events = parse_all([
        mouse_report(buttons=X2_DOWN | RIGHT_DOWN | LEFT_DOWN, dx=1),
        mouse_report(buttons=LEFT_UP | MIDDLE_DOWN | RI_MOUSE_WHEEL, data=120),
    ])
    assert summary(events) == [
        ("motion", 1.0, 0.0), ("button_press", "left"), ("button_press", "right"),
        ("button_press", "forward"), ("button_release", "left"), ("button_press", "middle"),
        ("wheel", 0.0, 1.0)]


def test_unmatched_button_transitions_are_dropped() -> None:
    events = gated([mouse_report(buttons=LEFT_UP), mouse_report(buttons=LEFT_DOWN),
                    mouse_report(buttons=LEFT_DOWN), mouse_report(buttons=LEFT_UP)])
    assert summary(events) == [("button_press", "left"), ("button_release", "left")]


@pytest.mark.parametrize(("flag", "data", "clicks"), [
    (RI_MOUSE_WHEEL, 120, (0.0, 1.0)), (RI_MOUSE_WHEEL, -240, (0.0, -2.0)),
    (RI_MOUSE_WHEEL, 30, (0.0, 0.25)), (RI_MOUSE_HWHEEL, 120, (1.0, 0.0)),
    (RI_MOUSE_HWHEEL, -60, (-0.5, 0.0))])
def test_wheel_clicks_are_signed_multiples_of_wheel_delta(
        flag: int, data: int, clicks: tuple[float, float]) -> None:
    (event,) = parse_all([mouse_report(buttons=flag, data=data)])
    assert (event.kind, event.dx, event.dy) == ("wheel", *clicks)


# --- keyboard -----------------------------------------------------------------------------------

def test_key_make_and_break() -> None:
    events = parse_all([key_report(0x11, VK_W), key_report(0x11, VK_W, RI_KEY_BREAK)])
    assert [(e.kind, e.key, e.keycode, e.keysym) for e in events] == [
        ("key_press", "w", 0x11, 0x77), ("key_release", "w", 0x11, 0x77)]
    assert events[0].device == f"rawinput@{KEYBOARD:#x}"


@pytest.mark.parametrize(("make_code", "vkey", "flags", "name", "keycode"), [
    (0x1D, VK_CONTROL, 0, "Control_L", 0x1D), (0x1D, VK_CONTROL, RI_KEY_E0, "Control_R", 0xE01D),
    (0x38, VK_MENU, 0, "Alt_L", 0x38), (0x38, VK_MENU, RI_KEY_E0, "Alt_R", 0xE038),
    (0x2A, VK_SHIFT, 0, "Shift_L", 0x2A), (0x36, VK_SHIFT, 0, "Shift_R", 0x36),
    (0x2A, 0xA0, 0, "Shift_L", 0x2A),  # VK_LSHIFT, as injected input may carry it
    (0x48, VK_UP, RI_KEY_E0, "Up", 0xE048), (0x48, VK_UP, 0, "KP_Up", 0x48),
    (0x1C, VK_RETURN, 0, "Return", 0x1C), (0x1C, VK_RETURN, RI_KEY_E0, "KP_Enter", 0xE01C),
    (0x35, 0x6F, RI_KEY_E0, "KP_Divide", 0xE035), (0x35, 0xBF, 0, "slash", 0x35),
])
def test_e0_prefix_and_scancode_tell_twin_keys_apart(
        make_code: int, vkey: int, flags: int, name: str, keycode: int) -> None:
    press, release = parse_all([key_report(make_code, vkey, flags),
                                key_report(make_code, vkey, flags | RI_KEY_BREAK)])
    assert (press.key, press.keycode, release.key, release.keycode) == (
        name, keycode, name, keycode)
    assert press.keysym == keysym_of(name) is not None


def test_auto_repeat_makes_no_new_press() -> None:
    repeated = [key_report(0x11, VK_W)] * 5 + [key_report(0x11, VK_W, RI_KEY_BREAK)]
    assert [e.kind for e in parse_all(repeated)] == ["key_press"] * 5 + ["key_release"]
    assert summary(gated(repeated)) == [("key_press", "w"), ("key_release", "w")]


def test_fake_shifts_pause_sequence_and_overruns_are_not_keys() -> None:
    events = parse_all([
        key_report(0x2A, VK_SHIFT, RI_KEY_E0),                  # E0 2A before an arrow key
        key_report(0x4B, 0x25, RI_KEY_E0),                      # Left
        key_report(0x2A, VK_SHIFT, RI_KEY_E0 | RI_KEY_BREAK),
        key_report(0x1D, VK_PAUSE, RI_KEY_E1), key_report(0x45, 0xFF),   # Pause: E1 1D 45
        key_report(0x1D, VK_PAUSE, RI_KEY_E1 | RI_KEY_BREAK), key_report(0x45, 0xFF, RI_KEY_BREAK),
        key_report(0xFF, 0xFF),                                 # keyboard overrun
    ])
    assert [(e.kind, e.key, e.keycode) for e in events] == [
        ("key_press", "Left", 0xE04B), ("key_press", "Pause", 0xE11D),
        ("key_release", "Pause", 0xE11D)]


def test_unknown_keys_keep_a_distinct_name_and_no_keysym() -> None:
    (ime,) = parse_all([key_report(0x70, 0xE5)])
    (no_vkey,) = parse_all([key_report(0x73, 0xFF)])
    assert (ime.key, ime.keysym, no_vkey.key) == ("VK_E5", None, "scancode_0073")


# Every key of a US keyboard as Raw Input reports it: (vocabulary name, VKey, MakeCode, E0).
_LETTER_SCANCODES = dict(zip("qwertyuiop", range(0x10, 0x1A), strict=True)) | dict(
    zip("asdfghjkl", range(0x1E, 0x27), strict=True)) | dict(
    zip("zxcvbnm", range(0x2C, 0x33), strict=True))
US_KEYBOARD: list[tuple[str, int, int, bool]] = [
    *((c, ord(c.upper()), code, False) for c, code in _LETTER_SCANCODES.items()),
    *((str((i + 1) % 10), 0x30 + (i + 1) % 10, 0x02 + i, False) for i in range(10)),
    *((f"F{i + 1}", 0x70 + i, 0x3B + i, False) for i in range(10)),
    ("F11", 0x7A, 0x57, False), ("F12", 0x7B, 0x58, False),
    ("Escape", 0x1B, 0x01, False), ("Tab", 0x09, 0x0F, False), ("Caps_Lock", 0x14, 0x3A, False),
    ("Shift_L", 0x10, 0x2A, False), ("Shift_R", 0x10, 0x36, False),
    ("Control_L", 0x11, 0x1D, False), ("Control_R", 0x11, 0x1D, True),
    ("Alt_L", 0x12, 0x38, False), ("Alt_R", 0x12, 0x38, True), ("Super_L", 0x5B, 0x5B, True),
    ("Super_R", 0x5C, 0x5C, True), ("Menu", 0x5D, 0x5D, True), ("space", 0x20, 0x39, False),
    ("Return", 0x0D, 0x1C, False), ("BackSpace", 0x08, 0x0E, False),
    ("Delete", 0x2E, 0x53, True), ("Insert", 0x2D, 0x52, True), ("Home", 0x24, 0x47, True),
    ("End", 0x23, 0x4F, True), ("Prior", 0x21, 0x49, True), ("Next", 0x22, 0x51, True),
    ("Up", 0x26, 0x48, True), ("Down", 0x28, 0x50, True), ("Left", 0x25, 0x4B, True),
    ("Right", 0x27, 0x4D, True), ("Print", 0x2C, 0x37, True), ("Scroll_Lock", 0x91, 0x46, False),
    ("Num_Lock", 0x90, 0x45, False), ("minus", 0xBD, 0x0C, False), ("equal", 0xBB, 0x0D, False),
    ("bracketleft", 0xDB, 0x1A, False), ("bracketright", 0xDD, 0x1B, False),
    ("semicolon", 0xBA, 0x27, False), ("apostrophe", 0xDE, 0x28, False),
    ("grave", 0xC0, 0x29, False), ("backslash", 0xDC, 0x2B, False), ("comma", 0xBC, 0x33, False),
    ("period", 0xBE, 0x34, False), ("slash", 0xBF, 0x35, False),
    *((f"KP_{d}", 0x60 + d, code, False) for d, code in enumerate(
        (0x52, 0x4F, 0x50, 0x51, 0x4B, 0x4C, 0x4D, 0x47, 0x48, 0x49))),
    ("KP_Decimal", 0x6E, 0x53, False), ("KP_Divide", 0x6F, 0x35, True),
    ("KP_Multiply", 0x6A, 0x37, False), ("KP_Subtract", 0x6D, 0x4A, False),
    ("KP_Add", 0x6B, 0x4E, False), ("KP_Enter", 0x0D, 0x1C, True),
    # The keypad with NumLock off reports navigation VKs without E0: same slots as the digits.
    ("KP_7", 0x24, 0x47, False), ("KP_5", 0x0C, 0x4C, False), ("KP_Decimal", 0x2E, 0x53, False),
]


def test_every_us_key_lands_in_its_own_vocabulary_slot() -> None:
    for vocabulary_name, vkey, make_code, e0 in US_KEYBOARD:
        report = key_report(make_code, vkey, RI_KEY_E0 if e0 else 0)
        (press,) = parse_rawinput(report, 0, KeyState())
        assert key_slot(press.key) == KEY_NAMES.index(vocabulary_name), (press.key, hex(vkey))
        assert press.keysym == keysym_of(press.key) is not None
    (pause,) = parse_all([key_report(0x1D, VK_PAUSE, RI_KEY_E1), key_report(0x45, 0xFF)])
    covered = {name for name, *_ in US_KEYBOARD} | {pause.key}
    assert covered == set(KEY_NAMES) - {OTHER}


def test_layout_names_follow_the_games_keyboard_layout() -> None:
    german = {VK_OEM_1: ord("Ü"), VK_OEM_5: 0x80000000 | ord("^"), VK_OEM_6: 0x80000000 | 0xB4,
              0xDE: ord("Ä"), 0xBB: ord("+"), 0xDB: ord("ß"), 0xC0: ord("Ö"), 0xBF: ord("#"),
              0xE2: ord("<"), 0xBD: 0x2011}
    names = layout_key_names(lambda vkey: german.get(vkey, 0))
    assert names[VK_OEM_1] == "udiaeresis" and names[0xDB] == "ssharp"
    assert (names[VK_OEM_5], names[VK_OEM_6]) == ("dead_circumflex", "dead_acute")
    assert names[0xBD] == "U2011" and keysym_of("U2011") == 0x1002011
    assert 0xDF not in names                                 # no character: US name stays
    (press,) = parse_all([key_report(0x1A, VK_OEM_1)], KeyState(layout_names=names))
    assert (press.key, press.keysym) == ("udiaeresis", 0xFC)


def test_device_labels_keep_vendor_and_product_only() -> None:
    usb = r"\\?\HID#VID_046D&PID_C539&MI_01&Col01#8&2a9b6c1&0&0000#{378de44c-56ef-11d1-bc8c}"
    bluetooth = r"\\?\HID#{00001124-0000-1000-8000-00805f9b34fb}_VID&0002046d_PID&b023&Col01#9"
    assert device_label(usb, 0x1003F) == "hid:046d:c539@0x1003f"
    assert device_label(bluetooth, 7) == "hid:046d:b023@0x7"
    assert device_label(None, 0) == "rawinput@0x0"


def test_generated_vkey_table_is_up_to_date() -> None:
    result = subprocess.run([sys.executable, "tools/gen_vkeys.py", "--check"], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_backend_chooser_knows_win32(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CAPTURE_INPUT_BACKEND", "win32")
    assert inputs.backend() is Win32InputBackend
    assert Win32InputBackend("game").info() == {"name": "win32-rawinput", "notes": []}


# --- a fake Windows at the OS-call level: user32, kernel32, dwmapi ------------------------------

US_LAYOUT, GERMAN_LAYOUT = 0x04090409, 0x04070407
QUIT, WIN_EVENT = "WM_QUIT", "foreground changed"
MESSAGE_WINDOW = 0x5000


@dataclass
class FakeWindow:
    class_name: str
    title: str = ""
    pid: int = 0
    thread: int = 0
    rect: tuple[int, int, int, int] = (0, 0, 640, 480)     # left, top, right, bottom
    frame: tuple[int, int, int, int] | None = None          # DWM extended frame bounds
    visible: bool = True


@dataclass
class FakeWindows:
    """The desktop the fake DLLs answer from, and what our code asked of them."""

    windows: dict[int, FakeWindow] = field(default_factory=dict)   # top of the z-order first
    processes: dict[int, str] = field(default_factory=dict)        # pid -> image path
    foreground: int | None = None
    cursor: tuple[int, int] = (100, 100)
    layouts: dict[int, int] = field(default_factory=dict)          # thread -> HKL
    reports: dict[int, bytes] = field(default_factory=dict)        # HRAWINPUT -> RAWINPUT
    device_paths: dict[int, str] = field(default_factory=dict)
    messages: queue.Queue[Any] = field(default_factory=queue.Queue)
    calls: list[tuple[Any, ...]] = field(default_factory=list)
    open_processes: int = 0
    window_proc: Any = None
    win_event_hook: Any = None


class FakeUser32:
    def __init__(self, desk: FakeWindows) -> None:
        self.desk = desk

    # windows
    def GetForegroundWindow(self) -> int | None:
        return self.desk.foreground

    def GetWindowThreadProcessId(self, hwnd: int, pid: Any) -> int:
        window = self.desk.windows.get(hwnd)
        if pid is not None:
            pid.value = window.pid if window else 0
        return window.thread if window else 0

    def GetClassNameW(self, hwnd: int, buffer: Any, size: int) -> int:
        window = self.desk.windows.get(hwnd)
        if window is None:
            return 0
        buffer.value = window.class_name[:size - 1]
        return len(buffer.value)

    def GetWindowTextLengthW(self, hwnd: int) -> int:
        return len(self.desk.windows[hwnd].title)

    def GetWindowTextW(self, hwnd: int, buffer: Any, size: int) -> int:
        buffer.value = self.desk.windows[hwnd].title[:size - 1]
        return len(buffer.value)

    def GetWindowRect(self, hwnd: int, rect: Any) -> int:
        rect.left, rect.top, rect.right, rect.bottom = self.desk.windows[hwnd].rect
        return 1

    def IsWindowVisible(self, hwnd: int) -> int:
        return int(self.desk.windows[hwnd].visible)

    def EnumWindows(self, callback: Any, lparam: int) -> int:
        for hwnd in list(self.desk.windows):
            if not callback(hwnd, lparam):
                return 0
        return 1

    # the message-only window and its loop
    def RegisterClassExW(self, window_class: Any) -> int:
        self.desk.window_proc = window_class.lpfnWndProc
        self.desk.calls.append(("RegisterClassExW", window_class.lpszClassName))
        return 0xC0DE

    def UnregisterClassW(self, name: str, instance: int) -> int:
        self.desk.calls.append(("UnregisterClassW", name))
        return 1

    def CreateWindowExW(self, _ex: int, class_name: str, _title: str, _style: int,
                        *position_parent_menu_instance_param: Any) -> int:
        parent = position_parent_menu_instance_param[4]
        self.desk.calls.append(("CreateWindowExW", class_name, parent))
        return MESSAGE_WINDOW

    def DestroyWindow(self, hwnd: int) -> int:
        self.desk.calls.append(("DestroyWindow", hwnd))
        self.desk.window_proc(hwnd, _win32.WM_DESTROY, 0, 0)  # sent, as Windows does
        return 1

    def DefWindowProcW(self, hwnd: int, message: int, wparam: int, lparam: int) -> int:
        return 0

    def GetMessageW(self, message: Any, hwnd: int | None, first: int, last: int) -> int:
        while (item := self.desk.messages.get(timeout=10)) == WIN_EVENT:
            self.desk.win_event_hook(1, 3, self.desk.foreground, 0, 0, 0, 0)
        if item == QUIT:
            return 0
        message.hWnd, message.message, message.wParam, message.lParam = item
        return 1

    def DispatchMessageW(self, message: Any) -> int:
        return self.desk.window_proc(message.hWnd or 0, message.message, message.wParam,
                                     message.lParam)

    def PostMessageW(self, hwnd: int, message: int, wparam: int, lparam: int) -> int:
        self.desk.messages.put((hwnd, message, wparam, lparam))
        return 1

    def PostQuitMessage(self, code: int) -> None:
        self.desk.messages.put(QUIT)

    def SetTimer(self, hwnd: int, timer: int, ms: int, function: Any) -> int:
        self.desk.calls.append(("SetTimer", timer, ms))
        return timer

    def KillTimer(self, hwnd: int, timer: int) -> int:
        self.desk.calls.append(("KillTimer", timer))
        return 1

    def SetWinEventHook(self, low: int, high: int, module: Any, callback: Any, pid: int,
                        thread: int, flags: int) -> int:
        self.desk.calls.append(("SetWinEventHook", low, high, flags))
        self.desk.win_event_hook = callback
        return 0xBEEF

    def UnhookWinEvent(self, hook: int) -> int:
        self.desk.calls.append(("UnhookWinEvent", hook))
        return 1

    # raw input
    def RegisterRawInputDevices(self, devices: Any, count: int, size: int) -> int:
        assert size == ctypes.sizeof(_rawinput.RAWINPUTDEVICE)
        self.desk.calls.append(("RegisterRawInputDevices", [
            (d.usUsagePage, d.usUsage, d.dwFlags, d.hwndTarget) for d in devices[:count]]))
        return 1

    def GetRawInputData(self, handle: int, command: int, buffer: Any, size: Any,
                        header_size: int) -> int:
        assert (command, header_size) == (_rawinput.RID_INPUT, ctypes.sizeof(RAWINPUTHEADER))
        self.desk.calls.append(("GetRawInputData", handle))
        report = self.desk.reports[handle]
        if size.value < len(report):
            return 0xFFFFFFFF
        ctypes.memmove(buffer, report, len(report))
        return len(report)

    def GetRawInputDeviceInfoW(self, handle: int, command: int, buffer: Any, chars: Any) -> int:
        path = self.desk.device_paths.get(handle)
        if path is None:
            return 0xFFFFFFFF
        if buffer is None:
            chars.value = len(path) + 1
            return 0
        buffer.value = path
        return len(path) + 1

    # cursor, screen, keyboard layout
    def SetThreadDpiAwarenessContext(self, context: int) -> int:
        self.desk.calls.append(("SetThreadDpiAwarenessContext", context))
        return 0x6010  # the previous context
    def GetCursorPos(self, point: Any) -> int:
        point.x, point.y = self.desk.cursor
        return 1

    def GetSystemMetrics(self, index: int) -> int:
        return {0: 1920, 1: 1080, 76: 0, 77: 0, 78: 1920, 79: 1080}[index]

    def GetKeyboardLayout(self, thread: int) -> int:
        return self.desk.layouts.get(thread, US_LAYOUT)

    def MapVirtualKeyExW(self, code: int, map_type: int, layout: int) -> int:
        assert map_type == _win32.MAPVK_VK_TO_CHAR
        return {VK_OEM_1: ord("Ü")}.get(code, 0) if layout == GERMAN_LAYOUT else 0


class FakeKernel32:
    def __init__(self, desk: FakeWindows) -> None:
        self.desk = desk

    def GetModuleHandleW(self, name: str | None) -> int:
        return 0x7FF600000000

    def OpenProcess(self, access: int, inherit: bool, pid: int) -> int | None:
        assert access == win32_focus.PROCESS_QUERY_LIMITED_INFORMATION
        if pid not in self.desk.processes:
            return None  # ERROR_ACCESS_DENIED
        self.desk.open_processes += 1
        return 0x100 + pid

    def QueryFullProcessImageNameW(self, process: int, flags: int, path: Any, size: Any) -> int:
        path.value = self.desk.processes[process - 0x100]
        size.value = len(path.value)
        return 1

    def CloseHandle(self, handle: int) -> int:
        self.desk.open_processes -= 1
        return 1


class FakeDwmapi:
    def __init__(self, desk: FakeWindows) -> None:
        self.desk = desk

    def DwmGetWindowAttribute(self, hwnd: int, attribute: int, rect: Any, size: int) -> int:
        frame = self.desk.windows[hwnd].frame
        if attribute != win32_focus.DWMWA_EXTENDED_FRAME_BOUNDS or frame is None:
            return -2147024890  # E_HANDLE
        rect.left, rect.top, rect.right, rect.bottom = frame
        return 0


GAME, BROWSER, LAUNCHER, SHELL = 0x10010, 0x10020, 0x10030, 0x10040


@pytest.fixture
def desk(monkeypatch: pytest.MonkeyPatch) -> FakeWindows:
    """A desktop with Minetest, a browser over it, the game's hidden launcher and the taskbar."""
    desk = FakeWindows(
        windows={
            BROWSER: FakeWindow("Chrome_WidgetWin_1", "News", pid=40, thread=41),
            LAUNCHER: FakeWindow("Launcher", "", pid=10, thread=12, visible=False),
            GAME: FakeWindow("GLFW30", "Minetest 5.8", pid=10, thread=11,
                             rect=(-8, -8, 1288, 728), frame=(0, 0, 1280, 720)),
            SHELL: FakeWindow("Shell_TrayWnd", pid=50, thread=51),
        },
        processes={10: r"C:\Games\Minetest\bin\Minetest.exe",
                   40: r"C:\Program Files\Google\Chrome\Application\chrome.exe"},
    )
    libraries = Libraries(user32=FakeUser32(desk), kernel32=FakeKernel32(desk),
                          dwmapi=FakeDwmapi(desk))
    monkeypatch.setattr(win32_focus, "_libraries", libraries)
    monkeypatch.setattr(_win32api, "_libraries", libraries)
    return desk


# --- window lookup ------------------------------------------------------------------------------

def test_find_window_matches_executable_or_class_topmost_visible_first(desk: FakeWindows) -> None:
    for name in ("minetest", "MINETEST.EXE", "glfw30"):
        found = win32_focus.find_window(name)
        assert found is not None and found.window_id == GAME, name
    assert found == WindowInfo(window_id=GAME, wm_class=("GLFW30",), title="Minetest 5.8",
                               pid=10, executable="Minetest", geometry=(0, 0, 1280, 720))
    assert win32_focus.find_window("launcher") is None      # not visible
    assert win32_focus.find_window("notepad") is None
    assert desk.open_processes == 0                          # every process handle closed


def test_window_info_without_dwm_or_process_access(desk: FakeWindows,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(win32_focus.libraries(), "dwmapi", None)
    del desk.processes[10]                                   # e.g. an elevated game
    info = win32_focus.window_info(GAME)
    assert info is not None and (info.executable, info.geometry) == (None, (-8, -8, 1296, 736))
    assert win32_focus.matches(info, "GLFW30") and not win32_focus.matches(info, "minetest")
    assert win32_focus.window_info(0xDEAD) is None


def test_foreground_window(desk: FakeWindows) -> None:
    assert win32_focus.foreground_window() is None
    desk.foreground = BROWSER
    found = win32_focus.foreground_window()
    assert found is not None and (found.executable, found.wm_class) == (
        "chrome", ("Chrome_WidgetWin_1",))


# --- the backend on the fake user32 -------------------------------------------------------------

@pytest.fixture
def opened(desk: FakeWindows) -> Iterator[tuple[Win32InputBackend, EventRecorder]]:
    """A backend opened on the fake desktop (no thread), driven through its window procedure."""
    recorder = EventRecorder()
    backend = Win32InputBackend("minetest")
    backend._reset(recorder, recorder.on_focus)
    backend._open()
    yield backend, recorder
    backend._close()


def deliver(desk: FakeWindows, report: bytes) -> None:
    """WM_INPUT for a report, through the window procedure as DispatchMessageW calls it."""
    handle = 0x9000 + len(desk.reports)
    desk.reports[handle] = report
    desk.window_proc(MESSAGE_WINDOW, _win32.WM_INPUT, 1, handle)


def test_open_registers_a_sink_for_mouse_and_keyboard(
        desk: FakeWindows, opened: tuple[Win32InputBackend, EventRecorder]) -> None:
    created = next(call for call in desk.calls if call[0] == "CreateWindowExW")
    assert created[2] == _win32.HWND_MESSAGE
    assert ("RegisterRawInputDevices", [(1, 2, 0x100, MESSAGE_WINDOW),
                                        (1, 6, 0x100, MESSAGE_WINDOW)]) in desk.calls
    assert ("SetWinEventHook", 3, 3, 0) in desk.calls
    assert ("SetTimer", _win32.FOCUS_TIMER_ID, 100) in desk.calls
    assert ("SetThreadDpiAwarenessContext", -4) in desk.calls
    opened[0]._close()
    assert ("RegisterRawInputDevices", [(1, 2, 1, None), (1, 6, 1, None)]) in desk.calls
    assert ("UnhookWinEvent", 0xBEEF) in desk.calls and desk.calls[-1][0] == "UnregisterClassW"


def test_input_counts_only_while_the_game_is_foreground(
        desk: FakeWindows, opened: tuple[Win32InputBackend, EventRecorder]) -> None:
    _, recorder = opened
    desk.device_paths[KEYBOARD] = r"\\?\HID#VID_046D&PID_C31C&MI_00#7&1f&0&0000#{884b96c3}"
    desk.foreground = BROWSER
    deliver(desk, key_report(0x11, VK_W))
    assert recorder.events == []
    assert not any(call[0] == "GetRawInputData" for call in desk.calls)  # not even read

    desk.foreground = GAME
    deliver(desk, key_report(0x11, VK_W))                   # focus found on this report
    deliver(desk, mouse_report(buttons=LEFT_DOWN))
    deliver(desk, key_report(0x11, VK_W))                   # auto-repeat
    desk.foreground = BROWSER
    deliver(desk, key_report(0x11, VK_W, RI_KEY_BREAK))      # released in the browser: dropped
    deliver(desk, mouse_report(dx=5, dy=5))
    assert recorder.kinds() == ["focus_in", "pointer", "key_press:w", "button_press:left",
                                "key_release:w", "button_release:left", "focus_out"]
    focus_in, _, press, *_, focus_out = recorder.events
    assert (focus_in.window, focus_out.window) == ("GLFW30", "GLFW30")
    assert press.device == f"hid:046d:c31c@{KEYBOARD:#x}"
    releases = recorder.events[4:6]
    assert all(e.synthetic and e.time_source == "derived" for e in releases)
    assert {e.t_ns for e in releases} == {focus_out.t_ns}
    assert [e.t_ns for e in recorder.events] == sorted(e.t_ns for e in recorder.events)
    assert recorder.focus_ids() == [(True, GAME), (False, GAME)]


def test_foreground_events_and_the_poll_move_focus_without_input(
        desk: FakeWindows, opened: tuple[Win32InputBackend, EventRecorder]) -> None:
    _, recorder = opened
    desk.foreground = GAME
    desk.win_event_hook(1, 3, GAME, 0, 0, 0, 0)
    deliver(desk, key_report(0x1D, VK_CONTROL, RI_KEY_E0))
    desk.foreground = None                                   # mid-switch: no foreground window
    desk.window_proc(MESSAGE_WINDOW, _win32.WM_TIMER, _win32.FOCUS_TIMER_ID, 0)
    assert recorder.kinds() == ["focus_in", "pointer", "key_press:Control_R",
                                "key_release:Control_R", "focus_out"]


def test_oem_keys_are_named_by_the_games_layout(
        desk: FakeWindows, opened: tuple[Win32InputBackend, EventRecorder]) -> None:
    _, recorder = opened
    desk.layouts[11] = GERMAN_LAYOUT                          # the game's thread types German
    desk.foreground = GAME
    deliver(desk, key_report(0x1A, VK_OEM_1))
    assert recorder.events[-1].key == "udiaeresis"


def test_cursor_reports_follow_motion_at_most_every_8_ms(
        desk: FakeWindows, opened: tuple[Win32InputBackend, EventRecorder]) -> None:
    capture, recorder = opened
    desk.foreground = GAME
    deliver(desk, mouse_report(dx=1))                         # focus_in reports the cursor
    capture._next_pointer_ns = time.monotonic_ns() + 10**12  # the next report is not due
    desk.cursor = (130, 90)
    deliver(desk, mouse_report(dx=30, dy=-10))
    assert recorder.kinds()[-1] == "motion" and ("SetTimer", _win32.POINTER_TIMER_ID, 10) in (
        desk.calls)
    motion_t = recorder.events[-1].t_ns
    desk.window_proc(MESSAGE_WINDOW, _win32.WM_TIMER, _win32.POINTER_TIMER_ID, 0)
    pointer = recorder.events[-1]
    assert (pointer.kind, pointer.x, pointer.y, pointer.t_ns) == ("pointer", 130, 90, motion_t)
    assert ("KillTimer", _win32.POINTER_TIMER_ID) in desk.calls


def test_a_failing_sink_ends_the_loop_instead_of_vanishing(
        desk: FakeWindows, opened: tuple[Win32InputBackend, EventRecorder]) -> None:
    capture, _ = opened
    capture._sink = lambda event: 1 / 0
    desk.foreground = GAME
    deliver(desk, key_report(0x11, VK_W))
    assert isinstance(capture.failure, ZeroDivisionError)
    assert desk.messages.get_nowait() == QUIT


def test_start_and_stop_run_the_message_loop_on_its_thread(desk: FakeWindows) -> None:
    desk.foreground = GAME
    backend, recorder = Win32InputBackend("minetest"), EventRecorder()
    backend.start(recorder, recorder.on_focus)
    try:
        assert recorder.kinds()[:1] == ["focus_in"]            # known before start returns
        desk.reports[0x77] = key_report(0x11, VK_W)
        desk.messages.put((MESSAGE_WINDOW, _win32.WM_INPUT, 1, 0x77))
        recorder.wait_for(lambda e: e.kind == "key_press")
        desk.foreground = BROWSER
        desk.messages.put(WIN_EVENT)
        recorder.wait_for(lambda e: e.kind == "focus_out")
        desk.foreground = GAME
        desk.messages.put(WIN_EVENT)
        desk.messages.put((MESSAGE_WINDOW, _win32.WM_INPUT, 1, 0x77))
        recorder.wait_for(lambda e: e.kind == "key_press", count=2)
    finally:
        backend.stop()
    assert recorder.kinds() == ["focus_in", "pointer", "key_press:w", "key_release:w",
                                "focus_out", "focus_in", "pointer", "key_press:w",
                                "key_release:w"]
    assert recorder.events[-1].synthetic                       # still held when stopped
    assert ("DestroyWindow", MESSAGE_WINDOW) in desk.calls and backend.notes == []


def test_every_dll_function_called_has_a_prototype(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without restype/argtypes, ctypes would cut 64-bit handles to C ints on Windows."""
    class StandInDll:  # ctypes.WinDLL, which Linux lacks: functions are plain attribute holders
        def __init__(self, name: str, use_last_error: bool) -> None:
            self.functions: dict[str, Any] = {}

        def __getattr__(self, function: str) -> Any:
            return self.functions.setdefault(function, type(function, (), {})())

    monkeypatch.setattr(ctypes, "WinDLL", StandInDll, raising=False)
    for module, caller in ((win32_focus, win32_focus), (_win32api, _win32)):
        monkeypatch.setattr(module, "_libraries", None)
        loaded = module.libraries()
        source = Path(caller.__file__ or "").read_text()
        for dll in ("user32", "kernel32", "dwmapi"):
            called = set(re.findall(rf"\b{dll}\.([A-Z]\w+)", source))
            functions = getattr(loaded, dll).functions if called else {}
            declared = {name for name, f in functions.items()
                        if hasattr(f, "restype") and isinstance(f.argtypes, list)}
            assert called <= declared, (module.__name__, dll, called - declared)
