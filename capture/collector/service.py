"""The collector's HTTP API (/v1): studies, invites, enrollment, tus uploads, withdrawals."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated, Any, TypeVar

import pydantic
import sqlalchemy as sa
from fastapi import Depends, FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, Field
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError, OperationalError

from capture import __version__, formats
from capture.consent.records import SCOPE_KINDS, entry_hash, game_key, parse_entry
from capture.errors import BadInputError
from capture.session.manifest import Manifest

from . import bundlecheck, db, registry
from .bundlecheck import Rejected
from .store import Store

API = "/v1"
TUS_VERSION = "1.0.0"
TUS_CHECKSUMS = ("sha1", "sha256")
# An instance assembling a bundle holds it this long at most; after that (it died, say) another
# `complete` takes it over. Assembling re-reads every byte, ~2 min for a 1 GiB bundle here.
CLAIM_LEASE = timedelta(minutes=15)
LIVE_STATUSES = ("uploading", "assembling", "accepted")   # count toward quota, reach withdrawals
T = TypeVar("T")


@dataclass(frozen=True)
class Limits:
    """Size caps and lifetimes the collector enforces."""

    max_json_bytes: int = 1 << 20
    max_chunk_bytes: int = 16 << 20
    max_bundle_bytes: int = 16 << 30
    quota_bytes: int = 200 << 30
    invite_days: float = 14.0
    token_days: float = 365.0


@dataclass
class Settings:
    """What one collector process serves from; nothing else is kept between requests."""

    engine: Engine
    store: Store
    admin_token: str
    limits: Limits


# --- errors -----------------------------------------------------------------------------------
class ApiError(Exception):
    """An answer other than success: HTTP status, a short code and the reason in plain words."""

    def __init__(self, status: int, code: str, reason: str, **extra: Any) -> None:
        super().__init__(reason)
        self.status, self.code, self.reason, self.extra = status, code, reason, extra


def _error_response(err: ApiError) -> JSONResponse:
    headers = {"Tus-Resumable": TUS_VERSION}
    if err.status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    return JSONResponse({"error": err.code, "reason": err.reason, **err.extra},
                        status_code=err.status, headers=headers)


# --- request bodies and answers ---------------------------------------------------------------
_Name = pydantic.constr(pattern=r"^[^\x00-\x1f\x7f]{1,200}$")
_StudyId = pydantic.constr(pattern=r"^[a-z0-9][a-z0-9._-]{0,63}$")


class StudyCreate(BaseModel):
    """What the dataset builder asks players for."""

    model_config = pydantic.ConfigDict(extra="forbid")
    id: _StudyId  # type: ignore[valid-type]
    name: _Name  # type: ignore[valid-type]
    terms_text: str = Field(min_length=1, max_length=200_000)
    terms_version: _Name  # type: ignore[valid-type]
    games: list[_Name] = Field(min_length=1, max_length=100)  # type: ignore[valid-type]
    scope: list[str] = Field(min_length=1)
    purposes: list[str] = Field(min_length=1, max_length=20)
    licence: _Name  # type: ignore[valid-type]
    controller_name: _Name  # type: ignore[valid-type]
    controller_contact: _Name  # type: ignore[valid-type]
    retention_days: int = Field(default=365, ge=1, le=36500)


class Study(BaseModel):
    """A published study: exactly what a player is shown and consents to."""

    id: str
    name: str
    terms_text: str
    terms_version: str
    terms_sha256: str
    games: list[str]
    scope: list[str]
    purposes: list[str]
    licence: str
    controller: dict[str, str]
    retention_days: int


class Invite(BaseModel):
    code: str
    study: str
    expires_at: str


class InviteCode(BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")
    code: str = Field(min_length=8, max_length=128)


class Enrollment(BaseModel):
    """The player's answer to an invite: a pseudonym and the grant from their own ledger."""

    model_config = pydantic.ConfigDict(extra="forbid")
    code: str = Field(min_length=8, max_length=128)
    pseudonym: _Name  # type: ignore[valid-type]
    receipt: dict[str, Any]


class Enrolled(BaseModel):
    player_id: str
    device_token: str
    token_expires_at: str
    study: str
    receipt_id: str
    registry_seq: int
    registry_hash: str


