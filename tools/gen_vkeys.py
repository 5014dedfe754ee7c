"""Generate capture/inputs/_vkeys.py: Windows virtual keys -> the X11 keysym names X11 reports.

The tables below are the source; keysym values and Latin-1 names come from python-xlib's
keysymdef, and every name is checked to be the one the X11 backend reports for that keysym
(capture.inputs._xi2.keysym_name), so both platforms share one key vocabulary. Run
`python tools/gen_vkeys.py` after changing a table; `--check` exits 1 if the module is stale.
"""

from __future__ import annotations

import importlib
import string
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from capture.inputs._xi2 import KEYSYM_GROUPS, keysym_name  # noqa: E402

TARGET = ROOT / "capture" / "inputs" / "_vkeys.py"

# Virtual-key code -> keysym name of a US keyboard (unshifted). VK_SHIFT, VK_CONTROL, VK_MENU and
# the keys below that share a VK with the keypad are refined by scancode / E0 prefix at parse time.
_VK_NAMES: dict[int, str] = {
    0x03: "Break", 0x08: "BackSpace", 0x09: "Tab", 0x0C: "Clear", 0x0D: "Return",
    0x10: "Shift_L", 0x11: "Control_L", 0x12: "Alt_L", 0x13: "Pause", 0x14: "Caps_Lock",
    0x1B: "Escape", 0x1C: "Henkan_Mode", 0x1D: "Muhenkan", 0x20: "space", 0x21: "Prior",
    0x22: "Next", 0x23: "End", 0x24: "Home", 0x25: "Left", 0x26: "Up", 0x27: "Right",
    0x28: "Down", 0x29: "Select", 0x2A: "Print", 0x2B: "Execute", 0x2C: "Print",
    0x2D: "Insert", 0x2E: "Delete", 0x2F: "Help",
    **{0x30 + i: digit for i, digit in enumerate(string.digits)},
    **{0x41 + i: letter for i, letter in enumerate(string.ascii_lowercase)},
    0x5B: "Super_L", 0x5C: "Super_R", 0x5D: "Menu", 0x5F: "XF86Sleep",
    **{0x60 + i: f"KP_{i}" for i in range(10)},
    0x6A: "KP_Multiply", 0x6B: "KP_Add", 0x6C: "KP_Separator", 0x6D: "KP_Subtract",
    0x6E: "KP_Decimal", 0x6F: "KP_Divide",
    **{0x70 + i: f"F{i + 1}" for i in range(24)},
    0x90: "Num_Lock", 0x91: "Scroll_Lock",
    0xA0: "Shift_L", 0xA1: "Shift_R", 0xA2: "Control_L", 0xA3: "Control_R", 0xA4: "Alt_L",
    0xA5: "Alt_R", 0xA6: "XF86Back", 0xA7: "XF86Forward", 0xA8: "XF86Refresh",
    0xA9: "XF86Stop", 0xAA: "XF86Search", 0xAB: "XF86Favorites", 0xAC: "XF86HomePage",
    0xAD: "XF86AudioMute", 0xAE: "XF86AudioLowerVolume", 0xAF: "XF86AudioRaiseVolume",
    0xB0: "XF86AudioNext", 0xB1: "XF86AudioPrev", 0xB2: "XF86AudioStop",
    0xB3: "XF86AudioPlay", 0xB4: "XF86Mail", 0xB5: "XF86AudioMedia", 0xB6: "XF86MyComputer",
    0xB7: "XF86Calculator",
    # VK_OEM_*: US positions; the backend renames them from the active layout when it can.
    0xBA: "semicolon", 0xBB: "equal", 0xBC: "comma", 0xBD: "minus", 0xBE: "period",
    0xBF: "slash", 0xC0: "grave", 0xDB: "bracketleft", 0xDC: "backslash",
    0xDD: "bracketright", 0xDE: "apostrophe", 0xDF: "grave", 0xE2: "less",
}
# Keys whose VK the keypad shares when NumLock is off: without the E0 prefix they are keypad keys.
_KEYPAD_WITHOUT_E0: dict[int, str] = {
    0x0C: "KP_Begin", 0x21: "KP_Prior", 0x22: "KP_Next", 0x23: "KP_End", 0x24: "KP_Home",
    0x25: "KP_Left", 0x26: "KP_Up", 0x27: "KP_Right", 0x28: "KP_Down", 0x2D: "KP_Insert",
    0x2E: "KP_Delete",
}
# Keys that the E0 prefix turns into their right-hand or keypad twin.
_WITH_E0: dict[int, str] = {0x0D: "KP_Enter", 0x11: "Control_R", 0x12: "Alt_R"}
# Dead keys (a layout's accent keys) by the accent character the layout reports.
_DEAD_KEYS: dict[str, str] = {
    "`": "dead_grave", "´": "dead_acute", "'": "dead_acute", "^": "dead_circumflex",
    "~": "dead_tilde", "¨": "dead_diaeresis", '"': "dead_diaeresis", "°": "dead_abovering",
    "¸": "dead_cedilla", "ˇ": "dead_caron", "˘": "dead_breve", "˛": "dead_ogonek",
    "˝": "dead_doubleacute", "˙": "dead_abovedot", "¯": "dead_macron",
}
_LATIN1 = [*range(0x20, 0x7F), *range(0xA0, 0x100)]


