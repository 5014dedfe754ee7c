"""The agent's page on 127.0.0.1 behind a token; stdlib http.server, as ~10 routes need no more."""

from __future__ import annotations

import hmac
import json
import logging
import re
import secrets
import threading
import webbrowser
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

from capture import consent, paths
from capture.consent import records, terms
from capture.consent.commands import _games_to_delete  # which sessions a withdrawal deletes
from capture.errors import BadInputError, CaptureError
from capture.session import store
from capture.session.manifest import read_manifest
from capture.session.reader import needs_recovery

from .media import MediaCache, MediaUnavailable

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
TOKEN_HEADER = "X-Capture-Token"
MAX_BODY = 64 * 1024
WEB_METHOD = "agent-web"  # the consent ledger's collection method for grants made on the page
STATIC_FILES = {"/app.js": "text/javascript", "/style.css": "text/css",
                "/icon.svg": "image/svg+xml"}
SECURITY_HEADERS = {
    "Content-Security-Policy": ("default-src 'self'; base-uri 'none'; form-action 'self'; "
                                "frame-ancestors 'none'; object-src 'none'"),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cache-Control": "no-store",
}
_SESSION_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,199}$")
_MEDIA_ROUTE = re.compile(r"^/api/(thumbnail|preview)/([^/]+)$")


class AgentView(Protocol):
    """What the page needs from the running agent."""

    def status(self) -> dict[str, Any]:
        """{"state": "idle"|"waiting"|"recording"|"paused"|"stopping", "game": str|None,
            "reason": str (plain words: "minetest is focused", "paused: another window has focus",
            "paused: no input for 30 s", "no consented game is running"), "backend": {"name": str,
            "state": str, "detail": str}, "session_id": str|None, "segment": int|None,
            "since_utc": str|None, "last_segment_checks": list[dict]|None}"""
        ...

    def consent_changed(self) -> None:
        """Called after the page grants or revokes consent (the agent re-reads the ledger and
        stops recording a game whose consent was revoked)."""
        ...


