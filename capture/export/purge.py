"""Withdrawal for built datasets: remove episodes by receipt or player, re-index, swap in."""

from __future__ import annotations

import ctypes
import errno
import fcntl
import hashlib
import json
import os
import re
import secrets
import shutil
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal

import av
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from av.video.codeccontext import VideoCodecContext

from capture import __version__, formats
from capture.align import DEFAULT_MAX_EPISODE_S
from capture.clock import utc_iso
from capture.errors import BadInputError, CaptureError
from capture.export import layout
from capture.export.card import SessionSummary, render_card
from capture.export.quality import QUALITY_PATH, QUALITY_SCHEMA
from capture.export.video import ENCODER_THREADS, encode_segment

PURGE_LOG_PATH = "meta/purge-log.jsonl"
# Written by the export once LeRobot conformance lands (layout names them then).
CONSENT_PATH = getattr(layout, "CONSENT_PATH", "meta/consent.json")
CHECKSUMS_PATH = getattr(layout, "CHECKSUMS_PATH", "meta/checksums.json")
CONSENT_SCHEMA = "dataset-consent.v1.schema.json"
CHECKSUMS_SCHEMA = "dataset-checksums.v1.schema.json"
PURGE_LOG_SCHEMA = "dataset-purge-log.v1.schema.json"
Reason = Literal["receipt", "player", "collector"]
_VIDEO = layout.VIDEO_KEY
_V = f"videos/{_VIDEO}/"
_QUANTILE = re.compile(r"^q(\d\d)$")
_RENAME_EXCHANGE = 2  # renameat2(2) flag: swap two paths atomically
_AT_FDCWD = -100


# --- where revocations come from ------------------------------------------------------------
def revoked_receipts_since(source: Path | str, since_utc: str | None) -> list[str]:
    """Receipt ids revoked at or after `since_utc` (None: all), from a revocations file.

    The file is JSON: a list whose items are receipt ids, or objects
    {"receipt_id": ..., "revoked_utc": ...}. Plain ids carry no time and are always returned
    (purging a receipt no longer in the dataset changes nothing, so this fails closed).
    """
    # The collector itself is asked by `capture dataset purge --from-collector` (cli): it lists
    # pending purges by session (GET /v1/admin/purges) and plan_purge takes sessions.
    path = Path(source)
    try:
        items = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BadInputError("revocations file does not exist", path) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadInputError(f"revocations file is not valid JSON ({exc})", path) from None
    if not isinstance(items, list):
        raise BadInputError("revocations file must hold a JSON list", path)
    out: list[str] = []
    for i, item in enumerate(items):
        if isinstance(item, str):
            receipt, when = item, None
        elif isinstance(item, dict) and isinstance(item.get("receipt_id"), str):
            receipt, when = item["receipt_id"], item.get("revoked_utc")
        else:
            raise BadInputError(f"item {i} is neither a receipt id nor "
                                "{\"receipt_id\": ..., \"revoked_utc\": ...}", path)
        if when is not None and since_utc is not None and _utc_key(when) < _utc_key(since_utc):
            continue
        if receipt not in out:
            out.append(receipt)
    return out


def _utc_key(value: str) -> str:
    """ISO UTC strings compare as text once their fraction is padded the same way."""
    head, _, frac = value.rstrip("Z").partition(".")
    return f"{head}.{frac.ljust(9, '0')}"


def read_purge_log(dataset: Path | str) -> list[dict[str, Any]]:
    """Every entry of the dataset's purge log, oldest first ([] if it has none)."""
    path = Path(dataset) / PURGE_LOG_PATH
    if not path.is_file():
        return []
    entries = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as exc:
            raise BadInputError(f"line {n} is not valid JSON ({exc.msg})", path) from None
        formats.validate_json(entry, PURGE_LOG_SCHEMA, f"{path} line {n}")
        entries.append(entry)
    return entries


def last_collector_check_utc(dataset: Path | str) -> str | None:
    """When the last --from-collector purge read the revocation list (None: never)."""
    for entry in reversed(read_purge_log(dataset)):
        if entry["reason"] == "collector" and entry.get("collector_checked_utc"):
            return str(entry["collector_checked_utc"])
    return None


# --- the plan -------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class PurgePlan:
    """What a purge would remove; computed without changing anything."""

    dataset: Path
    reason: Reason
    remove: tuple[int, ...]          # old episode indices to remove
    receipt_ids: tuple[str, ...]     # receipts of those episodes
    sessions: tuple[str, ...]        # sessions of those episodes
    frames_removed: int
    episodes_before: int
    frames_before: int
    collector_since_utc: str | None = None
    collector_checked_utc: str | None = None

    @property
    def empty(self) -> bool:
        return not self.remove

    def describe(self) -> str:
        if self.empty:
            return f"{self.dataset}: nothing to purge (no episode matches)"
        return (f"{self.dataset}: remove {len(self.remove)} of {self.episodes_before} episodes "
                f"({self.frames_removed} of {self.frames_before} frames) from "
                f"{len(self.sessions)} session(s) under {len(self.receipt_ids)} consent "
                f"receipt(s): {', '.join(self.receipt_ids)}")


