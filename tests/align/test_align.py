"""Hand-written cases of capture.align: boundaries, splits, nearest frames, vocabularies."""

from __future__ import annotations

import itertools
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from capture import formats
from capture.align import (
    align_session,
    build_episodes,
    continuous_runs,
    grid_offsets_ns,
    key_slot,
)
from capture.export.vocabulary import GAMEPAD_AXES, GAMEPAD_BUTTONS, KEY_NAMES, MOUSE_BUTTONS
from tests.factories import button, gamepad_axis, gamepad_button, key, motion, wheel

from .reference import events_table

MS = 1_000_000
ROOT = Path(__file__).resolve().parents[2]


def steady(n: int, fps: int = 30, start: int = 1_000 * MS) -> np.ndarray:
    return start + grid_offsets_ns(np.arange(n), fps)


def test_grid_uses_rounded_exact_offsets_not_truncated_steps() -> None:
    assert grid_offsets_ns(np.arange(4), 30).tolist() == [0, 33_333_333, 66_666_667, 100_000_000]
    assert int(grid_offsets_ns(30 * 3600, 30)) == 3600 * 10**9  # no drift after an hour


def test_event_exactly_on_a_boundary_belongs_to_the_frame_it_starts() -> None:
    times = steady(4)
    boundary = int(times[0] + grid_offsets_ns(2, 30))
    events = [motion(boundary - 1, 1, 0), motion(boundary, 10, 0)]
    alignment = align_session(times, events_table(events), source_fps=30, fps=30)
    assert alignment.event_frame.tolist() == [1, 2]
    assert alignment.actions["action.mouse_delta"][:, 0].tolist() == [0, 1, 10, 0]


def test_mouse_deltas_and_wheel_are_summed_never_averaged() -> None:
    times = steady(2)
    events = [motion(times[0] + i * MS, 3, -1) for i in range(8)]
    events += [wheel(times[0] + 5 * MS, vertical=1), wheel(times[0] + 6 * MS, vertical=1),
               wheel(times[0] + 7 * MS, horizontal=-2)]
    alignment = align_session(times, events_table(events), source_fps=30, fps=30)
    assert alignment.actions["action.mouse_delta"].tolist() == [[24, -8], [0, 0]]
    assert alignment.actions["action.mouse_wheel"].tolist() == [[2, -2], [0, 0]]


def test_nearest_capture_is_chosen_under_jitter_and_ties_go_to_the_earlier_frame() -> None:
    start = 1_000 * MS
    # grid at 30 fps: 0, 33.33, 66.67, 100 ms after start
    times = np.array([start, start + 20 * MS, start + 50 * MS, start + 83_333_334,
                      start + 100 * MS], dtype=np.int64)
    (episode,) = build_episodes(times, source_fps=30, fps=30)
    # grid 33.33 ms: 20 ms is 13.3 away, 50 ms 16.7 -> frame 1; grid 66.666667 ms: 50 ms and
    # 83.333334 ms are both 16.666667 ms away -> the earlier, frame 2; grid 100 ms -> frame 4
    assert episode.source_index.tolist()[:4] == [0, 1, 2, 4]
    tie = np.array([start, start + 20 * MS, start + 46_666_666], dtype=np.int64)
    (episode,) = build_episodes(tie, source_fps=30, fps=30)
    assert episode.source_index[1] == 1  # 33.333333 ms is 13.333333 ms from both: earlier wins


def test_a_pause_longer_than_three_intervals_splits_episodes() -> None:
    interval = 1e9 / 30
    times = np.concatenate([steady(10), steady(10, start=1_000 * MS + int(9 * interval
                                                                           + 3 * interval + 1))])
    episodes = build_episodes(times, source_fps=30, fps=30)
    assert [(e.segment_index, e.n_frames) for e in episodes] == [(0, 10), (1, 10)]
    assert episodes[0].end_ns <= episodes[1].start_ns
    just_three = np.concatenate([steady(10), steady(10, start=1_000 * MS + round(12 * interval))])
    assert len(build_episodes(just_three, source_fps=30, fps=30)) == 1


def test_long_runs_are_split_at_max_episode_s_into_contiguous_episodes() -> None:
    episodes = build_episodes(steady(300), source_fps=30, fps=30, max_episode_s=4)
    assert [e.n_frames for e in episodes] == [120, 120, 60]
    assert [e.part_index for e in episodes] == [0, 1, 2]
    for before, after in itertools.pairwise(episodes):
        assert before.end_ns == after.start_ns
        assert before.end_ns == before.start_ns + 4 * 10**9


def test_key_held_across_an_episode_split_shows_in_both_episodes() -> None:
    times = steady(120)
    t0 = int(times[0])
    events = [key(t0 + 1_500 * MS, "W", down=True), key(t0 + 2_500 * MS, "w", down=False)]
    alignment = align_session(times, events_table(events), source_fps=30, fps=30,
                              max_episode_s=2)
    held = alignment.actions["action.keys_held"][:, KEY_NAMES.index("w")]
    first, second = alignment.episode_rows(0), alignment.episode_rows(1)
    assert held[first].tolist() == [0] * 45 + [1] * 15
    assert held[second].tolist() == [1] * 15 + [0] * 45
    pressed = alignment.actions["action.keys_pressed"][:, KEY_NAMES.index("w")]
    assert pressed.sum() == 1 and pressed[45] == 1


