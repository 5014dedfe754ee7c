"""The agent's page on 127.0.0.1 behind a token; stdlib http.server, as ~10 routes need no more."""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
import re
import secrets
import sys
import threading
import time
import webbrowser
from collections.abc import Callable
from http import HTTPStatus
from http.cookies import CookieError, SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import IO, Any, Protocol
from urllib.parse import parse_qs, urlsplit

from capture import consent, paths
from capture.consent import records, terms
from capture.errors import CaptureError, DiskFullError, is_disk_full
from capture.session import store
from capture.session.check_words import describe_check, input_count
from capture.session.manifest import read_manifest
from capture.uploader import enrollment
from capture.uploader.outbox import Delivery, notify_collector_of_revocation
from capture.uploader.uploader import read_state as read_upload_state
from capture.withdrawal import withdraw

from .media import MediaCache, MediaUnavailable

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
TOKEN_HEADER = "X-Capture-Token"
LOGIN_PATH = "/login"      # GET /login?code=ONE-TIME-CODE swaps the code for a cookie
LOGIN_CODE_TTL_S = 60.0    # a one-time code works once, within this many seconds
MAX_LOGIN_CODES = 32       # unused codes kept at once (the oldest are dropped)
MAX_BODY = 64 * 1024       # bytes; a POST body is never read past this
NEW_ADDRESS_HINT = ("press Enter in the terminal running `capture agent` for a new address "
                    f"(each works once, within {LOGIN_CODE_TTL_S:.0f} s)")
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
RETRIED_BY = "(by the agent when it next uploads, or by `capture upload`)"
UNREACHABLE_PREFIX = "waiting for the collector"  # capture.uploader.worker's reason when offline
_SESSION_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,199}$")
_MEDIA_ROUTE = re.compile(r"^/api/(thumbnail|preview)/([^/]+)$")


