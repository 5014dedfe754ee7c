"""The exported dataset's format in one place: paths, size limits, features, schemas, info.json."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from capture import formats
from capture.export.vocabulary import ACTION_NAMES, action_dtype

CODEBASE_VERSION = "v3.0"
INFO_PATH = "meta/info.json"
STATS_PATH = "meta/stats.json"
TASKS_PATH = "meta/tasks.parquet"
CARD_PATH = "README.md"
CHUNK_FILE = "chunk-{chunk_index:03d}/file-{file_index:03d}"
DATA_PATH = "data/" + CHUNK_FILE + ".parquet"
VIDEO_PATH = "videos/{video_key}/" + CHUNK_FILE + ".mp4"
EPISODES_PATH = "meta/episodes/" + CHUNK_FILE + ".parquet"
EVENTS_PATH = "meta/events/" + CHUNK_FILE + ".parquet"
EVENTS_DIR = "meta/events"
CONSENT_PATH = "meta/consent.json"      # consent by episode and by session (survives LeRobot edits)
CHECKSUMS_PATH = "meta/checksums.json"  # SHA-256 of every other file, written last

VIDEO_KEY = "observation.image"
VIDEO_CODEC = "libx264"   # encoder; the stream's codec name is VIDEO_CODEC_NAME
VIDEO_CODEC_NAME = "h264"
VIDEO_PIX_FMT = "yuv420p"
VIDEO_PRESET = "veryfast"
VIDEO_CRF = 23
GOP_SECONDS = 2
VIDEO_BACKEND = "pyav"  # what encodes (LeRobot records it as video.video_backend)

FRAMES_SCHEMA = "dataset-frames.v1.arrow.json"
EPISODES_SCHEMA = "dataset-episodes.v2.arrow.json"
EVENTS_SCHEMA = "dataset-events.v1.arrow.json"
INFO_SCHEMA = "dataset-info.v3.schema.json"
STATS_SCHEMA = "dataset-stats.v1.schema.json"
CONSENT_SCHEMA = "dataset-consent.v1.schema.json"
CHECKSUMS_SCHEMA = "dataset-checksums.v1.schema.json"
CONSENT_FORMAT = "capture-dataset-consent"
CHECKSUMS_FORMAT = "capture-dataset-checksums"

TIMESTAMP_TOLERANCE_S = 1e-4  # LeRobot's loader rejects video frames further off than this
# What capture.consent.pseudonym.keyed_pseudonym produces: 'p_' + 32 hex digits of an HMAC.
PSEUDONYM_PATTERN = re.compile(r"^p_[0-9a-f]{32}$")

INDEX_FEATURES: dict[str, dict[str, Any]] = {
    "timestamp": {"dtype": "float32", "shape": [1], "names": None},
    "frame_index": {"dtype": "int64", "shape": [1], "names": None},
    "episode_index": {"dtype": "int64", "shape": [1], "names": None},
    "index": {"dtype": "int64", "shape": [1], "names": None},
    "task_index": {"dtype": "int64", "shape": [1], "names": None},
    "capture_time_ns": {"dtype": "int64", "shape": [1], "names": None},
}


@dataclass(frozen=True, slots=True)
class FileLimits:
    """When to start a new data or video file, and how many files a chunk holds.

    Checked at episode ends (an episode never spans two files), so a file can exceed its limit
    by one episode. Data size is the in-memory Arrow size of the rows, as LeRobot counts
    uncompressed Parquet bytes; video size is the encoded bytes.
    """

    data_mb: float = 100
    video_mb: float = 500
    chunks_size: int = 1000


DEFAULT_LIMITS = FileLimits()


def next_file(chunk_index: int, file_index: int, chunks_size: int) -> tuple[int, int]:
    """The (chunk, file) after this one: a chunk holds at most chunks_size files."""
    if file_index + 1 >= chunks_size:
        return chunk_index + 1, 0
    return chunk_index, file_index + 1


def action_features() -> dict[str, dict[str, Any]]:
    return {name: {"dtype": action_dtype(name), "shape": [len(names)], "names": list(names)}
            for name, names in ACTION_NAMES.items()}


@dataclass(frozen=True, slots=True)
class Codec:
    """A video codec export can write: the stream's name, its encoder and default settings."""

    name: str          # the stream's codec name, as info.json's video.codec says it
    encoder: str       # the FFmpeg encoder PyAV opens
    crf: int
    preset: str | int


