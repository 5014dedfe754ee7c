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
from capture.export import layout
from capture.export.video import iter_video_times

_TOL = layout.TIMESTAMP_TOLERANCE_S
_VIDEO = layout.VIDEO_KEY


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
        for path, table, error in files:
            if table is None:
                self.problem(path, error)
                continue
            try:
                formats.validate_table(table, layout.episodes_schema(), path)
                tables.append(table.cast(layout.episodes_schema()))
                self.episode_paths += [path.relative_to(self.root).as_posix()] * table.num_rows
            except BadInputError as exc:
                self.problem(path, f"does not match {layout.EPISODES_SCHEMA}: {exc.problem}")
        if not tables:
            return
        episodes = self.episodes = pa.concat_tables(tables)
        e = episodes.num_rows
        self.report.episodes = e
        where = self.episode_paths[0]
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
        for name in ("player",):
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
                self.problem(self.episode_paths[0], f"tasks not in tasks.parquet: "
                                                    f"{sorted(unknown)}")

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
        for path, table, error in _read_parquet_dir(self.root, "meta/events"):
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
        stats = _read_json(path, layout.STATS_PATH)
        for name, spec in self.info["features"].items():
            entry = stats.get(name)
            if not isinstance(entry, dict) or not {"min", "max", "mean", "std", "count"} <= set(
                    entry):
                self.problem(path, f"no min/max/mean/std/count for feature {name!r}")
            elif spec["dtype"] == "video" and np.shape(entry["mean"]) != (3, 1, 1):
                self.problem(path, f"image stats of {name!r} are not shaped [3, 1, 1]")

    def check_card(self) -> None:
        if not (self.root / layout.CARD_PATH).is_file():
            self.problem(layout.CARD_PATH, "dataset card is missing")


def verify_dataset(path: Path | str) -> VerifyReport:
    """Check a dataset at `path`; problems are collected in the report, never raised."""
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
        (layout.CARD_PATH, checker.check_card),
    ]
    for where, step in steps:
        with checker.guard(where):
            step()
    return checker.report
