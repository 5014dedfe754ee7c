"""Enrolling in a collector study: show its terms, grant locally, register, keep the token."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from capture import paths
from capture.consent import ConsentReceipt, StudyTerms, all_entries, grant
from capture.consent.records import Controller
from capture.errors import BadInputError, CaptureError

from .http import call, client


@dataclass(frozen=True)
class Enrollment:
    """What the agent keeps (0600) to upload under one enrolled consent."""

    collector: str
    study: str
    player_id: str
    pseudonym: str
    receipt_id: str
    device_token: str
    token_expires_at: str
    registry_seq: int
    registry_hash: str


def enrollments_dir() -> Path:
    return paths.data_dir() / "enrollments"


def fetch_study(url: str, code: str) -> dict[str, Any]:
    """The study an invite code is for (its exact terms), without using up the code."""
    with client(url) as http:
        return dict(call(http, "POST", "/v1/enrollment/study", json={"code": code}).json())


def check_terms(study: dict[str, Any]) -> None:
    """The terms text must hash to what the collector says (it is what the receipt pins)."""
    digest = hashlib.sha256(study["terms_text"].encode("utf-8")).hexdigest()
    if digest != study["terms_sha256"]:
        raise CaptureError("the collector sent terms whose SHA-256 does not match what it "
                           "claims; nothing was recorded")


def enroll(url: str, code: str, study: dict[str, Any], pseudonym: str, *,
           method: str = "cli-interactive") -> tuple[Enrollment, ConsentReceipt]:
    """Grant consent to `study` in the local ledger, register it with the collector, keep the
    device token. The local grant stays (and can be revoked) even if registering fails."""
    check_terms(study)
    keep_terms(study["terms_text"])
    receipt = grant(pseudonym, list(study["games"]), list(study["scope"]),
                    purposes=list(study["purposes"]), license=study["licence"], method=method,
                    controller=Controller(**study["controller"]),
                    study=StudyTerms(study_id=study["id"], collector=url.rstrip("/"),
                                     terms_version=study["terms_version"],
                                     terms_sha256=study["terms_sha256"]))
    with client(url) as http:
        answer = call(http, "POST", "/v1/enrollment",
                      json={"code": code, "pseudonym": pseudonym,
                            "receipt": ledger_line(receipt.receipt_id)}).json()
    enrollment = Enrollment(collector=url.rstrip("/"), study=answer["study"],
                            player_id=answer["player_id"], pseudonym=pseudonym,
                            receipt_id=answer["receipt_id"], device_token=answer["device_token"],
                            token_expires_at=answer["token_expires_at"],
                            registry_seq=answer["registry_seq"],
                            registry_hash=answer["registry_hash"])
    save(enrollment)
    return enrollment, receipt


def ledger_line(receipt_id: str) -> dict[str, Any]:
    """An entry exactly as its ledger line holds it (its hash is over those fields)."""
    all_entries()  # verifies the chain first: a damaged ledger is named, nothing is sent
    for raw in paths.ledger_path().read_bytes().splitlines():
        obj = json.loads(raw)
        if obj.get("receipt_id") == receipt_id:
            return dict(obj)
    raise CaptureError(f"entry {receipt_id} is not in the consent ledger", paths.ledger_path())


def keep_terms(text: str) -> Path:
    """Keep the terms the player agreed to, by hash, next to the ledger."""
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    path = paths.ledger_path().parent / "terms" / f"{digest}.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        _write_private(path, text.encode("utf-8"))
    return path


def save(enrollment: Enrollment) -> Path:
    path = enrollments_dir() / f"{enrollment.receipt_id}.json"
    _write_private(path, json.dumps(asdict(enrollment), indent=2).encode("utf-8") + b"\n")
    return path


def load_all() -> list[Enrollment]:
    """Every enrollment of this machine; a damaged file is named in the error."""
    out = []
    directory = enrollments_dir()
    if not directory.is_dir():
        return []
    for path in sorted(directory.glob("*.json")):
        try:
            out.append(Enrollment(**json.loads(path.read_text(encoding="utf-8"))))
        except (ValueError, TypeError) as exc:
            raise BadInputError(f"not a valid enrollment record ({exc})", path) from None
    return out


def for_receipt(receipt_id: str) -> Enrollment | None:
    return next((e for e in load_all() if e.receipt_id == receipt_id), None)


def _write_private(path: Path, data: bytes) -> None:
    """Write with 0600 permissions from the start, atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)