def keysym_values() -> dict[str, int]:
    """Keysym name (as X11 reports it) -> value, from python-xlib's keysymdef."""
    values: dict[str, int] = {}
    for group in KEYSYM_GROUPS:
        module = importlib.import_module(f"Xlib.keysymdef.{group}")
        for attribute, value in vars(module).items():
            if attribute.startswith("XK_") and isinstance(value, int):
                values.setdefault(attribute[3:].replace("XF86_", "XF86", 1), value)
    return values


def _checked_keysyms(names: set[str]) -> dict[str, int]:
    values = keysym_values()
    keysyms = {}
    for name in sorted(names):
        value = values[name]
        assert keysym_name(value) == name, f"X11 reports {value:#x} as {keysym_name(value)}"
        keysyms[name] = value
    return keysyms


def _quoted(text: str) -> str:
    """A double-quoted Python literal; invisible characters (no-break space) as escapes."""
    def literal(ch: str) -> str:
        if ch in ('"', "\\"):
            return "\\" + ch
        if ch == " " or (ch.isprintable() and not ch.isspace() and ch != "\xad"):
            return ch
        return f"\\x{ord(ch):02x}"
    return '"' + "".join(literal(ch) for ch in text) + '"'


def _wrapped(items: list[str], width: int = 92) -> list[str]:
    lines, row = [], ""
    for item in items:
        if row and len(row) + len(item) + 2 > width:
            lines.append(row.rstrip())
            row = ""
        row += ("    " if not row else "") + item + ", "
    if row:
        lines.append(row.rstrip())
    return lines


def _dict(name: str, annotation: str, items: list[str]) -> list[str]:
    return [f"{name}: {annotation} = {{", *_wrapped(items), "}"]


def render() -> str:
    char_names = {chr(code): keysym_name(code) for code in _LATIN1}
    names = {*_VK_NAMES.values(), *_KEYPAD_WITHOUT_E0.values(), *_WITH_E0.values(),
             *_DEAD_KEYS.values()}
    keysyms = _checked_keysyms(names)
    lines = [
        '"""Windows virtual keys -> X11 keysym names: GENERATED by tools/gen_vkeys.py, '
        'do not edit."""',
        "",
        "# Virtual-key code -> X11 keysym name on a US keyboard (unshifted).",
        *_dict("VK_NAMES", "dict[int, str]",
               [f'0x{vk:02X}: "{name}"' for vk, name in sorted(_VK_NAMES.items())]),
        "# Without the E0 prefix these VKs come from the keypad (NumLock off).",
        *_dict("KEYPAD_WITHOUT_E0", "dict[int, str]",
               [f'0x{vk:02X}: "{name}"' for vk, name in sorted(_KEYPAD_WITHOUT_E0.items())]),
        "# With the E0 prefix these VKs are the right-hand or keypad twin.",
        *_dict("WITH_E0", "dict[int, str]",
               [f'0x{vk:02X}: "{name}"' for vk, name in sorted(_WITH_E0.items())]),
        "# Accent character a layout reports for a dead key -> X11 dead keysym name.",
        *_dict("DEAD_KEYS", "dict[str, str]",
               [f'{_quoted(ch)}: "{name}"' for ch, name in _DEAD_KEYS.items()]),
        "# X11 keysym name -> keysym value, for every name above.",
        *_dict("KEYSYMS", "dict[str, int]",
               [f'"{name}": 0x{value:X}' for name, value in keysyms.items()]),
        "# Latin-1 character -> X11 keysym name (its keysym value is the code point).",
        *_dict("CHAR_NAMES", "dict[str, str]",
               [f'{_quoted(ch)}: "{name}"' for ch, name in char_names.items()]),
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        current = TARGET.read_text(encoding="utf-8") if TARGET.exists() else ""
        if current != text:
            print(f"{TARGET} is out of date: run python tools/gen_vkeys.py", file=sys.stderr)
            return 1
        return 0
    TARGET.write_text(text, encoding="utf-8")
    print(f"wrote {TARGET} ({len(_VK_NAMES)} virtual keys)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
