"""The append-only, hash-chained consent ledger: verified reads, locked appends, grant states."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydantic

from capture.errors import BadInputError
from capture.formats import CONSENT_RECORD_SCHEMA, validate_json

from .records import (
    GENESIS_HASH,
    ConsentReceipt,
    Revocation,
    canonical_json,
    entry_hash,
    game_key,
    parse_entry,
)

log = logging.getLogger(__name__)

if sys.platform != "win32":
    import fcntl

Entry = ConsentReceipt | Revocation
EntryBuilder = Callable[[list[Entry]], dict[str, Any] | None]

_TAMPER_HINT = "entries were removed, inserted or reordered"


def head_path(ledger: Path) -> Path:
    """Sidecar recording the last entry's seq and hash, so cutting entries off the end shows."""
    return ledger.with_name(ledger.name + ".head")


def lock_path(ledger: Path) -> Path:
    return ledger.with_name(ledger.name + ".lock")


# --- reading ----------------------------------------------------------------------------------
def read_entries(ledger: Path) -> list[Entry]:
    """Every entry of the ledger, after verifying the whole chain; [] if there is no ledger yet.

    Raises BadInputError naming the file, the line and what is wrong if anything was edited,
    removed, reordered or damaged.
    """
    with _locked(ledger, exclusive=False):
        return _read_verified(ledger)


def _read_verified(ledger: Path) -> list[Entry]:
    head = _read_head(ledger)
    try:
        data = ledger.read_bytes()
    except FileNotFoundError:
        if head is not None:
            raise BadInputError(
                f"the ledger file is missing, but {head_path(ledger).name} says it held "
                f"{head[0]} entries: it was deleted or moved", ledger) from None
        return []
    lines = data.split(b"\n")
    if lines[-1] != b"":
        raise BadInputError(
            f"line {len(lines)} does not end with a newline: the last write was cut off or the "
            "file was edited", ledger)
    lines.pop()
    entries: list[Entry] = []
    prev_hash = GENESIS_HASH
    for number, raw in enumerate(lines, start=1):
        obj = _parse_line(raw, number, ledger)
        where = f"line {number} (seq {obj.get('seq')})"
        try:
            validate_json(obj, CONSENT_RECORD_SCHEMA, ledger)
        except BadInputError as exc:
            raise BadInputError(f"{where}: {exc.problem}", ledger) from None
        if entry_hash(obj) != obj["hash"]:
            raise BadInputError(f"{where}: its hash does not match its content: the entry was "
                                "edited", ledger)
        if obj["seq"] != number:
            raise BadInputError(f"{where}: expected seq {number}: {_TAMPER_HINT}", ledger)
        if obj["prev_hash"] != prev_hash:
            raise BadInputError(f"{where}: prev_hash is not the hash of the entry before it: "
                                f"{_TAMPER_HINT}", ledger)
        entries.append(_typed(obj, where, ledger))
        prev_hash = obj["hash"]
    _check_head(head, entries, ledger)
    _check_references(entries, ledger)
    return entries


def _parse_line(raw: bytes, number: int, ledger: Path) -> dict[str, Any]:
    try:
        obj = json.loads(raw)
    except ValueError as exc:
        raise BadInputError(f"line {number} is not valid JSON ({exc}): the ledger was damaged "
                            "or edited", ledger) from None
    if not isinstance(obj, dict):
        raise BadInputError(f"line {number} is not a JSON object: the ledger was damaged or "
                            "edited", ledger)
    return obj


def _typed(obj: dict[str, Any], where: str, ledger: Path) -> Entry:
    try:
        return parse_entry(obj)
    except pydantic.ValidationError as exc:
        first = exc.errors()[0]
        field_path = "/".join(str(p) for p in first["loc"])
        raise BadInputError(f"{where}: {field_path}: {first['msg']}", ledger) from None


def _check_head(head: tuple[int, str] | None, entries: list[Entry], ledger: Path) -> None:
    """The ledger may run ahead of its head file (a crash between the two writes), never behind."""
    if head is None:
        return
    head_seq, head_hash = head
    name = head_path(ledger).name
    if head_seq > len(entries):
        raise BadInputError(f"the ledger ends at seq {len(entries)} but {name} records seq "
                            f"{head_seq}: entries were removed from the end", ledger)
    if entries[head_seq - 1].hash != head_hash:
        raise BadInputError(f"seq {head_seq} has a different hash than {name} records: the "
                            "ledger was rewritten", ledger)


def _check_references(entries: list[Entry], ledger: Path) -> None:
    """Receipt ids are unique; a revocation withdraws games an earlier grant of that player has."""
    grants: dict[str, ConsentReceipt] = {}
    seen: set[str] = set()
    for entry in entries:
        where = f"seq {entry.seq}"
        if entry.receipt_id in seen:
            raise BadInputError(f"{where}: receipt id {entry.receipt_id} is used twice", ledger)
        seen.add(entry.receipt_id)
        if isinstance(entry, ConsentReceipt):
            grants[entry.receipt_id] = entry
            continue
        for item in entry.withdrawn:
            grant = grants.get(item.receipt_id)
            if grant is None or grant.player != entry.player:
                raise BadInputError(f"{where}: withdraws receipt {item.receipt_id}, which is not "
                                    f"an earlier grant of player {entry.player!r}", ledger)
            unknown = [g for g in item.games if g not in grant.games]
            if unknown:
                raise BadInputError(f"{where}: withdraws {unknown} from receipt "
                                    f"{item.receipt_id}, which does not list them", ledger)


