"""Quality filters at export: each removes what it should, says how much, and the rest verifies."""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from capture.cli import cli
from capture.export.lerobot import ExportReport, export_dataset, format_report
from capture.export.quality import QUALITY_PATH, QualityFilters, read_quality
from capture.export.verify import verify_dataset
from tests.factories import SessionScript, build_session, frame_times, key, motion, read_frame_tag

from .conftest import PSEUDONYM_KEY

MS = 1_000_000
FPS = 30


def data_table(root: Path) -> pd.DataFrame:
    return pd.concat([pd.read_parquet(p) for p in sorted(root.glob("data/*/*.parquet"))],
                     ignore_index=True)


def episodes_table(root: Path) -> pd.DataFrame:
    return pd.read_parquet(root / "meta/episodes/chunk-000/file-000.parquet")


def busy_events(times: list[int], every: int = 3) -> list[dict]:
    """Mouse motion every `every` frames: nobody is idle."""
    return [motion(t + 5 * MS, 1, -1) for t in times[::every]]


def script(session_id: str, times: list[int], **kw: object) -> SessionScript:
    fields: dict = {"events": busy_events(times), "session_id": session_id}
    fields.update(kw)
    return SessionScript(capture_times_ns=times, **fields)


def sid(n: int) -> str:
    return f"20250301T1{n:05d}Z-factorygame-{n:06d}"


def export(sessions: list[Path], out: Path, quality: QualityFilters | None) -> ExportReport:
    report = export_dataset(sessions, out, pseudonym_key=PSEUDONYM_KEY, quality=quality)
    check = verify_dataset(out)
    assert check.ok, check.summary()
    return report


def decoded_tags(root: Path) -> list[int]:
    """The tag of every row's video frame, episode by episode (episodes may sit in several
    video files)."""
    info = json.loads((root / "meta/info.json").read_text())
    tags: list[int] = []
    for _, ep in episodes_table(root).iterrows():
        path = root / info["video_path"].format(
            video_key="observation.image",
            chunk_index=int(ep["videos/observation.image/chunk_index"]),
            file_index=int(ep["videos/observation.image/file_index"]))
        first = round(ep["videos/observation.image/from_timestamp"] * FPS)
        with av.open(str(path)) as container:
            frames = [read_frame_tag(f.to_ndarray(format="rgb24"))
                      for f in container.decode(video=0)]
        tags += frames[first:first + int(ep["length"])]
    return tags


def test_default_export_is_unchanged_and_writes_no_quality_file(tmp_path: Path,
                                                                consent_active: None) -> None:
    times, _ = frame_times(60, FPS)
    session = build_session(tmp_path, script(sid(1), times))
    plain = export([session], tmp_path / "plain", None)
    idle = export([session], tmp_path / "inactive", QualityFilters())
    assert not (tmp_path / "plain" / QUALITY_PATH).exists()
    assert not (tmp_path / "inactive" / QUALITY_PATH).exists()
    assert plain.quality is None and idle.quality is None
    for rel in ("data/chunk-000/file-000.parquet", "meta/episodes/chunk-000/file-000.parquet"):
        assert pq.read_table(tmp_path / "plain" / rel).equals(
            pq.read_table(tmp_path / "inactive" / rel))


def test_sessions_whose_record_time_checks_failed_are_dropped(tmp_path: Path,
                                                              consent_active: None) -> None:
    good_times, _ = frame_times(200, FPS)               # 6.7 s: every check passes
    short_times, _ = frame_times(60, FPS, start_ns=50_000 * MS)  # 2 s: the length check fails
    good = build_session(tmp_path, script(sid(1), good_times))
    short = build_session(tmp_path, script(sid(2), short_times))
    report = export([good, short], tmp_path / "ds", QualityFilters(require_checks=True))
    episodes = episodes_table(tmp_path / "ds")
    assert set(episodes["session_id"]) == {sid(1)}
    record = read_quality(tmp_path / "ds")
    assert record is not None and record == report.quality
    removed = record["removed"]["require_checks"]
    assert removed == {"episodes": 1, "frames": 60, "seconds": 2.0, "sessions": 1}
    assert record["frames_before"] == 260 and record["frames_after"] == 200
    failed = {s["session_id"]: s["failed_checks"] for s in record["sessions"]}
    assert failed == {sid(1): [], sid(2): ["length"]}
    assert "require_checks  removed 1 episodes, 60 frames (2.0 s)" in format_report(report)
    events = pq.read_table(tmp_path / "ds/meta/events/chunk-000/file-000.parquet").to_pandas()
    assert events[events["session_id"] == sid(2)]["episode_index"].isna().all()


