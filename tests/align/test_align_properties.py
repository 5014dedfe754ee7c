"""Property tests of capture.align: any frame timeline, any event stream."""

from __future__ import annotations

from typing import Any

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from capture.align import Alignment, align_session, continuous_runs, key_slot
from capture.export.vocabulary import ACTION_NAMES, GAMEPAD_AXES, KEY_NAMES, MOUSE_BUTTONS

from .reference import events_table, frame_intervals, key_holds, keys_held, locate

KEYS = ["w", "W", "a", "space", "Shift_L", "F13", "XF86AudioMute"]
BUTTONS = [*MOUSE_BUTTONS[:3], "button9"]
PROPERTY_SETTINGS = settings(max_examples=120, deadline=None,
                             suppress_health_check=[HealthCheck.too_slow])


@st.composite
def timelines(draw: st.DrawFn) -> tuple[np.ndarray, int, int, float]:
    """Capture times with jitter, dropped slots and pauses; source fps, target fps, max length."""
    source_fps = draw(st.sampled_from([10, 30, 60]))
    fps = draw(st.sampled_from([5, 10, 15, 30, 60]))
    interval = 1e9 / source_fps
    n = draw(st.integers(1, 50))
    step = st.one_of(
        st.integers(int(0.3 * interval), int(1.7 * interval)),      # jitter
        st.integers(int(1.7 * interval), int(3 * interval)),        # dropped slots
        st.integers(int(3 * interval) + 1, int(12 * interval)),     # a pause
    )
    deltas = draw(st.lists(step, min_size=n - 1, max_size=n - 1))
    start = draw(st.integers(0, 10**12))
    times = np.cumsum([start, *deltas]).astype(np.int64)
    max_episode_s = draw(st.sampled_from([0.2, 0.5, 1.0, 600.0]))
    return times, source_fps, fps, max_episode_s


