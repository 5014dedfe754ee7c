"""The input base: event kinds as the events schema lists them, and what counts as held."""

from __future__ import annotations

import json

import pytest

from capture import formats
from capture.inputs import HOLDS, EventKind, InputEvent
from capture.inputs._base import Holds


def test_event_kinds_are_the_schemas_kinds() -> None:
    schema = json.loads((formats.schemas_dir() / formats.EVENTS_SCHEMA).read_text())
    (kind,) = (f for f in schema["fields"] if f["name"] == "kind")
    assert [name.strip() for name in kind["doc"].split("|")] == [k.value for k in EventKind]
    record = InputEvent(t_ns=1, kind="key_press", key="w").to_record()
    assert isinstance(record["kind"], EventKind)  # and written as its plain string value:
    assert json.dumps(record) == ('{"t_ns": 1, "kind": "key_press", "time_source": "receive", '
                                  '"synthetic": false, "key": "w"}')


def test_each_press_has_one_release_and_back() -> None:
    for press, release in HOLDS.items():
        assert press.release_of() is release and release.press_of() is press
    assert EventKind.MOTION.release_of() is None and EventKind.FOCUS_IN.press_of() is None


def key(kind: EventKind, t_ns: int, keycode: int | None, name: str) -> InputEvent:
    return InputEvent(t_ns=t_ns, kind=kind, key=name, keycode=keycode, device="kbd")


def test_repeats_and_unmatched_releases_are_refused() -> None:
    holds = Holds()
    assert not holds.release(key(EventKind.KEY_RELEASE, 1, 25, "w"))
    assert holds.press(key(EventKind.KEY_PRESS, 2, 25, "w"))
    assert not holds.press(key(EventKind.KEY_PRESS, 3, 25, "W"))         # a repeat
    release = key(EventKind.KEY_RELEASE, 4, 25, "W")
    assert holds.release(release) and release.key == "w"                 # named as pressed
    assert not holds.release(key(EventKind.KEY_RELEASE, 5, 25, "w"))


def test_release_all_closes_keys_then_buttons_then_pads_each_in_press_order() -> None:
    holds = Holds()
    pad = InputEvent(t_ns=1, kind=EventKind.GAMEPAD_BUTTON_PRESS, axis="a", device="pad#0")
    other_pad = InputEvent(t_ns=1, kind=EventKind.GAMEPAD_BUTTON_PRESS, axis="a", device="pad#1")
    button = InputEvent(t_ns=2, kind=EventKind.BUTTON_PRESS, button="left", device="mouse")
    for press in (pad, other_pad, button, key(EventKind.KEY_PRESS, 3, 50, "Shift_L"),
                  key(EventKind.KEY_PRESS, 4, None, "VK_E5")):
        assert holds.press(press)
    only_pad_1 = holds.release_all(9, only=lambda press: press.device == "pad#1")
    assert [(e.kind, e.axis, e.device) for e in only_pad_1] == [
        ("gamepad_button_release", "a", "pad#1")]
    releases = holds.release_all(10)
    assert [(e.kind, e.key or e.button or e.axis) for e in releases] == [
        ("key_release", "Shift_L"), ("key_release", "VK_E5"), ("button_release", "left"),
        ("gamepad_button_release", "a")]
    assert all(e.t_ns == 10 and e.synthetic and e.time_source == "derived" for e in releases)
    assert releases[0].keycode == 50 and releases[0].device == "kbd"
    assert holds.release_all(11) == []


def test_an_unknown_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="keypress"):
        InputEvent(t_ns=1, kind="keypress")