def test_segments_outside_the_length_bounds_are_dropped(tmp_path: Path,
                                                        consent_active: None) -> None:
    # one session, paused after 1 s: segments of 1 s and 3 s
    times, _ = frame_times(120, FPS, pauses={30: 2_000 * MS})
    session = build_session(tmp_path, script(sid(1), times))
    short_gone = export([session], tmp_path / "min", QualityFilters(min_segment_s=2.0))
    long_gone = export([session], tmp_path / "max", QualityFilters(max_segment_s=2.0))
    assert episodes_table(tmp_path / "min")["length"].tolist() == [90]
    assert episodes_table(tmp_path / "max")["length"].tolist() == [30]
    assert short_gone.quality is not None and long_gone.quality is not None
    assert short_gone.quality["removed"]["segment_length"]["frames"] == 30
    assert long_gone.quality["removed"]["segment_length"]["seconds"] == 3.0
    # the frames kept are the source frames of the kept segment
    assert decoded_tags(tmp_path / "min") == data_table(tmp_path / "min")[
        "capture_time_ns"].map(times.index).tolist()
    assert min(decoded_tags(tmp_path / "min")) == 30


def black(tag: int, width: int, height: int) -> np.ndarray:
    return np.zeros((height, width, 3), dtype=np.uint8)


def sprite(tag: int, width: int, height: int) -> np.ndarray:
    """A still scene with one small block moving: only ~1 % of the pixels change."""
    image = np.full((height, width, 3), 90, dtype=np.uint8)
    x = tag % (width - 4)
    image[10:14, x:x + 4] = 250
    return image


def test_black_and_frozen_video_is_dropped(tmp_path: Path, consent_active: None) -> None:
    times, _ = frame_times(90, FPS)
    good = build_session(tmp_path, script(sid(1), times, painter=sprite))
    dark = build_session(tmp_path, script(sid(2), times, painter=black))
    frozen = build_session(tmp_path, script(sid(3), times, frame_tags=[77] * 90))
    report = export([good, dark, frozen], tmp_path / "ds", QualityFilters(drop_black_frozen=True))
    assert set(episodes_table(tmp_path / "ds")["session_id"]) == {sid(1)}
    assert report.quality is not None
    assert report.quality["removed"]["black_frozen"] == {"episodes": 2, "frames": 180,
                                                         "seconds": 6.0, "sessions": 0}


def test_sampled_pictures_are_the_frames_the_episodes_show(tmp_path: Path) -> None:
    """Seeking to a sample gives the same picture as decoding the video from its start."""
    from capture.align import align_session
    from capture.export.quality import sample_pictures, sample_positions
    from capture.session.reader import open_session
    from tests.factories import gameplay_script

    session = open_session(build_session(tmp_path, gameplay_script(painter=sprite)))
    frames = session.frames()
    times = frames.column("capture_time_ns").to_numpy()
    alignment = align_session(times, session.events(), source_fps=FPS, fps=FPS,
                              dropped_before=frames.column("dropped_before").to_numpy())
    samples = sample_pictures(session.video_path, alignment, frames.column("pts").to_numpy())
    with av.open(str(session.video_path)) as container:
        decoded = [f.to_ndarray(format="gray").astype(np.float32)
                   for f in container.decode(video=0)]
    expected = {(p, f) for p, e in enumerate(alignment.episodes)
                for f in sample_positions(e.n_frames)}
    assert set(samples) == expected and len(expected) == 16
    for (p, f), sample in samples.items():
        row = int(alignment.episodes[p].source_index[f])
        assert sample.mean_luma == pytest.approx(float(decoded[row].mean()))
        if row + 1 < len(decoded):
            changed = float((np.abs(decoded[row] - decoded[row + 1]) > 8).mean())
            assert sample.changed == pytest.approx(changed) and changed > 0


def test_low_fps_and_many_drops_are_dropped(tmp_path: Path, consent_active: None) -> None:
    steady, _ = frame_times(90, FPS)
    # every other slot missed: frames arrive at 15 fps and half the grid repeats a frame
    halting, dropped = frame_times(45, FPS, start_ns=60_000 * MS,
                                   dropped_slots=set(range(1, 90, 2)))
    a = build_session(tmp_path, script(sid(1), steady))
    b = build_session(tmp_path, script(sid(2), halting, dropped_before=dropped))
    slow = export([a, b], tmp_path / "fps", QualityFilters(min_fps_ratio=0.8))
    assert set(episodes_table(tmp_path / "fps")["session_id"]) == {sid(1)}
    assert slow.quality is not None and slow.quality["removed"]["low_fps"]["episodes"] == 1
    drops = export([a, b], tmp_path / "drops", QualityFilters(max_drop_ratio=0.2))
    assert set(episodes_table(tmp_path / "drops")["session_id"]) == {sid(1)}
    lenient = export([a, b], tmp_path / "lenient", QualityFilters(max_drop_ratio=0.6))
    assert lenient.quality is not None and lenient.quality["removed"]["drops"]["episodes"] == 0
    kept = episodes_table(tmp_path / "lenient")
    halting_frames = int(kept[kept["session_id"] == sid(2)]["length"].sum())
    assert drops.quality is not None
    assert drops.quality["removed"]["drops"]["frames"] == halting_frames > 80


