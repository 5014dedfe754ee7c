"""Dataset writer: data, episode, event and task tables, stats and info.json, validated on write."""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from capture import formats
from capture.export import layout
from capture.export.video import ImageStats, Segment, VideoFileWriter

_MB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class VideoSlot:
    """Where an episode's frames go: a video file and the first frame number inside it."""

    chunk_index: int
    file_index: int
    first_frame: int


class _RunningStats:
    """min/max/mean/std/count of one numeric feature, accumulated over row batches."""

    def __init__(self, width: int) -> None:
        self.count = 0
        self._sum = np.zeros(width)
        self._sum_sq = np.zeros(width)
        self._min = np.full(width, np.inf)
        self._max = np.full(width, -np.inf)

    def add(self, values: np.ndarray) -> None:
        if not len(values):
            return
        v = values.reshape(len(values), -1).astype(np.float64)
        self.count += len(v)
        self._sum += v.sum(axis=0)
        self._sum_sq += (v ** 2).sum(axis=0)
        self._min = np.minimum(self._min, v.min(axis=0))
        self._max = np.maximum(self._max, v.max(axis=0))

    def result(self) -> dict[str, list[Any]]:
        n = max(self.count, 1)
        mean = self._sum / n
        std = np.sqrt(np.maximum(self._sum_sq / n - mean ** 2, 0.0))
        empty = self.count == 0
        return {"min": (np.zeros_like(mean) if empty else self._min).tolist(),
                "max": (np.zeros_like(mean) if empty else self._max).tolist(),
                "mean": mean.tolist(), "std": std.tolist(), "count": [self.count]}


def _column(values: np.ndarray, field: pa.Field) -> pa.Array:
    if pa.types.is_fixed_size_list(field.type):
        flat = pa.array(np.ascontiguousarray(values).reshape(-1), type=field.type.value_type)
        return pa.FixedSizeListArray.from_arrays(flat, field.type.list_size)
    return pa.array(values, type=field.type)


