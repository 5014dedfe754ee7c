"""Withdrawals the collector must hear of: queued on disk, sent, retried until acknowledged."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from capture import paths
from capture.consent import Revocation

from . import enrollment
from .http import CollectorError, Unreachable, call, client


@dataclass(frozen=True)
class Delivery:
    """What happened to one queued withdrawal for one collector."""

    revocation_id: str
    collector: str
    status: str  # acknowledged | queued | refused
    detail: str
    ack: dict[str, Any] | None = None


def outbox_dir() -> Path:
    return paths.data_dir() / "outbox"


def notify_collector_of_revocation(revocation: Revocation | None) -> list[Delivery]:
    """Queue `revocation` (a local ledger entry) for every collector that enrolled one of the
    grants it withdraws, then try to deliver everything queued. Returns what happened; what
    could not be delivered stays queued for flush_outbox()."""
    if revocation is not None:
        line = enrollment.ledger_line(revocation.receipt_id)
        targets = {e.receipt_id: e for e in enrollment.load_all()}
        for item in revocation.withdrawn:
            enrolled = targets.get(item.receipt_id)
            if enrolled is None:
                continue
            name = f"{revocation.receipt_id}-{enrolled.receipt_id}.json"
            _write(outbox_dir() / name, {"entry": line, "enrollment": enrolled.receipt_id})
    return flush_outbox()


def flush_outbox() -> list[Delivery]:
    """Send every queued withdrawal; acknowledged ones leave the queue."""
    out = []
    directory = outbox_dir()
    for path in sorted(directory.glob("*.json")) if directory.is_dir() else []:
        item = json.loads(path.read_text("utf-8"))
        entry = item["entry"]
        enrolled = enrollment.for_receipt(item["enrollment"])
        if enrolled is None:
            path.unlink()
            continue
        try:
            with client(enrolled.collector, enrolled.device_token) as http:
                ack = call(http, "POST", "/v1/revocations", json={"entry": entry}).json()
        except Unreachable as exc:
            out.append(Delivery(entry["receipt_id"], enrolled.collector, "queued", str(exc)))
            continue
        except CollectorError as err:
            if err.code == "already_recorded":
                ack = err.body
            else:
                path.unlink()
                out.append(Delivery(entry["receipt_id"], enrolled.collector, "refused",
                                    err.reason))
                continue
        path.unlink()
        if ack.get("entry_hash") != entry["hash"]:
            detail = ("the collector acknowledged a different entry than your ledger holds: "
                      "your ledger and the collector's registry disagree")
        else:
            detail = (f"recorded as registry entry {ack['registry_seq']}; "
                      f"{len(ack.get('deleted_sessions', []))} stored session(s) deleted")
        out.append(Delivery(entry["receipt_id"], enrolled.collector, "acknowledged", detail,
                            ack))
    return out


def _write(path: Path, obj: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        json.dump(obj, out)
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)


def notify_and_describe(revocation: Revocation | None) -> list[str]:
    """notify_collector_of_revocation(), as lines for the player; never raises on delivery."""
    from capture.errors import CaptureError

    try:
        deliveries = notify_collector_of_revocation(revocation)
    except CaptureError as exc:
        return [f"The collector could not be told yet ({exc}); it stays queued and is retried "
                "by `capture upload`."]
    lines = []
    for d in deliveries:
        if d.status == "acknowledged":
            lines.append(f"Collector {d.collector} confirmed the withdrawal: {d.detail}.")
        elif d.status == "queued":
            lines.append(f"Collector {d.collector} is unreachable; the withdrawal is queued and "
                         "retried by `capture upload` and the agent.")
        else:
            lines.append(f"Collector {d.collector} refused the withdrawal: {d.detail}")
    return lines