# h264: libx264 as the recorder writes it. av1: SVT-AV1 with LeRobot 0.6.1's defaults (crf 30,
# preset 12), where the installed PyAV provides libsvtav1.
CODECS: dict[str, Codec] = {
    "h264": Codec(name=VIDEO_CODEC_NAME, encoder=VIDEO_CODEC, crf=VIDEO_CRF, preset=VIDEO_PRESET),
    "av1": Codec(name="av1", encoder="libsvtav1", crf=30, preset=12),
}
DEFAULT_CODEC = "h264"


@dataclass(frozen=True, slots=True)
class VideoEncoding:
    """How exported episodes are encoded: codec, quality, speed and keyframe interval."""

    codec: str = DEFAULT_CODEC
    crf: int | None = None         # None: the codec's default
    preset: str | int | None = None
    gop: int = 2 * 30              # frames between keyframes (LeRobot's video.g)

    @property
    def spec(self) -> Codec:
        return CODECS[self.codec]

    @property
    def encoder(self) -> str:
        return self.spec.encoder

    @property
    def quality(self) -> int:
        return self.spec.crf if self.crf is None else self.crf

    @property
    def speed(self) -> str | int:
        return self.spec.preset if self.preset is None else self.preset

    def codec_options(self, threads: int) -> dict[str, str]:
        """Encoder options, as LeRobot's VideoEncoderConfig.get_codec_options maps them."""
        options = {"crf": str(self.quality), "preset": str(self.speed)}
        if self.encoder == "libsvtav1":
            options["svtav1-params"] = f"lp={threads}"
        else:
            options["threads"] = str(threads)
        return options


def default_encoding(fps: int, codec: str = DEFAULT_CODEC,
                     gop_seconds: float = GOP_SECONDS) -> VideoEncoding:
    return VideoEncoding(codec=codec, gop=max(1, round(gop_seconds * fps)))


def video_feature(width: int, height: int, fps: int,
                  encoding: VideoEncoding | None = None) -> dict[str, Any]:
    """The video feature as LeRobot 0.6.1 writes it (video_utils.get_video_info): the stream's
    properties, then the encoder settings as video.<VideoEncoderConfig field> (all but vcodec),
    then is_depth_map. The settings are the ones this export encoded with (`encoding`); LeRobot's
    delete_episodes re-encodes with them."""
    encoding = encoding or default_encoding(fps)
    return {
        "dtype": "video",
        "shape": [height, width, 3],
        "names": ["height", "width", "channels"],
        "info": {
            "video.height": height, "video.width": width, "video.codec": encoding.spec.name,
            "video.pix_fmt": VIDEO_PIX_FMT, "video.fps": fps, "video.channels": 3,
            "has_audio": False,
            "video.g": encoding.gop, "video.crf": encoding.quality,
            "video.preset": encoding.speed,
            "video.fast_decode": 0, "video.video_backend": VIDEO_BACKEND,
            "video.extra_options": {},
            "is_depth_map": False,
        },
    }


def features(width: int, height: int, fps: int,
             encoding: VideoEncoding | None = None) -> dict[str, dict[str, Any]]:
    """Every feature of the dataset, as info.json lists them."""
    return {VIDEO_KEY: video_feature(width, height, fps, encoding), **INDEX_FEATURES,
            **action_features()}


