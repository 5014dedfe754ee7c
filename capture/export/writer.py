"""Dataset writer: data, episode, event and task tables, stats, consent, checksums, info.json."""

from __future__ import annotations

import contextlib
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from capture import formats
from capture.errors import BadInputError, CaptureError
from capture.export import layout, stats
from capture.export.video import Segment, VideoFileWriter

_MB = 1024 * 1024
# Episode columns the consent document repeats (meta/consent.json, schemas/dataset-consent.v1).
CONSENT_KEYS = ("session_id", "segment_index", "segment_part", "consent_receipt_id", "license",
                "player", "synthetic_consent")


@dataclass(frozen=True, slots=True)
class VideoSlot:
    """Where an episode's frames go: a video file and the first frame number inside it."""

    chunk_index: int
    file_index: int
    first_frame: int


# Float columns of a session's events table that must hold finite numbers (when not null).
EVENT_FLOAT_COLUMNS = ("dx", "dy", "value")


def refuse_non_finite_events(events: pa.Table, path: Path) -> None:
    """Raise BadInputError naming the first row whose dx, dy or value is NaN or infinite."""
    for name in EVENT_FLOAT_COLUMNS:
        if name not in events.column_names:
            continue
        column = events.column(name)
        values = column.to_numpy(zero_copy_only=False).astype(np.float64)  # nulls become NaN
        bad = np.isinf(values) | (np.isnan(values) & ~column.is_null().to_numpy(
            zero_copy_only=False))
        if bad.any():
            row = int(np.argmax(bad))
            kind = events.column("kind")[row].as_py() if "kind" in events.column_names else "?"
            raise BadInputError(f"row {row} ({kind} event): {name} is {values[row]}; export "
                                f"refuses non-finite input values ({int(bad.sum())} in column "
                                f"{name})", path)


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
        self.features = layout.features(width, height, fps, self.encoding)
        self.total_frames = 0
        self.total_events = 0
        self._schema = layout.frames_schema()
        self._episode_stats: list[dict[str, stats.Stats]] = []
        self._consent: list[dict[str, Any]] = []
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
                    actions: dict[str, np.ndarray], extra: dict[str, Any],
                    image_stats: stats.Stats) -> int:
        """Record an episode whose segment was just appended to `video`; returns its index.

        `image_stats` are the episode's video statistics, made where its segment was made
        (capture.export.engine: stats.ImageCounts of LeRobot's sampled frames)."""
        episode_index = len(self._episodes)
        n = len(capture_time_ns)
        if n == 0:
            raise CaptureError(f"episode {episode_index} has no frames")
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
        for f in self._schema:
            values = np.asarray(columns[f.name])
            if values.dtype.kind == "f" and not np.isfinite(values).all():
                raise CaptureError(f"episode {episode_index}: {f.name} has non-finite values; "
                                   "refusing to write them")
        episode_stats = {name: stats.feature_stats(np.asarray(columns[name]).astype(
            self.features[name]["dtype"], copy=False)) for name in self._schema.names}
        episode_stats[layout.VIDEO_KEY] = image_stats
        self._episode_stats.append(episode_stats)
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
            **{layout.stats_column(feature, key): value.tolist()
               for feature in self.features for key, value in episode_stats[feature].items()},
        })
        self._consent.append({
            "episode_index": episode_index, "length": n,
            "first_capture_time_ns": int(columns["capture_time_ns"][0]),
            "last_capture_time_ns": int(columns["capture_time_ns"][-1]),
            **{key: extra[key] for key in CONSENT_KEYS},
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
        schema = layout.episodes_schema(self.features)
        episodes = formats.table_from_rows(self._episodes, schema)
        formats.validate_table(episodes, schema, episodes_path)
        episodes_path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(episodes, episodes_path)

        tasks = pd.DataFrame({"task_index": range(len(self.tasks))},
                             index=pd.Index(self.tasks, name="task"))
        tasks.to_parquet(self.root / layout.TASKS_PATH)

        dataset_stats = stats.to_lists(stats.aggregate_all(self._episode_stats)) \
            if self._episode_stats else {}
        stats_path = self.root / layout.STATS_PATH
        formats.validate_json(dataset_stats, layout.STATS_SCHEMA, stats_path)
        if not stats.all_finite(dataset_stats):
            raise CaptureError("statistics came out non-finite; refusing to write them",
                               stats_path)
        _write_json(stats_path, dataset_stats)
        self._write_consent()

        info = layout.build_info(fps=self.fps, width=self.width, height=self.height,
                                 total_episodes=len(self._episodes),
                                 total_frames=self.total_frames, total_tasks=len(self.tasks),
                                 limits=self.limits, encoding=self.encoding)
        info_path = self.root / layout.INFO_PATH
        formats.validate_json(info, layout.INFO_SCHEMA, info_path)
        _write_json(info_path, info)
        (self.root / layout.CARD_PATH).write_text(card, encoding="utf-8")
        write_checksums(self.root)
        return info

    def _write_consent(self) -> None:
        sessions: dict[str, dict[str, Any]] = {}
        for row in self._consent:
            entry = sessions.setdefault(row["session_id"], {
                key: row[key] for key in ("consent_receipt_id", "license", "player",
                                          "synthetic_consent")} | {"episodes": []})
            if any(entry[key] != row[key] for key in entry if key != "episodes"):
                raise CaptureError(f"session {row['session_id']}: its episodes disagree on "
                                   "consent, licence or player")
            entry["episodes"].append(row["episode_index"])
        document = {"format": layout.CONSENT_FORMAT, "version": 1,
                    "episodes": self._consent, "sessions": sessions}
        path = self.root / layout.CONSENT_PATH
        formats.validate_json(document, layout.CONSENT_SCHEMA, path)
        _write_json(path, document)

    def abort(self) -> None:
        """Release open files after a failure (the caller removes the directory); closing may
        fail again (a full disk), which changes nothing: the directory is removed."""
        with contextlib.suppress(Exception):
            self.video.close()
        if self._events is not None:
            with contextlib.suppress(Exception):
                self._events.close()
            self._events = None


def file_digests(root: Path) -> dict[str, str]:
    """SHA-256 of every file under root but meta/checksums.json, by relative posix path."""
    digests = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root).as_posix()
        if rel == layout.CHECKSUMS_PATH:
            continue
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        digests[rel] = digest.hexdigest()
    return digests


def write_checksums(root: Path) -> None:
    """(Re)write meta/checksums.json for the files now under root; call after any change."""
    document = {"format": layout.CHECKSUMS_FORMAT, "version": 1, "algorithm": "sha256",
                "files": file_digests(root)}
    path = root / layout.CHECKSUMS_PATH
    formats.validate_json(document, layout.CHECKSUMS_SCHEMA, path)
    _write_json(path, document)


def _write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=4, allow_nan=False)
        f.write("\n")
