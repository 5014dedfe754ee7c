"""Reading session bundles: open a finalised session with its files checked, recovery status."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from capture import formats
from capture.errors import BadInputError
from capture.session.manifest import Manifest, read_manifest


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_in_session(session_dir: Path, name: str) -> Path:
    """`session_dir / name`, refused unless it stays inside the session (a manifest naming an
    absolute path or `..` must not reach other files on the machine)."""
    base = session_dir.resolve()
    path = (base / name).resolve()
    if path == base or not path.is_relative_to(base):
        raise BadInputError(f"the manifest names a file outside its session ({name!r})",
                            session_dir / formats.MANIFEST)
    return path


def recorder_pid(session_dir: Path) -> int | None:
    try:
        return int((session_dir / formats.LOCK).read_text().strip())
    except (OSError, ValueError, UnicodeDecodeError):
        return None


def recorder_running(session_dir: Path) -> bool:
    """True while the process that holds the session's recording lock is alive."""
    pid = recorder_pid(session_dir)
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def needs_recovery(session_dir: Path) -> bool:
    """True for a session still marked 'recording' whose recorder process is gone."""
    try:
        manifest = read_manifest(session_dir)
    except BadInputError:
        return False
    return manifest.status == "recording" and not recorder_running(session_dir)


@dataclass
class Session:
    """A finalised session bundle, checked on open."""

    path: Path
    manifest: Manifest
    _cache: dict[str, pa.Table] = field(default_factory=dict)

    @property
    def session_id(self) -> str:
        return self.manifest.session_id

    @property
    def video_path(self) -> Path:
        return file_in_session(self.path, self.manifest.video.file)

    def events(self) -> pa.Table:
        return self._table(formats.EVENTS_TABLE, formats.EVENTS_SCHEMA)

    def frames(self) -> pa.Table:
        return self._table(formats.FRAMES_TABLE, formats.FRAMES_SCHEMA)

    def _table(self, name: str, schema_name: str) -> pa.Table:
        if name not in self._cache:
            self._cache[name] = read_table(self.path / name, schema_name)
        return self._cache[name]


def read_table(path: Path, schema_name: str) -> pa.Table:
    """A bundle table, checked against its schema in schemas/."""
    try:
        table = pq.read_table(path)
    except FileNotFoundError:
        raise BadInputError("table is missing from the session", path) from None
    except (pa.ArrowInvalid, OSError) as exc:
        raise BadInputError(f"not a readable Parquet file ({exc})", path) from None
    schema = formats.arrow_schema(schema_name)
    table = formats.with_optional_columns(table, schema)
    formats.validate_table(table, schema, path)
    return table.cast(schema)


def open_session(session_dir: Path | str, *, check_hashes: bool = True) -> Session:
    """Open a finalised session; every file's size and SHA-256 are checked against the manifest."""
    session_dir = Path(session_dir)
    manifest = read_manifest(session_dir)
    if manifest.status == "recording":
        hint = ("run `capture sessions recover " + str(session_dir) + "`"
                if needs_recovery(session_dir) else "it is still being recorded")
        raise BadInputError(f"session is not finalised: {hint}", session_dir)
    for name in (manifest.video.file, formats.EVENTS_TABLE, formats.FRAMES_TABLE):
        if name not in manifest.files:
            raise BadInputError(f"manifest lists no {name}", session_dir / formats.MANIFEST)
    if check_hashes:
        for name, entry in manifest.files.items():
            path = file_in_session(session_dir, name)
            if not path.exists():
                raise BadInputError("file listed in the manifest is missing", path)
            if path.stat().st_size != entry.bytes:
                raise BadInputError(f"file is {path.stat().st_size} bytes, manifest says "
                                    f"{entry.bytes} (truncated or changed)", path)
            if sha256_file(path) != entry.sha256:
                raise BadInputError("file content does not match its SHA-256 in the manifest "
                                    "(corrupted or changed)", path)
    return Session(path=session_dir, manifest=manifest)