@dataclass(frozen=True, slots=True)
class PurgeResult:
    """What a purge did (the entry it appended to meta/purge-log.jsonl)."""

    dataset: Path
    log_entry: dict[str, Any] | None
    leftovers_removed: tuple[Path, ...] = ()

    def summary(self) -> str:
        if self.log_entry is None:
            return f"{self.dataset}: nothing purged"
        e = self.log_entry
        return (f"{self.dataset}: purged {e['episodes_removed']} episodes, "
                f"{e['frames_removed']} frames, {e['events_removed']} events of "
                f"{e['sessions_removed']} session(s); {e['episodes_after']} episodes, "
                f"{e['frames_after']} frames remain; {e['video_files_rewritten']} video file(s) "
                f"rewritten ({e['video_frames_copied']} frames copied, "
                f"{e['video_frames_reencoded']} encoded again)")


def _read_episodes(root: Path) -> pa.Table:
    paths = sorted(root.glob("meta/episodes/chunk-*/file-*.parquet"))
    if not paths:
        raise BadInputError("has no meta/episodes files: not a dataset capture wrote", root)
    try:
        return pa.concat_tables([pq.read_table(p) for p in paths], promote_options="default")
    except (pa.ArrowInvalid, OSError) as exc:
        raise BadInputError(f"episodes cannot be read ({exc})", root / "meta/episodes") from None


def _read_info(root: Path) -> dict[str, Any]:
    path = root / layout.INFO_PATH
    try:
        info: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BadInputError("is missing: not a LeRobot dataset", path) from None
    except json.JSONDecodeError as exc:
        raise BadInputError(f"is not valid JSON ({exc.msg})", path) from None
    return info


def plan_purge(dataset: Path | str, *, receipts: Sequence[str] = (), players: Sequence[str] = (),
               sessions: Sequence[str] = (), reason: Reason,
               collector_since_utc: str | None = None,
               collector_checked_utc: str | None = None) -> PurgePlan:
    """Which episodes carry one of `receipts`, one of the pseudonyms `players`, or come from
    one of `sessions` (the collector lists pending purges by session)."""
    root = Path(dataset)
    if not root.is_dir():
        raise CaptureError("dataset directory does not exist", root)
    info = _read_info(root)
    episodes = _read_episodes(root)
    receipt_col = episodes.column("consent_receipt_id").to_pylist()
    player_col = episodes.column("player").to_pylist()
    session_col = episodes.column("session_id").to_pylist()
    wanted_r, wanted_p, wanted_s = set(receipts), set(players), set(sessions)
    remove = [i for i, (r, p, s) in enumerate(zip(receipt_col, player_col, session_col,
                                                  strict=True))
              if r in wanted_r or p in wanted_p or s in wanted_s]
    lengths = episodes.column("length").to_pylist()
    return PurgePlan(
        dataset=root, reason=reason, remove=tuple(remove),
        receipt_ids=tuple(dict.fromkeys(receipt_col[i] for i in remove)),
        sessions=tuple(dict.fromkeys(session_col[i] for i in remove)),
        frames_removed=sum(lengths[i] for i in remove), episodes_before=episodes.num_rows,
        frames_before=int(info["total_frames"]), collector_since_utc=collector_since_utc,
        collector_checked_utc=collector_checked_utc)


