"""Win32 Raw Input structures (pure ctypes) and parsing of RAWINPUT reports into input events."""

from __future__ import annotations

import ctypes
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from capture.export.vocabulary import MOUSE_BUTTONS
from capture.inputs._base import EventKind, InputEvent
from capture.inputs._vkeys import (
    CHAR_NAMES,
    DEAD_KEYS,
    KEYPAD_WITHOUT_E0,
    KEYSYMS,
    VK_NAMES,
    WITH_E0,
)

# Windows types with their Windows sizes on every platform (ctypes.wintypes follows the host's
# C long, which is 8 bytes on 64-bit Linux, so it cannot describe these layouts there).
DWORD = ctypes.c_uint32
LONG = ctypes.c_int32
USHORT = ctypes.c_uint16
HANDLE = ctypes.c_void_p
WPARAM = ctypes.c_size_t

RIM_TYPEMOUSE, RIM_TYPEKEYBOARD, RIM_TYPEHID = 0, 1, 2
USAGE_PAGE_GENERIC_DESKTOP, USAGE_MOUSE, USAGE_KEYBOARD = 0x01, 0x02, 0x06
RIDEV_REMOVE, RIDEV_INPUTSINK = 0x0001, 0x0100  # INPUTSINK: input also while not foreground
RID_INPUT, RIDI_DEVICENAME = 0x10000003, 0x20000007
RAW_INPUT_ERROR = 0xFFFFFFFF                     # (UINT)-1 from GetRawInput* functions
MOUSE_MOVE_ABSOLUTE = 0x01
MOUSE_VIRTUAL_DESKTOP = 0x02
MOUSE_ATTRIBUTES_CHANGED = 0x04
ABSOLUTE_RANGE = 65535                   # absolute coordinates are normalized to 0..65535
RI_MOUSE_WHEEL = 0x0400
RI_MOUSE_HWHEEL = 0x0800
WHEEL_DELTA = 120                        # one notch; high-resolution wheels report fractions
# usButtonFlags (down, up) bits of the vocabulary's mouse buttons; back and forward are XBUTTON1
# and XBUTTON2.
BUTTON_FLAGS = dict(zip(MOUSE_BUTTONS, ((0x0001, 0x0002), (0x0010, 0x0020), (0x0004, 0x0008),
                                        (0x0040, 0x0080), (0x0100, 0x0200)), strict=True))
# (bit, button, pressed) in the order events follow: lowest bit first.
BUTTON_TRANSITIONS = sorted((bit, button, bit == bits[0]) for button, bits in BUTTON_FLAGS.items()
                            for bit in bits)
RI_KEY_BREAK, RI_KEY_E0, RI_KEY_E1 = 0x01, 0x02, 0x04
KEYBOARD_OVERRUN_MAKE_CODE = 0xFF
E0_PREFIX, PAUSE_KEYCODE = 0xE000, 0xE11D
VK_SHIFT, VK_NONE = 0x10, 0xFF
RIGHT_SHIFT_SCANCODE = 0x36
FAKE_SHIFT_SCANCODES = (0x2A, 0x36)      # E0 2A / E0 36: shift fix-ups around navigation keys
PAUSE_TAIL_SCANCODE = 0x45               # Pause is E1 1D 45: an E1 report, then 45
OEM_VKEYS = (*range(0xBA, 0xC1), *range(0xDB, 0xE0), 0xE2)  # VK_OEM_*: differ by layout
DEAD_KEY_BIT = 0x80000000                # MapVirtualKeyExW(MAPVK_VK_TO_CHAR) marks dead keys
UNICODE_KEYSYM_BASE = 0x01000000


class RAWINPUTDEVICE(ctypes.Structure):
    _fields_ = [("usUsagePage", USHORT), ("usUsage", USHORT), ("dwFlags", DWORD),
                ("hwndTarget", HANDLE)]


class RAWINPUTHEADER(ctypes.Structure):
    _fields_ = [("dwType", DWORD), ("dwSize", DWORD), ("hDevice", HANDLE), ("wParam", WPARAM)]


class RAWMOUSEBUTTONS(ctypes.Structure):
    _fields_ = [("usButtonFlags", USHORT), ("usButtonData", USHORT)]


class RAWMOUSEBUTTONUNION(ctypes.Union):
    _anonymous_ = ("buttons",)
    _fields_ = [("ulButtons", DWORD), ("buttons", RAWMOUSEBUTTONS)]


class RAWMOUSE(ctypes.Structure):
    _anonymous_ = ("button_union",)
    _fields_ = [("usFlags", USHORT), ("button_union", RAWMOUSEBUTTONUNION),
                ("ulRawButtons", DWORD), ("lLastX", LONG), ("lLastY", LONG),
                ("ulExtraInformation", DWORD)]


class RAWKEYBOARD(ctypes.Structure):
    _fields_ = [("MakeCode", USHORT), ("Flags", USHORT), ("Reserved", USHORT),
                ("VKey", USHORT), ("Message", ctypes.c_uint32), ("ExtraInformation", DWORD)]