class DatasetWriter:
    """Writes one LeRobot v3.0 dataset into `root`, episode by episode."""

    def __init__(self, root: Path, *, fps: int, width: int, height: int, tasks: list[str],
                 limits: layout.FileLimits = layout.DEFAULT_LIMITS,
                 encoding: layout.VideoEncoding | None = None) -> None:
        self.root, self.fps, self.width, self.height = root, fps, width, height
        self.encoding = encoding or layout.default_encoding(fps)
        self.tasks, self.limits = tasks, limits
        self.video = VideoFileWriter(root, fps=fps, width=width, height=height, limits=limits)
        self.image_stats = ImageStats()
        self.total_frames = 0
        self.total_events = 0
        self._schema = layout.frames_schema()
        self._stats = {f.name: _RunningStats(f.type.list_size
                                             if pa.types.is_fixed_size_list(f.type) else 1)
                       for f in self._schema}
        self._data_file = (0, 0)
        self._pending: list[pa.Table] = []
        self._pending_bytes = 0
        self._episodes: list[dict[str, Any]] = []
        self._events_schema = layout.events_schema()
        self._events: pq.ParquetWriter | None = None

    @property
    def total_episodes(self) -> int:
        return len(self._episodes)

    def start_episode(self, segment: Segment) -> VideoSlot:
        """Call before appending an episode's video segment with `video.append()`."""
        return VideoSlot(*self.video.start_episode(segment))

    def add_episode(self, slot: VideoSlot, *, task: str, capture_time_ns: np.ndarray,
                    actions: dict[str, np.ndarray], extra: dict[str, Any]) -> int:
        """Record an episode whose frames were just written to `video`; returns its index."""
        episode_index = len(self._episodes)
        n = len(capture_time_ns)
        if self.video.frames_in_file - slot.first_frame != n:
            raise RuntimeError(f"episode {episode_index}: {n} rows but "
                               f"{self.video.frames_in_file - slot.first_frame} video frames")
        frame_index = np.arange(n, dtype=np.int64)
        columns: dict[str, np.ndarray] = {
            "timestamp": (frame_index / self.fps).astype(np.float32),
            "frame_index": frame_index,
            "episode_index": np.full(n, episode_index, dtype=np.int64),
            "index": np.arange(self.total_frames, self.total_frames + n, dtype=np.int64),
            "task_index": np.full(n, self.tasks.index(task), dtype=np.int64),
            "capture_time_ns": np.asarray(capture_time_ns, dtype=np.int64),
            **actions,
        }
        table = pa.Table.from_arrays([_column(columns[f.name], f) for f in self._schema],
                                     schema=self._schema)
        formats.validate_table(table, self._schema, self._data_path(*self._data_file))
        for name, stats in self._stats.items():
            stats.add(columns[name])
        self._pending.append(table)
        self._pending_bytes += table.nbytes
        fps = self.fps
        self._episodes.append({
            "episode_index": episode_index,
            "tasks": [task],
            "length": n,
            "data/chunk_index": self._data_file[0],
            "data/file_index": self._data_file[1],
            "dataset_from_index": self.total_frames,
            "dataset_to_index": self.total_frames + n,
            f"videos/{layout.VIDEO_KEY}/chunk_index": slot.chunk_index,
            f"videos/{layout.VIDEO_KEY}/file_index": slot.file_index,
            f"videos/{layout.VIDEO_KEY}/from_timestamp": slot.first_frame / fps,
            f"videos/{layout.VIDEO_KEY}/to_timestamp": (slot.first_frame + n) / fps,
            "meta/episodes/chunk_index": 0,
            "meta/episodes/file_index": 0,
            **extra,
        })
        self.total_frames += n
        if self._pending_bytes >= self.limits.data_mb * _MB:
            self._flush_data()
            self._data_file = layout.next_file(*self._data_file, self.limits.chunks_size)
        return episode_index

    def add_events(self, events: pa.Table) -> None:
        """Append one session's events (schema dataset-events.v1)."""
        path = self.root / layout.EVENTS_PATH.format(chunk_index=0, file_index=0)
        formats.validate_table(events, self._events_schema, path)
        if self._events is None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._events = pq.ParquetWriter(path, self._events_schema)
        self._events.write_table(events.cast(self._events_schema))
        self.total_events += events.num_rows

    def _data_path(self, chunk_index: int, file_index: int) -> Path:
        return self.root / layout.DATA_PATH.format(chunk_index=chunk_index, file_index=file_index)

    def _flush_data(self) -> None:
        if not self._pending:
            return
        path = self._data_path(*self._data_file)
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.concat_tables(self._pending), path)
        self._pending, self._pending_bytes = [], 0

    def finish(self, card: str) -> dict[str, Any]:
        """Write the remaining files and meta/; returns info.json's content."""
        self._flush_data()
        self.video.close()
        if self._events is None:
            self.add_events(self._events_schema.empty_table())
        assert self._events is not None
        self._events.close()

        episodes_path = self.root / layout.EPISODES_PATH.format(chunk_index=0, file_index=0)
        schema = layout.episodes_schema()
        episodes = formats.table_from_rows(self._episodes, schema)
        formats.validate_table(episodes, schema, episodes_path)
        episodes_path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(episodes, episodes_path)

        tasks = pd.DataFrame({"task_index": range(len(self.tasks))},
                             index=pd.Index(self.tasks, name="task"))
        tasks.to_parquet(self.root / layout.TASKS_PATH)

        stats: dict[str, Any] = {name: s.result() for name, s in self._stats.items()}
        stats[layout.VIDEO_KEY] = self.image_stats.result()
        _write_json(self.root / layout.STATS_PATH, stats)

        info = layout.build_info(fps=self.fps, width=self.width, height=self.height,
                                 total_episodes=len(self._episodes),
                                 total_frames=self.total_frames, total_tasks=len(self.tasks),
                                 limits=self.limits, encoding=self.encoding)
        info_path = self.root / layout.INFO_PATH
        formats.validate_json(info, layout.INFO_SCHEMA, info_path)
        _write_json(info_path, info)
        (self.root / layout.CARD_PATH).write_text(card, encoding="utf-8")
        return info

    def abort(self) -> None:
        """Release open files after a failure (the caller removes the directory); closing may
        fail again (a full disk), which changes nothing: the directory is removed."""
        with contextlib.suppress(Exception):
            self.video.close()
        if self._events is not None:
            with contextlib.suppress(Exception):
                self._events.close()
            self._events = None


def _write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=4)
        f.write("\n")