# --- crash-consistent file operations -------------------------------------------------------
def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _exchange(a: Path, b: Path) -> None:
    """Swap two directories in one step (renameat2 RENAME_EXCHANGE): never neither, never both."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b),
                      _RENAME_EXCHANGE) != 0:
        err = ctypes.get_errno()
        raise CaptureError(f"cannot swap the purged dataset into place "
                           f"({errno.errorcode.get(err, err)}: {os.strerror(err)}); "
                           "the dataset was not changed", b)


def _leftover_glob(dataset: Path) -> str:
    return f".{dataset.name}.purge-*"


def cleanup_leftovers(dataset: Path | str) -> tuple[Path, ...]:
    """Remove what an interrupted purge left next to `dataset` (never the dataset itself)."""
    root = Path(dataset)
    removed = []
    for leftover in sorted(root.parent.glob(_leftover_glob(root))):
        if leftover.is_dir() and not leftover.is_symlink():
            shutil.rmtree(leftover)
            removed.append(leftover)
    return tuple(removed)


@contextmanager
def _purge_lock(dataset: Path) -> Iterator[None]:
    lock = dataset.parent / f".{dataset.name}.purge.lock"
    with open(lock, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise CaptureError("another purge of this dataset is running", dataset) from None
        yield


# --- statistics ----------------------------------------------------------------------------
def _stat_entry(values: np.ndarray, keys: list[str]) -> dict[str, list[Any]]:
    n = len(values)
    v = values.reshape(n, -1).astype(np.float64) if n else np.zeros((0, 1))
    width = v.shape[1]
    out: dict[str, list[Any]] = {}
    for key in keys:
        if key == "count":
            out[key] = [n]
        elif not n:
            out[key] = [0.0] * width
        elif key in ("min", "max", "mean", "std"):
            out[key] = getattr(v, key)(axis=0).tolist()
        elif m := _QUANTILE.match(key):
            out[key] = np.quantile(v, int(m.group(1)) / 100, axis=0).tolist()
    return out


def _numeric_stats(data: pa.Table, old: dict[str, Any]) -> dict[str, Any]:
    stats = {}
    for name, entry in old.items():
        if name == _VIDEO or name not in data.column_names:
            continue
        column = data.column(name)
        if pa.types.is_fixed_size_list(column.type):
            flat = column.combine_chunks().flatten().to_numpy(zero_copy_only=False)
            values = flat.reshape(len(column), column.type.list_size)
        else:
            values = column.to_numpy()
        stats[name] = _stat_entry(values, list(entry))
    return stats


def _image_sample_rows(total_frames: int) -> set[int]:
    """The rows the export samples for image stats: n**0.75 clipped to [min(n, 100), 10000],
    spread evenly over the dataset."""
    if total_frames == 0:
        return set()
    count = max(min(total_frames, 100), min(int(total_frames ** 0.75), 10_000))
    return set(np.round(np.linspace(0, total_frames - 1, count)).astype(int).tolist())


def _image_stats(videos: list[Path], total_frames: int, keys: list[str]) -> dict[str, list[Any]]:
    """Per-channel stats in [0, 1] of the sampled frames, shaped [3, 1, 1] like LeRobot's;
    count is the number of frames sampled."""
    samples = _image_sample_rows(total_frames)
    pixels: list[np.ndarray] = []
    row = 0
    for path in videos:
        with av.open(str(path)) as container:
            for frame in container.decode(video=0):
                if row in samples:
                    pixels.append(_downsampled(frame))
                row += 1
    values = np.concatenate(pixels) if pixels else np.zeros((0, 3))
    out: dict[str, list[Any]] = {}
    for key in keys:
        if key == "count":
            out[key] = [len(pixels)]
            continue
        if not len(values):
            column = np.zeros(3)
        elif key in ("min", "max", "mean", "std"):
            column = getattr(values, key)(axis=0)
        elif m := _QUANTILE.match(key):
            column = np.quantile(values, int(m.group(1)) / 100, axis=0)
        else:
            continue
        out[key] = [[[float(c)]] for c in column]
    return out


def _downsampled(frame: av.VideoFrame) -> np.ndarray:
    rgb = frame.to_ndarray(format="rgb24")
    height, width = rgb.shape[:2]
    if max(width, height) >= 300:
        step = max(1, int(width / 150) if width > height else int(height / 150))
        rgb = rgb[::step, ::step]
    return rgb.reshape(-1, 3).astype(np.float64) / 255.0


# --- building the purged dataset -----------------------------------------------------------
@dataclass(slots=True)
class _Build:
    """The new dataset being written into `tmp`, file by file (each fsynced)."""

    src: Path
    tmp: Path
    info: dict[str, Any]
    written: list[Path] = field(default_factory=list)

    def path(self, rel: str) -> Path:
        p = self.tmp / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    def done(self, path: Path) -> None:
        _fsync_path(path)
        self.written.append(path)

    def write_table(self, rel: str, table: pa.Table) -> None:
        path = self.path(rel)
        pq.write_table(table, path)
        self.done(path)

    def write_text(self, rel: str, text: str) -> None:
        path = self.path(rel)
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        self.done(path)

    def link(self, rel_src: str, rel_dst: str) -> None:
        """An unchanged file: hard-linked (the old dataset's copy is never written again)."""
        dst = self.path(rel_dst)
        try:
            os.link(self.src / rel_src, dst)
        except OSError:
            shutil.copy2(self.src / rel_src, dst)
        self.done(dst)


def _file_sequence(n: int, chunks_size: int) -> list[tuple[int, int]]:
    out, cur = [], (0, 0)
    for _ in range(n):
        out.append(cur)
        cur = layout.next_file(*cur, chunks_size)
    return out


def _video_rel(info: dict[str, Any], chunk: int, file: int) -> str:
    return str(info["video_path"]).format(video_key=_VIDEO, chunk_index=chunk, file_index=file)


def _data_rel(info: dict[str, Any], chunk: int, file: int) -> str:
    return str(info["data_path"]).format(chunk_index=chunk, file_index=file)


def _reencode(src: Path, dst: Path, keep: list[tuple[int, int]], fps: int, width: int,
              height: int) -> int:
    """Write the frames of `src` whose positions fall in the `keep` [lo, hi) ranges to `dst`
    with the export's encoder (encode_segment); returns frames written."""
    wanted = np.zeros(max(hi for _, hi in keep), dtype=bool)
    for lo, hi in keep:
        wanted[lo:hi] = True
    count = int(wanted.sum())

    def kept() -> Iterator[av.VideoFrame]:
        with av.open(str(src)) as container:
            stream = container.streams.video[0]
            for frame in container.decode(stream):
                if frame.pts is None or frame.time_base is None:
                    raise BadInputError("a video frame has no timestamp", src)
                position = round(float(frame.pts * frame.time_base) * fps)
                if position < len(wanted) and wanted[position]:
                    yield frame

    try:
        segment = encode_segment(dst, kept(), count, fps=fps, width=width, height=height,
                                 encoding=layout.default_encoding(fps))
    except RuntimeError:
        raise BadInputError(f"video lacks some of the {count} frames its kept episodes need",
                            src) from None
    return segment.frames


# --- cutting episodes out of a video file without re-encoding what is kept --------------------
@dataclass(frozen=True, slots=True)
class SpliceStats:
    """How a video file was cut: frames whose packets were copied, frames re-encoded."""

    copied: int
    reencoded: int


class _CannotSplice(Exception):
    """The file's packets cannot be spliced safely; the caller re-encodes the whole file."""


def _frame_of(packet: av.Packet[Any], fps: int) -> int:
    assert packet.pts is not None and packet.time_base is not None
    return round(float(packet.pts * packet.time_base) * fps)


def _annexb_nals(data: bytes) -> list[bytes]:
    """NAL units of an Annex B byte stream (start-code separated)."""
    parts = (part.rstrip(b"\x00") for part in data.split(b"\x00\x00\x01"))
    return [part for part in parts if part]


def _avcc_parameter_sets(extradata: bytes) -> tuple[int, list[bytes]]:
    """(NAL length size, SPS and PPS units) of an mp4 avcC record."""
    if len(extradata) < 7 or extradata[0] != 1:
        raise _CannotSplice("the file's codec headers are not an avcC record")
    size = (extradata[4] & 3) + 1
    units: list[bytes] = []
    at, count = 6, extradata[5] & 0x1F     # the SPS count, then the SPS units
    for _ in range(2):                     # SPS, then PPS (preceded by their count)
        for _ in range(count):
            n = int.from_bytes(extradata[at:at + 2], "big")
            units.append(extradata[at + 2:at + 2 + n])
            at += 2 + n
        count, at = extradata[at], at + 1
    return size, units


def _to_length_prefixed(data: bytes, size: int) -> bytes:
    return b"".join(len(n).to_bytes(size, "big") + n for n in _annexb_nals(data))


def _piece_encoder(fps: int, width: int, height: int,
                   like: av.VideoFrame | None) -> VideoCodecContext:
    """A libx264 encoder with the export's settings (and the colour description of `like`,
    as the export sets it) and out-of-band headers (as in mp4)."""
    encoding = layout.default_encoding(fps)
    codec = av.CodecContext.create(encoding.encoder, "w")
    assert isinstance(codec, VideoCodecContext)
    codec.width, codec.height, codec.pix_fmt = width, height, layout.VIDEO_PIX_FMT
    codec.time_base = Fraction(1, fps)
    codec.framerate = Fraction(fps, 1)
    codec.gop_size = encoding.gop
    if like is not None:
        codec.color_range = like.color_range
        codec.colorspace = like.colorspace
    codec.flags |= av.codec.context.Flags.global_header
    codec.options = dict(encoding.codec_options(ENCODER_THREADS))
    codec.thread_count = ENCODER_THREADS
    codec.thread_type = "NONE"
    codec.open()
    return codec


def _rewrapped(packet: av.Packet[Any], position: int, nal_size: int) -> tuple[int, av.Packet[Any]]:
    """An encoder's Annex B packet as an mp4 (length-prefixed) one, at output frame
    position + its pts."""
    assert packet.pts is not None
    out = av.Packet(_to_length_prefixed(bytes(packet), nal_size))
    out.is_keyframe = packet.is_keyframe
    return position + int(packet.pts), out


@dataclass(slots=True)
class _SpliceState:
    """Where the spliced output stands."""

    position: int = 0           # next output frame
    index: int = 0              # next packet in decode order
    copied: int = 0
    reencoded: int = 0
    delay: int | None = None    # frames decode time runs ahead of display (from the source)


def _splice(src: Path, dst: Path, keep: list[tuple[int, int]], fps: int, width: int,
            height: int) -> SpliceStats:
    """Write the frames of `src` in the `keep` [lo, hi) ranges to `dst`: the packets of every
    GOP wholly kept are copied; only GOPs that a cut falls inside are decoded and their kept
    frames encoded again (each piece starts with its own keyframe). One GOP is in memory at a
    time. Raises _CannotSplice if the stream does not allow it (open GOPs, different encoder
    headers, timestamps); the caller then re-encodes the whole file."""
    limit = max(hi for _, hi in keep)
    wanted = np.zeros(limit, dtype=bool)
    for lo, hi in keep:
        wanted[lo:hi] = True
    with av.open(str(src)) as container, av.open(str(dst), "w", format="mp4") as output:
        stream = container.streams.video[0]
        extradata = bytes(stream.codec_context.extradata or b"")
        nal_size, parameter_sets = _avcc_parameter_sets(extradata)
        first = next(iter(container.decode(stream)), None)
        container.seek(0, stream=stream, backward=True)
        probe = _piece_encoder(fps, width, height, first)
        if _annexb_nals(bytes(probe.extradata or b"")) != parameter_sets:
            raise _CannotSplice("a new encoder's SPS/PPS differ from the file's")
        out_stream = output.add_stream_from_template(stream)
        state = _SpliceState()

        def mux(frame_no: int, packet: av.Packet[Any]) -> None:
            assert state.delay is not None
            dts = state.index - state.delay
            if dts > frame_no:
                raise _CannotSplice("decode order runs ahead of display order")
            packet.stream = out_stream
            packet.time_base = Fraction(1, fps)
            packet.pts, packet.dts, packet.duration = frame_no, dts, 1
            output.mux(packet)
            state.index += 1

        def finish_gop(gop: list[av.Packet[Any]], hi: int) -> None:
            """Copy, re-encode in part, or skip one closed GOP showing frames [lo, hi)."""
            lo = _frame_of(gop[0], fps)
            if sorted(_frame_of(p, fps) for p in gop) != list(range(lo, hi)):
                raise _CannotSplice("open GOPs: frames reference across keyframes")
            mask = np.zeros(hi - lo, dtype=bool)
            inside = wanted[lo:hi]
            mask[:len(inside)] = inside
            position = state.position
            if not mask.any():
                return
            if mask.all():
                for packet in gop:
                    mux(_frame_of(packet, fps) + position - lo, packet)
                state.position += hi - lo
                state.copied += hi - lo
                return
            decoder = av.CodecContext.create(stream.codec_context.name, "r")
            assert isinstance(decoder, VideoCodecContext)
            decoder.extradata = extradata
            decoded = [frame for packet in [*gop, None] for frame in decoder.decode(packet)]
            if len(decoded) != hi - lo:
                raise _CannotSplice(f"GOP at frame {lo} decodes to {len(decoded)} frames, "
                                    f"not {hi - lo}")
            kept = np.flatnonzero(mask)  # closed GOP: decoded in display order
            for run in np.split(kept, np.flatnonzero(np.diff(kept) > 1) + 1):
                encoder = _piece_encoder(fps, width, height, decoded[0])
                pieces: list[tuple[int, av.Packet[Any]]] = []
                for k, offset in enumerate(run.tolist()):
                    picture = decoded[offset].reformat(format=layout.VIDEO_PIX_FMT)
                    picture.pts, picture.time_base = k, Fraction(1, fps)
                    picture.pict_type = av.video.frame.PictureType.NONE
                    pieces += [_rewrapped(p, state.position, nal_size)
                               for p in encoder.encode(picture)]
                pieces += [_rewrapped(p, state.position, nal_size)
                           for p in encoder.encode(None)]
                for frame_no, packet in pieces:
                    mux(frame_no, packet)
                state.position += len(run)
                state.reencoded += len(run)

        gop: list[av.Packet[Any]] = []
        for packet in container.demux(stream):
            if packet.size == 0 or packet.pts is None:
                continue
            if state.delay is None:
                if not packet.is_keyframe or packet.dts is None or packet.time_base is None:
                    raise _CannotSplice("the file does not start with a keyframe")
                state.delay = -round(float(packet.dts * packet.time_base) * fps)
            if packet.is_keyframe and gop:
                finish_gop(gop, _frame_of(packet, fps))
                gop = []
            gop.append(packet)
        if gop:
            finish_gop(gop, max(_frame_of(p, fps) for p in gop) + 1)
        if state.position != int(wanted.sum()):
            raise _CannotSplice(f"the file holds {state.position} of the "
                                f"{int(wanted.sum())} frames the kept episodes need")
    return SpliceStats(copied=state.copied, reencoded=state.reencoded)


def _stream_codec(path: Path) -> str:
    try:
        with av.open(str(path)) as container:
            return str(container.streams.video[0].codec_context.name)
    except (av.error.FFmpegError, IndexError) as exc:
        raise BadInputError(f"video cannot be opened ({exc})", path) from None


def _packet_frames(path: Path, fps: int) -> list[int]:
    with av.open(str(path)) as container:
        return sorted(_frame_of(p, fps) for p in container.demux(video=0)
                      if p.size and p.pts is not None)


def _cut_video(src: Path, dst: Path, keep: list[tuple[int, int]], fps: int, width: int,
               height: int) -> SpliceStats:
    """Cut the removed frames out of a video file: spliced (packets copied, only the GOPs a
    cut falls inside re-encoded) where the stream allows, else the whole file re-encoded."""
    expected = sum(hi - lo for lo, hi in keep)
    codec = _stream_codec(src)
    if codec != layout.VIDEO_CODEC_NAME:
        raise CaptureError(f"cutting {codec} video is not supported (only "
                           f"{layout.VIDEO_CODEC_NAME}); the dataset was not changed", src)
    try:
        cut = _splice(src, dst, keep, fps, width, height)
        if _packet_frames(dst, fps) == list(range(expected)):
            return cut
    except (_CannotSplice, av.error.FFmpegError, ValueError):
        pass  # not spliceable: the whole file is encoded again below
    dst.unlink(missing_ok=True)
    return SpliceStats(copied=0, reencoded=_reencode(src, dst, keep, fps, width, height))


def _max_episode_s_of(card: str) -> float:
    m = re.search(r"episodes of at most ([0-9.]+) s", card)
    return float(m.group(1)) if m else DEFAULT_MAX_EPISODE_S


def _card(root_name: str, info: dict[str, Any], episodes: pa.Table, old_card: str, *,
          quality: dict[str, Any] | None, purges: list[dict[str, Any]],
          location: str | None = None) -> str:
    """The card re-rendered for the kept episodes, by the export's own renderer."""
    frame = episodes.select(["session_id", "tasks", "license", "synthetic_consent",
                             "length"]).to_pandas()
    summaries = []
    for session_id, rows in frame.groupby("session_id", sort=False):
        summaries.append(SessionSummary(
            session_id=str(session_id), game=str(next(iter(rows["tasks"].iloc[0]))),
            license=str(rows["license"].iloc[0]),
            synthetic_consent=bool(rows["synthetic_consent"].iloc[0]),
            episodes=len(rows), frames=int(rows["length"].sum())))
    height, width = info["features"][_VIDEO]["shape"][:2]
    return render_card(name=root_name, fps=int(info["fps"]), width=width, height=height,
                       max_episode_s=_max_episode_s_of(old_card), sessions=summaries,
                       quality=quality, purges=purges, location=location)


def _set(table: pa.Table, name: str, values: Any) -> pa.Table:
    i = table.schema.get_field_index(name)
    return table.set_column(i, table.schema.field(i), pa.array(values, table.schema.field(i).type))


def _build(plan: PurgePlan, tmp: Path,
           progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Write the purged dataset into `tmp`; returns the purge-log entry."""
    src = plan.dataset
    info = _read_info(src)
    fps = int(info["fps"])
    height, width = info["features"][_VIDEO]["shape"][:2]
    chunks_size = int(info["chunks_size"])
    build = _Build(src=src, tmp=tmp, info=info)
    old_eps = _read_episodes(src)
    removed = set(plan.remove)
    keep_old = [i for i in range(old_eps.num_rows) if i not in removed]
    new_of_old = {old: new for new, old in enumerate(keep_old)}
    eps = old_eps.take(pa.array(keep_old, pa.int64()))
    lengths = np.asarray(eps.column("length").to_pylist(), dtype=np.int64)
    new_to = np.cumsum(lengths)
    new_from = new_to - lengths

    # data: file by file, every file rewritten (global index shifts), empty files dropped,
    # the rest renumbered in order
    new_index_of = np.full(old_eps.num_rows, -1, dtype=np.int64)
    new_index_of[keep_old] = np.arange(len(keep_old))
    data_key_of_episode: dict[int, tuple[int, int]] = {}
    old_data_keys = list(zip(old_eps.column("data/chunk_index").to_pylist(),
                             old_eps.column("data/file_index").to_pylist(), strict=True))
    ordered_keys = list(dict.fromkeys(old_data_keys))
    data_paths: list[str] = []
    total_rows = 0
    target = (0, 0)
    for key in ordered_keys:
        table = pq.read_table(src / _data_rel(info, *key))
        old_ep = table.column("episode_index").to_numpy()
        mask = new_index_of[old_ep] >= 0
        table = table.filter(pa.array(mask))
        if table.num_rows == 0:
            continue
        new_ep = new_index_of[old_ep[mask]]
        for old in np.unique(old_ep[mask]).tolist():
            data_key_of_episode[int(old)] = target
        table = _set(table, "episode_index", new_ep)
        table = _set(table, "index", new_from[new_ep] + table.column("frame_index").to_numpy())
        data_paths.append(_data_rel(info, *target))
        build.write_table(data_paths[-1], table)
        total_rows += table.num_rows
        target = layout.next_file(*target, chunks_size)
    if not data_paths:  # every episode withdrawn: an empty table keeps the layout readable
        empty = pq.read_table(src / _data_rel(info, *ordered_keys[0])).slice(0, 0)
        data_paths.append(_data_rel(info, 0, 0))
        build.write_table(data_paths[-1], empty)

    # videos: unchanged files linked, files with removed episodes re-encoded, empty files gone
    old_vkeys = list(zip(old_eps.column(_V + "chunk_index").to_pylist(),
                         old_eps.column(_V + "file_index").to_pylist(), strict=True))
    old_from = old_eps.column(_V + "from_timestamp").to_pylist()
    old_len = old_eps.column("length").to_pylist()
    vkeys = list(dict.fromkeys(old_vkeys))
    surviving = [k for k in vkeys if any(old_vkeys[i] == k for i in keep_old)]
    video_seq = dict(zip(surviving, _file_sequence(len(surviving), chunks_size), strict=True))
    new_vfrom: dict[int, float] = {}
    rewritten = copied_frames = reencoded_frames = 0
    new_video_paths: list[Path] = []
    for key in surviving:
        members = [i for i, k in enumerate(old_vkeys) if k == key]
        kept = [i for i in members if i not in removed]
        rel_old, rel_new = _video_rel(info, *key), _video_rel(info, *video_seq[key])
        if kept == members:
            build.link(rel_old, rel_new)
            for i in kept:
                new_vfrom[i] = old_from[i]
        else:
            ranges = []
            position = 0
            for i in kept:
                lo = round(old_from[i] * fps)
                ranges.append((lo, lo + old_len[i]))
                new_vfrom[i] = position / fps
                position += old_len[i]
            dst = build.path(rel_new)
            if progress:
                progress(f"cutting {rel_old} ({sum(old_len[i] for i in kept)} frames kept)")
            cut = _cut_video(src / rel_old, dst, ranges, fps, width, height)
            build.done(dst)
            rewritten += 1
            copied_frames += cut.copied
            reencoded_frames += cut.reencoded
        new_video_paths.append(tmp / rel_new)

    # episodes
    vfrom = np.array([new_vfrom[i] for i in keep_old], dtype=np.float64)
    dkeys = [data_key_of_episode[i] for i in keep_old]
    vkeys_new = [video_seq[old_vkeys[i]] for i in keep_old]
    eps = _set(eps, "episode_index", np.arange(len(keep_old), dtype=np.int64))
    eps = _set(eps, "dataset_from_index", new_from)
    eps = _set(eps, "dataset_to_index", new_to)
    eps = _set(eps, "data/chunk_index", [c for c, _ in dkeys])
    eps = _set(eps, "data/file_index", [f for _, f in dkeys])
    eps = _set(eps, _V + "chunk_index", [c for c, _ in vkeys_new])
    eps = _set(eps, _V + "file_index", [f for _, f in vkeys_new])
    eps = _set(eps, _V + "from_timestamp", vfrom)
    eps = _set(eps, _V + "to_timestamp", vfrom + lengths / fps)
    eps = _set(eps, "meta/episodes/chunk_index", [0] * len(keep_old))
    eps = _set(eps, "meta/episodes/file_index", [0] * len(keep_old))
    eps = _reindexed_episode_stats(eps, new_from, lengths)
    build.write_table(layout.EPISODES_PATH.format(chunk_index=0, file_index=0), eps)

    # events: the purged sessions' events go (paused ones too), the rest are re-pointed
    events_removed = 0
    purged_sessions = set(plan.sessions)
    for path in sorted(src.glob("meta/events/chunk-*/file-*.parquet")):
        events = pq.read_table(path)
        mask = ~np.isin(np.asarray(events.column("session_id").to_pylist(), dtype=object),
                        list(purged_sessions))
        kept_events = events.filter(pa.array(mask))
        events_removed += events.num_rows - kept_events.num_rows
        old_ep = kept_events.column("episode_index").to_pylist()
        kept_events = _set(kept_events, "episode_index",
                           [None if e is None else new_of_old[e] for e in old_ep])
        build.write_table(path.relative_to(src).as_posix(), kept_events)

    # tasks unchanged (task_index stays valid); other meta files copied as they are
    handled = {layout.INFO_PATH, layout.STATS_PATH, layout.CARD_PATH, PURGE_LOG_PATH,
               CONSENT_PATH, CHECKSUMS_PATH, QUALITY_PATH}
    for path in sorted(src.rglob("*")):
        rel = path.relative_to(src).as_posix()
        if (path.is_file() and rel not in handled
                and not rel.startswith(("data/", "videos/", "meta/episodes/", "meta/events/"))):
            build.link(rel, rel)

    # stats, info, card
    old_stats = json.loads((src / layout.STATS_PATH).read_text(encoding="utf-8"))
    stats = _stats_from_episode_columns(eps, old_stats)
    if stats is None:  # no per-episode stats columns: computed from the kept data and video
        data = pa.concat_tables([pq.read_table(tmp / rel) for rel in data_paths])
        stats = _numeric_stats(data, old_stats)
        del data
        if _VIDEO in old_stats:
            stats[_VIDEO] = _image_stats(new_video_paths, total_rows, list(old_stats[_VIDEO]))
    stats = {name: stats.get(name, entry) for name, entry in old_stats.items()}
    build.write_text(layout.STATS_PATH, json.dumps(stats, indent=4) + "\n")
    new_info = dict(info, total_episodes=len(keep_old), total_frames=total_rows,
                    splits={"train": f"0:{len(keep_old)}"})
    formats.validate_json(new_info, layout.INFO_SCHEMA, layout.INFO_PATH)
    build.write_text(layout.INFO_PATH, json.dumps(new_info, indent=4) + "\n")
    old_card_path = src / layout.CARD_PATH
    old_card = old_card_path.read_text(encoding="utf-8") if old_card_path.is_file() else ""
    quality_record: dict[str, Any] | None = None
    if (src / QUALITY_PATH).is_file():  # the export's filter record: flagged spans re-pointed
        record = json.loads((src / QUALITY_PATH).read_text(encoding="utf-8"))
        record["idle_flagged"] = [dict(span, episode_index=new_of_old[span["episode_index"]])
                                  for span in record["idle_flagged"]
                                  if span["episode_index"] in new_of_old]
        record["sessions"] = [s for s in record["sessions"]
                              if s["session_id"] not in purged_sessions]
        formats.validate_json(record, QUALITY_SCHEMA, QUALITY_PATH)
        build.write_text(QUALITY_PATH, json.dumps(record, indent=2) + "\n")
        quality_record = record
    if (src / CONSENT_PATH).is_file():
        consent = _purged_consent(json.loads((src / CONSENT_PATH).read_text(encoding="utf-8")),
                                  new_of_old)
        _validate_if_declared(consent, CONSENT_SCHEMA, CONSENT_PATH)
        build.write_text(CONSENT_PATH, json.dumps(consent, indent=2) + "\n")

    entry: dict[str, Any] = {
        "version": 1, "utc": utc_iso(), "reason": plan.reason,
        "collector_since_utc": plan.collector_since_utc,
        "collector_checked_utc": plan.collector_checked_utc,
        "episodes_removed": len(plan.remove), "frames_removed": plan.frames_removed,
        "events_removed": events_removed, "sessions_removed": len(plan.sessions),
        "receipt_ids": list(plan.receipt_ids), "episodes_before": plan.episodes_before,
        "episodes_after": len(keep_old), "frames_before": plan.frames_before,
        "frames_after": total_rows, "video_files_rewritten": rewritten,
        "video_frames_copied": copied_frames, "video_frames_reencoded": reencoded_frames,
        "capture_version": __version__,
    }
    formats.validate_json(entry, PURGE_LOG_SCHEMA, PURGE_LOG_PATH)
    old_log = src / PURGE_LOG_PATH
    previous = old_log.read_text(encoding="utf-8") if old_log.is_file() else ""
    build.write_text(PURGE_LOG_PATH, previous + json.dumps(entry, sort_keys=True) + "\n")
    build.write_text(layout.CARD_PATH, _card(src.name, new_info, eps, old_card,
                                             location=str(src.resolve()),
                                             quality=quality_record,
                                             purges=[*read_purge_log(src), entry]))
    if (src / CHECKSUMS_PATH).is_file():  # last: it covers every other file, the log too
        old_sums = json.loads((src / CHECKSUMS_PATH).read_text(encoding="utf-8"))
        sums = dict(old_sums, files=_digests(tmp, skip=CHECKSUMS_PATH))
        _validate_if_declared(sums, CHECKSUMS_SCHEMA, CHECKSUMS_PATH)
        build.write_text(CHECKSUMS_PATH, json.dumps(sums, indent=2, sort_keys=True) + "\n")
    for d in sorted({p.parent for p in build.written} | {tmp}, key=lambda p: -len(p.parts)):
        _fsync_path(d)
    return entry


def _validate_if_declared(obj: Any, schema: str, where: str) -> None:
    if (formats.schemas_dir() / schema).is_file():
        formats.validate_json(obj, schema, where)


def _digests(root: Path, *, skip: str) -> dict[str, str]:
    """SHA-256 of every file under root but `skip`, by path relative to root."""
    out = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_file() and rel != skip:
            digest = hashlib.sha256()
            with open(path, "rb") as f:
                while block := f.read(1 << 20):
                    digest.update(block)
            out[rel] = digest.hexdigest()
    return out


def _purged_consent(old: dict[str, Any], new_of_old: dict[int, int]) -> dict[str, Any]:
    """meta/consent.json without the purged episodes and sessions, episodes renumbered."""
    episodes = [dict(e, episode_index=new_of_old[e["episode_index"]])
                for e in old.get("episodes", []) if e["episode_index"] in new_of_old]
    sessions = {}
    for session_id, entry in old.get("sessions", {}).items():
        kept = [new_of_old[i] for i in entry.get("episodes", []) if i in new_of_old]
        if kept:
            sessions[session_id] = dict(entry, episodes=kept)
    return dict(old, episodes=episodes, sessions=sessions)


def _lerobot_stats() -> Any:
    """capture.export.stats (LeRobot's own per-episode statistics and their aggregation) if
    this version has it, else None."""
    try:
        from capture.export import stats
    except ImportError:
        return None
    return stats


def _stats_from_episode_columns(eps: pa.Table, old: dict[str, Any]) -> dict[str, Any] | None:
    """stats.json as LeRobot rebuilds it after deleting episodes: the aggregate of the kept
    episodes' stats/<feature>/<stat> columns (None if the table has no such columns)."""
    module = _lerobot_stats()
    if module is None or not any(c.startswith("stats/") for c in eps.column_names):
        return None
    per_episode: list[dict[str, dict[str, np.ndarray]]] = [{} for _ in range(eps.num_rows)]
    for feature, entry in old.items():
        for key in entry:
            column = f"stats/{feature}/{key}"
            if column not in eps.column_names:
                return None
            for row, value in enumerate(eps.column(column).to_pylist()):
                per_episode[row].setdefault(feature, {})[key] = np.asarray(value)
    if not per_episode:
        return None
    return dict(module.to_lists(module.aggregate_all(per_episode)))


def _reindexed_episode_stats(eps: pa.Table, new_from: np.ndarray,
                             lengths: np.ndarray) -> pa.Table:
    """Per-episode stats columns (stats/<feature>/<stat>), where present: only the features
    that renumbering changes (episode_index, index) are recomputed; the rest stay."""
    for feature in ("episode_index", "index"):
        prefix = f"stats/{feature}/"
        for name in [c for c in eps.column_names if c.startswith(prefix)]:
            stat = name[len(prefix):]
            values = [np.arange(lo, lo + n) if feature == "index" else np.full(n, ep)
                      for ep, (lo, n) in enumerate(zip(new_from, lengths, strict=True))]
            module = _lerobot_stats()
            column = ([np.asarray(module.feature_stats(v)[stat]).tolist() for v in values]
                      if module is not None else
                      [_stat_entry(v, [stat]).get(stat) for v in values])
            field_type = eps.schema.field(name).type
            if not (pa.types.is_list(field_type) or pa.types.is_fixed_size_list(field_type)):
                column = [c[0] if c else None for c in column]
            eps = _set(eps, name, column)
    return eps


def apply_purge(plan: PurgePlan, *, progress: Callable[[str], None] | None = None) -> PurgeResult:
    """Carry out `plan`: build the purged dataset next to it, then swap the two in one step.

    A crash at any instant leaves the dataset either as it was or fully purged; what it
    leaves next to the dataset is removed by the next purge (cleanup_leftovers).
    """
    dataset = plan.dataset.resolve()
    with _purge_lock(dataset):
        leftovers = cleanup_leftovers(dataset)
        if plan.empty:
            return PurgeResult(dataset=dataset, log_entry=None, leftovers_removed=leftovers)
        # every selection is by session (a receipt or pseudonym covers whole sessions)
        current = plan_purge(dataset, sessions=plan.sessions, reason=plan.reason)
        if current.remove != plan.remove:
            raise CaptureError("the dataset changed since the purge was planned; run it again",
                               dataset)
        tmp = dataset.parent / f".{dataset.name}.purge-{secrets.token_hex(4)}"
        tmp.mkdir()
        try:
            if progress:
                progress("writing the purged dataset")
            entry = _build(plan, tmp, progress)
            if progress:
                progress("swapping it into place")
            _exchange(tmp, dataset)
            _fsync_path(dataset.parent)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        shutil.rmtree(tmp)  # the old dataset, now under the temporary name
        return PurgeResult(dataset=dataset, log_entry=entry, leftovers_removed=leftovers)


def purge_dataset(dataset: Path | str, *, receipts: Sequence[str] = (),
                  players: Sequence[str] = (), sessions: Sequence[str] = (), reason: Reason,
                  collector_since_utc: str | None = None,
                  collector_checked_utc: str | None = None) -> PurgeResult:
    """Plan and apply a purge in one call (no question asked)."""
    plan = plan_purge(dataset, receipts=receipts, players=players, sessions=sessions,
                      reason=reason,
                      collector_since_utc=collector_since_utc,
                      collector_checked_utc=collector_checked_utc)
    return apply_purge(plan)


def purge_from_revocations(dataset: Path | str, revocations: Path | str) -> PurgePlan:
    """Plan a purge of every receipt revoked since the last --from-collector purge."""
    since = last_collector_check_utc(dataset)
    checked = utc_iso()
    receipts = revoked_receipts_since(revocations, since)
    return plan_purge(dataset, receipts=receipts, reason="collector", collector_since_utc=since,
                      collector_checked_utc=checked)

