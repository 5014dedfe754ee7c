"""The collector's consent registry: grants and withdrawals, hash-chained like the local ledger."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from capture.consent.records import GENESIS_HASH, canonical_json, entry_hash

from . import db


@dataclass(frozen=True)
class RegistryEntry:
    """One registry line: what the collector recorded, where in the chain, and its hash."""

    seq: int
    prev_hash: str
    hash: str
    kind: str
    player_id: str
    entry: dict[str, Any]  # the player's own ledger entry, as they sent it
    recorded_at: str


def append(conn: Connection, *, kind: str, player_id: str, entry: dict[str, Any]) -> RegistryEntry:
    """Append inside the caller's transaction; a concurrent append makes the insert fail on seq
    (the caller retries the whole transaction)."""
    last = conn.execute(sa.select(db.registry.c.seq, db.registry.c.hash)
                        .order_by(db.registry.c.seq.desc()).limit(1)).first()
    seq = (last.seq + 1) if last else 1
    prev_hash = last.hash if last else GENESIS_HASH
    recorded_at = db.now().strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    obj: dict[str, Any] = {"seq": seq, "prev_hash": prev_hash, "kind": kind,
                           "player_id": player_id, "entry": entry, "recorded_at": recorded_at}
    digest = entry_hash(obj)
    obj["hash"] = digest
    conn.execute(db.registry.insert().values(
        seq=seq, prev_hash=prev_hash, hash=digest, kind=kind, player_id=player_id,
        entry_receipt_id=entry["receipt_id"], body=canonical_json(obj).decode("ascii"),
        recorded_at=db.now()))
    return RegistryEntry(seq=seq, prev_hash=prev_hash, hash=digest, kind=kind,
                         player_id=player_id, entry=entry, recorded_at=recorded_at)


def entries(conn: Connection) -> list[RegistryEntry]:
    rows = conn.execute(sa.select(db.registry.c.body).order_by(db.registry.c.seq)).all()
    out = []
    for row in rows:
        obj = json.loads(row.body)
        out.append(RegistryEntry(**{k: obj[k] for k in RegistryEntry.__dataclass_fields__}))
    return out


def verify(conn: Connection) -> list[str]:
    """Problems with the chain (empty if each line hashes to itself and links to the last)."""
    problems = []
    prev = GENESIS_HASH
    for number, item in enumerate(entries(conn), start=1):
        obj = {"seq": item.seq, "prev_hash": item.prev_hash, "kind": item.kind,
               "player_id": item.player_id, "entry": item.entry, "recorded_at": item.recorded_at,
               "hash": item.hash}
        if item.seq != number:
            problems.append(f"seq {item.seq}: expected {number}")
        if item.prev_hash != prev:
            problems.append(f"seq {item.seq}: does not link to the entry before it")
        if entry_hash(obj) != item.hash:
            problems.append(f"seq {item.seq}: its hash does not match its content")
        prev = item.hash
    return problems