class AgentView(Protocol):
    """What the page needs from the running agent."""

    def status(self) -> dict[str, Any]:
        """{"state": "idle"|"waiting"|"recording"|"paused"|"stopping", "game": str|None,
            "reason": str (plain words: "minetest is focused", "paused: another window has focus",
            "paused: no input for 30 s", "no consented game is running"), "backend": {"name": str,
            "state": str, "detail": str}, "session_id": str|None, "segment": int|None,
            "since_utc": str|None, "last_segment_checks": list[dict]|None,
            "uploads": list[dict], "upload_after_review": bool, "notifications": str|None}"""
        ...

    def release_upload(self, session_id: str) -> bool:
        """The player reviewed the session and sends it to the collector; False if it is not
        waiting for that."""
        ...

    def session_deleted(self, session_id: str) -> None:
        """The page deleted a session: drop its upload and its checks from the status."""
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
    """Serves the page and its JSON API on 127.0.0.1 only; every request must be authorised.

    A browser gets in through a one-time address (`login_url()`, works once within
    LOGIN_CODE_TTL_S): the server swaps its code for an HttpOnly, SameSite=Strict cookie and
    redirects to the token-free page, so no secret stays in the address bar, the history or the
    browser's command line. Programs may instead send `token` in the X-Capture-Token header.
    """

    def __init__(self, agent: AgentView, *, port: int = 0, token: str | None = None,
                 media: MediaCache | None = None) -> None:
        self.agent = agent
        self.token = token if token is not None else secrets.token_urlsafe(24)
        if len(self.token) < 16:
            raise CaptureError("the page token must be at least 16 characters")
        self._auth_lock = threading.Lock()
        self._login_codes: dict[str, float] = {}   # code -> monotonic expiry
        self._cookies: set[str] = set()            # cookie values handed out by /login
        self.media = media if media is not None else MediaCache()
        try:
            self._httpd = _Server((HOST, port), _Handler)
        except OSError as exc:
            raise CaptureError(f"cannot serve the page on {HOST}:{port} ({exc.strerror})") from None
        self._httpd.app = self
        self.port: int = self._httpd.server_address[1]
        self.allowed_hosts = {f"127.0.0.1:{self.port}", f"localhost:{self.port}"}
        self.allowed_origins = {f"http://{h}" for h in self.allowed_hosts}
        self.cookie_name = f"capture_agent_{self.port}"  # cookies are shared across ports
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The page's address without any secret: http://127.0.0.1:PORT/"""
        return f"http://{HOST}:{self.port}/"

    def login_url(self) -> str:
        """A new one-time address that lets one browser in (works once, within 60 s)."""
        code = secrets.token_urlsafe(24)
        with self._auth_lock:
            now = time.monotonic()
            self._login_codes = {c: t for c, t in self._login_codes.items() if t > now}
            while len(self._login_codes) >= MAX_LOGIN_CODES:
                del self._login_codes[min(self._login_codes, key=self._login_codes.__getitem__)]
            self._login_codes[code] = now + LOGIN_CODE_TTL_S
        return f"http://{HOST}:{self.port}{LOGIN_PATH}?code={code}"

    def redeem_login_code(self, code: str) -> str | None:
        """A new cookie value for a valid, unexpired, unused code (which is used up); else None."""
        with self._auth_lock:
            expiry = None
            for known in list(self._login_codes):
                if hmac.compare_digest(known.encode(), code.encode()):
                    expiry = self._login_codes.pop(known)
            if expiry is None or expiry < time.monotonic():
                return None
            cookie = secrets.token_urlsafe(32)
            self._cookies.add(cookie)
            return cookie

    def authorised(self, header_token: str | None, cookie: str | None) -> bool:
        """True if the header carries the token or the cookie is one /login handed out."""
        if header_token is not None:
            return hmac.compare_digest(header_token.encode("utf-8"), self.token.encode("utf-8"))
        if cookie is None:
            return False
        with self._auth_lock:
            return any(hmac.compare_digest(cookie.encode("utf-8"), c.encode("utf-8"))
                       for c in self._cookies)

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
        """Open the page (through its own one-time address) in the player's browser; False if
        no browser could be started."""
        try:
            return webbrowser.open(self.login_url())
        except webbrowser.Error:
            return False

    def hand_out_login_urls(self, lines: IO[str], echo: Callable[[str], None]) -> None:
        """Echo a new one-time address for each line read from `lines` (Enter in the terminal),
        in a background thread that ends with `lines`."""
        def serve() -> None:
            with contextlib.suppress(OSError, ValueError):
                for _ in lines:
                    echo(self.login_url())

        threading.Thread(target=serve, name="capture-web-login", daemon=True).start()

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
            log.exception("agent status failed: %s", exc)
            return {"state": "unknown", "game": None,
                    "reason": "the agent did not report its state (see its terminal)"}
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
        """Withdraw through capture.withdrawal (the same service as `capture consent revoke`).

        200 with what was withdrawn, deleted and kept, and `problems`: sessions it could not
        read or delete (by path, with the reason). 409 if the ledger is damaged (what the
        player asked to delete is deleted anyway); 400 for a request naming nothing of theirs.
        """
        player = _text(body.get("player"), "player").strip()
        games = _str_list(body["games"], "games") if body.get("games") else []
        receipt_id = body.get("receipt_id")
        if receipt_id is not None and not isinstance(receipt_id, str):
            raise HttpError(HTTPStatus.BAD_REQUEST, "receipt_id must be text")
        try:
            result = withdraw(player, games or None, receipt_id, method=WEB_METHOD)
        except CaptureError as exc:
            raise HttpError(HTTPStatus.BAD_REQUEST, str(exc)) from None
        for gone in result.deleted:
            self.media.forget(gone.name)
        if result.ledger_error is not None:
            raise HttpError(HTTPStatus.CONFLICT,
                            f"the withdrawal could not be recorded in the consent ledger "
                            f"({result.ledger_error}); {len(result.deleted)} local "
                            f"session(s) were deleted anyway"
                            + "".join(f"; {note}" for note in result.notes))
        warning = self._tell_agent() if result.revocation is not None else None
        collector = (_tell_collectors(result.revocation) if result.revocation is not None
                     else [])
        return {"withdrawn": [{"receipt_id": receipt, "games": list(withdrawn_games)}
                              for receipt, withdrawn_games in result.withdrawn],
                "deleted": [d.name for d in result.deleted],
                "kept": [d.name for d in result.kept], "kept_games": list(result.kept_games),
                "problems": [{"path": str(p.path), "reason": p.reason}
                             for p in result.problems],
                "warning": warning, **({"collector": collector} if collector else {})}

    def api_sessions(self) -> dict[str, Any]:
        summaries = store.list_sessions()
        self.media.prune(s.path.name for s in summaries)
        after_review = False
        try:
            status = self.agent.status()
            live = {u["session_id"]: u for u in status.get("uploads", [])}
            after_review = bool(status.get("upload_after_review"))
        except Exception:  # the page must keep working while the agent misbehaves
            log.exception("agent status failed")
            live = {}
        collectors = _collector_names()
        views = []
        for summary in reversed(summaries):
            view = _session_view(summary, collectors)
            view["upload"] = _upload_for_player(live.get(view["session_id"])
                                                or _upload_view(view["session_id"]))
            views.append(view)
        return {"sessions": views, "data_dir": str(paths.sessions_dir()),
                "upload_after_review": after_review}

    def api_delete(self, body: dict[str, Any]) -> dict[str, Any]:
        """Delete one session by id, under the rules of store.delete_session (a damaged one in
        the sessions folder too; never one still being recorded)."""
        session_dir = find_session(body.get("id"))
        try:
            store.delete_session(session_dir)
        except CaptureError as exc:
            raise HttpError(HTTPStatus.CONFLICT, str(exc)) from None
        except OSError as exc:
            raise HttpError(HTTPStatus.CONFLICT, f"{session_dir} could not be deleted "
                            f"({exc.strerror or exc})") from None
        self.media.forget(session_dir.name)
        try:
            self.agent.session_deleted(session_dir.name)
        except Exception:  # deleted is deleted; the agent catches up on its next status
            log.exception("agent session_deleted failed")
        return {"deleted": [session_dir.name]}

    def api_release(self, body: dict[str, Any]) -> dict[str, Any]:
        """Send one reviewed session to the collector (with upload-after-review on)."""
        session_dir = find_session(body.get("id"))
        try:
            session_id = read_manifest(session_dir).session_id
        except CaptureError:
            raise HttpError(HTTPStatus.CONFLICT, "this session cannot be read, so it cannot "
                            "be sent") from None
        if not self.agent.release_upload(session_id):
            raise HttpError(HTTPStatus.CONFLICT, "this session is not waiting to be sent (it "
                            "is not covered by a study you enrolled in, or was already sent)")
        return {"released": session_dir.name}

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

    def _tell_agent(self) -> str | None:
        try:
            self.agent.consent_changed()
        except Exception as exc:
            log.exception("agent consent_changed failed: %s", exc)
            return ("your consent was recorded, but the agent did not take it up yet: restart "
                    "`capture agent` to be sure")
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


