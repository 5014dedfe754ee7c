"""Export never shows a frame whose capture time is not established (time_uncertain)."""

from __future__ import annotations

from pathlib import Path

import av
import pyarrow as pa
import pyarrow.parquet as pq

from capture import formats
from capture.export.lerobot import export_dataset
from capture.session import writer
from capture.session.manifest import read_manifest, write_manifest
from tests.factories import build_session, gameplay_script, read_frame_tag

from .conftest import PSEUDONYM_KEY

DOUBTFUL = set(range(10, 16)) | {40}


def mark_uncertain(session_dir: Path, rows: set[int]) -> None:
    """Rewrite the session's frame table with `rows` marked time_uncertain (and rehash)."""
    path = session_dir / formats.FRAMES_TABLE
    table = pq.read_table(path)
    flags = pa.array([i in rows for i in range(table.num_rows)], pa.bool_())
    table = table.set_column(table.schema.get_field_index("time_uncertain"),
                             table.schema.field("time_uncertain"), flags)
    pq.write_table(table, path)
    manifest = read_manifest(session_dir)
    write_manifest(session_dir, manifest.updated(files=writer.hash_files(session_dir)))


def test_uncertain_frames_are_not_on_the_grid(tmp_path: Path, consent_active: None) -> None:
    session_dir = build_session(tmp_path / "sessions", gameplay_script(seconds=2))
    mark_uncertain(session_dir, DOUBTFUL)
    export_dataset([session_dir], tmp_path / "ds", pseudonym_key=PSEUDONYM_KEY)
    video = tmp_path / "ds/videos/observation.image/chunk-000/file-000.mp4"
    with av.open(str(video)) as container:
        shown = [read_frame_tag(f.to_ndarray(format="rgb24")) for f in container.decode(video=0)]
    assert shown and not DOUBTFUL & set(shown)
    assert {9, 16} <= set(shown)      # their neighbours stand in for them