class RAWHID(ctypes.Structure):
    _fields_ = [("dwSizeHid", DWORD), ("dwCount", DWORD), ("bRawData", ctypes.c_ubyte * 1)]


class RAWINPUTDATA(ctypes.Union):
    _fields_ = [("mouse", RAWMOUSE), ("keyboard", RAWKEYBOARD), ("hid", RAWHID)]


class RAWINPUT(ctypes.Structure):
    _fields_ = [("header", RAWINPUTHEADER), ("data", RAWINPUTDATA)]


HEADER_SIZE = ctypes.sizeof(RAWINPUTHEADER)   # 24 on 64-bit Windows, 16 on 32-bit


@dataclass(slots=True)
class ScreenArea:
    """Where absolute (0..65535) mouse coordinates land, in virtual-desktop pixels."""

    virtual_desktop: tuple[int, int, int, int] = (0, 0, 0, 0)  # x, y, width, height
    primary_size: tuple[int, int] = (0, 0)


@dataclass
class KeyState:
    """What parsing remembers between reports: layout, screen, devices, half a Pause key.

    What is held is the gate's business (capture/inputs/_base.py): parsing reports every make
    and break, auto-repeats included.
    """

    notes: list[str] = field(default_factory=list)
    layout_names: dict[int, str] = field(default_factory=dict)       # VK_OEM_* -> layout's name
    screen: ScreenArea = field(default_factory=ScreenArea)
    describe_device: Callable[[int], str | None] = lambda handle: None
    e1_pending: bool = False
    _device_names: dict[int, str] = field(default_factory=dict)
    _noted_devices: set[str] = field(default_factory=set)

    def device_name(self, handle: int) -> str:
        """A label for a raw input device handle, asked once per handle."""
        if handle not in self._device_names:
            self._device_names[handle] = self.describe_device(handle) or device_label(None, handle)
        return self._device_names[handle]

    def note_once(self, device: str, note: str) -> None:
        if device not in self._noted_devices:
            self._noted_devices.add(device)
            self.notes.append(note)


def parse_rawinput(data: bytes, t_ns: int, state: KeyState) -> list[InputEvent]:
    """The events in one RAWINPUT (as GetRawInputData returns it, native layout), stamped `t_ns`.

    Raw input carries no event time: `t_ns` is when the report was received.
    """
    header = _read(RAWINPUTHEADER, data, 0)
    if header.dwType == RIM_TYPEMOUSE:
        device = state.device_name(header.hDevice or 0)
        return _mouse_events(_read(RAWMOUSE, data, HEADER_SIZE), t_ns, device, state)
    if header.dwType == RIM_TYPEKEYBOARD:
        device = state.device_name(header.hDevice or 0)
        return _key_events(_read(RAWKEYBOARD, data, HEADER_SIZE), t_ns, device, state)
    return []


def _read(structure: Any, data: bytes, offset: int) -> Any:
    if len(data) < offset + ctypes.sizeof(structure):
        raise ValueError(f"raw input report of {len(data)} bytes is too short for "
                         f"{structure.__name__} at offset {offset}")
    return structure.from_buffer_copy(data, offset)


def _mouse_events(mouse: RAWMOUSE, t_ns: int, device: str, state: KeyState) -> list[InputEvent]:
    """Motion (or pointer), then button transitions in BUTTON_TRANSITIONS order, then wheel."""
    events: list[InputEvent] = []
    moved = bool(mouse.lLastX or mouse.lLastY) and not mouse.usFlags & MOUSE_ATTRIBUTES_CHANGED
    if moved and mouse.usFlags & MOUSE_MOVE_ABSOLUTE:
        events += _absolute_pointer(mouse, t_ns, device, state)
    elif moved:
        events.append(InputEvent(t_ns=t_ns, kind=EventKind.MOTION, dx=float(mouse.lLastX),
                                 dy=float(mouse.lLastY), device=device))
    for bit, button, pressed in BUTTON_TRANSITIONS:
        if mouse.usButtonFlags & bit:
            kind = EventKind.BUTTON_PRESS if pressed else EventKind.BUTTON_RELEASE
            events.append(InputEvent(t_ns=t_ns, kind=kind, button=button, device=device))
    # The wheels share usButtonData, so a report carries at most one of them.
    clicks = ctypes.c_int16(mouse.usButtonData).value / WHEEL_DELTA
    if mouse.usButtonFlags & RI_MOUSE_WHEEL:
        events.append(InputEvent(t_ns=t_ns, kind=EventKind.WHEEL, dx=0.0, dy=clicks,
                                 device=device))
    elif mouse.usButtonFlags & RI_MOUSE_HWHEEL:
        events.append(InputEvent(t_ns=t_ns, kind=EventKind.WHEEL, dx=clicks, dy=0.0,
                                 device=device))
    return events


