"""Uploading finalised sessions to the collector they were consented for, resumably."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from capture import formats, paths
from capture.consent import receipt_status
from capture.errors import BadInputError, CaptureError
from capture.session.manifest import read_manifest
from capture.session.reader import open_session

from . import enrollment, tus
from .http import CollectorError, Unreachable, call, client

COMPLETE_WAIT_S = 900.0
COMPLETE_TIMEOUT = httpx.Timeout(COMPLETE_WAIT_S, connect=10.0)
ASSEMBLING_POLL_S = 1.0


@dataclass(frozen=True)
class UploadResult:
    """How one session's upload ended: accepted, rejected (with the collector's reason),
    refused locally (with why), or queued (the collector could not be reached)."""

    session_id: str
    path: str
    status: str  # accepted | rejected | refused | queued
    reason: str | None = None
    bundle_id: str | None = None
    finished_utc: str | None = None  # when the collector accepted or rejected it


def state_dir() -> Path:
    return paths.data_dir() / "uploads"


def read_state(session_id: str) -> dict[str, Any] | None:
    try:
        return dict(json.loads((state_dir() / f"{session_id}.json").read_text("utf-8")))
    except (FileNotFoundError, ValueError):
        return None


def _write_state(result: UploadResult) -> None:
    path = state_dir() / f"{result.session_id}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(asdict(result), indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def mark_released(session_id: str) -> None:
    """The player reviewed the session and sent it: kept on disk, so a restart remembers."""
    path = state_dir() / f"{session_id}.released"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()
    paths.fsync_dir(path.parent)


def is_released(session_id: str) -> bool:
    return (state_dir() / f"{session_id}.released").exists()


def forget_release(session_id: str) -> None:
    (state_dir() / f"{session_id}.released").unlink(missing_ok=True)


def queued_sessions() -> list[Path]:
    """Finalised local sessions recorded under an enrolled consent and not accepted or rejected
    yet: what `capture upload` sends when no session is named."""
    from capture.session import store

    enrolled = {e.receipt_id for e in enrollment.load_all()}
    out = []
    for session_dir in store.session_dirs():
        try:
            record = read_manifest(session_dir)
        except BadInputError:
            continue
        if not record.is_final or record.consent.receipt_id not in enrolled:
            continue
        state = read_state(record.session_id)
        if state is None or state["status"] in ("queued",):
            out.append(session_dir)
    return out


def upload_session(session_dir: Path, *, chunk_size: int = tus.DEFAULT_CHUNK,
                   progress: Callable[[int], None] = lambda _n: None,
                   total: Callable[[int, int], None] = lambda _t, _d: None) -> UploadResult:
    """Upload one finalised session (resuming where the collector stopped confirming).

    Raises Unreachable when the collector cannot be reached; every other outcome is returned.
    `total(bytes, already_confirmed)` is called once the collector says where it stands.
    """
    manifest_path = session_dir / formats.MANIFEST
    record = read_manifest(session_dir)
    session_id = record.session_id

    def done(status: str, reason: str | None = None, bundle_id: str | None = None
             ) -> UploadResult:
        finished = (datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
                    if status in ("accepted", "rejected") else None)
        result = UploadResult(session_id, str(session_dir), status, reason, bundle_id, finished)
        _write_state(result)
        return result

    receipt_id = record.consent.receipt_id
    enrolled = enrollment.for_receipt(receipt_id)
    if enrolled is None:
        return done("refused", f"consent receipt {receipt_id} is not enrolled with a collector "
                               "(capture enroll URL CODE)")
    status = receipt_status(receipt_id, game=record.game.name)
    if status != "active":
        return done("refused", f"consent receipt {receipt_id} is {status} in your ledger: "
                               "nothing is uploaded under it")
    try:
        open_session(session_dir, check_hashes=True)
    except BadInputError as exc:
        return done("refused", f"the session does not match its manifest: {exc.problem}")
    with client(enrolled.collector, enrolled.device_token) as http:
        try:
            state = call(http, "POST", "/v1/bundles",
                         json={"manifest_text": manifest_path.read_text("utf-8")}).json()
        except CollectorError as err:
            return _refused(done, err)
        total(state["total_bytes"], state["received_bytes"])
        try:
            for item in state["files"]:
                if item["offset"] < item["length"]:
                    tus.send_file(http, item["upload_url"], session_dir / item["name"],
                                  item["length"], chunk_size=chunk_size, progress=progress)
            verdict = complete(http, state["bundle_id"])
        except CollectorError as err:
            return _refused(done, err, state["bundle_id"])
    return done(verdict["status"], verdict.get("reason"), verdict["bundle_id"])


def complete(http: httpx.Client, bundle_id: str) -> dict[str, Any]:
    """Ask the collector to check and store the uploaded bundle; its verdict. While another
    request (an earlier attempt whose answer was lost, say) is assembling it, ask again."""
    give_up = time.monotonic() + COMPLETE_WAIT_S
    while True:
        # the collector reads every byte back to check it: give big bundles time
        verdict: dict[str, Any] = call(http, "POST", f"/v1/bundles/{bundle_id}/complete",
                                       timeout=COMPLETE_TIMEOUT).json()
        if verdict["status"] != "assembling":
            return verdict
        if time.monotonic() > give_up:
            raise Unreachable("the collector has been assembling the bundle for "
                              f"{COMPLETE_WAIT_S:g} s without an answer")
        time.sleep(ASSEMBLING_POLL_S)


def _refused(done: Callable[..., UploadResult], err: CollectorError,
             bundle_id: str | None = None) -> UploadResult:
    """A final answer (rejected/withdrawn) is recorded; anything else stays queued."""
    if err.code in ("rejected", "withdrawn", "exists"):
        bundle_id = (err.body.get("bundle") or {}).get("bundle_id", bundle_id)
        return done("rejected", err.reason, bundle_id)
    if err.status in (401, 403):
        return done("queued", f"the collector does not accept this device's token: "
                              f"{err.reason}")
    raise CaptureError(f"the collector refused a step of the upload: {err.reason}")


def upload_sessions(session_dirs: list[Path], *, wait: bool = False,
                    chunk_size: int = tus.DEFAULT_CHUNK, say: Callable[[str], None] = print,
                    progress: Callable[[int], None] = lambda _n: None,
                    total: Callable[[int, int], None] = lambda _t, _d: None,
                    attempts: int = 3) -> list[UploadResult]:
    """Upload each session; a network failure is retried (forever with `wait`), resuming from
    the last confirmed chunk."""
    results = []
    for session_dir in session_dirs:
        failures = 0
        while True:
            try:
                results.append(upload_session(session_dir, chunk_size=chunk_size,
                                              progress=progress, total=total))
                break
            except Unreachable as exc:
                failures += 1
                if not wait and failures >= attempts:
                    result = UploadResult(read_manifest(session_dir).session_id,
                                          str(session_dir), "queued",
                                          f"{exc}; it stays queued and resumes next time")
                    _write_state(result)
                    results.append(result)
                    break
                delay = min(0.25 * 2 ** min(failures, 5), 5.0)
                say(f"{exc}; resuming in {delay:.1f} s")
                time.sleep(delay)
    return results
