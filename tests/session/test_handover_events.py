"""Input during a segment hand-over: on disk at once (a crash then loses none), split exactly at
the boundary, keys held across it released in the old segment and pressed in the new one."""

from __future__ import annotations

import time
from pathlib import Path

from capture import formats
from capture.inputs import EventKind, InputEvent
from capture.journal import FLUSH_INTERVAL_NS, JournalWriter, read_journal
from capture.session import writer
from capture.session.recorder import _EventWriter

BOUNDARY = 350


def press(t: int, key: str) -> InputEvent:
    return InputEvent(t_ns=t, kind=EventKind.KEY_PRESS, key=key)


def release(t: int, key: str) -> InputEvent:
    return InputEvent(t_ns=t, kind=EventKind.KEY_RELEASE, key=key)


def motion(t: int) -> InputEvent:
    return InputEvent(t_ns=t, kind=EventKind.MOTION, dx=1.0, dy=0.0)


def on_disk(path: Path) -> list[tuple[int, str, str | None, bool]]:
    return [(r["t_ns"], r["kind"], r.get("key"), r["synthetic"]) for r in read_journal(path)]


def test_handover_input_is_on_disk_before_the_split_and_split_exactly(tmp_path: Path) -> None:
    old_path, new_path = tmp_path / "old.jsonl", tmp_path / "new.jsonl"
    events = _EventWriter(JournalWriter(old_path), on_activity=lambda: None)
    try:
        events.sink(press(100, "a"))
        events.begin_handover()
        during = [motion(200), press(300, "b"), motion(BOUNDARY), motion(400), release(450, "a")]
        for event in during:
            events.sink(event)
        # The boundary is not known yet (the new video's first frame is late): a recorder
        # killed now must still find every event in a journal.
        time.sleep(3 * FLUSH_INTERVAL_NS / 1e9)
        assert [t for t, *_ in on_disk(old_path)] == [100, 200, 300, BOUNDARY, 400, 450]
        events.finish_handover(JournalWriter(new_path), BOUNDARY)
        # finish_handover returns with the new segment's input on disk
        assert on_disk(new_path) == [
            (BOUNDARY, "key_press", "a", True), (BOUNDARY, "key_press", "b", True),
            (BOUNDARY, "motion", None, False), (400, "motion", None, False),
            (450, "key_release", "a", False)]
    finally:
        events.close()
    old_records = list(read_journal(old_path))
    assert (BOUNDARY, "key_release", "a", True) in on_disk(old_path)
    assert (BOUNDARY, "key_release", "b", True) in on_disk(old_path)

    # The old segment's finalise keeps what came before the boundary and the releases at it.
    table = formats.table_from_rows(old_records, formats.arrow_schema(formats.EVENTS_SCHEMA))
    kept = writer._events_before_handover(table.sort_by([("t_ns", "ascending")]), BOUNDARY)
    assert [(r["t_ns"], r["kind"], r.get("key"), r["synthetic"]) for r in kept.to_pylist()] == [
        (100, "key_press", "a", False), (200, "motion", None, False),
        (300, "key_press", "b", False), (BOUNDARY, "key_release", "a", True),
        (BOUNDARY, "key_release", "b", True)]
