"""The OBS timeline on a real recording: OBS 29 at 60 fps lagging 90 % of its render ticks."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import av
import numpy as np
import pytest

from capture.clockface import decode_clock
from capture.video.obs.recording import RecordingFile
from capture.video.obs.timeline import ClockLog, Timeline, build_timeline, parse_clock_log

DATA = Path(__file__).parent / "data" / "obs29-60fps-lag"
INTERVAL_NS = 1e9 / 60
STALL_START = 470     # frames 470-507 show one picture: the clock window had stopped redrawing


@pytest.fixture(scope="module")
def recording() -> RecordingFile:
    return RecordingFile(DATA / "video.mkv")


@pytest.fixture(scope="module")
def pictures() -> list[np.ndarray]:
    with av.open(str(DATA / "video.mkv")) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


def clock_log() -> ClockLog:
    with (DATA / "obs-clock.jsonl").open("rb") as lines:
        return parse_clock_log(lines)


def screen_spans() -> list[list[int]]:
    return json.loads((DATA / "screen-spans.json").read_text())["spans"]


def wrong_frames(timeline: Timeline, pictures: Sequence[np.ndarray],
                 spans: Sequence[Sequence[int]]) -> list[str]:
    """Frames neither marked uncertain nor within one interval of their drawn clock (or of the
    span that picture was on the screen, where the clock window had not redrawn)."""
    wrong = []
    for record, picture, (shown_from, shown_until) in zip(timeline.records, pictures, spans,
                                                         strict=True):
        if record["time_uncertain"]:
            continue
        capture = record["capture_time_ns"]
        drawn = decode_clock(picture, near_ns=capture)
        assert drawn is not None, record
        off_screen = max(shown_from - capture, 0) + max(capture - shown_until, 0)
        if abs(capture - drawn) > INTERVAL_NS and off_screen > INTERVAL_NS:
            wrong.append(f"frame {record['frame_index']}: {(capture - drawn) / 1e6:+.1f} ms")
    return wrong


def test_every_frame_of_a_real_lagging_recording_is_right_or_marked(
        recording: RecordingFile, pictures: list[np.ndarray]) -> None:
    log = clock_log()
    lagged = log.tick_lagged[-1] - log.tick_lagged[0]
    assert lagged > 0.8 * (len(pictures))       # OBS lagged most render ticks
    timeline = build_timeline(log, recording.pts, recording.time_base, recording.fingerprints)
    assert len(timeline.records) == len(pictures)
    assert wrong_frames(timeline, pictures, screen_spans()) == []
    assert sum(r["time_uncertain"] for r in timeline.records) <= 0.05 * len(pictures)


def test_a_real_recording_starting_on_one_picture_gets_no_stale_times(
        recording: RecordingFile, pictures: list[np.ndarray]) -> None:
    # As if the file had started at frame 470 (its first 38 frames one picture, as when OBS
    # stalls while a recording starts) and the start event had named the slot that frame shows:
    # frame 0's prior is then 2 slots late, and every candidate near it matches the first 30
    # frames equally. Placing frame 0 there gave pictures the next render's tick (issue 8).
    log = clock_log()
    whole = build_timeline(log, recording.pts, recording.time_base, recording.fingerprints)
    assert whole.first_slot_ts is not None and not whole.cuts
    slot_ts = whole.first_slot_ts + STALL_START * log.interval_ns
    log.start = {**log.start, "last_ts": slot_ts}
    late = build_timeline(log, recording.pts[STALL_START:], recording.time_base,
                          lambda positions: recording.fingerprints(
                              [p + STALL_START for p in positions]))
    assert late.first_slot_ts == slot_ts
    assert [r["capture_time_ns"] for r in late.records] == \
        [r["capture_time_ns"] for r in whole.records[STALL_START:]]
    assert wrong_frames(late, pictures[STALL_START:], screen_spans()[STALL_START:]) == []
