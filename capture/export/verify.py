"""Dataset checker: reads an exported dataset and applies LeRobot v3.0's loading rules to it."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from capture import formats
from capture.errors import BadInputError
from capture.export import layout, stats
from capture.export.video import iter_video_times
from capture.export.writer import CONSENT_KEYS, file_digests

_TOL = layout.TIMESTAMP_TOLERANCE_S
_VIDEO = layout.VIDEO_KEY
_STATS_RTOL = 1e-6  # stats.json against the aggregate of the per-episode stats columns


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a dataset, and the file it is in."""

    file: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}: {self.message}"


@dataclass
class VerifyReport:
    """Every problem verify_dataset found (none: the dataset loads under LeRobot's rules)."""

    path: Path
    problems: list[Problem] = field(default_factory=list)
    episodes: int = 0
    frames: int = 0
    video_frames: int = 0
    events: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        head = (f"{self.path}: {self.episodes} episodes, {self.frames} frames, "
                f"{self.video_frames} video frames, {self.events} events")
        if self.ok:
            return head + "\nOK: no problems found"
        return "\n".join([head, f"{len(self.problems)} problem(s):",
                          *(f"  {p}" for p in self.problems)])


def _read_parquet_dir(root: Path, subdir: str) -> list[tuple[Path, pa.Table | None, str]]:
    """(path, table or None, error) for every chunk-*/file-*.parquet under root/subdir."""
    out = []
    for path in sorted((root / subdir).glob("chunk-*/file-*.parquet")):
        try:
            out.append((path, pq.read_table(path), ""))
        except (pa.ArrowInvalid, OSError) as exc:
            out.append((path, None, f"not a readable Parquet file ({exc})"))
    return out


def _read_json(path: Path, shown: Path | str) -> Any:
    """A JSON file's value; BadInputError naming `shown` if it cannot be read, is not UTF-8 text
    or not JSON (never a traceback)."""
    try:
        text = path.read_bytes().decode("utf-8")
        return json.loads(text)
    except FileNotFoundError:
        raise BadInputError("is missing", shown) from None
    except OSError as exc:
        raise BadInputError(f"cannot be read ({exc.strerror})", shown) from None
    except UnicodeDecodeError as exc:
        raise BadInputError(f"is not UTF-8 text (byte {exc.start})", shown) from None
    except json.JSONDecodeError as exc:
        raise BadInputError(f"is not valid JSON ({exc.msg})", shown) from None
    except RecursionError:
        raise BadInputError("is not valid JSON (nested too deeply)", shown) from None


