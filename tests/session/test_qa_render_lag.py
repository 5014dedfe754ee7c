"""QA's fps_achieved counts frames and time over the same steps (OBS render lag, issue 8)."""

from __future__ import annotations

import pyarrow as pa

from capture import formats
from capture.session.qa import quality_summary

INTERVAL = 16_666_667


def frames_table(times: list[int], dropped: list[int]) -> pa.Table:
    rows = [{"frame_index": i, "capture_time_ns": t, "grab_duration_ns": 0,
             "dropped_before": d, "repeated": False, "pts": i}
            for i, (t, d) in enumerate(zip(times, dropped, strict=True))]
    return formats.table_from_rows(rows, formats.arrow_schema(formats.FRAMES_SCHEMA))


def no_events() -> pa.Table:
    return formats.table_from_rows([], formats.arrow_schema(formats.EVENTS_SCHEMA))


def test_render_lag_repeats_do_not_inflate_fps_achieved() -> None:
    # 60 fps, OBS renders every 11th slot and repeats the picture (same time) in between,
    # the fresh frame after a run having dropped_before = 10: like a session that said 1076.8.
    times, dropped = [], []
    for render in range(0, 660, 11):
        for repeat in range(11):
            times.append(10**10 + render * INTERVAL)
            dropped.append(10 if repeat == 0 and render else 0)
    qa = quality_summary(no_events(), frames_table(times, dropped), 60, times[0],
                                times[-1])
    assert 55 <= qa.fps_achieved <= 61, qa.fps_achieved


def test_a_pause_is_still_left_out() -> None:
    times = [10**10 + i * INTERVAL for i in range(60)]
    times += [times[-1] + 2 * 10**9 + i * INTERVAL for i in range(60)]
    qa = quality_summary(no_events(), frames_table(times, [0] * 120), 60, times[0],
                                times[-1])
    assert abs(qa.fps_achieved - 60) < 0.1
