"""What the collector checks in a bundle: manifest format, names, and the kinds of data inside."""

from __future__ import annotations

import io
import json
import re

import pyarrow.parquet as pq

from capture import formats
from capture.errors import BadInputError
from capture.session.manifest import Manifest

SAFE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$")
MAX_FILES = 64

# event kind -> the consent scope kind it is data of
_EVENT_SCOPE = {
    "key_press": "keyboard", "key_release": "keyboard",
    "button_press": "mouse", "button_release": "mouse", "wheel": "mouse", "motion": "mouse",
    "pointer": "mouse",
    "gamepad_axis": "gamepad", "gamepad_button_press": "gamepad",
    "gamepad_button_release": "gamepad",
}


class Rejected(Exception):
    """A bundle the collector will not accept; the message is the reason, in plain words."""


def parse_manifest(text: str) -> Manifest:
    """The manifest record after format checks; raises Rejected saying what is wrong."""
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise Rejected(f"the manifest is not valid JSON ({exc})") from None
    try:
        record = Manifest.from_dict(data, formats.MANIFEST)
    except BadInputError as exc:
        raise Rejected(f"the manifest does not follow {formats.MANIFEST_SCHEMA}: "
                       f"{exc.problem}") from None
    if not record.is_final:
        raise Rejected(f"the session is {record.status!r}, not finalised; finalise it "
                       "(capture sessions recover) before uploading")
    if not SAFE_NAME.match(record.session_id):
        raise Rejected(f"session id {record.session_id!r} is not a safe name")
    if not record.files:
        raise Rejected("the manifest lists no files")
    if len(record.files) > MAX_FILES:
        raise Rejected(f"the manifest lists {len(record.files)} files; at most {MAX_FILES} are "
                       "allowed")
    bad = [n for n in record.files if not SAFE_NAME.match(n) or n == formats.MANIFEST]
    if bad:
        raise Rejected(f"file name {bad[0]!r} is not a safe name")
    for name in (record.video.file, formats.EVENTS_TABLE, formats.FRAMES_TABLE):
        if name not in record.files:
            raise Rejected(f"the manifest lists no {name}")
    return record


def kinds_in_events(data: bytes) -> set[str]:
    """The consent scope kinds the events table holds data of; raises Rejected if unreadable."""
    try:
        table = pq.read_table(io.BytesIO(data), columns=["kind"])
    except Exception as exc:  # pyarrow raises several types for a damaged file
        raise Rejected(f"{formats.EVENTS_TABLE} is not a readable Parquet table ({exc})") from None
    return {_EVENT_SCOPE[k] for k in set(table.column("kind").to_pylist()) if k in _EVENT_SCOPE}


def kinds_in_bundle(record: Manifest, events: bytes) -> set[str]:
    """Every kind of data the bundle carries: video if it has frames, plus the input kinds."""
    kinds = kinds_in_events(events)
    frames = record.qa.frames if record.qa is not None else 0
    if frames or record.files[record.video.file].bytes:
        kinds.add("video")
    if any(name.startswith("audio") for name in record.files):
        kinds.add("audio")
    return kinds