def _upload_view(session_id: str | None) -> dict[str, Any] | None:
    """The last upload outcome kept on disk (for sessions the running agent has not queued)."""
    state = read_upload_state(session_id) if session_id else None
    if state is None:
        return None
    return {"session_id": session_id, "status": state["status"],
            "percent": 100.0 if state["status"] == "accepted" else 0.0,
            "reason": state.get("reason")}


def _upload_for_player(upload: dict[str, Any] | None) -> dict[str, Any] | None:
    """An upload state with its reason in plain words: a network failure's library message
    (kept in the agent's terminal) becomes one sentence; the collector's own reasons stay."""
    if upload is None:
        return None
    reason = upload.get("reason")
    if upload.get("status") == "queued" and isinstance(reason, str) and \
            reason.startswith(UNREACHABLE_PREFIX):
        upload = {**upload, "reason": "the collector cannot be reached right now; the agent "
                                      "keeps trying"}
    return upload


def _session_view(s: store.SessionSummary,
                  collectors: dict[str, str] | None = None) -> dict[str, Any]:
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
        "inputs": input_count(qa) if qa else 0,
        "collector": (collectors or {}).get(m.consent.receipt_id) if m is not None else None,
        "thumbnail": None if media_problem else f"/api/thumbnail/{name}",
        "preview": None if media_problem else f"/api/preview/{name}",
        "media_problem": media_problem,
    }


def normalise_checks(raw: Any) -> list[dict[str, str]] | None:
    """Record-time checks for the page, in words (capture.session.check_words.describe_check):
    [{"name", "title", "sentence", "level": "ok"|"warning"|"error", "detail"}]; None if there
    are no checks."""
    if not isinstance(raw, list):
        return None
    return [describe_check(c) for c in raw if isinstance(c, dict)]


def _tell_collectors(revocation: consent.Revocation) -> list[str]:
    """Send the withdrawal to the collectors that hold the consent; what they said, in words."""
    try:
        deliveries = notify_collector_of_revocation(revocation)
    except CaptureError as exc:
        log.warning("the withdrawal could not be queued for the collector: %s", exc)
        return ["The collector could not be told yet; your withdrawal is kept and sent "
                f"again {RETRIED_BY} until the collector confirms it."]
    return [_delivery_words(d) for d in deliveries]


