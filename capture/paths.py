"""Where state lives ($CAPTURE_HOME or the platform user data dir), and keeping it durable."""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs


def data_dir() -> Path:
    """The one directory holding consent ledger, keys, sessions and config."""
    override = os.environ.get("CAPTURE_HOME")
    base = Path(override) if override else Path(platformdirs.user_data_dir("capture", "capture"))
    base.mkdir(parents=True, exist_ok=True)
    return base


def ledger_path() -> Path:
    return data_dir() / "consent" / "ledger.jsonl"


def sessions_dir() -> Path:
    return data_dir() / "sessions"


def session_index_path() -> Path:
    """Sessions recorded outside sessions_dir() (with --out) are registered here."""
    return data_dir() / "session-index.jsonl"


def keys_dir() -> Path:
    return data_dir() / "keys"


def fsync_dir(directory: Path) -> None:
    """Make a rename or a new file in `directory` durable (no-op where directories cannot be
    opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
