"""Keyed pseudonyms: datasets name a player by an HMAC of their name under a local secret key."""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

from capture import paths
from capture.errors import BadInputError

KEY_BYTES = 32
PSEUDONYM_PREFIX = "p_"
_DIGEST_BYTES = 16


def keyed_pseudonym(player: str, key: bytes) -> str:
    """'p_' + the first 16 bytes (32 hex digits) of HMAC-SHA256(key, player as UTF-8)."""
    if len(key) < 16:
        raise ValueError("a pseudonym key must be at least 16 bytes")
    digest = hmac.new(key, player.encode("utf-8"), hashlib.sha256).digest()
    return PSEUDONYM_PREFIX + digest[:_DIGEST_BYTES].hex()


def default_key_path() -> Path:
    return paths.keys_dir() / "pseudonym.key"


def load_or_create_key(path: Path | None = None) -> bytes:
    """The secret pseudonym key at `path` (default keys_dir()/pseudonym.key), made if missing.

    A new key is 32 random bytes in a file of mode 0600. Two processes creating it at once end up
    with the same key: the file appears complete or not at all.
    """
    path = path or default_key_path()
    try:
        return _read_key(path)
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(secrets.token_bytes(KEY_BYTES))
            out.flush()
            os.fsync(out.fileno())
        try:
            os.link(tmp, path)  # fails if another process made the key first: then use theirs
        except FileExistsError:
            pass
        except OSError:  # no hard links on this filesystem
            if not path.exists():
                os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return _read_key(path)


def _read_key(path: Path) -> bytes:
    key = path.read_bytes()
    if len(key) != KEY_BYTES:
        raise BadInputError(f"pseudonym key has {len(key)} bytes, expected {KEY_BYTES}; "
                            "restore it from a backup (a new key would change every pseudonym)",
                            path)
    return key