class _Checker:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.report = VerifyReport(path=root)
        self.info: dict[str, Any] = {}
        self.fps = 1
        self.rows: dict[str, np.ndarray] = {}     # data columns over all rows, in file order
        self.row_file: list[tuple[int, int]] = []  # (chunk, file) of each data file, in order
        self.row_file_id = np.empty(0, np.int64)   # per row: position in row_file
        self.data_paths: list[str] = []            # relative path of each data file, in order
        self.episodes: pa.Table | None = None
        self.episode_paths: list[str] = []         # per episode row: its episodes file

    def problem(self, path: Path | str, message: str) -> None:
        target = Path(path)
        if target.resolve() == self.root:
            name = str(self.root)
        elif target.is_absolute():
            name = str(target.relative_to(self.root))
        else:
            name = str(path)
        self.report.problems.append(Problem(name, message))

    @contextmanager
    def guard(self, path: Path | str) -> Iterator[None]:
        """Turn anything a malformed file makes us trip over into a problem of that file."""
        try:
            yield
        except BadInputError as exc:
            self.problem(exc.path or path, exc.problem)
        except Exception as exc:
            self.problem(path, f"cannot be checked ({type(exc).__name__}: {exc})")

    # --- meta/info.json ----------------------------------------------------------------------
    def check_info(self) -> bool:
        path = self.root / layout.INFO_PATH
        if not path.is_file():
            self.problem(layout.INFO_PATH, "is missing: not a LeRobot dataset")
            return False
        try:
            info = _read_json(path, layout.INFO_PATH)
            formats.validate_json(info, layout.INFO_SCHEMA, layout.INFO_PATH)
        except json.JSONDecodeError as exc:
            self.problem(layout.INFO_PATH, f"is not valid JSON ({exc.msg})")
            return False
        except BadInputError as exc:
            self.problem(layout.INFO_PATH, exc.problem)
            return False
        self.info, self.fps = info, int(info["fps"])
        video = info["features"].get(_VIDEO)
        if video is None or video["dtype"] != "video":
            self.problem(layout.INFO_PATH, f"has no video feature {_VIDEO!r}")
            return False
        height, width = video["shape"][:2]
        expected = layout.features(width, height, self.fps)
        for name, spec in expected.items():
            have = info["features"].get(name)
            if have is None:
                self.problem(layout.INFO_PATH, f"feature {name!r} is missing")
            elif name != _VIDEO and (have["dtype"], list(have["shape"]), have["names"]) != (
                    spec["dtype"], spec["shape"], spec["names"]):
                self.problem(layout.INFO_PATH, f"feature {name!r} differs from this capture's "
                                               "format (dtype, shape or names)")
        for name in info["features"].keys() - expected.keys():
            self.problem(layout.INFO_PATH, f"unexpected feature {name!r}")
        return True

    # --- data/ -------------------------------------------------------------------------------
    def check_data(self) -> None:
        features = {k: v for k, v in self.info["features"].items() if v["dtype"] != "video"}
        schema = layout.frames_schema(features)
        wanted = ("index", "episode_index", "frame_index", "timestamp", "task_index")
        parts: dict[str, list[np.ndarray]] = {k: [] for k in wanted}
        file_ids: list[np.ndarray] = []
        files = _read_parquet_dir(self.root, "data")
        if not files:
            self.problem("data", "has no chunk-*/file-*.parquet files")
        for path, table, error in files:
            if table is None:
                self.problem(path, error)
                continue
            with self.guard(path):
                self._check_columns(path, table, features, schema)
                self._check_finite(path, table, features)
                chunk, file = (int(p.split("-")[1]) for p in (path.parent.name, path.stem))
                for name in wanted:
                    parts[name].append(table.column(name).to_numpy().astype(np.float64
                                       if name == "timestamp" else np.int64))
                file_ids.append(np.full(table.num_rows, len(self.row_file), dtype=np.int64))
                self.row_file.append((chunk, file))
                self.data_paths.append(path.relative_to(self.root).as_posix())
        if not all(parts.values()):
            return
        self.rows = {k: np.concatenate(v) for k, v in parts.items()}
        self.row_file_id = np.concatenate(file_ids)
        n = len(self.rows["index"])
        self.report.frames = n
        if n != self.info["total_frames"]:
            self.problem(layout.INFO_PATH, f"total_frames is {self.info['total_frames']}, "
                                           f"data files hold {n} rows")
        index = self.rows["index"]
        if not np.array_equal(index, np.arange(n)):
            bad = int(np.argmax(index != np.arange(n)))
            self.problem(self.data_file_of(bad), f"index is not contiguous 0..{n - 1} in file "
                                                 f"order: row {bad} has index {index[bad]}")
        expected_ts = (self.rows["frame_index"] / self.fps).astype(np.float32).astype(np.float64)
        off = np.abs(self.rows["timestamp"] - expected_ts) > _TOL
        if off.any():
            bad = int(np.argmax(off))
            self.problem(self.data_file_of(bad), f"{int(off.sum())} timestamps are not "
                                                 "frame_index / fps: "
                                 f"index {index[bad]} has {self.rows['timestamp'][bad]:.6f}, "
                                 f"expected {expected_ts[bad]:.6f}")
        tasks = self.rows["task_index"]
        if len(tasks) and (tasks.min() < 0 or tasks.max() >= self.info["total_tasks"]):
            self.problem("data", "task_index outside 0..total_tasks-1")

    def data_file_of(self, row: int) -> str:
        return self.data_paths[int(self.row_file_id[row])] if self.data_paths else "data"

    def _check_finite(self, path: Path, table: pa.Table, features: dict[str, Any]) -> None:
        """NaN or infinity in any float column is a problem (LeRobot would train on it)."""
        for name, spec in features.items():
            if not spec["dtype"].startswith("float") or name not in table.column_names:
                continue
            column = table.column(name)
            if pa.types.is_fixed_size_list(column.type):
                values = pa.concat_arrays([c.flatten() for c in column.chunks]).to_numpy(
                    zero_copy_only=False).reshape(table.num_rows, -1)
            else:
                values = column.to_numpy().reshape(table.num_rows, -1)
            bad = ~np.isfinite(values.astype(np.float64)).all(axis=1)
            if bad.any():
                row = int(np.argmax(bad))
                self.problem(path, f"column {name!r} has non-finite values (NaN or infinity) in "
                                   f"{int(bad.sum())} rows, first in row {row}: "
                                   f"{values[row].tolist()}")

    def _check_columns(self, path: Path, table: pa.Table, features: dict[str, Any],
                       schema: pa.Schema) -> None:
        columns = set(table.column_names)
        for name, spec in features.items():
            if name not in columns:
                self.problem(path, f"column {name!r} of info.json features is missing")
            elif not layout.arrow_type_matches(spec, table.schema.field(name).type):
                self.problem(path, f"column {name!r} is {table.schema.field(name).type}, "
                                   f"info.json says {spec['dtype']} {spec['shape']}")
        for name in columns - features.keys():
            self.problem(path, f"column {name!r} is not a feature in info.json")
        try:
            formats.validate_table(table, schema, path)
        except BadInputError as exc:
            self.problem(path, f"does not match {layout.FRAMES_SCHEMA}: {exc.problem}")

    # --- meta/episodes -----------------------------------------------------------------------
    def check_episodes(self) -> None:
        files = _read_parquet_dir(self.root, "meta/episodes")
        if not files:
            self.problem("meta/episodes", "has no chunk-*/file-*.parquet files")
            return
        tables = []
        full = layout.episodes_schema(self.info["features"])
        for path, table, error in files:
            if table is None:
                self.problem(path, error)
                continue
            lost = [name for name in layout.capture_episode_columns()
                    if name not in table.column_names]
            lost_consent = [name for name in CONSENT_KEYS if name in lost]
            if lost_consent:
                self.problem(path, f"episodes have lost their consent receipts: column(s) "
                                   f"{', '.join(lost_consent)} are missing (tools that know only "
                                   "LeRobot's columns, such as LeRobot's dataset_tools, drop "
                                   "them); the episodes cannot be traced to their consent; "
                                   f"match them back with {layout.CONSENT_PATH} of the original "
                                   "export, or re-export")
            if set(lost) - set(lost_consent):
                self.problem(path, "capture's provenance column(s) "
                                   f"{', '.join(n for n in lost if n not in lost_consent)} "
                                   "are missing")
            schema = pa.schema([f for f in full if f.name not in lost], metadata=full.metadata)
            try:
                formats.validate_table(table, schema, path)
                tables.append(table.select(schema.names).cast(schema))
                self.episode_paths += [path.relative_to(self.root).as_posix()] * table.num_rows
            except BadInputError as exc:
                self.problem(path, f"does not match {layout.EPISODES_SCHEMA}: {exc.problem}")
        if len({tuple(t.schema.names) for t in tables}) > 1:
            self.problem("meta/episodes", "its files have different columns")
            return
        if not tables:
            return
        episodes = self.episodes = pa.concat_tables(tables)
        e = episodes.num_rows
        self.report.episodes = e
        where = self.episode_paths[0] if self.episode_paths else "meta/episodes"
        if e != self.info["total_episodes"]:
            self.problem(layout.INFO_PATH, f"total_episodes is {self.info['total_episodes']}, "
                                           f"meta/episodes has {e}")
        col = {name: episodes.column(name).to_numpy(zero_copy_only=False)
               for name in ("episode_index", "length", "dataset_from_index", "dataset_to_index",
                            "data/chunk_index", "data/file_index")}
        if not np.array_equal(col["episode_index"], np.arange(e)):
            self.problem(where, "episode_index is not 0..total_episodes-1 in order")
        if (col["dataset_to_index"] - col["dataset_from_index"] != col["length"]).any():
            self.problem(where, "length differs from dataset_to_index - dataset_from_index")
        starts = np.concatenate([[0], col["dataset_to_index"][:-1]]) if e else np.empty(0)
        if e and (not np.array_equal(col["dataset_from_index"], starts)
                  or col["dataset_to_index"][-1] != self.report.frames):
            self.problem(where, f"episodes do not cover rows 0..{self.report.frames - 1} "
                                "exactly once, in order")
        for name in ("player",) if "player" in episodes.column_names else ():
            bad = [p for p in episodes.column(name).to_pylist()
                   if not layout.PSEUDONYM_PATTERN.match(p or "")]
            if bad:
                self.problem(where, f"{len(bad)} player values are not keyed pseudonyms "
                                    f"(e.g. {bad[0]!r}): raw player names must not be exported")
        if not self.rows:
            return
        n = len(self.rows["index"])
        for ep in range(e):
            lo, hi = int(col["dataset_from_index"][ep]), int(col["dataset_to_index"][ep])
            where = self.episode_paths[ep]
            if not 0 <= lo <= hi <= n:
                self.problem(where, f"episode {ep} rows [{lo}, {hi}) are outside the data")
                continue
            if not (self.rows["episode_index"][lo:hi] == ep).all():
                self.problem(self.data_file_of(lo), f"rows [{lo}, {hi}) are not all episode {ep}")
            if not np.array_equal(self.rows["frame_index"][lo:hi], np.arange(hi - lo)):
                self.problem(self.data_file_of(lo),
                             f"episode {ep}: frame_index is not 0..{hi - lo - 1}")
            data_file = (int(col["data/chunk_index"][ep]), int(col["data/file_index"][ep]))
            holding = {self.row_file[i] for i in np.unique(self.row_file_id[lo:hi])}
            if holding != {data_file}:
                self.problem(where, f"episode {ep} says its rows are in data file {data_file}, "
                                    f"they are in {sorted(holding)}")

    # --- meta/tasks.parquet ------------------------------------------------------------------
    def check_tasks(self) -> None:
        path = self.root / layout.TASKS_PATH
        tasks = pd.read_parquet(path)
        if tasks.index.name != "task" or "task_index" not in tasks.columns:
            self.problem(path, "needs the task strings as index 'task' and a task_index column")
            return
        if sorted(tasks["task_index"].tolist()) != list(range(len(tasks))):
            self.problem(path, "task_index is not 0..n-1")
        if len(tasks) != self.info["total_tasks"]:
            self.problem(layout.INFO_PATH, f"total_tasks is {self.info['total_tasks']}, "
                                           f"tasks.parquet has {len(tasks)}")
        if self.episodes is not None:
            known = set(tasks.index)
            unknown = {t for ts in self.episodes.column("tasks").to_pylist() for t in ts} - known
            if unknown:
                self.problem(self.episode_paths[0] if self.episode_paths else "meta/episodes",
                             f"tasks not in tasks.parquet: {sorted(unknown)}")

    # --- videos/ -----------------------------------------------------------------------------
    def check_videos(self) -> None:
        if self.episodes is None or not self.rows:
            return
        prefix = f"videos/{_VIDEO}/"
        ep = {name: self.episodes.column(prefix + name).to_numpy()
              for name in ("chunk_index", "file_index", "from_timestamp", "to_timestamp")}
        lengths = self.episodes.column("length").to_numpy()
        froms = self.episodes.column("dataset_from_index").to_numpy()
        height, width = self.info["features"][_VIDEO]["shape"][:2]
        files = sorted({(int(c), int(f)) for c, f in zip(ep["chunk_index"], ep["file_index"],
                                                          strict=True)})
        for chunk, file in files:
            rel = self.info["video_path"].format(video_key=_VIDEO, chunk_index=chunk,
                                                 file_index=file)
            path = self.root / rel
            if not path.is_file():
                self.problem(rel, "video file referenced by meta/episodes is missing")
                continue
            with self.guard(path):
                members = np.flatnonzero((ep["chunk_index"] == chunk) & (ep["file_index"] == file))
                self._check_video(path, members, ep, lengths, froms, (width, height))
        on_disk = {p.relative_to(self.root).as_posix()
                   for p in (self.root / "videos").glob("*/chunk-*/file-*.mp4")}
        referenced = {self.info["video_path"].format(video_key=_VIDEO, chunk_index=c,
                                                     file_index=f) for c, f in files}
        for extra in sorted(on_disk - referenced):
            self.problem(extra, "video file is not referenced by any episode")

    def _check_video(self, path: Path, members: np.ndarray, ep: dict[str, np.ndarray],
                     lengths: np.ndarray, froms: np.ndarray, size: tuple[int, int]) -> None:
        times, sizes = [], set()
        for t, w, h in iter_video_times(path):
            times.append(t)
            sizes.add((w, h))
        self.report.video_frames += len(times)
        decoded = np.sort(np.array(times, dtype=np.float64))
        if sizes - {size}:
            self.problem(path, f"frames are {sorted(sizes)}, info.json says {size[0]}x{size[1]}")
        off_grid = np.abs(decoded * self.fps - np.round(decoded * self.fps)) / self.fps > _TOL
        if off_grid.any():
            self.problem(path, f"{int(off_grid.sum())} frames are off the 1/{self.fps} s grid "
                               f"(first at {decoded[np.argmax(off_grid)]:.6f} s)")
        expected = int(lengths[members].sum())
        if len(decoded) != expected:
            self.problem(path, f"has {len(decoded)} frames, its episodes have {expected} rows")
        for e in members.tolist():
            span = ep["to_timestamp"][e] - ep["from_timestamp"][e]
            if abs(span - lengths[e] / self.fps) > _TOL:
                self.problem(self.episode_paths[e], f"episode {e}: to_timestamp - "
                                                    f"from_timestamp is {span:.6f} s for "
                                                    f"{lengths[e]} frames")
            lo = int(froms[e])
            query = ep["from_timestamp"][e] + self.rows["timestamp"][lo:lo + int(lengths[e])]
            if not len(decoded):
                continue
            nearest = np.searchsorted(decoded, query).clip(1, len(decoded) - 1)
            gap = np.minimum(np.abs(decoded[nearest] - query),
                             np.abs(decoded[nearest - 1] - query)) if len(decoded) > 1 \
                else np.abs(decoded[0] - query)
            missing = gap > _TOL
            if missing.any():
                bad = int(np.argmax(missing))
                self.problem(path, f"episode {e}: {int(missing.sum())} rows have no video frame "
                                   f"within {_TOL} s (first: frame_index {bad} at "
                                   f"{query[bad]:.6f} s)")

    # --- meta/events, stats, card --------------------------------------------------------------
    def check_events(self) -> None:
        lengths = (self.episodes.column("length").to_numpy() if self.episodes is not None
                   else np.empty(0, np.int64))
        files = _read_parquet_dir(self.root, layout.EVENTS_DIR)
        if not files:
            self.problem(layout.EVENTS_DIR, "is missing: the raw input events were deleted "
                                            "(LeRobot's dataset tools drop them); every export "
                                            "writes them, even when empty")
        for path, table, error in files:
            if table is None:
                self.problem(path, error)
                continue
            try:
                formats.validate_table(table, layout.events_schema(), path)
            except BadInputError as exc:
                self.problem(path, f"does not match {layout.EVENTS_SCHEMA}: {exc.problem}")
                continue
            self.report.events += table.num_rows
            episode = table.column("episode_index").to_numpy(zero_copy_only=False)
            frame = table.column("frame_index").to_numpy(zero_copy_only=False)
            e_null, f_null = np.isnan(episode), np.isnan(frame)
            if (e_null != f_null).any():
                self.problem(path, "episode_index and frame_index must be null together")
            placed = ~e_null & ~f_null
            ep, fr = episode[placed].astype(np.int64), frame[placed].astype(np.int64)
            bad_ep = (ep < 0) | (ep >= len(lengths))
            limit = lengths[np.where(bad_ep, 0, ep)] if len(lengths) else np.zeros_like(ep)
            bad_fr = ~bad_ep & ((fr < 0) | (fr >= limit))
            if bad_ep.any():
                self.problem(path, f"{int(bad_ep.sum())} events name an episode that does not "
                                   "exist")
            if bad_fr.any():
                self.problem(path, f"{int(bad_fr.sum())} events name a frame outside their "
                                   "episode")

    def check_stats(self) -> None:
        path = self.root / layout.STATS_PATH
        data = self.read_json(layout.STATS_PATH)
        if data is None:
            return
        if not stats.all_finite(data):
            self.problem(path, "holds non-finite numbers (NaN or infinity): "
                               f"{', '.join(_non_finite_keys(data)[:5])}")
        try:
            formats.validate_json(data, layout.STATS_SCHEMA, path)
        except BadInputError as exc:
            self.problem(path, exc.problem)
            return
        for name, spec in self.info["features"].items():
            entry = data.get(name)
            if not isinstance(entry, dict):
                self.problem(path, f"no statistics for feature {name!r}")
            elif spec["dtype"] == "video" and np.shape(entry["mean"]) != (3, 1, 1):
                self.problem(path, f"image stats of {name!r} are not shaped [3, 1, 1]")
        self._check_stats_match_episodes(path, data)

    def _check_stats_match_episodes(self, path: Path, data: dict[str, Any]) -> None:
        """stats.json is what LeRobot's aggregate_stats makes of the stats/* episode columns
        (delete_episodes and split rebuild it from them)."""
        if self.episodes is None:
            return
        names = set(self.episodes.column_names)
        per_episode: list[dict[str, stats.Stats]] = [{} for _ in range(self.episodes.num_rows)]
        for feature in self.info["features"]:
            for key in layout.stat_names():
                column = layout.stats_column(feature, key)
                if column not in names:
                    return  # reported by check_episodes
                for row, value in enumerate(self.episodes.column(column).to_pylist()):
                    per_episode[row].setdefault(feature, {})[key] = np.asarray(value)
        if not stats.all_finite([{f: {k: v.tolist() for k, v in s.items()} for f, s in e.items()}
                                 for e in per_episode]):
            self.problem(self.episode_paths[0] if self.episode_paths else "meta/episodes",
                         "stats/* columns hold non-finite numbers")
            return
        expected = stats.aggregate_all(per_episode)
        for feature, want in expected.items():
            have = data.get(feature)
            if not isinstance(have, dict):
                continue
            for key, value in want.items():
                got = np.asarray(have.get(key), dtype=np.float64)
                if got.shape != value.shape or not np.allclose(got, value, rtol=_STATS_RTOL,
                                                                atol=1e-9, equal_nan=False):
                    self.problem(path, f"{feature}/{key} differs from the aggregate of the "
                                       "per-episode stats columns in meta/episodes")
                    break

    # --- meta/consent.json -------------------------------------------------------------------
    def _read_declared(self, name: str, schema: str, missing: str) -> Any | None:
        """A meta JSON file read and validated against its schema; None (with the problem
        recorded) if it is missing, unreadable or does not match."""
        path = self.root / name
        if not path.is_file():
            self.problem(name, f"is missing: {missing}")
            return None
        document = self.read_json(name)
        if document is None:
            return None
        try:
            formats.validate_json(document, schema, path)
        except BadInputError as exc:
            self.problem(path, exc.problem)
            return None
        return document

    def check_consent(self) -> None:
        consent = self._read_declared(
            layout.CONSENT_PATH, layout.CONSENT_SCHEMA, "the episodes' consent cannot be "
            "cross-checked (tools that know only LeRobot's files drop it)")
        if consent is None:
            return
        path = self.root / layout.CONSENT_PATH
        entries = {e["episode_index"]: e for e in consent["episodes"]}
        if len(entries) != len(consent["episodes"]):
            self.problem(path, "lists an episode more than once")
        for session_id, session in consent["sessions"].items():
            for ep in session["episodes"]:
                entry = entries.get(ep)
                if entry is None or entry["session_id"] != session_id or any(
                        entry[k] != session[k] for k in session if k != "episodes"):
                    self.problem(path, f"sessions[{session_id!r}] disagrees with its episode "
                                       f"{ep} in episodes[]")
        listed = {ep for s in consent["sessions"].values() for ep in s["episodes"]}
        if listed != set(entries):
            self.problem(path, "episodes[] and sessions[] list different episodes")
        if self.episodes is None:
            return
        table = self.episodes
        n = table.num_rows
        missing = sorted(set(range(n)) - set(entries))
        extra = sorted(set(entries) - set(range(n)))
        if missing:
            self.problem(path, f"has no consent for episode(s) {_listing(missing)} of "
                               "meta/episodes: their receipts are lost")
        if extra:
            self.problem(path, f"lists episode(s) {_listing(extra)} that meta/episodes does not "
                               "have")
        columns = {k: table.column(k).to_pylist() for k in (*CONSENT_KEYS, "length",
                                                           "dataset_from_index")
                   if k in table.column_names}
        times = self.capture_times()
        for ep in range(n):
            entry = entries.get(ep)
            if entry is None:
                continue
            differ = [k for k in (*CONSENT_KEYS, "length")
                      if k in columns and columns[k][ep] != entry[k]]
            if times is not None and "length" in columns and "dataset_from_index" in columns:
                lo = int(columns["dataset_from_index"][ep])
                hi = lo + int(columns["length"][ep])
                if 0 <= lo < hi <= len(times) and (int(times[lo]), int(times[hi - 1])) != (
                        entry["first_capture_time_ns"], entry["last_capture_time_ns"]):
                    differ.append("capture times")
            if differ:
                self.problem(path, f"episode {ep}: {', '.join(differ)} disagree(s) with "
                                   f"{self.episode_paths[ep] if self.episode_paths else 'data'}")

    def capture_times(self) -> np.ndarray | None:
        """capture_time_ns of every data row, in file order (None if unreadable)."""
        parts = []
        for _, table, _ in _read_parquet_dir(self.root, "data"):
            if table is None or "capture_time_ns" not in table.column_names:
                return None
            parts.append(table.column("capture_time_ns").to_numpy())
        return np.concatenate(parts) if parts else None

    # --- meta/checksums.json -----------------------------------------------------------------
    def check_checksums(self) -> None:
        checksums = self._read_declared(layout.CHECKSUMS_PATH, layout.CHECKSUMS_SCHEMA,
                                        "file contents cannot be checked")
        if checksums is None:
            return
        listed: dict[str, str] = checksums["files"]
        actual = file_digests(self.root)
        for rel, digest in sorted(listed.items()):
            if rel not in actual:
                self.problem(rel, f"is missing (listed in {layout.CHECKSUMS_PATH})")
            elif actual[rel] != digest:
                self.problem(rel, f"SHA-256 differs from {layout.CHECKSUMS_PATH}: the file "
                                  "changed after export")
        for rel in sorted(actual.keys() - listed.keys()):
            self.problem(rel, f"is not listed in {layout.CHECKSUMS_PATH}: added after export")

    def read_json(self, rel: str) -> Any:
        """A JSON file of the dataset, or None after reporting why it cannot be read."""
        try:
            return _read_json(self.root / rel, rel)
        except BadInputError as exc:
            self.problem(rel, exc.problem)
        return None

    def check_card(self) -> None:
        if not (self.root / layout.CARD_PATH).is_file():
            self.problem(layout.CARD_PATH, "dataset card is missing")