def idle_session(tmp_path: Path) -> tuple[Path, list[int]]:
    """4 s of play with no input from 1.0 s to 3.0 s (a key released at 3.2 s)."""
    times, _ = frame_times(120, FPS)
    events = [motion(t + 5 * MS, 1, 1) for t in times[:30]]
    events += [key(times[96], "w", down=True), key(times[100], "w", down=False)]
    events += [motion(t + 5 * MS, 2, 0) for t in times[90:]]
    events.sort(key=lambda e: e["t_ns"])
    return build_session(tmp_path, script(sid(1), times, events=events)), times


def test_idle_spans_are_trimmed_out(tmp_path: Path, consent_active: None) -> None:
    session, times = idle_session(tmp_path)
    report = export([session], tmp_path / "ds", QualityFilters(idle_s=1.5, idle_mode="trim"))
    episodes = episodes_table(tmp_path / "ds")
    assert episodes["length"].tolist() == [30, 30]  # the 2 s in the middle are cut out
    assert episodes["segment_index"].tolist() == [0, 0]
    assert episodes["segment_part"].tolist() == [0, 1]
    assert report.quality is not None
    assert report.quality["removed"]["idle"] == {"episodes": 0, "frames": 60, "seconds": 2.0,
                                                 "sessions": 0}
    data = data_table(tmp_path / "ds")
    shown = data["capture_time_ns"].map(times.index).tolist()
    assert shown == [*range(30), *range(90, 120)]
    assert decoded_tags(tmp_path / "ds") == shown
    deltas = np.stack(data["action.mouse_delta"].to_numpy())
    assert deltas[:30].sum(axis=0).tolist() == [30, 30]
    assert deltas[30:].sum(axis=0).tolist() == [60, 0]


def test_a_key_held_down_is_not_idle(tmp_path: Path, consent_active: None) -> None:
    """Walking forward with W held and the mouse still is play, not idleness."""
    times, _ = frame_times(120, FPS)
    events = [motion(t + 5 * MS, 1, 1) for t in times[:30]]
    events += [key(times[29] + 10 * MS, "w", down=True), key(times[100], "w", down=False)]
    events += [motion(t + 5 * MS, 2, 0) for t in times[90:]]
    events.sort(key=lambda e: e["t_ns"])
    session = build_session(tmp_path, script(sid(1), times, events=events))
    report = export([session], tmp_path / "ds", QualityFilters(idle_s=1.5, idle_mode="trim"))
    assert episodes_table(tmp_path / "ds")["length"].tolist() == [120]
    assert report.quality is not None and report.quality["removed"]["idle"]["frames"] == 0


def test_idle_spans_are_flagged_and_kept(tmp_path: Path, consent_active: None) -> None:
    session, _ = idle_session(tmp_path)
    report = export([session], tmp_path / "ds", QualityFilters(idle_s=1.5, idle_mode="flag"))
    assert episodes_table(tmp_path / "ds")["length"].tolist() == [120]
    assert report.quality is not None and report.quality["removed"]["idle"]["frames"] == 0
    assert report.quality["idle_flagged"] == [{"episode_index": 0, "from_frame": 30,
                                               "to_frame": 90, "seconds": 2.0}]


def test_export_command_takes_the_filters(tmp_path: Path, consent_active: None,
                                          capture_home: Path) -> None:
    times, _ = frame_times(60, FPS)
    session = build_session(tmp_path, script(sid(1), times))
    other_times, _ = frame_times(210, FPS, start_ns=90_000 * MS)
    other = build_session(tmp_path, script(sid(2), other_times))
    result = CliRunner().invoke(cli, ["export", str(session), str(other), "--out",
                                      str(tmp_path / "ds"), "--min-segment-s", "3",
                                      "--idle-s", "5", "--idle", "flag"])
    assert result.exit_code == 0, result.output
    assert "segment_length  removed 1 episodes, 60 frames (2.0 s)" in result.output
    record = json.loads((tmp_path / "ds" / QUALITY_PATH).read_text())
    assert record["filters"]["min_segment_s"] == 3 and record["filters"]["idle_s"] == 5
    everything = CliRunner().invoke(cli, ["export", str(session), "--out", str(tmp_path / "no"),
                                          "--min-segment-s", "100"])
    assert everything.exit_code == 1 and "removed every episode" in everything.output
    assert "segment_length 60 frames" in everything.output
    assert not (tmp_path / "no").exists()
    bounds = CliRunner().invoke(cli, ["export", str(session), "--out", str(tmp_path / "no"),
                                      "--min-segment-s", "5", "--max-segment-s", "1"])
    assert bounds.exit_code == 1 and "above the maximum" in bounds.output


@pytest.mark.parametrize("mode", ["trim", "flag"])
def test_quality_json_matches_its_schema(tmp_path: Path, consent_active: None,
                                         mode: str) -> None:
    session, _ = idle_session(tmp_path)
    export([session], tmp_path / "ds", QualityFilters(
        idle_s=1.5, idle_mode=mode, min_segment_s=1.0, drop_black_frozen=True))  # type: ignore[arg-type]
    assert read_quality(tmp_path / "ds") is not None  # validated against the schema on read