class HttpError(Exception):
    """A request the page answers with a 4xx and {"error": "plain words"}."""

    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class WebServer:
    """Serves the page and its JSON API on 127.0.0.1 only; every request must carry the token."""

    def __init__(self, agent: AgentView, *, port: int = 0, token: str | None = None,
                 media: MediaCache | None = None) -> None:
        self.agent = agent
        self.token = token if token is not None else secrets.token_urlsafe(24)
        if len(self.token) < 16:
            raise CaptureError("the page token must be at least 16 characters")
        self.media = media if media is not None else MediaCache()
        try:
            self._httpd = _Server((HOST, port), _Handler)
        except OSError as exc:
            raise CaptureError(f"cannot serve the page on {HOST}:{port} ({exc.strerror})") from None
        self._httpd.app = self
        self.port: int = self._httpd.server_address[1]
        self.allowed_hosts = {f"127.0.0.1:{self.port}", f"localhost:{self.port}"}
        self.allowed_origins = {f"http://{h}" for h in self.allowed_hosts}
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The address to open: http://127.0.0.1:PORT/?token=..."""
        return f"http://{HOST}:{self.port}/?token={self.token}"

    @property
    def address(self) -> tuple[str, int]:
        """(host, port) the socket is bound to: always 127.0.0.1."""
        host, port = self._httpd.socket.getsockname()[:2]
        return str(host), int(port)

    def start(self) -> None:
        """Serve in a background thread until stop()."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="capture-web",
                                        kwargs={"poll_interval": 0.2}, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and close the socket."""
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._httpd.server_close()

    def open_browser(self) -> bool:
        """Open the page in the player's browser; False if no browser could be started."""
        try:
            return webbrowser.open(self.url)
        except webbrowser.Error:
            return False

    def __enter__(self) -> WebServer:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    # --- API ----------------------------------------------------------------------------------
    def api_status(self) -> dict[str, Any]:
        try:
            status = dict(self.agent.status())
        except Exception as exc:  # the page must keep working while the agent misbehaves
            log.exception("agent status failed")
            return {"state": "unknown", "game": None,
                    "reason": f"the agent did not report its state ({exc})"}
        status["last_segment_checks"] = normalise_checks(status.get("last_segment_checks"))
        return status

    def api_consent(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "terms": {"version": terms.TERMS_VERSION, "sha256": terms.terms_sha256(),
                      "text": terms.terms_text()},
            "scope_kinds": list(records.SCOPE_KINDS),
            "scope_descriptions": terms.SCOPE_DESCRIPTIONS,
            "sensitive_scope": sorted(records.SENSITIVE_SCOPE_KINDS),
            "defaults": {"license": records.DEFAULT_LICENSE,
                         "purposes": list(records.DEFAULT_PURPOSES)},
            "controller": {"name": records.DEFAULT_CONTROLLER_NAME,
                           "contact": records.DEFAULT_CONTROLLER_CONTACT},
            "data_dir": str(paths.data_dir()),
            "active": [], "history": [], "problem": None,
        }
        try:
            out["active"] = [_grant_view(r) for r in consent.active_grants()]
            out["history"] = [_entry_view(e) for e in consent.all_entries()]
        except CaptureError as exc:
            out["problem"] = f"the consent ledger cannot be read: {exc}"
        return out

    def api_grant(self, body: dict[str, Any]) -> dict[str, Any]:
        if body.get("agreed") is not True:
            raise HttpError(HTTPStatus.BAD_REQUEST,
                            "tick the box saying you have read and agree to the terms")
        if (body.get("terms_version"), body.get("terms_sha256")) != \
                (terms.TERMS_VERSION, terms.terms_sha256()):
            raise HttpError(HTTPStatus.CONFLICT, "the terms changed since this page was loaded: "
                            "reload the page and read them again")
        purposes = body.get("purposes")
        if purposes is not None:
            purposes = _str_list(purposes, "purposes")
        license_ = body.get("license") or records.DEFAULT_LICENSE
        if not isinstance(license_, str):
            raise HttpError(HTTPStatus.BAD_REQUEST, "the licence must be text")
        scope = _str_list(body.get("scope"), "scope")
        try:
            receipt = consent.grant(_text(body.get("player"), "player"),
                                    _str_list(body.get("games"), "games"), scope,
                                    purposes=purposes or None, license=license_,
                                    method=WEB_METHOD)
        except CaptureError as exc:
            raise HttpError(HTTPStatus.BAD_REQUEST, str(exc)) from None
        return {"receipt": _grant_view(receipt), "warning": self._tell_agent()}

    def api_revoke(self, body: dict[str, Any]) -> dict[str, Any]:
        player = _text(body.get("player"), "player").strip()
        games = _str_list(body["games"], "games") if body.get("games") else []
        receipt_id = body.get("receipt_id")
        if receipt_id is not None and not isinstance(receipt_id, str):
            raise HttpError(HTTPStatus.BAD_REQUEST, "receipt_id must be text")
        try:
            revocation = consent.withdraw(player, games or None, receipt_id, method=WEB_METHOD)
        except BadInputError as exc:  # damaged ledger: still delete what the player asked for
            deleted = [] if receipt_id and not games else self._delete_of(player, games or None)
            raise HttpError(HTTPStatus.CONFLICT,
                            f"the withdrawal could not be recorded because the consent ledger is "
                            f"damaged ({exc}); {len(deleted)} local session(s) were deleted "
                            f"anyway") from None
        except CaptureError as exc:
            raise HttpError(HTTPStatus.BAD_REQUEST, str(exc)) from None
        warning = self._tell_agent() if revocation is not None else None
        to_delete, kept = _games_to_delete(player, tuple(games), receipt_id, revocation)
        deleted = [] if to_delete == [] else self._delete_of(player, to_delete)
        withdrawn = ([{"receipt_id": w.receipt_id, "games": list(w.games)}
                      for w in revocation.withdrawn] if revocation is not None else [])
        return {"withdrawn": withdrawn, "deleted": deleted, "kept_games": kept,
                "warning": warning}

    def api_sessions(self) -> dict[str, Any]:
        summaries = store.list_sessions()
        self.media.prune(s.path.name for s in summaries)
        return {"sessions": [_session_view(s) for s in reversed(summaries)],
                "data_dir": str(paths.sessions_dir())}

    def api_delete(self, body: dict[str, Any]) -> dict[str, Any]:
        session_dir = find_session(body.get("id"))
        try:
            manifest = read_manifest(session_dir)
        except BadInputError:
            manifest = None  # an unreadable session can still be deleted
        if manifest is not None and manifest.status == "recording" \
                and not needs_recovery(session_dir):
            raise HttpError(HTTPStatus.CONFLICT, "this session is still being recorded; it can "
                            "be deleted once recording stops")
        try:
            store.delete_session(session_dir)
        except CaptureError as exc:
            raise HttpError(HTTPStatus.CONFLICT, str(exc)) from None
        self.media.forget(session_dir.name)
        return {"deleted": [session_dir.name]}

    def media_file(self, kind: str, name: str) -> Path:
        session_dir = find_session(name)
        try:
            manifest = read_manifest(session_dir)
            if kind == "thumbnail":
                return self.media.thumbnail(session_dir, manifest)
            return self.media.preview(session_dir, manifest)
        except MediaUnavailable as exc:
            raise HttpError(HTTPStatus.NOT_FOUND, exc.problem) from None
        except CaptureError as exc:
            raise HttpError(HTTPStatus.NOT_FOUND, str(exc)) from None

    def _delete_of(self, player: str, games: list[str] | None) -> list[str]:
        deleted = store.delete_sessions_of(player, games)
        for d in deleted:
            self.media.forget(d.name)
        return [d.name for d in deleted]

    def _tell_agent(self) -> str | None:
        try:
            self.agent.consent_changed()
        except Exception as exc:
            log.exception("agent consent_changed failed")
            return f"the consent ledger was updated, but the agent did not take it up ({exc})"
        return None


