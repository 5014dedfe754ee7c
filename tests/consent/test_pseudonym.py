"""Keyed pseudonyms and the key file they depend on."""

from __future__ import annotations

import os
import re
import stat
import sys
from pathlib import Path

import pytest

from capture.consent.pseudonym import keyed_pseudonym, load_or_create_key
from capture.errors import BadInputError


def test_same_key_same_pseudonym() -> None:
    key = bytes(range(32))
    assert keyed_pseudonym("alice", key) == keyed_pseudonym("alice", key)
    assert re.fullmatch(r"p_[0-9a-f]{32}", keyed_pseudonym("alice", key))


def test_other_key_or_player_other_pseudonym() -> None:
    key, other = bytes(range(32)), bytes(range(1, 33))
    assert keyed_pseudonym("alice", key) != keyed_pseudonym("alice", other)
    assert keyed_pseudonym("alice", key) != keyed_pseudonym("bob", key)


def test_short_key_is_refused() -> None:
    with pytest.raises(ValueError, match="16 bytes"):
        keyed_pseudonym("alice", b"short")


def test_key_is_created_once_and_private(capture_home: Path) -> None:
    key = load_or_create_key()
    path = capture_home / "keys" / "pseudonym.key"
    assert path.read_bytes() == key and len(key) == 32
    assert load_or_create_key() == key
    if sys.platform != "win32":
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert list(path.parent.iterdir()) == [path]  # no temporary files left behind


def test_explicit_key_path(tmp_path: Path) -> None:
    path = tmp_path / "k" / "my.key"
    assert load_or_create_key(path) == path.read_bytes()


def test_damaged_key_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "pseudonym.key"
    path.write_bytes(b"too short")
    with pytest.raises(BadInputError, match="9 bytes, expected 32") as caught:
        load_or_create_key(path)
    assert caught.value.path == path
