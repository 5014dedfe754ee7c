"""XI2 raw-event parsing, X11 keysym names, and the X server clock on the host clock."""

from __future__ import annotations

import functools
import importlib
import select
import struct
from dataclasses import dataclass

from Xlib import X, Xatom
from Xlib.display import Display

from capture.clock import now_ns
from capture.export.vocabulary import MOUSE_BUTTONS

CLOCK_AGREEMENT_NS = 50_000_000          # server ms within this of the host clock => same clock
CALIBRATION_SAMPLES = 5
X_TIME_WRAP_MS = 1 << 32
KEYSYM_GROUPS = ("miscellany", "latin1", "latin2", "latin3", "latin4", "greek", "xkb",
                 "xf86")
# X11 core button numbers of the vocabulary's mouse buttons; 4-7 are wheel clicks.
BUTTON_NUMBERS: dict[str, int] = dict(zip(MOUSE_BUTTONS, (1, 2, 3, 8, 9), strict=True))
_RAW_HEADER = struct.Struct("=HIIHHI4x")  # deviceid, time, detail, sourceid, valuators_len, flags
_FP3232 = struct.Struct("=iI")


@dataclass(frozen=True, slots=True)
class RawEvent:
    """The fields of an XI2 raw event (xXIRawEvent) that python-xlib leaves unparsed."""

    deviceid: int
    time_ms: int
    detail: int
    sourceid: int
    flags: int
    values: dict[int, float]  # valuator number -> unaccelerated value (axisvalues_raw)


def parse_raw_event(data: bytes) -> RawEvent:
    """Parse the bytes after a GenericEvent's evtype: header, valuator mask, values, raw values."""
    deviceid, time_ms, detail, sourceid, mask_words, flags = _RAW_HEADER.unpack_from(data, 0)
    offset = _RAW_HEADER.size
    valuators: list[int] = []
    for word_index, word in enumerate(struct.unpack_from(f"={mask_words}I", data, offset)):
        valuators.extend(word_index * 32 + bit for bit in range(32) if word >> bit & 1)
    # Skip the accelerated axisvalues: the raw ones that follow are the device's own deltas.
    offset += 4 * mask_words + _FP3232.size * len(valuators)
    values = {}
    for number in valuators:
        integral, fraction = _FP3232.unpack_from(data, offset)
        values[number] = integral + fraction / 4294967296.0
        offset += _FP3232.size
    return RawEvent(deviceid, time_ms, detail, sourceid, flags, values)


@functools.cache
def _keysym_names() -> dict[int, str]:
    names: dict[int, str] = {}
    for group in KEYSYM_GROUPS:
        module = importlib.import_module(f"Xlib.keysymdef.{group}")
        for attribute, value in vars(module).items():
            if attribute.startswith("XK_") and isinstance(value, int):
                # keysymdef lists the canonical name first (Prior before Page_Up), as Xlib does.
                names.setdefault(value, attribute[3:].replace("XF86_", "XF86", 1))
    return names


def keysym_name(keysym: int) -> str | None:
    """The X11 keysym name ('w', 'Escape', 'Shift_L'), 'U20AC' for Unicode keysyms, else hex."""
    if keysym == X.NoSymbol:
        return None
    name = _keysym_names().get(keysym)
    if name is not None:
        return name
    if keysym & 0xFF000000 == 0x01000000:
        return f"U{keysym & 0xFFFFFF:04X}"
    return f"0x{keysym:08x}"


class ServerClock:
    """Converts X server times (ms, 32-bit) to host-clock ns, or stamps on receipt if it can't."""

    def __init__(self, offset_ns: int | None) -> None:
        self.offset_ns = offset_ns  # host ns minus server ns; None => use receive time

    @classmethod
    def calibrate(cls, display: Display, notes: list[str]) -> ServerClock:
        """Compare fresh server times (from PropertyNotify on a private window) with now_ns()."""
        probe = display.screen().root.create_window(
            -10, -10, 1, 1, 0, 0, X.InputOnly, X.CopyFromParent,
            override_redirect=True, event_mask=X.PropertyChangeMask)
        atom = display.intern_atom("_CAPTURE_TIME_PROBE")
        differences = []
        try:
            for _ in range(CALIBRATION_SAMPLES):
                probe.change_property(atom, Xatom.STRING, 8, b"")
                display.flush()
                server_ms, receive_ns = _wait_property_notify(display, probe.id)
                if server_ms is None:
                    break
                differences.append(receive_ns - server_ms * 1_000_000)
        finally:
            probe.destroy()
            display.sync()
        if len(differences) < CALIBRATION_SAMPLES:
            notes.append("X server time unavailable (no PropertyNotify): events stamped on receipt")
            return cls(None)
        wrapped = [_wrap_ns(d) for d in differences]
        if all(abs(d) < CLOCK_AGREEMENT_NS for d in wrapped):
            notes.append(f"X server time is host monotonic ms (receive - server: "
                         f"{min(wrapped) / 1e6:+.2f}..{max(wrapped) / 1e6:+.2f} ms)")
            return cls(0)
        if max(differences) - min(differences) > CLOCK_AGREEMENT_NS:
            notes.append("X server time too unsteady to calibrate: events stamped on receipt")
            return cls(None)
        offset = min(differences) - 500_000
        notes.append(f"X server time is not host monotonic: offset {offset} ns from "
                     f"{CALIBRATION_SAMPLES} samples (may drift)")
        return cls(offset)

    def host_ns(self, server_ms: int, receive_ns: int) -> tuple[int, str]:
        """(host ns, time_source) for an event the server stamped `server_ms`."""
        if self.offset_ns is None:
            return receive_ns, "receive"
        expected_ms = (receive_ns - self.offset_ns) // 1_000_000
        wraps = round((expected_ms - server_ms) / X_TIME_WRAP_MS)
        full_ms = server_ms + wraps * X_TIME_WRAP_MS
        # X times are truncated to the ms; +0.5 ms is the unbiased estimate, never past receipt.
        return min(full_ms * 1_000_000 + 500_000 + self.offset_ns, receive_ns), "x_server"


def _wrap_ns(difference_ns: int) -> int:
    """A receive-minus-server difference with the 32-bit ms wrap of X time taken out."""
    wrap_ns = X_TIME_WRAP_MS * 1_000_000
    return (difference_ns + wrap_ns // 2) % wrap_ns - wrap_ns // 2


def _wait_property_notify(display: Display, window_id: int,
                          timeout_ns: int = 1_000_000_000) -> tuple[int | None, int]:
    deadline = now_ns() + timeout_ns
    while now_ns() < deadline:
        while display.pending_events():
            event = display.next_event()
            if event.type == X.PropertyNotify and event.window.id == window_id:
                return event.time, now_ns()
        select.select([display.fileno()], [], [], max(deadline - now_ns(), 0) / 1e9)
    return None, now_ns()