# --- views of ledger entries and sessions --------------------------------------------------------
def _grant_view(r: consent.ConsentReceipt) -> dict[str, Any]:
    return {"receipt_id": r.receipt_id, "player": r.player, "games": list(r.games),
            "scope": list(r.scope), "timestamp": r.timestamp, "method": r.method,
            "license": r.license, "terms_version": r.terms_version,
            "terms_sha256": r.terms_sha256, "synthetic": r.synthetic}


def _entry_view(e: consent.ConsentReceipt | consent.Revocation) -> dict[str, Any]:
    if isinstance(e, consent.ConsentReceipt):
        return {"kind": "grant", **_grant_view(e)}
    return {"kind": "revoke", "receipt_id": e.receipt_id, "player": e.player,
            "timestamp": e.timestamp, "method": e.method,
            "withdrawn": [{"receipt_id": w.receipt_id, "games": list(w.games)}
                          for w in e.withdrawn]}


def _session_view(s: store.SessionSummary) -> dict[str, Any]:
    row = s.to_dict()
    m = s.manifest
    qa = m.qa if m is not None else None
    name = s.path.name
    media_problem = None
    if m is not None and m.status == "recording":
        media_problem = "still being recorded"
    elif not (qa and qa.frames):
        media_problem = "nothing was captured"
    return {
        "id": name, "session_id": row["id"], "game": row["game"], "player": row["player"],
        "start": row["start"], "duration_s": row["duration_s"], "frames": row["frames"],
        "status": row["status"], "problem": row["problem"], "segments": row.get("segments"),
        "run": m.run.to_dict() if m is not None and m.run is not None else None,
        "checks": normalise_checks([c.to_dict() for c in qa.checks]) if qa else None,
        "stats": {k: getattr(qa, k) if qa else None
                  for k in ("fps_achieved", "dropped_frames", "repeated_frames", "focused_s",
                            "idle_s")},
        "inputs": qa.input_total if qa else 0,
        "notes": list(qa.notes) if qa else [],
        "thumbnail": None if media_problem else f"/api/thumbnail/{name}",
        "preview": None if media_problem else f"/api/preview/{name}",
        "media_problem": media_problem,
    }