@dataclass(frozen=True, slots=True)
class ConsentMatch:
    """One episode of a dataset traced to its consent in a manifest (meta/consent.json)."""

    episode_index: int         # in the dataset traced
    source_episode_index: int  # in the manifest's dataset
    session_id: str
    consent_receipt_id: str
    license: str
    player: str
    synthetic_consent: bool


def trace_consent(dataset: Path | str, manifest_path: Path | str) -> list[ConsentMatch]:
    """Match a dataset's episodes to a consent manifest by their frames' capture times.

    For a dataset edited by tools that dropped the consent columns and meta/consent.json (e.g.
    LeRobot's delete_episodes): give it the meta/consent.json of the export it came from.
    Raises BadInputError naming the episodes that match no entry of it.
    """
    root, manifest_path = Path(dataset), Path(manifest_path)
    consent = _read_json(manifest_path, manifest_path)
    formats.validate_json(consent, layout.CONSENT_SCHEMA, manifest_path)
    by_times = {(e["first_capture_time_ns"], e["last_capture_time_ns"], e["length"]): e
                for e in consent["episodes"]}
    files = _read_parquet_dir(root, "meta/episodes")
    bad = [path for path, table, _ in files if table is None]
    if not files or bad:
        raise BadInputError("episodes table is missing or unreadable", bad[0] if bad
                            else root / "meta/episodes")
    episodes = pa.concat_tables([t.select(["episode_index", "dataset_from_index", "length"])
                                 for _, t, _ in files if t is not None]).to_pylist()
    times = _Checker(root.resolve()).capture_times()
    if times is None:
        raise BadInputError("data files lack capture_time_ns; episodes cannot be traced",
                            root / "data")
    matches, unmatched = [], []
    for ep in episodes:
        lo, n = int(ep["dataset_from_index"]), int(ep["length"])
        entry = by_times.get((int(times[lo]), int(times[lo + n - 1]), n)) if n and \
            lo + n <= len(times) else None
        if entry is None:
            unmatched.append(int(ep["episode_index"]))
            continue
        matches.append(ConsentMatch(
            episode_index=int(ep["episode_index"]), source_episode_index=entry["episode_index"],
            **{k: entry[k] for k in ("session_id", "consent_receipt_id", "license", "player",
                                     "synthetic_consent")}))
    if unmatched:
        raise BadInputError(f"episode(s) {_listing(unmatched)} match no episode of the consent "
                            "manifest by capture times: their consent cannot be traced",
                            manifest_path)
    return matches