@st.composite
def event_times(draw: st.DrawFn, times: np.ndarray, fps: int) -> int:
    """Any time around the recording, often exactly on (or 1 ns off) a grid time."""
    lo, hi = int(times[0]) - 200_000_000, int(times[-1]) + 400_000_000
    if draw(st.booleans()):
        k = draw(st.integers(0, int((hi - int(times[0])) * fps // 1e9)))
        return int(times[0]) + round(k * 1e9 / fps) + draw(st.sampled_from([-1, 0, 0, 1]))
    return draw(st.integers(lo, hi))


@st.composite
def sessions(draw: st.DrawFn) -> tuple[np.ndarray, list[dict[str, Any]], Alignment]:
    times, source_fps, fps, max_episode_s = draw(timelines())
    rows = []
    for _ in range(draw(st.integers(0, 40))):
        t = draw(event_times(times, fps))
        kind = draw(st.sampled_from(["motion", "wheel", "key_press", "key_release",
                                     "button_press", "button_release", "gamepad_axis",
                                     "focus_out"]))
        row: dict[str, Any] = {"t_ns": t, "kind": kind, "time_source": "x_server",
                               "synthetic": draw(st.booleans())}
        if kind in ("motion", "wheel"):
            row["dx"] = float(draw(st.integers(-50, 50)))
            row["dy"] = float(draw(st.integers(-50, 50)))
        elif kind.startswith("key"):
            row["key"] = draw(st.sampled_from(KEYS))
        elif kind.startswith("button"):
            row["button"] = draw(st.sampled_from(BUTTONS))
        elif kind == "gamepad_axis":
            row["axis"] = draw(st.sampled_from(["leftx", "right_y"]))
            row["value"] = draw(st.floats(-1, 1, width=32))
        rows.append(row)
    rows.sort(key=lambda r: r["t_ns"])
    alignment = align_session(times, events_table(rows), source_fps=source_fps, fps=fps,
                              max_episode_s=max_episode_s)
    return times, rows, alignment


@PROPERTY_SETTINGS
@given(sessions())
def test_every_event_lands_in_exactly_the_frame_whose_interval_holds_it(
        session: tuple[np.ndarray, list[dict[str, Any]], Alignment]) -> None:
    _, rows, alignment = session
    intervals = frame_intervals(alignment.episodes)
    for row, episode, frame in zip(rows, alignment.event_episode, alignment.event_frame,
                                   strict=True):
        expected = locate(row["t_ns"], intervals)
        assert (None if episode < 0 else (episode, frame)) == expected


@PROPERTY_SETTINGS
@given(sessions())
def test_mouse_motion_and_wheel_are_summed_per_frame_and_in_total(
        session: tuple[np.ndarray, list[dict[str, Any]], Alignment]) -> None:
    _, rows, alignment = session
    intervals = frame_intervals(alignment.episodes)
    row_of = {(e, i): r for r, (e, i, _, _) in enumerate(intervals)}
    delta = np.zeros((len(intervals), 2))
    wheel = np.zeros((len(intervals), 2))
    inside_total = np.zeros(2)
    for ev in rows:
        where = locate(ev["t_ns"], intervals)
        if where is None or ev["kind"] not in ("motion", "wheel"):
            continue
        if ev["kind"] == "motion":
            delta[row_of[where]] += (ev["dx"], ev["dy"])
            inside_total += (ev["dx"], ev["dy"])
        else:
            wheel[row_of[where]] += (ev["dy"], ev["dx"])
    np.testing.assert_array_equal(alignment.actions["action.mouse_delta"], delta)
    np.testing.assert_array_equal(alignment.actions["action.mouse_wheel"], wheel)
    np.testing.assert_array_equal(alignment.actions["action.mouse_delta"].sum(axis=0),
                                  inside_total)


@PROPERTY_SETTINGS
@given(sessions())
def test_held_keys_follow_the_whole_event_stream_across_frames_and_episodes(
        session: tuple[np.ndarray, list[dict[str, Any]], Alignment]) -> None:
    _, rows, alignment = session
    intervals = frame_intervals(alignment.episodes)
    expected = keys_held(rows, intervals, len(KEY_NAMES))
    np.testing.assert_array_equal(alignment.actions["action.keys_held"], expected)
    # a hold covering k frames shows in exactly those k frames
    for slot, since, until in key_holds(rows):
        covered = [r for r, (_, _, a, b) in enumerate(intervals)
                   if (since < b and until > a) or a <= since < b]
        held_rows = np.flatnonzero(alignment.actions["action.keys_held"][:, slot])
        assert set(covered) <= set(held_rows.tolist())


@PROPERTY_SETTINGS
@given(sessions())
def test_keys_pressed_marks_each_genuine_press_in_its_frame(
        session: tuple[np.ndarray, list[dict[str, Any]], Alignment]) -> None:
    _, rows, alignment = session
    intervals = frame_intervals(alignment.episodes)
    presses: set[tuple[tuple[int, int], int]] = set()
    for ev in rows:
        where = locate(ev["t_ns"], intervals)
        if ev["kind"] == "key_press" and not ev.get("synthetic") and where is not None:
            presses.add((where, key_slot(ev["key"])))
    pressed = alignment.actions["action.keys_pressed"]
    # multi-hot: several presses of one key inside one frame show once
    assert int(pressed.sum()) == len(presses)
    row_of = {(e, i): r for r, (e, i, _, _) in enumerate(intervals)}
    for where, slot in presses:
        assert pressed[row_of[where], slot] == 1


@PROPERTY_SETTINGS
@given(timelines())
def test_grid_is_exact_and_frames_are_the_nearest_capture(
        timeline: tuple[np.ndarray, int, int, float]) -> None:
    times, source_fps, fps, max_episode_s = timeline
    alignment = align_session(times, events_table([]), source_fps=source_fps, fps=fps,
                              max_episode_s=max_episode_s)
    runs = continuous_runs(times, source_fps)
    previous_end = None
    for episode in alignment.episodes:
        assert 1 <= episode.n_frames <= max(1, int(max_episode_s * fps + 1e-9))
        expected_grid = [episode.start_ns + round(i * 1e9 / fps) for i in range(episode.n_frames)]
        assert episode.grid_ns.tolist() == expected_grid
        grid_end = episode.start_ns + round(episode.n_frames * 1e9 / fps)
        _, hi = runs[episode.segment_index]
        cut = hi < len(times) and grid_end > times[hi]
        assert episode.end_ns == (times[hi] if cut else grid_end)
        if previous_end is not None:
            assert episode.start_ns >= previous_end
        previous_end = episode.end_ns
        lo, hi = runs[episode.segment_index]
        run = times[lo:hi].tolist()
        for g, chosen, shown in zip(expected_grid, episode.source_index.tolist(),
                                    episode.capture_time_ns.tolist(), strict=True):
            assert lo <= chosen < hi and shown == times[chosen]
            best = min(abs(t - g) for t in run)
            assert abs(shown - g) == best
            assert shown == next(t for t in run if abs(t - g) == best)  # ties: earlier frame
    # every run is covered, in order, and no episode reaches into the next run
    starts = [e.start_ns for e in alignment.episodes if e.part_index == 0]
    assert starts == [int(times[lo]) for lo, _ in runs]
    for episode in alignment.episodes:
        _, hi = runs[episode.segment_index]
        if hi < len(times):
            assert episode.end_ns <= times[hi]


@PROPERTY_SETTINGS
@given(sessions())
def test_action_arrays_have_one_row_per_frame_and_declared_widths(
        session: tuple[np.ndarray, list[dict[str, Any]], Alignment]) -> None:
    _, _, alignment = session
    for name, names in ACTION_NAMES.items():
        assert alignment.actions[name].shape == (alignment.n_frames, len(names))
    axes = alignment.actions["action.gamepad_axes"]
    assert axes.shape[1] == len(GAMEPAD_AXES)
