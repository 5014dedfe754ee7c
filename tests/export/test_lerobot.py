"""Exporting factory sessions: layout, pictures, actions, events, resizing, rollover, loading."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import av
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

import capture.export
from capture.errors import CaptureError
from capture.export import layout
from capture.export.lerobot import ExportReport, export_dataset, format_report
from capture.export.verify import verify_dataset
from capture.export.vocabulary import KEY_NAMES, MOUSE_BUTTONS
from tests.factories import (
    SessionScript,
    build_session,
    frame_times,
    gameplay_script,
    key,
    motion,
    read_frame_tag,
)

from .conftest import PSEUDONYM_KEY

MS = 1_000_000


def decoded_tags(path: Path) -> list[tuple[float | None, int]]:
    """(time in s, tag) of every frame of a video."""
    with av.open(str(path)) as container:
        return [(f.time, read_frame_tag(f.to_ndarray(format="rgb24")))
                for f in container.decode(video=0)]


def data_table(root: Path) -> pd.DataFrame:
    return pd.concat([pd.read_parquet(p) for p in sorted(root.glob("data/*/*.parquet"))],
                     ignore_index=True)


def episodes_table(root: Path) -> pd.DataFrame:
    return pd.read_parquet(root / "meta/episodes/chunk-000/file-000.parquet")


def grid_of(episode: pd.Series, fps: int) -> list[tuple[int, int]]:
    start = int(episode["grid_start_ns"])
    bounds = [start + round(i * 1e9 / fps) for i in range(int(episode["length"]) + 1)]
    return list(itertools.pairwise(bounds))


def test_public_api_is_exactly_these_names() -> None:
    assert sorted(capture.export.__all__) == ["EpisodeReport", "ExportReport", "VerifyReport",
                                              "export_dataset", "format_report", "verify_dataset"]


def test_export_writes_the_lerobot_v3_layout_and_verifies(
        exported: tuple[Path, ExportReport]) -> None:
    root, report = exported
    files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    assert files == ["README.md", "data/chunk-000/file-000.parquet",
                     "meta/capture_export.json", "meta/checksums.json",
                     "meta/consent.json", "meta/episodes/chunk-000/file-000.parquet",
                     "meta/events/chunk-000/file-000.parquet", "meta/info.json",
                     "meta/stats.json", "meta/tasks.parquet",
                     "videos/observation.image/chunk-000/file-000.mp4"]
    info = json.loads((root / "meta/info.json").read_text())
    assert info["codebase_version"] == "v3.0" and info["fps"] == 30
    assert info["total_episodes"] == report.episodes == 2  # the focus pause splits the session
    assert info["total_frames"] == report.frames
    assert info["splits"] == {"train": f"0:{report.episodes}"}
    assert info["features"]["observation.image"]["shape"] == [48, 64, 3]
    assert info["features"]["action.keys_held"]["names"] == list(KEY_NAMES)
    assert info["features"]["action.mouse_buttons"]["dtype"] == "uint8"
    tasks = pd.read_parquet(root / "meta/tasks.parquet")
    assert tasks.index.name == "task" and tasks.index.tolist() == ["factorygame"]
    check = verify_dataset(root)
    assert check.ok, check.summary()
    assert check.video_frames == report.frames
    assert "factorygame" in format_report(report)


def test_every_exported_frame_shows_the_source_frame_nearest_its_grid_time(
        exported: tuple[Path, ExportReport]) -> None:
    root, _ = exported
    script = gameplay_script()
    captures = script.capture_times_ns
    data, episodes = data_table(root), episodes_table(root)
    tags = decoded_tags(root / "videos/observation.image/chunk-000/file-000.mp4")
    assert len(tags) == len(data)
    for _, episode in episodes.iterrows():
        first_run_frame = 0 if episode["segment_index"] == 0 else len(captures) // 2
        run = range(first_run_frame, first_run_frame + len(captures) // 2)
        for i, (g, _) in enumerate(grid_of(episode, 30)):
            expected = min(run, key=lambda k: (abs(captures[k] - g), k))
            row = int(episode["dataset_from_index"]) + i
            time_in_file, tag = tags[row]
            assert tag == expected, f"row {row}"
            assert time_in_file == pytest.approx(episode["videos/observation.image/from_timestamp"]
                                                 + i / 30, abs=1e-6)
            assert data.loc[row, "capture_time_ns"] == captures[expected]


def brute_force_actions(events: list[dict[str, Any]], grid: list[tuple[int, int]]) -> dict:
    delta = np.zeros((len(grid), 2))
    wheel = np.zeros((len(grid), 2))
    for ev in events:
        for row, (a, b) in enumerate(grid):
            if a <= ev["t_ns"] < b and ev["kind"] == "motion":
                delta[row] += (ev["dx"], ev["dy"])
            if a <= ev["t_ns"] < b and ev["kind"] == "wheel":
                wheel[row] += (ev["dy"], ev["dx"])
    return {"action.mouse_delta": delta, "action.mouse_wheel": wheel}


def test_exported_actions_equal_the_scripted_inputs(exported: tuple[Path, ExportReport]) -> None:
    root, _ = exported
    script = gameplay_script()
    data, episodes = data_table(root), episodes_table(root)
    w = KEY_NAMES.index("w")
    for _, episode in episodes.iterrows():
        grid = grid_of(episode, 30)
        rows = data.iloc[int(episode["dataset_from_index"]):int(episode["dataset_to_index"])]
        expected = brute_force_actions(script.events, grid)
        for name, values in expected.items():
            np.testing.assert_array_equal(np.stack(rows[name].to_numpy()), values)
        held_w = np.stack(rows["action.keys_held"].to_numpy())[:, w]
        if episode["segment_index"] == 0:  # W down from 40 ms until the synthetic release
            assert held_w[0] == 0 and held_w[2:].all()
        else:  # pressed again 50 ms after resuming, released 100 ms before the end
            assert held_w[:1].sum() == 0 and held_w[2:-4].all() and not held_w[-1]
    total = np.stack(data["action.mouse_delta"].to_numpy()).sum(axis=0)
    t_pause, t_resume = script.capture_times_ns[59], script.capture_times_ns[60]
    motions = [e for e in script.events if e["kind"] == "motion"]
    assert all(not t_pause < e["t_ns"] < t_resume for e in motions)
    assert total.tolist() == [sum(e["dx"] for e in motions), sum(e["dy"] for e in motions)]


def test_steady_script_gives_exact_per_frame_actions(tmp_path: Path,
                                                     consent_active: None) -> None:
    times, _ = frame_times(20, 30, start_ns=5_000 * MS)
    mid = [t + 16 * MS for t in times]
    events = [motion(mid[k], k, -k) for k in range(20)]
    events += [key(mid[3], "d", down=True), key(mid[7], "d", down=False),
               key(mid[5], "e", down=True), key(mid[5] + MS, "e", down=False)]
    events.sort(key=lambda e: e["t_ns"])
    session = build_session(tmp_path, SessionScript(capture_times_ns=times, events=events))
    export_dataset([session], tmp_path / "ds", pseudonym_key=PSEUDONYM_KEY)
    data = data_table(tmp_path / "ds")
    assert np.stack(data["action.mouse_delta"].to_numpy()).tolist() == [[k, -k] for k in range(20)]
    held = np.stack(data["action.keys_held"].to_numpy())
    assert np.flatnonzero(held[:, KEY_NAMES.index("d")]).tolist() == [3, 4, 5, 6, 7]
    pressed = np.stack(data["action.keys_pressed"].to_numpy())
    assert np.argwhere(pressed).tolist() == [[3, KEY_NAMES.index("d")], [5, KEY_NAMES.index("e")]]
    assert data["timestamp"].tolist() == pytest.approx([k / 30 for k in range(20)])
    assert data["capture_time_ns"].tolist() == times


def test_events_table_keeps_every_event_with_its_frame(exported: tuple[Path,
                                                                        ExportReport]) -> None:
    root, report = exported
    events = pq.read_table(root / "meta/events/chunk-000/file-000.parquet").to_pandas()
    script = gameplay_script()
    assert len(events) == len(script.events) == report.events
    assert set(events["session_id"]) == {script.session_id}
    paused = events[events["episode_index"].isna()]
    assert len(paused) == report.events_outside_episodes
    assert set(paused["kind"]) <= {"focus_out", "key_release", "focus_in"}
    episodes = episodes_table(root)
    for _, ev in events.dropna(subset=["episode_index"]).iterrows():
        episode = episodes.iloc[int(ev["episode_index"])]
        a, b = grid_of(episode, 30)[int(ev["frame_index"])]
        assert a <= ev["t_ns"] < b


def test_player_is_a_keyed_pseudonym_and_the_raw_name_is_nowhere(
        exported: tuple[Path, ExportReport]) -> None:
    root, _ = exported
    from capture.consent.pseudonym import keyed_pseudonym

    players = set(episodes_table(root)["player"])
    assert players == {keyed_pseudonym("Alice Example", PSEUDONYM_KEY)}
    assert all(layout.PSEUDONYM_PATTERN.match(p) for p in players)
    for path in root.rglob("*"):
        if path.is_file():
            assert b"Alice Example" not in path.read_bytes(), path


def test_episode_provenance_columns(exported: tuple[Path, ExportReport]) -> None:
    root, _ = exported
    episodes = episodes_table(root)
    assert episodes["consent_receipt_id"].unique().tolist() == [gameplay_script().receipt_id]
    assert episodes["license"].unique().tolist() == ["CC-BY-4.0"]
    assert episodes["synthetic_consent"].all()
    assert episodes["segment_index"].tolist() == [0, 1]
    assert episodes["source_start_utc"].str.match(r"^2025-03-01T12:00:0\d\.\d{6}Z$").all()
    assert (episodes["alignment/offset_ms_p95"] < 10).all()
    card = (root / "README.md").read_text()
    assert "consent" in card and "CC-BY-4.0" in card and "`Shift_L`" in card


def test_stats_cover_every_feature_like_lerobot(exported: tuple[Path, ExportReport]) -> None:
    root, report = exported
    stats = json.loads((root / "meta/stats.json").read_text())
    assert set(stats) == set(json.loads((root / "meta/info.json").read_text())["features"])
    image = stats["observation.image"]
    assert np.shape(image["mean"]) == (3, 1, 1) and np.min(image["min"]) >= 0
    lengths = episodes_table(root)["length"].tolist()
    # LeRobot samples each episode's frames: n ** 0.75, at least min(n, 100) (stats.sample_count)
    assert np.max(image["max"]) <= 1 and image["count"] == [sum(min(n, 100) for n in lengths)]
    assert stats["action.mouse_buttons"]["count"] == [report.frames]
    assert len(stats["action.keys_held"]["mean"]) == len(KEY_NAMES)
    assert stats["frame_index"]["min"] == [0]
    for entry in stats.values():
        assert set(entry) == {"min", "max", "mean", "std", "count", "q01", "q10", "q50", "q90",
                              "q99"}
        assert np.all(np.asarray(entry["min"]) <= np.asarray(entry["q01"]) + 1e-9)
        assert np.all(np.asarray(entry["q01"]) <= np.asarray(entry["q50"]))
        assert np.all(np.asarray(entry["q50"]) <= np.asarray(entry["q99"]))
        assert np.all(np.asarray(entry["q99"]) <= np.asarray(entry["max"]) + 1e-9)


def test_hugging_face_datasets_loads_the_data(exported: tuple[Path, ExportReport],
                                              tmp_path: Path) -> None:
    import datasets

    root, report = exported
    loaded = datasets.load_dataset("parquet", data_files=str(root / "data/*/*.parquet"),
                                   split="train", cache_dir=str(tmp_path / "hf-cache"))
    assert loaded.num_rows == report.frames
    assert set(loaded.column_names) == {f.name for f in layout.frames_schema()}
    row = loaded[5]
    assert len(row["action.keys_held"]) == len(KEY_NAMES)
    assert len(row["action.mouse_buttons"]) == len(MOUSE_BUTTONS)


def test_resized_resampled_export_still_shows_the_right_frames(
        gameplay_session: Path, tmp_path: Path, consent_active: None) -> None:
    report = export_dataset([gameplay_session], tmp_path / "small", fps=15, size=(32, 24),
                            pseudonym_key=PSEUDONYM_KEY)
    check = verify_dataset(tmp_path / "small")
    assert check.ok, check.summary()
    info = json.loads((tmp_path / "small/meta/info.json").read_text())
    assert info["fps"] == 15 and info["features"]["observation.image"]["shape"] == [24, 32, 3]
    tags = [t for _, t in decoded_tags(
        tmp_path / "small/videos/observation.image/chunk-000/file-000.mp4")]
    captures = gameplay_script().capture_times_ns
    data = data_table(tmp_path / "small")
    assert [captures[t] for t in tags] == data["capture_time_ns"].tolist()
    assert sum(e.source_frames_dropped for e in report.episode_reports) >= 55  # half of them


def test_two_sessions_roll_over_into_several_files(gameplay_session: Path, tmp_path: Path,
                                                   consent_active: None) -> None:
    other = build_session(tmp_path / "sessions", gameplay_script(
        seed=7, game="othergame", session_id="20250301T130000Z-othergame-000002"))
    limits = layout.FileLimits(data_mb=0.001, video_mb=0.001, chunks_size=2)
    done: list[int] = []
    report = export_dataset([gameplay_session, other], tmp_path / "ds", limits=limits,
                            pseudonym_key=PSEUDONYM_KEY, progress=done.append)
    root = tmp_path / "ds"
    check = verify_dataset(root)
    assert check.ok, check.summary()
    assert report.episodes == 4 and done[-1] == report.frames and done == sorted(done)
    data_files = sorted(p.relative_to(root).as_posix() for p in root.glob("data/*/*.parquet"))
    assert data_files[:3] == ["data/chunk-000/file-000.parquet",
                              "data/chunk-000/file-001.parquet",
                              "data/chunk-001/file-000.parquet"]
    assert len(list(root.glob("videos/observation.image/*/*.mp4"))) == 4
    episodes = episodes_table(root)
    assert episodes["videos/observation.image/from_timestamp"].tolist() == [0, 0, 0, 0]
    assert pd.read_parquet(root / "meta/tasks.parquet").index.tolist() == ["factorygame",
                                                                           "othergame"]
    data = data_table(root)
    assert data["index"].tolist() == list(range(report.frames))
    assert sorted(set(data["task_index"])) == [0, 1]


def test_sessions_must_agree_on_rate_and_size_unless_told(gameplay_session: Path,
                                                          tmp_path: Path,
                                                          consent_active: None) -> None:
    fast = build_session(tmp_path, gameplay_script(
        fps=60, seconds=2, session_id="20250301T140000Z-factorygame-000003"))
    with pytest.raises(CaptureError, match="different rates"):
        export_dataset([gameplay_session, fast], tmp_path / "ds", pseudonym_key=PSEUDONYM_KEY)
    wide = build_session(tmp_path, gameplay_script(
        width=96, session_id="20250301T150000Z-factorygame-000004"))
    with pytest.raises(CaptureError, match="differ in size"):
        export_dataset([gameplay_session, wide], tmp_path / "ds", pseudonym_key=PSEUDONYM_KEY)
    assert not (tmp_path / "ds").exists()
    report = export_dataset([gameplay_session, fast, wide], tmp_path / "ds", fps=30,
                            size=(64, 48), pseudonym_key=PSEUDONYM_KEY)
    assert report.episodes == 6 and verify_dataset(tmp_path / "ds").ok  # 2 per session
