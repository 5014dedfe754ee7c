"""Frames whose capture time is not established (time_uncertain) are kept off the grid."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from capture import formats
from capture.align import build_episodes, grid_offsets_ns
from capture.session import writer
from capture.session.manifest import read_manifest, write_manifest
from capture.session.reader import open_session
from tests.factories import build_session, gameplay_script

MS = 1_000_000


def steady(n: int, fps: int = 30, start: int = 1_000 * MS) -> np.ndarray:
    return start + grid_offsets_ns(np.arange(n), fps)


def test_an_uncertain_frame_is_never_a_source_while_its_run_has_a_certain_one() -> None:
    times = steady(30)
    uncertain = np.zeros(30, dtype=bool)
    uncertain[[5, 6, 7, 20]] = True
    [episode] = build_episodes(times, source_fps=30, fps=30, uncertain=uncertain)
    assert not uncertain[episode.source_index].any()
    # Grid frames 5-7 show the nearest certain frames instead, and say how far off they are.
    assert episode.source_index[5:8].tolist() == [4, 4, 8]
    assert episode.stats.offset_ms_max > 60
    assert episode.stats.uncertain_sources == 0
    [plain] = build_episodes(times, source_fps=30, fps=30)
    assert plain.source_index.tolist() == list(range(30))
    assert plain.stats.offset_ms_max < 1


def test_a_run_with_no_established_time_falls_back_to_its_frames_and_counts_them() -> None:
    times = np.concatenate([steady(10), steady(10, start=5_000 * MS)])   # two runs
    uncertain = np.zeros(20, dtype=bool)
    uncertain[10:] = True
    first, second = build_episodes(times, source_fps=30, fps=30, uncertain=uncertain)
    assert first.stats.uncertain_sources == 0
    assert second.source_index.tolist() == list(range(10, 20))
    assert second.stats.uncertain_sources == 10


def test_a_frames_table_written_before_time_uncertain_existed_reads_as_all_null(
        tmp_path: Path) -> None:
    session_dir = build_session(tmp_path, gameplay_script(seconds=1))
    path = session_dir / formats.FRAMES_TABLE
    old = pq.read_table(path).drop_columns(["time_uncertain"])
    pq.write_table(old, path)
    manifest = read_manifest(session_dir)
    write_manifest(session_dir, manifest.updated(files=writer.hash_files(session_dir)))
    frames = open_session(session_dir).frames()
    assert frames.column("time_uncertain").null_count == frames.num_rows == old.num_rows
    assert frames.column("time_uncertain").type == pa.bool_()