def _read_head(ledger: Path) -> tuple[int, str] | None:
    path = head_path(ledger)
    try:
        obj = json.loads(path.read_bytes())
        seq, digest = obj["seq"], obj["hash"]
        if not (isinstance(seq, int) and seq >= 1 and isinstance(digest, str)):
            raise ValueError("seq or hash has the wrong type")
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError) as exc:
        raise BadInputError(f"not a valid ledger head ({exc})", path) from None
    return seq, digest


# --- appending --------------------------------------------------------------------------------
def append_entry(ledger: Path, build: EntryBuilder) -> Entry | None:
    """Append the entry `build` makes from the verified current entries (None: append nothing).

    Holds an exclusive lock from reading to writing, fills in seq, prev_hash and hash, validates
    against the schema, writes one line with fsync, then updates the head file.
    """
    ledger.parent.mkdir(parents=True, exist_ok=True)
    with _locked(ledger, exclusive=True):
        entries = _read_verified(ledger)
        body = build(entries)
        if body is None:
            return None
        obj = dict(body)
        obj["seq"] = len(entries) + 1
        obj["prev_hash"] = entries[-1].hash if entries else GENESIS_HASH
        obj["hash"] = entry_hash(obj)
        try:
            validate_json(obj, CONSENT_RECORD_SCHEMA, ledger)
        except BadInputError as exc:
            raise BadInputError(f"refusing to write an invalid entry: {exc.problem}",
                                ledger) from None
        entry = _typed(obj, f"new entry (seq {obj['seq']})", ledger)
        _append_line(ledger, canonical_json(obj) + b"\n")
        try:
            _write_head(ledger, entry.seq, entry.hash)
        except OSError as exc:
            # The entry is durable and stands: the ledger may run ahead of its head file (as
            # after a crash between the two writes); the next append brings the head up to date.
            log.warning("%s: not updated (%s); the entry seq %d is recorded",
                        head_path(ledger), exc.strerror or exc, entry.seq)
        return entry


def _append_line(ledger: Path, line: bytes) -> None:
    """Append one line durably; if the write fails (disk full, ...), cut the file back to what
    it was, so that a failed append never leaves a torn line that would make the ledger
    unreadable. Raises OSError naming the ledger."""
    fd = os.open(ledger, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        size = os.lseek(fd, 0, os.SEEK_END)
        try:
            view = memoryview(line)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, size)
                os.fsync(fd)
            raise OSError(exc.errno, exc.strerror, str(ledger)) from None
    finally:
        os.close(fd)


def _write_head(ledger: Path, seq: int, digest: str) -> None:
    path = head_path(ledger)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as out:
        out.write(canonical_json({"seq": seq, "hash": digest}) + b"\n")
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)


@contextmanager
def _locked(ledger: Path, *, exclusive: bool) -> Iterator[None]:
    """flock on a sidecar lock file (POSIX); readers share it, an appender holds it alone.

    Readers of a ledger in a place they cannot write (or that does not exist yet) go unlocked.
    """
    if sys.platform == "win32" or (not exclusive and not ledger.parent.is_dir()):
        yield
        return
    try:
        fd = os.open(lock_path(ledger), os.O_RDWR | os.O_CREAT, 0o600)
    except OSError:
        if exclusive:
            raise
        fd = None
    try:
        if fd is not None:
            fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield
    finally:
        if fd is not None:
            os.close(fd)


# --- what the entries add up to ---------------------------------------------------------------
@dataclass
class GrantState:
    """A grant and the revocations that withdrew some or all of its games."""

    receipt: ConsentReceipt
    withdrawn_by: dict[str, Revocation] = field(default_factory=dict)  # game_key -> revocation

    def is_active_for(self, game: str) -> bool:
        return self.receipt.covers_game(game) and game_key(game) not in self.withdrawn_by

    @property
    def active_games(self) -> tuple[str, ...]:
        return tuple(g for g in self.receipt.games if game_key(g) not in self.withdrawn_by)

    @property
    def status(self) -> str:
        """'active', 'partly revoked' (some games withdrawn) or 'revoked' (all of them)."""
        if not self.withdrawn_by:
            return "active"
        return "partly revoked" if self.active_games else "revoked"


def grant_states(entries: list[Entry]) -> dict[str, GrantState]:
    """receipt_id -> state of every grant, in ledger order."""
    states: dict[str, GrantState] = {}
    for entry in entries:
        if isinstance(entry, ConsentReceipt):
            states[entry.receipt_id] = GrantState(entry)
            continue
        for item in entry.withdrawn:
            state = states[item.receipt_id]
            for game in item.games:
                state.withdrawn_by.setdefault(game_key(game), entry)
    return states