def _delivery_words(d: Delivery) -> str:
    where = urlsplit(d.collector).netloc or d.collector
    if d.status == "acknowledged":
        if "disagree" in d.detail:
            return (f"The collector at {where} answered, but its record of your consent differs "
                    "from this computer's: contact the study's organisers.")
        deleted = len((d.ack or {}).get("deleted_sessions", []))
        return (f"The collector at {where} confirmed the withdrawal and deleted the "
                f"{deleted} session(s) of yours it held.")
    if d.status == "queued":
        return (f"The collector at {where} cannot be reached right now; your withdrawal is "
                f"kept and sent again {RETRIED_BY} until the collector confirms it.")
    return f"The collector at {where} refused the withdrawal: {d.detail}"


def _collector_names() -> dict[str, str]:
    """receipt id -> the collector its sessions go to (host:port of the enrolled study)."""
    try:
        enrolled = enrollment.load_all()
    except CaptureError as exc:  # a damaged enrollment file: no "Send" buttons, said in the log
        log.warning("%s", exc)
        return {}
    return {e.receipt_id: urlsplit(e.collector).netloc or e.collector for e in enrolled}


def find_session(name: Any) -> Path:
    """The session directory named exactly `name` (never a path or a prefix)."""
    if not isinstance(name, str) or not _SESSION_NAME.match(name):
        raise HttpError(HTTPStatus.BAD_REQUEST, "give a session id")
    for d in store.candidate_dirs():
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
_CLIENT_GONE = (ConnectionError, TimeoutError)  # BrokenPipe, ConnectionReset/Aborted, timeouts


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    app: WebServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that went away is normal (debug log); anything else is logged once."""
        exc = sys.exc_info()[1]
        if isinstance(exc, _CLIENT_GONE):
            log.debug("client %s went away (%s)", client_address[0], type(exc).__name__)
        else:
            log.error("page request from %s failed", client_address[0], exc_info=exc)


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
            try:
                url = urlsplit(self.path)
                self._check_host(app)
                if method == "GET" and url.path == LOGIN_PATH:
                    self._login(app, url.query)
                    return
                by_cookie = self._check_auth(app, method)
                if method != "POST" and (self.headers.get("Transfer-Encoding")
                                         or self.headers.get("Content-Length", "0") != "0"):
                    self.close_connection = True  # its body is never read
                if method == "GET":
                    self._get(app, url.path)
                elif method == "POST":
                    self._check_origin(app, by_cookie)
                    self._send_json(self._post(app, url.path, self._read_json()))
                else:
                    raise HttpError(HTTPStatus.METHOD_NOT_ALLOWED, f"{method} is not supported")
            except HttpError as exc:
                self.close_connection = True  # a refused request may leave its body unread
                self._send_json({"error": exc.message}, exc.status)
            except _CLIENT_GONE:
                raise
            except Exception as exc:
                self.close_connection = True
                if is_disk_full(exc):
                    problem = DiskFullError(getattr(exc, "filename", None),
                                            "free some space and try again")
                    self._send_json({"error": str(problem)}, HTTPStatus.INSUFFICIENT_STORAGE)
                    return
                log.exception("page request failed")
                self._send_json({"error": "the agent failed to answer this request; the "
                                          "details are in its terminal"},
                                HTTPStatus.INTERNAL_SERVER_ERROR)
        except _CLIENT_GONE as exc:  # the browser closed the tab or cancelled a preview
            self.close_connection = True
            log.debug("client went away during %s (%s)", method, type(exc).__name__)

    def _get(self, app: WebServer, path: str) -> None:
        if path in ("/", "/index.html"):
            self._send(_static("index.html"), "text/html; charset=utf-8")
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
                  "/api/delete": app.api_delete, "/api/release": app.api_release}
        if path not in routes:
            raise HttpError(HTTPStatus.NOT_FOUND, "no such action")
        return routes[path](body)

    # -- signing in
    def _login(self, app: WebServer, query: str) -> None:
        """Swap a one-time code for a cookie and send the browser to the token-free page."""
        code = (parse_qs(query).get("code") or [""])[0]
        cookie = app.redeem_login_code(code) if code else None
        if cookie is None:
            if app.authorised(None, self._cookie(app)):  # already in (e.g. the address reused)
                self._redirect("/")
                return
            raise HttpError(HTTPStatus.FORBIDDEN, "this sign-in address was already used or has "
                            f"expired: {NEW_ADDRESS_HINT}")
        self._redirect("/", {"Set-Cookie": f"{app.cookie_name}={cookie}; Path=/; HttpOnly; "
                                           "SameSite=Strict"})

    def _cookie(self, app: WebServer) -> str | None:
        raw = self.headers.get("Cookie")
        if not raw:
            return None
        jar = SimpleCookie()
        try:
            jar.load(raw)
        except CookieError:
            return None
        morsel = jar.get(app.cookie_name)
        return morsel.value if morsel is not None else None

    # -- checks
    def _check_host(self, app: WebServer) -> None:
        host = (self.headers.get("Host") or "").strip().lower()
        if host not in app.allowed_hosts:
            raise HttpError(HTTPStatus.FORBIDDEN, "this page only answers to "
                            f"127.0.0.1:{app.port} or localhost:{app.port}")

    def _check_auth(self, app: WebServer, method: str) -> bool:
        """Refuse a request without the token header or a valid cookie; True if by cookie."""
        given, cookie = self.headers.get(TOKEN_HEADER), self._cookie(app)
        if given is None and cookie is None:
            raise HttpError(HTTPStatus.UNAUTHORIZED, "not signed in: open the address "
                            f"`capture agent` printed, or {NEW_ADDRESS_HINT}")
        if not app.authorised(given, cookie if given is None else None):
            raise HttpError(HTTPStatus.FORBIDDEN, "wrong access token or an old sign-in (was the "
                            f"agent restarted?): {NEW_ADDRESS_HINT}")
        return given is None

    def _check_origin(self, app: WebServer, by_cookie: bool) -> None:
        """Changes come only from the page itself: a browser (cookie) must say its Origin."""
        origin = self.headers.get("Origin")
        if (origin is None and by_cookie) or (origin is not None
                                              and origin not in app.allowed_origins):
            raise HttpError(HTTPStatus.FORBIDDEN, "changes are accepted only from the page itself")
        site = self.headers.get("Sec-Fetch-Site")
        if site is not None and site != "same-origin":
            raise HttpError(HTTPStatus.FORBIDDEN, "changes are accepted only from the page itself")

    def _read_json(self) -> dict[str, Any]:
        kind = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if kind != "application/json":
            raise HttpError(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "send the change as JSON")
        if self.headers.get("Transfer-Encoding") is not None:
            raise HttpError(HTTPStatus.LENGTH_REQUIRED,
                            "send the change with a Content-Length, not in chunks")
        lengths = self.headers.get_all("Content-Length") or []
        if not lengths:
            raise HttpError(HTTPStatus.LENGTH_REQUIRED, "the request has no Content-Length")
        if len(set(lengths)) != 1 or not lengths[0].strip().isdigit():
            raise HttpError(HTTPStatus.BAD_REQUEST,
                            "the Content-Length must be one whole number of bytes")
        length = int(lengths[0])
        if length > MAX_BODY:
            raise HttpError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                            f"the request is too large (at most {MAX_BODY} bytes)")
        data = self.rfile.read(length)
        if len(data) != length:
            raise HttpError(HTTPStatus.BAD_REQUEST, "the request body ended early")
        try:
            body = json.loads(data or b"null")
        except RecursionError:
            raise HttpError(HTTPStatus.BAD_REQUEST, "the request is nested too deeply") from None
        except (ValueError, UnicodeDecodeError):
            raise HttpError(HTTPStatus.BAD_REQUEST, "the request is not valid JSON") from None
        if not isinstance(body, dict):
            raise HttpError(HTTPStatus.BAD_REQUEST, "the request must be a JSON object")
        return body

    # -- responses
    def _send_json(self, obj: Any, status: HTTPStatus = HTTPStatus.OK) -> None:
        data = json.dumps(obj, default=str).encode("utf-8")
        self._send(data, "application/json; charset=utf-8", status)

    def _redirect(self, location: str, headers: dict[str, str] | None = None) -> None:
        self.send_response(HTTPStatus.SEE_OTHER)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        for name, value in {**SECURITY_HEADERS, **(headers or {})}.items():
            self.send_header(name, value)
        self.end_headers()

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
        """Log at debug level, with every query string and secret cut out."""
        text = re.sub(r"\?[^ \"]*", "?…", format % args).replace(self.server.app.token, "…")
        log.debug("%s %s", self.address_string(), text)




def _static(name: str) -> bytes:
    return resources.files(__package__).joinpath("static", name).read_bytes()