class BundleCreate(BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")
    manifest_text: str = Field(min_length=2, max_length=512_000)


class BundleFile(BaseModel):
    name: str
    upload_url: str
    length: int
    offset: int


class BundleState(BaseModel):
    bundle_id: str
    session_id: str
    study: str
    game: str
    status: str  # uploading | assembling | accepted | rejected | withdrawn
    reason: str | None
    total_bytes: int
    received_bytes: int
    files: list[BundleFile]


class RevocationIn(BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")
    entry: dict[str, Any]


class RevocationAck(BaseModel):
    registry_seq: int
    registry_hash: str
    entry_hash: str
    withdrawn: list[dict[str, Any]]
    deleted_sessions: list[str]
    datasets_to_purge: list[str]


class SessionRow(BaseModel):
    bundle_id: str
    study: str
    player_id: str
    session_id: str
    game: str
    receipt_id: str
    total_bytes: int
    accepted_at: str | None
    files: list[str]


class ReceiptStatus(BaseModel):
    receipt_id: str
    status: str  # active | revoked | unknown
    active_games: list[str]


class DatasetCreate(BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")
    study: str
    name: _Name  # type: ignore[valid-type]
    bundle_ids: list[str] = Field(min_length=1, max_length=100_000)


class Dataset(BaseModel):
    dataset_id: str
    name: str
    study: str
    bundles: int


class Purge(BaseModel):
    registry_seq: int
    bundle_id: str
    session_id: str
    dataset_id: str
    dataset_name: str
    created_at: str


class PurgesDone(BaseModel):
    """A dataset no longer holds these sessions (`capture dataset purge --from-collector`)."""

    model_config = pydantic.ConfigDict(extra="forbid")
    dataset_name: str
    session_ids: list[str]


class PurgesMarked(BaseModel):
    marked: int   # pending purges of that dataset now marked done


# --- helpers ----------------------------------------------------------------------------------
def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _iso(value: Any) -> str | None:
    return db.aware(value).strftime("%Y-%m-%dT%H:%M:%SZ") if value is not None else None


def _retrying(engine: Engine, work: Callable[[Connection], T], attempts: int = 8) -> T:
    """Run `work` in one transaction; retry when a concurrent writer won a race."""
    for attempt in range(attempts):
        try:
            with engine.begin() as conn:
                return work(conn)
        except (IntegrityError, OperationalError):
            if attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")


def _study_model(row: Any) -> Study:
    return Study(id=row.id, name=row.name, terms_text=row.terms_text,
                 terms_version=row.terms_version, terms_sha256=row.terms_sha256,
                 games=list(row.games), scope=list(row.scope), purposes=list(row.purposes),
                 licence=row.licence, controller=dict(row.controller),
                 retention_days=row.retention_days)


def bundle_prefix(bundle: Any) -> str:
    return f"bundles/{bundle.study_id}/{bundle.player_id}/{bundle.session_id}"


def _chunk_key(file_id: str, offset: int, sha256: str) -> str:
    return f"uploads/{file_id}/{offset:016d}-{sha256}"


class _Body:
    """ASGI middleware: refuse bodies over the cap (413) before any endpoint sees them."""

    def __init__(self, app: Any, limits: Limits) -> None:
        self.app, self.limits = app, limits

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        is_chunk = scope["method"] == "PATCH" and scope["path"].startswith(f"{API}/uploads/")
        cap = self.limits.max_chunk_bytes if is_chunk else self.limits.max_json_bytes
        headers = dict(scope.get("headers") or [])
        public = scope["path"].startswith(f"{API}/enrollment") or \
            scope["path"] == f"{API}/openapi.json"
        if b"authorization" not in headers and not public:
            # no token: answered before any of the body is read
            await _error_response(ApiError(401, "unauthenticated", "send a token: "
                                           "Authorization: Bearer TOKEN"))(scope, receive, send)
            return
        declared = headers.get(b"content-length")
        too_big = ApiError(413, "too_large", f"the request body is larger than {cap} bytes")
        if declared is not None and (not declared.isdigit() or int(declared) > cap):
            await _error_response(too_big)(scope, receive, send)
            return
        body, more = b"", True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > cap:
                await _error_response(too_big)(scope, receive, send)
                return
        sent = False

        async def replay() -> dict[str, Any]:
            nonlocal sent
            if sent:
                message: dict[str, Any] = await receive()
                return message
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


# --- authentication ---------------------------------------------------------------------------
def _bearer(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(401, "unauthenticated", "send a token: Authorization: Bearer TOKEN")
    return token.strip()


def require_admin(request: Request) -> None:
    settings: Settings = request.app.state.settings
    if not hmac.compare_digest(_bearer(request).encode(), settings.admin_token.encode()):
        raise ApiError(401, "bad_token", "the admin token is wrong")


def require_player(request: Request) -> Any:
    settings: Settings = request.app.state.settings
    digest = token_hash(_bearer(request))
    with settings.engine.connect() as conn:
        row = conn.execute(sa.select(db.players).where(db.players.c.token_hash == digest)).first()
    if row is None:
        raise ApiError(401, "bad_token", "the device token is not known to this collector")
    if db.aware(row.token_expires_at) <= db.now():
        raise ApiError(401, "expired_token", "the device token has expired; enroll again")
    return row


AdminAuth = Annotated[None, Depends(require_admin)]  # checked before the body is read
PlayerAuth = Annotated[Any, Depends(require_player)]


# --- the application --------------------------------------------------------------------------
def create_app(settings: Settings) -> FastAPI:
    app = FastAPI(title="capture collector", version=__version__,
                  description="Collects consented gameplay session bundles from players' "
                              "agents. Every endpoint needs a bearer token: the admin token, "
                              "a player's device token, or (for enrollment) an invite code. "
                              "Uploads follow tus 1.0 (core + checksum extension).",
                  openapi_url=f"{API}/openapi.json", docs_url=None, redoc_url=None)
    engine, store, limits = settings.engine, settings.store, settings.limits
    app.state.settings = settings

    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, err: ApiError) -> JSONResponse:
        return _error_response(err)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, err: RequestValidationError) -> JSONResponse:
        first = err.errors()[0] if err.errors() else {}
        if first.get("type") == "json_invalid":
            return _error_response(ApiError(400, "bad_json",
                                            "the request body is not valid JSON"))
        where = "/".join(str(p) for p in first.get("loc", ()) if p != "body")
        return _error_response(ApiError(422, "invalid", f"{where}: {first.get('msg', 'invalid')}"))

    # -- studies and invites (admin) --
    @app.post(f"{API}/studies", response_model=Study, status_code=201, tags=["admin"])
    def create_study(body: StudyCreate, _admin: AdminAuth) -> Study:
        unknown = [k for k in body.scope if k not in SCOPE_KINDS]
        if unknown:
            raise ApiError(422, "invalid", f"unknown kind {unknown[0]!r} "
                                           f"(choose from {', '.join(SCOPE_KINDS)})")
        values = dict(
            id=body.id, name=body.name, terms_text=body.terms_text,
            terms_version=body.terms_version,
            terms_sha256=hashlib.sha256(body.terms_text.encode("utf-8")).hexdigest(),
            games=list(dict.fromkeys(body.games)),
            scope=[k for k in SCOPE_KINDS if k in body.scope],
            purposes=body.purposes, licence=body.licence,
            controller={"name": body.controller_name, "contact": body.controller_contact},
            retention_days=body.retention_days, created_at=db.now())
        try:
            with engine.begin() as conn:
                conn.execute(db.studies.insert().values(**values))
        except IntegrityError:
            raise ApiError(409, "exists", f"a study named {body.id!r} already exists; studies "
                                          "cannot be changed once published") from None
        return _study_model(_Obj(values))

    @app.get(f"{API}/studies", response_model=list[Study], tags=["admin"])
    def list_studies(_admin: AdminAuth) -> list[Study]:
        with engine.connect() as conn:
            return [_study_model(r) for r in conn.execute(sa.select(db.studies)
                                                          .order_by(db.studies.c.id))]

    @app.post(f"{API}/studies/{{study}}/invites", response_model=Invite, status_code=201,
              tags=["admin"])
    def create_invite(study: str, _admin: AdminAuth) -> Invite:
        # letters and digits only: easy to type, and never read as a command-line option
        code = base64.b32encode(secrets.token_bytes(15)).decode("ascii").lower()
        expires = db.now() + timedelta(days=limits.invite_days)
        with engine.begin() as conn:
            if conn.execute(sa.select(db.studies.c.id).where(db.studies.c.id == study)).first() \
                    is None:
                raise ApiError(404, "no_study", f"there is no study {study!r}")
            conn.execute(db.invites.insert().values(code_hash=token_hash(code), study_id=study,
                                                    created_at=db.now(), expires_at=expires))
        return Invite(code=code, study=study, expires_at=_iso(expires) or "")

    # -- enrollment (invite code) --
    def _invite(conn: Connection, code: str) -> Any:
        row = conn.execute(sa.select(db.invites)
                           .where(db.invites.c.code_hash == token_hash(code))).first()
        if row is None:
            raise ApiError(401, "bad_code", "this invite code is not known to this collector")
        if row.used_at is not None:
            raise ApiError(410, "used_code", "this invite code was already used")
        if db.aware(row.expires_at) <= db.now():
            raise ApiError(410, "expired_code", "this invite code has expired; ask for a new one")
        return row

    @app.post(f"{API}/enrollment/study", response_model=Study, tags=["enrollment"])
    def enrollment_study(body: InviteCode) -> Study:
        with engine.connect() as conn:
            invite = _invite(conn, body.code)
            row = conn.execute(sa.select(db.studies)
                               .where(db.studies.c.id == invite.study_id)).one()
        return _study_model(row)

    @app.post(f"{API}/enrollment", response_model=Enrolled, status_code=201, tags=["enrollment"])
    def enroll(body: Enrollment) -> Enrolled:
        receipt = _checked_entry(body.receipt, "grant")
        token = secrets.token_urlsafe(32)
        player_id = "p-" + secrets.token_hex(8)
        expires = db.now() + timedelta(days=limits.token_days)

        def work(conn: Connection) -> registry.RegistryEntry:
            invite = _invite(conn, body.code)
            study = conn.execute(sa.select(db.studies)
                                 .where(db.studies.c.id == invite.study_id)).one()
            problem = _grant_problem(receipt, study, body.pseudonym)
            if problem:
                raise ApiError(422, "bad_receipt", problem)
            if conn.execute(sa.select(db.receipts.c.receipt_id).where(
                    db.receipts.c.receipt_id == receipt["receipt_id"])).first() is not None:
                raise ApiError(409, "known_receipt", "this consent receipt is already enrolled")
            used = conn.execute(db.invites.update()
                                .where(db.invites.c.code_hash == invite.code_hash,
                                       db.invites.c.used_at.is_(None))
                                .values(used_at=db.now()))
            if used.rowcount != 1:
                raise ApiError(410, "used_code", "this invite code was already used")
            conn.execute(db.players.insert().values(
                id=player_id, study_id=study.id, pseudonym=body.pseudonym,
                token_hash=token_hash(token), created_at=db.now(), token_expires_at=expires))
            line = registry.append(conn, kind="grant", player_id=player_id, entry=receipt)
            conn.execute(db.receipts.insert().values(
                receipt_id=receipt["receipt_id"], player_id=player_id, study_id=study.id,
                terms_sha256=receipt["terms_sha256"], games=list(receipt["games"]),
                scope=list(receipt["scope"]), withdrawn_games=[], entry=receipt,
                registry_seq=line.seq))
            return line

        line = _retrying(engine, work)
        _publish_receipt_status(receipt["receipt_id"])
        return Enrolled(player_id=player_id, device_token=token,
                        token_expires_at=_iso(expires) or "", study=line.entry["study"]["id"],
                        receipt_id=receipt["receipt_id"], registry_seq=line.seq,
                        registry_hash=line.hash)

    # -- bundles (player) --
    def _bundle_state(conn: Connection, bundle: Any) -> BundleState:
        files = conn.execute(sa.select(db.bundle_files)
                             .where(db.bundle_files.c.bundle_id == bundle.id)
                             .order_by(db.bundle_files.c.name)).all()
        return BundleState(
            bundle_id=bundle.id, session_id=bundle.session_id, study=bundle.study_id,
            game=bundle.game, status=bundle.status, reason=bundle.reason,
            total_bytes=bundle.total_bytes, received_bytes=sum(f.offset for f in files),
            files=[BundleFile(name=f.name, upload_url=f"{API}/uploads/{f.id}", length=f.length,
                              offset=f.offset) for f in files])

    def _own_bundle(conn: Connection, player: Any, bundle_id: str) -> Any:
        row = conn.execute(sa.select(db.bundles).where(db.bundles.c.id == bundle_id,
                                                       db.bundles.c.player_id == player.id)
                           ).first()
        if row is None:
            raise ApiError(404, "no_bundle", "no such bundle of yours")
        return row

    def _final(state: BundleState) -> BundleState:
        if state.status == "rejected":
            raise ApiError(422, "rejected", state.reason or "rejected",
                           bundle=state.model_dump())
        if state.status == "withdrawn":
            raise ApiError(410, "withdrawn", state.reason or "consent was withdrawn",
                           bundle=state.model_dump())
        return state

    @app.post(f"{API}/bundles", response_model=BundleState, tags=["upload"])
    def create_bundle(body: BundleCreate,
                      response: Response,
                      player: PlayerAuth) -> BundleState:
        try:
            record = bundlecheck.parse_manifest(body.manifest_text)
        except Rejected as exc:
            raise ApiError(422, "rejected", str(exc)) from None
        session_id = record.session_id
        total = sum(f.bytes for f in record.files.values())

        def work(conn: Connection) -> tuple[BundleState, bool]:
            existing = conn.execute(sa.select(db.bundles).where(
                db.bundles.c.player_id == player.id,
                db.bundles.c.session_id == session_id)).first()
            if existing is not None:
                if existing.manifest_text != body.manifest_text \
                        and existing.status not in ("withdrawn",):
                    raise ApiError(409, "exists",
                                   f"session {session_id} was already uploaded with a different "
                                   "manifest; an uploaded bundle cannot be replaced")
                if existing.status != "withdrawn":
                    return _bundle_state(conn, existing), False
                raise ApiError(410, "withdrawn", existing.reason or "consent was withdrawn")
            reason = (_consent_problem(conn, player, record)
                      or _size_problem(conn, player, total, limits))
            bundle_id = str(uuid.uuid4())
            conn.execute(db.bundles.insert().values(
                id=bundle_id, player_id=player.id, study_id=player.study_id,
                session_id=session_id, receipt_id=record.consent.receipt_id,
                game=record.game.name, status="rejected" if reason else "uploading",
                reason=reason, manifest_text=body.manifest_text, total_bytes=total,
                created_at=db.now(), finished_at=db.now() if reason else None))
            if not reason:
                for name, entry in sorted(record.files.items()):
                    conn.execute(db.bundle_files.insert().values(
                        id=str(uuid.uuid4()), bundle_id=bundle_id, name=name,
                        length=entry.bytes, offset=0, sha256=entry.sha256))
            row = conn.execute(sa.select(db.bundles).where(db.bundles.c.id == bundle_id)).one()
            return _bundle_state(conn, row), True

        state, created = _retrying(engine, work)
        response.status_code = 201 if created else 200
        return _final(state)

    @app.get(f"{API}/bundles", response_model=list[BundleState], tags=["upload"])
    def list_bundles(player: PlayerAuth) -> list[BundleState]:
        with engine.connect() as conn:
            rows = conn.execute(sa.select(db.bundles).where(db.bundles.c.player_id == player.id)
                                .order_by(db.bundles.c.created_at)).all()
            return [_bundle_state(conn, r) for r in rows]

    @app.get(f"{API}/bundles/{{bundle_id}}", response_model=BundleState, tags=["upload"])
    def get_bundle(bundle_id: str, player: PlayerAuth) -> BundleState:
        with engine.connect() as conn:
            return _bundle_state(conn, _own_bundle(conn, player, bundle_id))

    @app.post(f"{API}/bundles/{{bundle_id}}/complete", response_model=BundleState,
              tags=["upload"], responses={202: {
                  "model": BundleState,
                  "description": "Another request is assembling the bundle (status "
                                 "`assembling`): ask again in a moment."}})
    def complete_bundle(bundle_id: str, player: PlayerAuth, response: Response) -> BundleState:
        with engine.connect() as conn:
            bundle = _own_bundle(conn, player, bundle_id)
            state = _bundle_state(conn, bundle)
        if state.status not in ("uploading", "assembling"):
            return _final(state)
        short = [f for f in state.files if f.offset < f.length]
        if short:
            raise ApiError(409, "incomplete", f"{short[0].name} has {short[0].offset} of "
                                              f"{short[0].length} bytes; upload the rest first")
        if not _claim(bundle.id):
            with engine.connect() as conn:
                state = _bundle_state(conn, _own_bundle(conn, player, bundle_id))
            if state.status == "assembling":
                response.status_code = 202
            return _final(state)
        try:
            with engine.connect() as conn:
                reason = _consent_problem(conn, player,
                                          bundlecheck.parse_manifest(bundle.manifest_text))
            if reason:
                raise Rejected(reason)
            _assemble(bundle)
        except Rejected as exc:
            _finish(bundle, "rejected", str(exc))
        else:
            _finish(bundle, "accepted", None)
        with engine.connect() as conn:
            return _final(_bundle_state(conn, _own_bundle(conn, player, bundle_id)))

    def _claim(bundle_id: str) -> bool:
        """Take the bundle for assembly: one request at a time, on any instance, holds it (a
        claim older than CLAIM_LEASE can be taken over)."""
        now = db.now()

        def work(conn: Connection) -> bool:
            taken = conn.execute(db.bundles.update().where(
                db.bundles.c.id == bundle_id,
                sa.or_(db.bundles.c.status == "uploading",
                       sa.and_(db.bundles.c.status == "assembling",
                               db.bundles.c.claimed_at < now - CLAIM_LEASE)))
                .values(status="assembling", claimed_at=now))
            return taken.rowcount == 1

        return _retrying(engine, work)

    def _assemble(bundle: Any) -> None:
        """Concatenate each file's confirmed chunks into its final object, checking SHA-256."""
        record = bundlecheck.parse_manifest(bundle.manifest_text)
        prefix = bundle_prefix(bundle)
        with engine.connect() as conn:
            files = conn.execute(sa.select(db.bundle_files)
                                 .where(db.bundle_files.c.bundle_id == bundle.id)).all()
            chunks = {f.id: conn.execute(sa.select(db.upload_chunks)
                                         .where(db.upload_chunks.c.file_id == f.id)
                                         .order_by(db.upload_chunks.c.offset)).all()
                      for f in files}
        events = b""
        for f in sorted(files, key=lambda f: f.name):
            digest = hashlib.sha256()
            size = 0

            def pieces(f: Any = f, digest: Any = digest) -> Iterator[bytes]:
                nonlocal size, events
                for chunk in chunks[f.id]:
                    data = store.get(_chunk_key(f.id, chunk.offset, chunk.sha256))
                    if hashlib.sha256(data).hexdigest() != chunk.sha256 or \
                            len(data) != chunk.length:
                        raise Rejected(f"{f.name}: a stored chunk at byte {chunk.offset} was "
                                       "damaged in the store")
                    digest.update(data)
                    size += len(data)
                    if f.name == formats.EVENTS_TABLE:
                        events += data
                    yield data

            store.put_stream(f"{prefix}/{f.name}", pieces())
            if size != f.length or digest.hexdigest() != f.sha256:
                store.delete_prefix(prefix)
                raise Rejected(f"{f.name} does not match the manifest: its SHA-256 is "
                               f"{digest.hexdigest()}, the manifest says {f.sha256}")
        kinds = bundlecheck.kinds_in_bundle(record, events)
        with engine.connect() as conn:
            receipt = conn.execute(sa.select(db.receipts).where(
                db.receipts.c.receipt_id == bundle.receipt_id)).one()
        missing = sorted(kinds - set(receipt.scope))
        if missing:
            store.delete_prefix(prefix)
            raise Rejected(f"the bundle holds {', '.join(missing)} data, which the consent "
                           f"receipt does not cover (it covers {', '.join(receipt.scope)})")
        store.put(f"{prefix}/{formats.MANIFEST}", bundle.manifest_text.encode("utf-8"))

    def _finish(bundle: Any, status: str, reason: str | None) -> None:
        with engine.begin() as conn:
            conn.execute(db.bundles.update().where(db.bundles.c.id == bundle.id,
                                                   db.bundles.c.status == "assembling")
                         .values(status=status, reason=reason, finished_at=db.now()))
            current = conn.execute(sa.select(db.bundles.c.status)
                                   .where(db.bundles.c.id == bundle.id)).scalar_one()
            file_ids = list(conn.execute(sa.select(db.bundle_files.c.id).where(
                db.bundle_files.c.bundle_id == bundle.id)).scalars())
        if current != "accepted":
            store.delete_prefix(bundle_prefix(bundle))
        for file_id in file_ids:
            store.delete_prefix(f"uploads/{file_id}")

    # -- tus 1.0 (core + checksum) --
    def _tus_headers(**extra: str) -> dict[str, str]:
        return {"Tus-Resumable": TUS_VERSION, "Cache-Control": "no-store", **extra}

    def _own_upload(conn: Connection, player: Any, upload_id: str) -> tuple[Any, Any]:
        row = conn.execute(sa.select(db.bundle_files, db.bundles.c.status,
                                     db.bundles.c.reason, db.bundles.c.player_id)
                           .join(db.bundles, db.bundles.c.id == db.bundle_files.c.bundle_id)
                           .where(db.bundle_files.c.id == upload_id)).first()
        if row is None or row.player_id != player.id:
            raise ApiError(404, "no_upload", "no such upload of yours")
        return row, row.status

    @app.options(f"{API}/uploads", tags=["upload"], status_code=204)
    def tus_options(_player: PlayerAuth) -> Response:
        return Response(status_code=204, headers=_tus_headers(
            **{"Tus-Version": TUS_VERSION, "Tus-Extension": "checksum",
               "Tus-Checksum-Algorithm": ",".join(TUS_CHECKSUMS),
               "Tus-Max-Size": str(limits.max_bundle_bytes)}))

    @app.head(f"{API}/uploads/{{upload_id}}", tags=["upload"])
    def tus_head(upload_id: str, player: PlayerAuth) -> Response:
        with engine.connect() as conn:
            row, _status = _own_upload(conn, player, upload_id)
        return Response(status_code=200, headers=_tus_headers(
            **{"Upload-Offset": str(row.offset), "Upload-Length": str(row.length)}))

    @app.patch(f"{API}/uploads/{{upload_id}}", tags=["upload"], status_code=204,
               openapi_extra={"requestBody": {"required": True, "content": {
                   "application/offset+octet-stream": {"schema": {"type": "string",
                                                                  "format": "binary"}}}}})
    async def tus_patch(upload_id: str,
                        request: Request,
                        player: PlayerAuth) -> Response:
        if request.headers.get("tus-resumable") != TUS_VERSION:
            raise ApiError(412, "tus_version", f"send Tus-Resumable: {TUS_VERSION}")
        if request.headers.get("content-type") != "application/offset+octet-stream":
            raise ApiError(415, "content_type",
                           "a chunk must be sent as application/offset+octet-stream")
        offset_text = request.headers.get("upload-offset", "")
        if not offset_text.isdigit():
            raise ApiError(400, "no_offset", "send Upload-Offset: the byte this chunk starts at")
        offset = int(offset_text)
        algorithm, _, encoded = request.headers.get("upload-checksum", "").partition(" ")
        if algorithm not in TUS_CHECKSUMS:
            raise ApiError(400, "no_checksum",
                           f"send Upload-Checksum with one of {', '.join(TUS_CHECKSUMS)}: this "
                           "collector takes only checksummed chunks")
        try:
            expected = base64.b64decode(encoded, validate=True)
        except ValueError:
            raise ApiError(400, "bad_checksum", "Upload-Checksum is not base64") from None
        data = await request.body()
        if hashlib.new(algorithm, data).digest() != expected:
            raise ApiError(460, "checksum_mismatch",
                           f"the chunk at byte {offset} does not match its {algorithm} checksum "
                           "(damaged in transit); send it again")
        with engine.connect() as conn:
            row, status = _own_upload(conn, player, upload_id)
        if status != "uploading":
            raise ApiError(409 if status in ("accepted", "assembling") else 410, status,
                           f"the bundle is already {status}" +
                           (f": {row.reason}" if row.reason else ""))
        if offset != row.offset:
            raise ApiError(409, "offset_mismatch",
                           f"this upload is at byte {row.offset}, not {offset}; resume from "
                           f"{row.offset}", offset=row.offset)
        if offset + len(data) > row.length:
            raise ApiError(400, "too_long", f"the chunk runs past the file's {row.length} bytes")
        if not data:
            return Response(status_code=204,
                            headers=_tus_headers(**{"Upload-Offset": str(row.offset)}))
        digest = hashlib.sha256(data).hexdigest()
        store.put(_chunk_key(upload_id, offset, digest), data)

        def advance(conn: Connection) -> int:
            moved = conn.execute(db.bundle_files.update()
                                 .where(db.bundle_files.c.id == upload_id,
                                        db.bundle_files.c.offset == offset)
                                 .values(offset=offset + len(data)))
            if moved.rowcount != 1:
                return -1
            conn.execute(db.upload_chunks.insert().values(file_id=upload_id, offset=offset,
                                                          length=len(data), sha256=digest))
            return offset + len(data)

        new_offset = _retrying(engine, advance)
        if new_offset < 0:
            raise ApiError(409, "offset_mismatch", "another request moved this upload on; ask "
                                                   "for its offset (HEAD) and resume from there")
        return Response(status_code=204,
                        headers=_tus_headers(**{"Upload-Offset": str(new_offset)}))

    # -- withdrawal (player) --
    @app.post(f"{API}/revocations", response_model=RevocationAck, tags=["withdrawal"])
    def revoke(body: RevocationIn, player: PlayerAuth) -> RevocationAck:
        entry = _checked_entry(body.entry, "revoke")
        if entry["player"] != player.pseudonym:
            raise ApiError(403, "not_yours", "this revocation is by another player")

        def work(conn: Connection) -> tuple[RevocationAck, list[Any]]:
            known = conn.execute(sa.select(db.registry).where(
                db.registry.c.entry_receipt_id == entry["receipt_id"])).first()
            if known is not None:
                same = known.hash and json.loads(known.body)["entry"]["hash"] == entry["hash"]
                raise ApiError(409, "already_recorded" if same else "replayed",
                               f"this revocation was already recorded (registry entry "
                               f"{known.seq}); nothing changed" if same else
                               "a different entry with this receipt id was already recorded; "
                               "nothing changed",
                               registry_seq=known.seq, registry_hash=known.hash,
                               entry_hash=entry["hash"])
            targets = []
            for item in entry["withdrawn"]:
                receipt = conn.execute(sa.select(db.receipts).where(
                    db.receipts.c.receipt_id == item["receipt_id"])).first()
                if receipt is None or receipt.player_id != player.id:
                    raise ApiError(403, "not_yours", f"receipt {item['receipt_id']} is not one "
                                                     "of your enrolled consents")
                unknown = [g for g in item["games"]
                           if game_key(g) not in {game_key(x) for x in receipt.games}]
                if unknown:
                    raise ApiError(422, "bad_revocation", f"receipt {item['receipt_id']} does "
                                                          f"not list {unknown[0]!r}")
                targets.append((receipt, item["games"]))
            line = registry.append(conn, kind="revoke", player_id=player.id, entry=entry)
            deleted: list[Any] = []
            purge_names: list[str] = []
            for receipt, games in targets:
                gone = list(dict.fromkeys([*receipt.withdrawn_games, *games]))
                conn.execute(db.receipts.update()
                             .where(db.receipts.c.receipt_id == receipt.receipt_id)
                             .values(withdrawn_games=gone))
                keys = {game_key(g) for g in games}
                for bundle in conn.execute(sa.select(db.bundles).where(
                        db.bundles.c.receipt_id == receipt.receipt_id,
                        db.bundles.c.player_id == player.id,
                        db.bundles.c.status.in_(LIVE_STATUSES))).all():
                    if game_key(bundle.game) not in keys:
                        continue
                    conn.execute(db.bundles.update().where(db.bundles.c.id == bundle.id)
                                 .values(status="withdrawn", finished_at=db.now(),
                                         reason=f"consent was withdrawn (registry entry "
                                                f"{line.seq}); the bundle was deleted"))
                    deleted.append(bundle)
                    for ds in conn.execute(
                            sa.select(db.datasets)
                            .join(db.dataset_bundles,
                                  db.dataset_bundles.c.dataset_id == db.datasets.c.id)
                            .where(db.dataset_bundles.c.bundle_id == bundle.id)).all():
                        conn.execute(db.purges.insert().values(
                            registry_seq=line.seq, bundle_id=bundle.id,
                            session_id=bundle.session_id, dataset_id=ds.id,
                            dataset_name=ds.name, created_at=db.now()))
                        purge_names.append(ds.name)
            ack = RevocationAck(registry_seq=line.seq, registry_hash=line.hash,
                                entry_hash=entry["hash"], withdrawn=entry["withdrawn"],
                                deleted_sessions=[b.session_id for b in deleted],
                                datasets_to_purge=list(dict.fromkeys(purge_names)))
            return ack, deleted

        ack, deleted = _retrying(engine, work)
        for item in entry["withdrawn"]:
            _publish_receipt_status(item["receipt_id"])
        for bundle in deleted:
            _delete_bundle_objects(bundle)
        return ack

    def _delete_bundle_objects(bundle: Any) -> None:
        store.delete_prefix(bundle_prefix(bundle))
        with engine.connect() as conn:
            for file_id in conn.execute(sa.select(db.bundle_files.c.id).where(
                    db.bundle_files.c.bundle_id == bundle.id)).scalars():
                store.delete_prefix(f"uploads/{file_id}")

    def _receipt_status(receipt_id: str) -> ReceiptStatus:
        with engine.connect() as conn:
            row = conn.execute(sa.select(db.receipts)
                               .where(db.receipts.c.receipt_id == receipt_id)).first()
        if row is None:
            return ReceiptStatus(receipt_id=receipt_id, status="unknown", active_games=[])
        gone = {game_key(g) for g in row.withdrawn_games}
        active = [g for g in row.games if game_key(g) not in gone]
        return ReceiptStatus(receipt_id=receipt_id,
                             status="revoked" if gone else "active", active_games=active)

    def _publish_receipt_status(receipt_id: str) -> None:
        """The store holds each receipt's status too, so exports straight from it can check."""
        status = _receipt_status(receipt_id)
        store.put(f"consent/{receipt_id}.json", status.model_dump_json().encode("utf-8"))

    # -- builder's views (admin) --
    @app.get(f"{API}/admin/sessions", response_model=list[SessionRow], tags=["admin"])
    def admin_sessions(_admin: AdminAuth, study: str | None = None) -> list[SessionRow]:
        query = sa.select(db.bundles).where(db.bundles.c.status == "accepted")
        if study is not None:
            query = query.where(db.bundles.c.study_id == study)
        with engine.connect() as conn:
            rows = conn.execute(query.order_by(db.bundles.c.finished_at)).all()
            out = []
            for r in rows:
                names = conn.execute(sa.select(db.bundle_files.c.name).where(
                    db.bundle_files.c.bundle_id == r.id)).scalars()
                out.append(SessionRow(bundle_id=r.id, study=r.study_id, player_id=r.player_id,
                                      session_id=r.session_id, game=r.game,
                                      receipt_id=r.receipt_id, total_bytes=r.total_bytes,
                                      accepted_at=_iso(r.finished_at),
                                      files=[formats.MANIFEST, *sorted(names)]))
        return out

    @app.get(f"{API}/admin/bundles/{{bundle_id}}/files/{{name}}", tags=["admin"],
             response_class=StreamingResponse)
    def admin_file(bundle_id: str,
                   name: str,
                   _admin: AdminAuth) -> StreamingResponse:
        if not bundlecheck.SAFE_NAME.match(name):
            raise ApiError(400, "bad_name", f"{name!r} is not a safe file name")
        with engine.connect() as conn:
            bundle = conn.execute(sa.select(db.bundles)
                                  .where(db.bundles.c.id == bundle_id)).first()
        if bundle is None or bundle.status != "accepted":
            raise ApiError(404, "no_bundle", "no accepted bundle has this id")
        try:
            body = store.open(f"{bundle_prefix(bundle)}/{name}")
        except KeyError:
            raise ApiError(404, "no_file", f"the bundle has no file {name!r}") from None

        def stream() -> Iterator[bytes]:
            try:
                while block := body.read(1 << 20):
                    yield block
            finally:
                body.close()

        return StreamingResponse(stream(), media_type="application/octet-stream")

    @app.get(f"{API}/admin/receipts/{{receipt_id}}", response_model=ReceiptStatus,
             tags=["admin"])
    def admin_receipt(receipt_id: str, _admin: AdminAuth) -> ReceiptStatus:
        return _receipt_status(receipt_id)

    @app.post(f"{API}/admin/datasets", response_model=Dataset, status_code=201, tags=["admin"])
    def admin_dataset(body: DatasetCreate, _admin: AdminAuth) -> Dataset:
        dataset_id = str(uuid.uuid4())
        with engine.begin() as conn:
            found = set(conn.execute(sa.select(db.bundles.c.id).where(
                db.bundles.c.id.in_(body.bundle_ids),
                db.bundles.c.study_id == body.study)).scalars())
            missing = [b for b in body.bundle_ids if b not in found]
            if missing:
                raise ApiError(404, "no_bundle", f"no bundle {missing[0]} in study {body.study}")
            conn.execute(db.datasets.insert().values(id=dataset_id, study_id=body.study,
                                                     name=body.name, created_at=db.now()))
            for bundle_id in dict.fromkeys(body.bundle_ids):
                conn.execute(db.dataset_bundles.insert().values(dataset_id=dataset_id,
                                                                bundle_id=bundle_id))
        return Dataset(dataset_id=dataset_id, name=body.name, study=body.study,
                       bundles=len(set(body.bundle_ids)))

    @app.get(f"{API}/admin/purges", response_model=list[Purge], tags=["admin"])
    def admin_purges(_admin: AdminAuth) -> list[Purge]:
        with engine.connect() as conn:
            rows = conn.execute(sa.select(db.purges).where(db.purges.c.done_at.is_(None))
                                .order_by(db.purges.c.id)).all()
        return [Purge(registry_seq=r.registry_seq, bundle_id=r.bundle_id,
                      session_id=r.session_id, dataset_id=r.dataset_id,
                      dataset_name=r.dataset_name, created_at=_iso(r.created_at) or "")
                for r in rows]

    @app.post(f"{API}/admin/purges/done", response_model=PurgesMarked, tags=["admin"])
    def admin_purges_done(body: PurgesDone, _admin: AdminAuth) -> PurgesMarked:
        """The builder purged these sessions from the dataset: they leave the pending list."""
        with engine.begin() as conn:
            marked = conn.execute(db.purges.update().where(
                db.purges.c.dataset_name == body.dataset_name,
                db.purges.c.session_id.in_(body.session_ids),
                db.purges.c.done_at.is_(None)).values(done_at=db.now()))
        return PurgesMarked(marked=marked.rowcount)

    @app.get(f"{API}/admin/registry", tags=["admin"])
    def admin_registry(_admin: AdminAuth) -> dict[str, Any]:
        with engine.connect() as conn:
            lines = registry.entries(conn)
            problems = registry.verify(conn)
        return {"entries": [line.__dict__ for line in lines], "problems": problems}

    app.add_middleware(_Body, limits=limits)
    app.state.sweep = lambda: _sweep(engine, store)
    return app


class _Obj:
    """Attribute access over a dict (a freshly inserted row)."""

    def __init__(self, values: dict[str, Any]) -> None:
        self.__dict__.update(values)


def _checked_entry(obj: dict[str, Any], kind: str) -> dict[str, Any]:
    """A ledger entry of `kind` whose content hashes to its `hash`; 400/422 otherwise."""
    try:
        formats.validate_json(obj, formats.CONSENT_RECORD_SCHEMA, "entry")
        parse_entry(obj)
    except (BadInputError, pydantic.ValidationError) as exc:
        problem = exc.problem if isinstance(exc, BadInputError) else exc.errors()[0]["msg"]
        raise ApiError(422, "bad_entry", f"not a consent ledger entry: {problem}") from None
    if obj.get("kind") != kind:
        raise ApiError(422, "bad_entry", f"expected a {kind!r} entry, got {obj.get('kind')!r}")
    if entry_hash(obj) != obj["hash"]:
        raise ApiError(400, "forged", "the entry's hash does not match its content: it was "
                                      "altered after it was written; nothing changed")
    return obj


def _grant_problem(receipt: dict[str, Any], study: Any, pseudonym: str) -> str | None:
    """Why a grant does not fit the study it is enrolled in (None if it does)."""
    bound = receipt.get("study") or {}
    if bound.get("id") != study.id:
        return f"the consent was not given to study {study.id!r}"
    if receipt["terms_sha256"] != study.terms_sha256:
        return "the consent was given to other terms than the study's (terms SHA-256 differs)"
    study_games = {game_key(g) for g in study.games}
    extra = [g for g in receipt["games"] if game_key(g) not in study_games]
    if extra:
        return f"game {extra[0]!r} is not one of the study's games"
    extra_kinds = [k for k in receipt["scope"] if k not in study.scope]
    if extra_kinds:
        return f"kind {extra_kinds[0]!r} is not one the study collects"
    if receipt["player"] != pseudonym:
        return "the consent names another player than the pseudonym given"
    return None


def _consent_problem(conn: Connection, player: Any, record: Manifest) -> str | None:
    """Why the collector's registry does not allow this bundle (None if it does)."""
    receipt_id = record.consent.receipt_id
    receipt = conn.execute(sa.select(db.receipts)
                           .where(db.receipts.c.receipt_id == receipt_id)).first()
    if receipt is None or receipt.player_id != player.id:
        return (f"consent receipt {receipt_id} was not recorded by this collector when you "
                "enrolled")
    study = conn.execute(sa.select(db.studies).where(db.studies.c.id == receipt.study_id)).one()
    if receipt.terms_sha256 != study.terms_sha256:
        return "the consent receipt is for other terms than the study's"
    game = record.game.name
    if game_key(game) not in {game_key(g) for g in study.games}:
        return f"game {game!r} is not one of study {study.id!r}'s games"
    if game_key(game) not in {game_key(g) for g in receipt.games}:
        return f"the consent receipt does not cover game {game!r}"
    if game_key(game) in {game_key(g) for g in receipt.withdrawn_games}:
        return (f"consent for {game!r} under receipt {receipt_id} was withdrawn; the collector "
                "accepts nothing more under it")
    missing = [k for k in record.consent.scope if k not in receipt.scope]
    if missing:
        return (f"the session was recorded with {', '.join(missing)}, which the consent "
                "receipt does not cover")
    if record.player != player.pseudonym:
        return "the session was recorded by another player than the one enrolled"
    return None


def _size_problem(conn: Connection, player: Any, total: int, limits: Limits) -> str | None:
    """Why the bundle is too big for the collector's limits (None if it fits)."""
    if total > limits.max_bundle_bytes:
        return (f"the bundle is {total} bytes; this collector takes at most "
                f"{limits.max_bundle_bytes} bytes per bundle")
    used = conn.execute(sa.select(sa.func.coalesce(sa.func.sum(db.bundles.c.total_bytes), 0))
                        .where(db.bundles.c.player_id == player.id,
                               db.bundles.c.status.in_(LIVE_STATUSES))).scalar_one()
    if used + total > limits.quota_bytes:
        return (f"your quota is {limits.quota_bytes} bytes and {used} are used; this bundle of "
                f"{total} bytes does not fit")
    return None


def _sweep(engine: Engine, store: Store) -> int:
    """Delete the stored objects of withdrawn bundles (a crash may have left some); count them."""
    deleted = 0
    with engine.connect() as conn:
        rows = conn.execute(sa.select(db.bundles).where(db.bundles.c.status == "withdrawn")).all()
    for bundle in rows:
        deleted += store.delete_prefix(bundle_prefix(bundle))
    return deleted