def _listing(items: list[int], limit: int = 10) -> str:
    shown = ", ".join(str(i) for i in items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def _non_finite_keys(obj: Any, prefix: str = "") -> list[str]:
    """Paths like 'action.mouse_delta/mean' of the entries holding non-finite numbers."""
    if isinstance(obj, dict):
        return [k for key, value in obj.items()
                for k in _non_finite_keys(value, f"{prefix}{key}/")]
    return [] if stats.all_finite(obj) else [prefix.rstrip("/")]


ConsentStatus = Callable[[str, str], str]  # (receipt id, game) -> active, revoked or unknown


def check_consent_status(report: VerifyReport, status: ConsentStatus) -> None:
    """Add a problem for every episode whose consent receipt `status` (a ledger's or a
    collector's) does not call active for the episode's game; unknown receipts fail closed."""
    root = report.path
    paths = sorted((root / "meta" / "episodes").glob("chunk-*/file-*.parquet"))
    if not paths:
        report.problems.append(Problem("meta/episodes", "no episodes to check consent of"))
        return
    columns = ("episode_index", "tasks", "consent_receipt_id")
    seen: dict[tuple[str, str], str] = {}
    for path in paths:
        table = pq.read_table(path)
        missing = [c for c in columns if c not in table.column_names]
        where = path.relative_to(root).as_posix()
        if missing:
            report.problems.append(Problem(where, f"episodes lack {', '.join(missing)}: their "
                                                  "consent cannot be checked"))
            continue
        for episode, tasks, receipt in zip(*(table.column(c).to_pylist() for c in columns),
                                           strict=True):
            for game in tasks or ["?"]:
                key = (str(receipt), str(game))
                if key not in seen:
                    seen[key] = status(*key)
                if seen[key] != "active":
                    why = "was withdrawn" if seen[key] == "revoked" else "is not known there"
                    report.problems.append(Problem(where, f"episode {episode}: consent receipt "
                                                          f"{receipt} for {game} {why}"))


def verify_dataset(path: Path | str, *, consent_status: ConsentStatus | None = None
                   ) -> VerifyReport:
    """Check a dataset at `path`; problems are collected in the report, never raised. With
    `consent_status`, every episode's consent must also be active there."""
    root = Path(path).resolve()
    checker = _Checker(root)
    if not root.is_dir():
        checker.problem(str(path), "is not a directory")
        return checker.report
    if not checker.check_info():
        return checker.report
    steps: list[tuple[str, Callable[[], None]]] = [
        ("data", checker.check_data), ("meta/episodes", checker.check_episodes),
        (layout.TASKS_PATH, checker.check_tasks), ("videos", checker.check_videos),
        ("meta/events", checker.check_events), (layout.STATS_PATH, checker.check_stats),
        (layout.CONSENT_PATH, checker.check_consent), (layout.CARD_PATH, checker.check_card),
        (layout.CHECKSUMS_PATH, checker.check_checksums),
    ]
    for where, step in steps:
        with checker.guard(where):
            step()
    if consent_status is not None:
        with checker.guard("meta/episodes"):
            check_consent_status(checker.report, consent_status)
    return checker.report