def build_info(*, fps: int, width: int, height: int, total_episodes: int, total_frames: int,
               total_tasks: int, limits: FileLimits = DEFAULT_LIMITS,
               encoding: VideoEncoding | None = None) -> dict[str, Any]:
    return {
        "codebase_version": CODEBASE_VERSION,
        "robot_type": None,
        "total_episodes": total_episodes,
        "total_frames": total_frames,
        "total_tasks": total_tasks,
        "chunks_size": limits.chunks_size,
        "data_files_size_in_mb": limits.data_mb,
        "video_files_size_in_mb": limits.video_mb,
        "fps": fps,
        "splits": {"train": f"0:{total_episodes}"},
        "data_path": DATA_PATH,
        "video_path": VIDEO_PATH,
        "features": features(width, height, fps, encoding),
    }


def _list_lengths(feature_map: dict[str, dict[str, Any]]) -> dict[str, int]:
    return {name: len(ft["names"]) for name, ft in feature_map.items()
            if ft.get("names") and ft["dtype"] != "video"}


def frames_schema(feature_map: dict[str, dict[str, Any]] | None = None) -> pa.Schema:
    """Arrow schema of the data files, sized by the feature names (ours unless given)."""
    return formats.arrow_schema(FRAMES_SCHEMA, _list_lengths(feature_map or action_features()))


def _nested_type(spec: str) -> pa.DataType:
    """list<...> types of the stats columns, nested as deep as declared."""
    if spec.startswith("list<") and spec.endswith(">"):
        return pa.list_(_nested_type(spec[len("list<"):-1]))
    return {"int64": pa.int64(), "float64": pa.float64()}[spec]


def capture_episode_columns() -> list[str]:
    """The episodes columns that are capture's, not LeRobot's (they follow LeRobot's in the
    schema, from session_id on); LeRobot's dataset tools drop them."""
    names = [f["name"] for f in formats.arrow_schema_doc(EPISODES_SCHEMA)["fields"]]
    return names[names.index("session_id"):]


def stats_column(feature: str, stat: str) -> str:
    return str(formats.arrow_schema_doc(EPISODES_SCHEMA)["stats_columns"]["name"]).format(
        feature=feature, stat=stat)


def stats_fields(feature_map: dict[str, dict[str, Any]]) -> list[pa.Field]:
    """The stats/<feature>/<stat> columns of meta/episodes for these features."""
    spec = formats.arrow_schema_doc(EPISODES_SCHEMA)["stats_columns"]
    types = spec["types"]
    fields = []
    for feature, ft in feature_map.items():
        for stat in spec["stats"]:
            kind = "count" if stat == "count" else "video" if ft["dtype"] == "video" else "other"
            fields.append(pa.field(stats_column(feature, stat), _nested_type(types[kind]),
                                   nullable=spec["nullable"]))
    return fields


def stat_names() -> list[str]:
    return list(formats.arrow_schema_doc(EPISODES_SCHEMA)["stats_columns"]["stats"])


def episodes_schema(feature_map: dict[str, dict[str, Any]]) -> pa.Schema:
    """meta/episodes' schema: the declared columns, then the stats columns of these features."""
    base = formats.arrow_schema(EPISODES_SCHEMA)
    return pa.schema([*base, *stats_fields(feature_map)], metadata=base.metadata)


def events_schema() -> pa.Schema:
    return formats.arrow_schema(EVENTS_SCHEMA)


def arrow_type_matches(feature: dict[str, Any], data_type: pa.DataType) -> bool:
    """True if a parquet column of `data_type` holds this info.json feature."""
    shape = list(feature["shape"])
    dtype = feature["dtype"]
    if shape == [1]:
        return str(data_type) == _arrow_name(dtype)
    if len(shape) != 1 or not pa.types.is_fixed_size_list(data_type):
        return False
    return data_type.list_size == shape[0] and str(data_type.value_type) == _arrow_name(dtype)


def _arrow_name(dtype: str) -> str:
    return {"float32": "float", "float64": "double"}.get(dtype, dtype)
