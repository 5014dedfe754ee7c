"""The fast path: episodes whose source frames map one to one onto the grid are packet-copied."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pyarrow.parquet as pq
import pytest

from capture.export import layout, stats
from capture.export.engine import EngineOptions
from capture.export.lerobot import export_dataset
from capture.export.verify import verify_dataset
from capture.export.video import idr_positions, stats_keyframes
from tests.export.conftest import PSEUDONYM_KEY
from tests.factories import SessionScript, build_session, frame_times, read_frame_tag

FPS, GOP = 30, 30
# As the built-in recorder encodes: no B-frames, a keyframe every GOP frames; scene cuts off
# so that the keyframes sit exactly where the test expects them.
RECORDER_LIKE = {"tune": "zerolatency", "x264-params": "scenecut=0"}


def _session(root: Path, n: int, **timing: object) -> Path:
    times, dropped = frame_times(n, FPS, **timing)  # type: ignore[arg-type]
    return build_session(root, SessionScript(
        capture_times_ns=times, dropped_before=dropped, fps=FPS, width=160, height=96,
        gop=GOP, preset="veryfast", encoder_options=RECORDER_LIKE))


def _decoded(path: Path) -> list[tuple[Fraction, np.ndarray]]:
    """(presentation time, Y/U/V planes) of every frame, in order."""
    out = []
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            assert frame.pts is not None and frame.time_base is not None
            out.append((frame.pts * frame.time_base, frame.to_ndarray(format="yuv420p")))
    return out


def _episodes(dataset: Path) -> list[dict]:
    return pq.read_table(dataset / layout.EPISODES_PATH.format(
        chunk_index=0, file_index=0)).to_pylist()


def _video(dataset: Path, episode: dict) -> Path:
    key = layout.VIDEO_KEY
    return dataset / layout.VIDEO_PATH.format(
        video_key=key, chunk_index=episode[f"videos/{key}/chunk_index"],
        file_index=episode[f"videos/{key}/file_index"])


def _export(session: Path, out: Path, **kwargs: object):  # type: ignore[no-untyped-def]
    return export_dataset([session], out, pseudonym_key=PSEUDONYM_KEY,
                          engine=EngineOptions(workers=1), **kwargs)  # type: ignore[arg-type]


@pytest.mark.usefixtures("consent_active")
def test_one_to_one_episode_is_copied_and_decodes_to_the_source_frames(tmp_path: Path) -> None:
    session = _session(tmp_path / "s", 3 * FPS)
    report = _export(session, tmp_path / "ds")
    assert report.episodes_copied == 1 and report.episode_reports[0].copied
    source = _decoded(session / "video.mkv")
    (episode,) = _episodes(tmp_path / "ds")
    exported = _decoded(_video(tmp_path / "ds", episode))
    assert len(exported) == len(source) == 3 * FPS
    for i, ((t, planes), (_, source_planes)) in enumerate(zip(exported, source, strict=True)):
        assert t == Fraction(i, FPS)  # exactly on the grid LeRobot's loader asks for
        assert np.array_equal(planes, source_planes), f"frame {i} differs from the source"
    # a copied episode's image stats come from its keyframes (documented in README and
    # docs/lerobot.md), counted as LeRobot counts sampled frames; its other stats are LeRobot's
    keyframes = sorted(stats_keyframes(idr_positions(session / "video.mkv"), 0, 3 * FPS))
    assert keyframes == [0, GOP, 2 * GOP]
    counts = stats.ImageCounts()
    with av.open(str(session / "video.mkv")) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i in keyframes:
                counts.add(stats.downsample_hwc(frame.to_ndarray(format="rgb24")))
    for key, want in counts.stats().items():
        got = np.asarray(episode[layout.stats_column(layout.VIDEO_KEY, key)])
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-12, err_msg=key)
    assert episode[layout.stats_column("frame_index", "count")] == [3 * FPS]
    check = verify_dataset(tmp_path / "ds")
    assert check.ok, check.problems


@pytest.mark.usefixtures("consent_active")
def test_an_episode_starting_between_keyframes_is_reencoded_into_its_own_file(
        tmp_path: Path) -> None:
    pause_at = GOP + GOP // 2  # the run after the pause starts on a P-frame
    session = _session(tmp_path / "s", 3 * FPS, pauses={pause_at: 2_000_000_000})
    assert pause_at not in idr_positions(session / "video.mkv")
    assert 0 in idr_positions(session / "video.mkv")
    report = _export(session, tmp_path / "ds")
    assert [e.copied for e in report.episode_reports] == [True, False]
    first, second = _episodes(tmp_path / "ds")
    # a file holds one stream description: the copied and the re-encoded episode do not share
    assert _video(tmp_path / "ds", first) != _video(tmp_path / "ds", second)
    source = _decoded(session / "video.mkv")
    copied = _decoded(_video(tmp_path / "ds", first))
    assert len(copied) == pause_at
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(copied, source, strict=False))
    reencoded = _decoded(_video(tmp_path / "ds", second))
    tags = [read_frame_tag(av.VideoFrame.from_ndarray(planes, format="yuv420p")
                           .to_ndarray(format="rgb24")) for _, planes in reencoded]
    assert tags == list(range(pause_at, 3 * FPS))
    check = verify_dataset(tmp_path / "ds")
    assert check.ok, check.problems


@pytest.mark.usefixtures("consent_active")
@pytest.mark.parametrize("case", ["resized", "dropped slot", "other fps", "shorter gop"])
def test_no_copy_unless_frames_map_one_to_one_at_native_size(tmp_path: Path, case: str) -> None:
    timing = {"dropped_slots": {40}} if case == "dropped slot" else {}
    session = _session(tmp_path / "s", 3 * FPS, **timing)
    kwargs: dict[str, object] = {"size": (80, 48)} if case == "resized" else \
        {"fps": 15} if case == "other fps" else \
        {"gop_seconds": 2 / FPS} if case == "shorter gop" else {}  # source: GOP frames
    report = _export(session, tmp_path / "ds", **kwargs)
    assert report.episodes_copied == 0
    check = verify_dataset(tmp_path / "ds")
    assert check.ok, check.problems


@pytest.mark.usefixtures("consent_active")
@pytest.mark.skipif("libsvtav1" not in av.codecs_available, reason="PyAV without SVT-AV1")
def test_av1_export_records_its_encoding_and_decodes_on_the_grid(tmp_path: Path) -> None:
    session = _session(tmp_path / "s", FPS)
    report = _export(session, tmp_path / "ds", codec="av1", gop_seconds=2 / FPS)
    assert report.episodes_copied == 0 and report.codec == "av1"
    info = (tmp_path / "ds" / layout.INFO_PATH).read_text()
    video = __import__("json").loads(info)["features"][layout.VIDEO_KEY]["info"]
    assert (video["video.codec"], video["video.g"], video["video.crf"],
            video["video.preset"]) == ("av1", 2, 30, 12)
    (episode,) = _episodes(tmp_path / "ds")
    frames = _decoded(_video(tmp_path / "ds", episode))
    assert [t for t, _ in frames] == [Fraction(i, FPS) for i in range(FPS)]
    check = verify_dataset(tmp_path / "ds")
    assert check.ok, check.problems