def normalise_checks(raw: Any) -> list[dict[str, str]] | None:
    """Record-time checks for the page: [{"name", "level": "ok"|"warning"|"error", "detail"}].

    Takes checks as capture.session.checks writes them ({"name", "ok", "value", "detail"}): a
    failed check is a warning; an explicit "level" is kept. None if there are no checks.
    """
    if not isinstance(raw, list):
        return None
    out = []
    for check in (c for c in raw if isinstance(c, dict)):
        level = check.get("level")
        if level not in ("ok", "warning", "error"):
            level = "ok" if check.get("ok") is True else "warning"
        out.append({"name": str(check.get("name", "?")), "level": level,
                    "detail": str(check.get("detail") or "")})
    return out


def find_session(name: Any) -> Path:
    """The session directory named exactly `name` (never a path or a prefix)."""
    if not isinstance(name, str) or not _SESSION_NAME.match(name):
        raise HttpError(HTTPStatus.BAD_REQUEST, "give a session id")
    for d in store.session_dirs():
        if d.name == name:
            return d
    raise HttpError(HTTPStatus.NOT_FOUND, f"no session called {name!r}")


def _text(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise HttpError(HTTPStatus.BAD_REQUEST, f"the {what} must not be empty")
    return value


def _str_list(value: Any, what: str) -> list[str]:
    """A list of strings from a list or a comma-separated string."""
    if isinstance(value, str):
        value = value.split(",")
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise HttpError(HTTPStatus.BAD_REQUEST, f"{what} must be a list of words")
    return [v.strip() for v in value if v.strip()]


# --- HTTP plumbing ---------------------------------------------------------------------------
class _Server(ThreadingHTTPServer):
    daemon_threads = True
    app: WebServer


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "capture-agent"
    sys_version = ""
    timeout = 30
    protocol_version = "HTTP/1.1"

    # -- dispatch
    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def _refuse_method(self) -> None:
        self._handle(self.command)

    do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_HEAD = _refuse_method

    def _handle(self, method: str) -> None:
        app = self.server.app
        try:
            url = urlsplit(self.path)
            self._check_host(app)
            self._check_token(app, url.query, method)
            if method == "GET":
                self._get(app, url.path)
            elif method == "POST":
                self._check_origin(app)
                self._send_json(self._post(app, url.path, self._read_json()))
            else:
                raise HttpError(HTTPStatus.METHOD_NOT_ALLOWED, f"{method} is not supported")
        except HttpError as exc:
            self.close_connection = True  # a refused request may leave its body unread
            self._send_json({"error": exc.message}, exc.status)
        except Exception as exc:
            log.exception("page request failed")
            self._send_json({"error": f"the agent failed to answer ({type(exc).__name__}: "
                                      f"{exc})"}, HTTPStatus.INTERNAL_SERVER_ERROR)

    def _get(self, app: WebServer, path: str) -> None:
        if path in ("/", "/index.html"):
            page = _static("index.html").decode("utf-8").replace("__TOKEN__", app.token)
            self._send(page.encode("utf-8"), "text/html; charset=utf-8")
        elif path in STATIC_FILES:
            self._send(_static(path[1:]), STATIC_FILES[path])
        elif path == "/api/status":
            self._send_json(app.api_status())
        elif path == "/api/consent":
            self._send_json(app.api_consent())
        elif path == "/api/sessions":
            self._send_json(app.api_sessions())
        elif m := _MEDIA_ROUTE.match(path):
            file = app.media_file(m.group(1), m.group(2))
            kind = "image/jpeg" if m.group(1) == "thumbnail" else "video/webm"
            self._send(file.read_bytes(), kind)
        else:
            raise HttpError(HTTPStatus.NOT_FOUND, "no such page")

    def _post(self, app: WebServer, path: str, body: dict[str, Any]) -> dict[str, Any]:
        routes = {"/api/grant": app.api_grant, "/api/revoke": app.api_revoke,
                  "/api/delete": app.api_delete}
        if path not in routes:
            raise HttpError(HTTPStatus.NOT_FOUND, "no such action")
        return routes[path](body)

    # -- checks
    def _check_host(self, app: WebServer) -> None:
        host = (self.headers.get("Host") or "").strip().lower()
        if host not in app.allowed_hosts:
            raise HttpError(HTTPStatus.FORBIDDEN, "this page only answers to "
                            f"127.0.0.1:{app.port} or localhost:{app.port}")

    def _check_token(self, app: WebServer, query: str, method: str) -> None:
        given = self.headers.get(TOKEN_HEADER)
        if given is None and method == "GET":
            given = (parse_qs(query).get("token") or [None])[0]
        if not given:
            how = "" if method == "GET" else f" (changes need it in the {TOKEN_HEADER} header)"
            raise HttpError(HTTPStatus.UNAUTHORIZED, "open the address `capture agent` printed: "
                            f"it carries the access token{how}")
        if not hmac.compare_digest(given.encode("utf-8"), app.token.encode("utf-8")):
            raise HttpError(HTTPStatus.FORBIDDEN, "wrong access token: open the address "
                            "`capture agent` printed most recently")

    def _check_origin(self, app: WebServer) -> None:
        origin = self.headers.get("Origin")
        if origin is not None and origin not in app.allowed_origins:
            raise HttpError(HTTPStatus.FORBIDDEN, "changes are accepted only from the page itself")
        site = self.headers.get("Sec-Fetch-Site")
        if site is not None and site != "same-origin":
            raise HttpError(HTTPStatus.FORBIDDEN, "changes are accepted only from the page itself")

    def _read_json(self) -> dict[str, Any]:
        kind = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if kind != "application/json":
            raise HttpError(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "send the change as JSON")
        try:
            length = int(self.headers.get("Content-Length") or "0")
        except ValueError:
            raise HttpError(HTTPStatus.BAD_REQUEST, "bad Content-Length") from None
        if length > MAX_BODY:
            raise HttpError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "the request is too large")
        try:
            body = json.loads(self.rfile.read(length) or b"null")
        except (ValueError, UnicodeDecodeError):
            raise HttpError(HTTPStatus.BAD_REQUEST, "the request is not valid JSON") from None
        if not isinstance(body, dict):
            raise HttpError(HTTPStatus.BAD_REQUEST, "the request must be a JSON object")
        return body

    # -- responses
    def _send_json(self, obj: Any, status: HTTPStatus = HTTPStatus.OK) -> None:
        data = json.dumps(obj, default=str).encode("utf-8")
        self._send(data, "application/json; charset=utf-8", status)

    def _send(self, data: bytes, content_type: str, status: HTTPStatus = HTTPStatus.OK) -> None:
        if self.command not in ("GET", "POST"):
            self.close_connection = True
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for name, value in SECURITY_HEADERS.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        """Log at debug level, with the token and any query string cut out."""
        text = format % args
        text = re.sub(r"\?[^ \"]*", "?…", text).replace(self.server.app.token, "…")
        log.debug("%s %s", self.address_string(), text)


def _static(name: str) -> bytes:
    return resources.files(__package__).joinpath("static", name).read_bytes()