def test_key_held_through_a_pause_and_closed_by_a_synthetic_release() -> None:
    times = np.concatenate([steady(10), steady(10, start=3_000 * MS)])
    events = [key(1_010 * MS, "a", down=True),
              key(1_400 * MS, "a", down=False, synthetic=True),  # focus lost: backend closes
              key(3_100 * MS, "Shift_L", down=True)]             # never released
    alignment = align_session(times, events_table(events), source_fps=30, fps=30)
    held = alignment.actions["action.keys_held"]
    assert held[:, KEY_NAMES.index("a")].tolist() == [1] * 10 + [0] * 10
    assert held[:, KEY_NAMES.index("Shift_L")].tolist() == [0] * 13 + [1] * 7
    assert alignment.event_episode.tolist() == [0, -1, 1]


def test_press_and_release_inside_one_frame_marks_it_held() -> None:
    times = steady(3)
    t = int(times[1]) + 5 * MS
    alignment = align_session(times, events_table([key(t, "space", down=True),
                                                   key(t, "space", down=False)]),
                              source_fps=30, fps=30)
    assert alignment.actions["action.keys_held"][:, KEY_NAMES.index("space")].tolist() == [0, 1, 0]


def test_unknown_keys_share_the_other_slot_without_ending_each_others_holds() -> None:
    times = steady(6)
    t = int(times[0])
    events = [key(t + 1 * MS, "XF86Mail", down=True), key(t + 40 * MS, "F13", down=True),
              key(t + 70 * MS, "F13", down=False), key(t + 140 * MS, "XF86Mail", down=False)]
    alignment = align_session(times, events_table(events), source_fps=30, fps=30)
    other = alignment.actions["action.keys_held"][:, KEY_NAMES.index("other")]
    assert other.tolist() == [1, 1, 1, 1, 1, 0]


def test_buttons_gamepad_buttons_and_axes() -> None:
    times = steady(5)
    t = int(times[0])
    events = [button(t + 40 * MS, "right", down=True), button(t + 90 * MS, "right", down=False),
              button(t + 10 * MS, "button12", down=True),
              gamepad_axis(t + 10 * MS, "leftx", 0.5), gamepad_axis(t + 20 * MS, "leftx", 0.75),
              gamepad_axis(t + 70 * MS, "right_y", -1.0),
              gamepad_button(t + 35 * MS, "dpup", down=True)]
    alignment = align_session(times, events_table(events), source_fps=30, fps=30)
    buttons = alignment.actions["action.mouse_buttons"]
    assert buttons[:, MOUSE_BUTTONS.index("right")].tolist() == [0, 1, 1, 0, 0]
    assert buttons.sum() == 2  # button12 is outside the vocabulary and not counted
    axes = alignment.actions["action.gamepad_axes"]
    assert axes[:, GAMEPAD_AXES.index("left_x")].tolist() == [0.75] * 5
    assert axes[:, GAMEPAD_AXES.index("right_y")].tolist() == [0, 0, -1, -1, -1]
    pad = alignment.actions["action.gamepad_buttons"][:, GAMEPAD_BUTTONS.index("dpup")]
    assert pad.tolist() == [0, 1, 1, 1, 1]


def test_lower_frame_rate_resamples_and_reports_dropped_frames() -> None:
    (episode,) = build_episodes(steady(60, fps=60), source_fps=60, fps=30)
    assert episode.n_frames == 30
    assert episode.source_index.tolist() == list(range(0, 60, 2))
    assert episode.stats.dropped == 30 and episode.stats.repeated == 0
    (episode,) = build_episodes(steady(30), source_fps=30, fps=60)
    assert episode.n_frames == 60 and episode.stats.repeated == 30


def test_capture_times_going_backwards_are_refused() -> None:
    with pytest.raises(ValueError, match="backwards"):
        build_episodes(np.array([10, 5]), source_fps=30, fps=30)


def test_key_vocabulary_maps_case_and_shift_level_to_one_key() -> None:
    assert key_slot("W") == key_slot("w") == KEY_NAMES.index("w")
    assert key_slot("exclam") == KEY_NAMES.index("1")
    assert key_slot("XF86AudioMute") == key_slot(None) == KEY_NAMES.index("other")
    assert len(set(KEY_NAMES)) == len(KEY_NAMES)


def test_generated_key_vocabulary_is_up_to_date() -> None:
    result = subprocess.run([sys.executable, "tools/gen_keyvocab.py", "--check"], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_a_counted_stall_is_not_a_pause() -> None:
    """A gap the recorder counted as dropped slots keeps the run (and its input) together."""
    interval = 33_333_333
    times = np.array([0, 1, 2, 3, 9, 10, 11], dtype=np.int64) * interval  # 6-interval gap
    stalled = np.array([0, 0, 0, 0, 5, 0, 0])
    paused = np.zeros(7, dtype=np.int64)
    assert continuous_runs(times, 30, stalled) == [(0, 7)]
    assert continuous_runs(times, 30, paused) == [(0, 4), (4, 7)]
    rows = [{"t_ns": int(6 * interval), "kind": "motion", "time_source": "x_server",
             "synthetic": False, "dx": 7.0, "dy": -2.0}]
    events = pa.Table.from_pylist(rows, schema=formats.arrow_schema(formats.EVENTS_SCHEMA))
    kept = align_session(times, events, source_fps=30, fps=30, dropped_before=stalled)
    assert kept.actions["action.mouse_delta"].sum(axis=0).tolist() == [7.0, -2.0]
    assert kept.event_frame.tolist() != [-1]
    lost = align_session(times, events, source_fps=30, fps=30, dropped_before=paused)
    assert lost.event_frame.tolist() == [-1]  # during a pause input has no frame