def _absolute_pointer(mouse: RAWMOUSE, t_ns: int, device: str,
                      state: KeyState) -> list[InputEvent]:
    """A pointer event for an absolute device (remote desktop, tablet, VM); never fake deltas."""
    state.note_once(device, f"{device} reports absolute positions (remote desktop, tablet or "
                            "VM): pointer events only, no motion deltas from it")
    if mouse.usFlags & MOUSE_VIRTUAL_DESKTOP:
        left, top, width, height = state.screen.virtual_desktop
    else:
        (width, height), left, top = state.screen.primary_size, 0, 0
    if width <= 0 or height <= 0:
        return []  # screen size unknown: no honest position to report
    x = left + min(max(mouse.lLastX, 0) * width // ABSOLUTE_RANGE, width - 1)
    y = top + min(max(mouse.lLastY, 0) * height // ABSOLUTE_RANGE, height - 1)
    return [InputEvent(t_ns=t_ns, kind=EventKind.POINTER, x=x, y=y, device=device)]


def _key_events(keyboard: RAWKEYBOARD, t_ns: int, device: str,
                state: KeyState) -> list[InputEvent]:
    make_code, flags, vkey = keyboard.MakeCode, keyboard.Flags, keyboard.VKey
    if make_code == KEYBOARD_OVERRUN_MAKE_CODE:
        return []
    if flags & RI_KEY_E1:
        state.e1_pending = True  # the first half of Pause (E1 1D); the second half names it
        return []
    if state.e1_pending:
        state.e1_pending = False
        is_pause = make_code == PAUSE_TAIL_SCANCODE
        keycode = PAUSE_KEYCODE if is_pause else 0xE100 | make_code
        name = "Pause" if is_pause else key_name(vkey, make_code, False, state.layout_names)
    elif flags & RI_KEY_E0 and make_code in FAKE_SHIFT_SCANCODES:
        return []  # not a key: the keyboard undoing Shift around an arrow or navigation key
    else:
        e0 = bool(flags & RI_KEY_E0)
        keycode = (E0_PREFIX if e0 else 0) | make_code
        name = key_name(vkey, make_code, e0, state.layout_names)
    # Injected keys may carry no scancode (keycode None). Windows repeats the make while a key
    # is held: the gate drops those repeats.
    kind = EventKind.KEY_RELEASE if flags & RI_KEY_BREAK else EventKind.KEY_PRESS
    return [InputEvent(t_ns=t_ns, kind=kind, key=name, keycode=keycode or None,
                       keysym=keysym_of(name), device=device)]


def key_name(vkey: int, make_code: int, e0: bool, layout_names: dict[int, str]) -> str:
    """The X11 keysym name for a key report: VKey refined by scancode and the E0 prefix."""
    if vkey == VK_SHIFT:
        return "Shift_R" if make_code == RIGHT_SHIFT_SCANCODE else "Shift_L"
    if e0 and vkey in WITH_E0:
        return WITH_E0[vkey]
    if not e0 and vkey in KEYPAD_WITHOUT_E0:
        return KEYPAD_WITHOUT_E0[vkey]
    name = layout_names.get(vkey) or VK_NAMES.get(vkey)
    if name is not None:
        return name
    if vkey == VK_NONE:
        return f"scancode_{(E0_PREFIX if e0 else 0) | make_code:04X}"
    return f"VK_{vkey:02X}"


_KEYSYM_BY_NAME = {**{name: ord(char) for char, name in CHAR_NAMES.items()}, **KEYSYMS}


def keysym_of(name: str) -> int | None:
    """The X11 keysym value of a name key_name or layout_key_names gives; None if it has none."""
    if name in _KEYSYM_BY_NAME:
        return _KEYSYM_BY_NAME[name]
    if re.fullmatch(r"U[0-9A-F]{4,6}", name):
        return UNICODE_KEYSYM_BASE | int(name[1:], 16)
    return None


def char_keysym_name(char: str) -> str:
    """The X11 keysym name of a typed character: 'semicolon', 'udiaeresis', else 'U20AC'."""
    return CHAR_NAMES.get(char) or f"U{ord(char):04X}"


def layout_key_names(char_of_vkey: Callable[[int], int]) -> dict[int, str]:
    """Names of the VK_OEM_* keys in a layout, from MapVirtualKeyExW(vk, MAPVK_VK_TO_CHAR)."""
    names = {}
    for vkey in OEM_VKEYS:
        code = char_of_vkey(vkey)
        if not code & 0xFFFF:
            continue
        char = chr(code & 0xFFFF).lower()  # letters come back upper case; X11 names level 0
        dead = DEAD_KEYS.get(char) if code & DEAD_KEY_BIT else None
        names[vkey] = dead or char_keysym_name(char)
    return names


_VID_PID = re.compile(r"VID[_&](?:[0-9A-F]{4})?([0-9A-F]{4}).*?PID[_&]([0-9A-F]{4})",
                      re.IGNORECASE)


def device_label(interface_path: str | None, handle: int) -> str:
    """'hid:046d:c539@0x1003f' from a device interface path (no serial numbers), else by handle.

    Handle 0 means no device: input injected with SendInput (or some touchpads).
    """
    found = _VID_PID.search(interface_path or "")
    kind = f"hid:{found[1]}:{found[2]}".lower() if found else "rawinput"
    return f"{kind}@{handle:#x}"
