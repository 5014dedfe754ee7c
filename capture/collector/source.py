"""Export input from a collector: download accepted bundles (API or store) and check consent."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

from capture import formats
from capture.errors import CaptureError, ConsentError
from capture.session.manifest import Manifest, read_manifest
from capture.uploader.http import call, client

SCHEMES = ("collector+http://", "collector+https://", "s3://", "store+file://")
_SAFE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$")


def is_collector_input(text: str) -> bool:
    return text.startswith(SCHEMES)


@dataclass
class Downloaded:
    """Sessions fetched into a temp dir, and how to check their consent at export time."""

    session_dirs: list[Path] = field(default_factory=list)
    bundle_ids: dict[str, str] = field(default_factory=dict)  # session dir -> bundle id
    checks: list[Callable[[str, str], str | None]] = field(default_factory=list)
    register: list[Callable[[str, list[str]], None]] = field(default_factory=list)

    def consent_status(self, receipt_id: str, game: str) -> str:
        """'active'/'revoked'/'unknown' from the collectors these sessions came from; receipts
        no collector knows are looked up in the local ledger (local session directories)."""
        from capture.consent import receipt_status

        for check in self.checks:
            status = check(receipt_id, game)
            if status is not None:
                return status
        return receipt_status(receipt_id, game=game)


def _safe(name: str, what: str) -> str:
    if not _SAFE.match(name):
        raise CaptureError(f"the collector listed a {what} that is not a safe name: {name!r}")
    return name


def _from_api(url: str, into: Path, found: Downloaded) -> None:
    """collector+http://HOST:PORT/STUDY[?game=G&since=YYYY-MM-DD&until=YYYY-MM-DD]"""
    from .server import ADMIN_TOKEN_ENV, stored_admin_token

    parsed = urlparse(url.removeprefix("collector+"))
    study = parsed.path.strip("/")
    if not study:
        raise CaptureError(f"{url}: name the study (collector+http://HOST:PORT/STUDY)")
    query = {k: v[-1] for k, v in parse_qs(parsed.query).items()}
    base = f"{parsed.scheme}://{parsed.netloc}"
    token = stored_admin_token()
    if not token:
        raise CaptureError(f"reading from a collector needs its admin token: set {ADMIN_TOKEN_ENV}")
    http = client(base, token)
    rows = call(http, "GET", "/v1/admin/sessions", params={"study": study}).json()
    rows = [r for r in rows if _wanted(r, query)]
    if not rows:
        raise CaptureError(f"{url}: the collector has no accepted session that matches")
    for row in rows:
        target = into / _safe(row["session_id"], "session id")
        target.mkdir(parents=True)
        for name in row["files"]:
            with (open(target / _safe(name, "file name"), "wb") as out,
                  http.stream("GET", f"/v1/admin/bundles/{row['bundle_id']}/files/{name}")
                  as response):
                if response.status_code != 200:
                    response.read()
                    from capture.uploader.http import error_from

                    raise error_from(response)
                for block in response.iter_bytes():
                    out.write(block)
        found.session_dirs.append(target)
        found.bundle_ids[str(target)] = row["bundle_id"]

    def check(receipt_id: str, game: str) -> str | None:
        status = call(http, "GET", f"/v1/admin/receipts/{receipt_id}").json()
        if status["status"] == "unknown":
            return None
        keys = {g.casefold() for g in status["active_games"]}
        return "active" if game.strip().casefold() in keys else "revoked"

    def register(name: str, dirs: list[str]) -> None:
        ids = [found.bundle_ids[d] for d in dirs if d in found.bundle_ids]
        if ids:
            call(http, "POST", "/v1/admin/datasets",
                 json={"study": study, "name": name, "bundle_ids": ids})

    found.checks.append(check)
    found.register.append(register)


def _wanted(row: dict[str, Any], query: dict[str, str]) -> bool:
    if "game" in query and row["game"].casefold() != query["game"].casefold():
        return False
    day = (row.get("accepted_at") or "")[:10]
    if "since" in query and day < query["since"]:
        return False
    return not ("until" in query and day > query["until"])


def _from_store(url: str, into: Path, found: Downloaded, s3_endpoint: str | None) -> None:
    """s3://bucket/prefix[/bundles/STUDY] or store+file:///dir: every complete bundle in it."""
    from .store import open_store

    store = open_store(url.removeprefix("store+"), s3_endpoint=s3_endpoint)
    manifests = [k for k in store.list("bundles") if k.endswith("/" + formats.MANIFEST)]
    if not manifests:
        raise CaptureError(f"{url}: the store holds no accepted bundle")
    for key in manifests:
        prefix = key.rsplit("/", 1)[0]
        raw = store.get(key)
        try:
            record = Manifest.from_dict(json.loads(raw), key)
        except ValueError:
            raise CaptureError(f"{url}: {key} is not valid JSON") from None
        target = into / _safe(record.session_id, "session id")
        target.mkdir(parents=True)
        (target / formats.MANIFEST).write_bytes(raw)
        for name in record.files:
            with store.open(f"{prefix}/{_safe(name, 'file name')}") as body, \
                    open(target / name, "wb") as out:
                while block := body.read(1 << 20):
                    out.write(block)
        found.session_dirs.append(target)

    def check(receipt_id: str, game: str) -> str | None:
        try:
            status = json.loads(store.get(f"consent/{receipt_id}.json"))
        except KeyError:
            return None
        keys = {g.casefold() for g in status["active_games"]}
        return "active" if game.strip().casefold() in keys else "revoked"

    found.checks.append(check)


@contextmanager
def downloaded(inputs: list[str], into: Path, *, s3_endpoint: str | None = None,
               progress: Callable[[str], None] = lambda _m: None) -> Iterator[Downloaded]:
    """Fetch every collector or store input into `into`; refuse revoked receipts up front."""
    found = Downloaded()
    for text in inputs:
        progress(f"downloading accepted sessions from {text}")
        if text.startswith(("collector+http://", "collector+https://")):
            _from_api(text, into, found)
        else:
            _from_store(text, into, found, s3_endpoint)
    refused = []
    for d in found.session_dirs:
        record = read_manifest(d)
        status = found.consent_status(record.consent.receipt_id, record.game.name)
        if status != "active":
            refused.append(f"session {record.session_id}: consent receipt "
                           f"{record.consent.receipt_id} is {status} at the collector")
    if refused:
        raise ConsentError("refusing to export; nothing was written: " + "; ".join(refused))
    yield found
