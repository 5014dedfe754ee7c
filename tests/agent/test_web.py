"""The agent's page server without a browser: loopback only, token, Host/Origin checks, the API."""

from __future__ import annotations

import http.client
import io
import json
import logging
import os
import re
import socket
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import av
import cv2
import numpy as np
import pytest

from capture import consent
from capture.agent import media, web
from capture.agent.web import TOKEN_HEADER, WebServer, normalise_checks
from capture.consent.terms import TERMS_VERSION, terms_sha256, terms_text
from capture.errors import CaptureError
from tests.factories import build_session, gameplay_script, read_frame_tag

PLAYER = "Alice Example"
GAME = "factorygame"


@dataclass
class FakeAgent:
    """An AgentView reporting a fixed state and counting consent changes."""

    state: dict[str, Any] = field(default_factory=lambda: {
        "state": "paused", "game": GAME, "reason": "paused: another window has focus",
        "backend": {"name": "builtin", "state": "ready", "detail": "XShm"},
        "session_id": None, "segment": None, "since_utc": "2025-03-01T12:00:00Z",
        "last_segment_checks": None})
    changes: int = 0
    deleted: list[str] = field(default_factory=list)

    def status(self) -> dict[str, Any]:
        return dict(self.state)

    def consent_changed(self) -> None:
        self.changes += 1

    def release_upload(self, session_id: str) -> bool:
        return False

    def session_deleted(self, session_id: str) -> None:
        self.deleted.append(session_id)


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class Client:
    """Raw HTTP to the server, so tests can send any Host, Origin or token."""

    def __init__(self, server: WebServer) -> None:
        self.server = server
        self.host = f"127.0.0.1:{server.port}"

    def request(self, method: str, path: str, body: Any = None, *, token: str | None = "header",
                headers: dict[str, str] | None = None) -> Reply:
        """token: "header" (X-Capture-Token), "query" (?token=, which is refused), a cookie
        header value such as "capture_agent_PORT=..." (sent as Cookie), or None."""
        sent = {"Host": self.host}
        if token == "header":
            sent[TOKEN_HEADER] = self.server.token
        elif token == "query":
            path += ("&" if "?" in path else "?") + f"token={self.server.token}"
        elif token is not None:
            sent["Cookie"] = token
        data = None
        if body is not None:
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            sent["Content-Type"] = "application/json"
        sent.update(headers or {})
        conn = http.client.HTTPConnection("127.0.0.1", self.server.port, timeout=30)
        try:
            conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
            for name, value in sent.items():
                conn.putheader(name, value)
            if data is not None:
                conn.putheader("Content-Length", str(len(data)))
            conn.endheaders(data)
            response = conn.getresponse()
            return Reply(response.status, dict(response.getheaders()), response.read())
        finally:
            conn.close()

    def get(self, path: str, **kw: Any) -> Reply:
        return self.request("GET", path, **kw)

    def post(self, path: str, body: Any, **kw: Any) -> Reply:
        return self.request("POST", path, body, **kw)


@pytest.fixture
def agent() -> FakeAgent:
    return FakeAgent()


@pytest.fixture
def server(capture_home: Path, agent: FakeAgent) -> Iterator[WebServer]:
    with WebServer(agent) as web:
        yield web


@pytest.fixture
def client(server: WebServer) -> Client:
    return Client(server)


def make_session(capture_home: Path, **overrides: Any) -> Path:
    return build_session(capture_home / "sessions", gameplay_script(seconds=2.0, **overrides))


def grant_body(**overrides: Any) -> dict[str, Any]:
    body = {"player": PLAYER, "games": [GAME], "scope": ["video", "keyboard", "mouse"],
            "agreed": True, "terms_version": TERMS_VERSION, "terms_sha256": terms_sha256()}
    return {**body, **overrides}


# --- where it listens and who may talk to it ----------------------------------------------------
def test_binds_loopback_only(server: WebServer) -> None:
    assert server.address == ("127.0.0.1", server.port)
    assert server.url == f"http://127.0.0.1:{server.port}/"
    assert re.fullmatch(rf"http://127\.0\.0\.1:{server.port}/login\?code=[\w-]{{32}}",
                        server.login_url())
    assert len(server.token) >= 32
    with pytest.raises(OSError), socket.create_connection(("127.0.0.2", server.port), timeout=2):
        pass  # another address on this host (as another host would reach it) is not served


def test_token_is_required(client: Client, server: WebServer) -> None:
    assert client.get("/", token=None).status == 401
    assert client.get("/api/status", token=None).status == 401
    assert client.get("/app.js", token=None).status == 401
    wrong = client.get("/api/status", token=None, headers={TOKEN_HEADER: "x" * 32})
    assert wrong.status == 403
    assert "error" in wrong.json()
    # the token in the address (where the browser's command line and history show it) is refused
    assert client.get("/?token=" + server.token, token=None).status == 401
    assert client.get("/api/status", token="query").status == 401
    assert client.get("/api/status").status == 200
    assert client.get("/api/status", token=f"{server.cookie_name}={server.token}").status == 403


def login(client: Client, url: str, **kw: Any) -> Reply:
    parts = urlsplit(url)
    return client.get(f"{parts.path}?{parts.query}", token=kw.pop("token", None), **kw)


def cookie_of(reply: Reply) -> str:
    """`name=value` from the reply's Set-Cookie, after checking its attributes."""
    jar = SimpleCookie(reply.headers["Set-Cookie"])
    ((name, morsel),) = jar.items()
    assert morsel["httponly"] is True and morsel["samesite"] == "Strict" and morsel["path"] == "/"
    assert not morsel["expires"] and not morsel["max-age"], "a session cookie"
    return f"{name}={morsel.value}"


def test_one_time_address_swaps_its_code_for_a_cookie(client: Client,
                                                      server: WebServer) -> None:
    url = server.login_url()
    reply = login(client, url)
    assert reply.status == 303 and reply.headers["Location"] == "/"
    cookie = cookie_of(reply)
    assert server.token not in cookie and urlsplit(url).query[5:] not in cookie
    assert client.get("/", token=cookie).status == 200
    assert client.get("/api/status", token=cookie).status == 200

    again = login(client, url)  # works once
    assert again.status == 403 and "already used or has expired" in again.json()["error"]
    assert "Set-Cookie" not in again.headers
    assert login(client, url, token=cookie).status == 303  # signed in already: just the page
    assert login(client, url.split("?")[0] + "?code=" + "z" * 32).status == 403
    assert login(client, url.split("?")[0]).status == 403
    second = cookie_of(login(client, server.login_url()))
    assert second != cookie and client.get("/api/status", token=second).status == 200
    assert client.get("/api/status", token=cookie.split("=")[0] + "=forged" * 6).status == 403
    assert client.get("/api/status", token="garbage;;=\x01").status == 401


def test_one_time_address_expires(client: Client, server: WebServer,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(web, "LOGIN_CODE_TTL_S", 0.2)
    url = server.login_url()
    time.sleep(0.3)
    reply = login(client, url)
    assert reply.status == 403 and "Set-Cookie" not in reply.headers
    assert "press Enter in the terminal" in reply.json()["error"]


def test_changes_need_the_header_or_the_cookie_from_the_page(client: Client,
                                                             server: WebServer) -> None:
    assert client.post("/api/grant", grant_body(), token="query").status == 401
    cookie = cookie_of(login(client, server.login_url()))
    origin = {"Origin": f"http://127.0.0.1:{server.port}"}
    # a browser always says where a POST comes from: no Origin, no change by cookie
    assert client.post("/api/grant", grant_body(), token=cookie).status == 403
    assert client.post("/api/grant", grant_body(), token=cookie,
                       headers={"Origin": "http://evil.example"}).status == 403
    assert consent.active_grants() == []
    reply = client.post("/api/grant", grant_body(), token=cookie, headers=origin)
    assert reply.status == 200, reply.body
    assert len(consent.active_grants()) == 1


def test_wrong_host_is_refused(client: Client, server: WebServer) -> None:
    for host in ("evil.example", f"evil.example:{server.port}", "127.0.0.1:1",
                 f"127.0.0.1.evil.example:{server.port}"):
        assert client.get("/api/status", headers={"Host": host}).status == 403, host
    assert client.get("/api/status", headers={"Host": f"localhost:{server.port}"}).status == 200


def test_post_needs_matching_origin_and_json(client: Client, server: WebServer) -> None:
    for origin in ("http://evil.example", "null", f"http://127.0.0.1:{server.port + 1}"):
        reply = client.post("/api/grant", grant_body(), headers={"Origin": origin})
        assert reply.status == 403, origin
    cross = client.post("/api/grant", grant_body(), headers={"Sec-Fetch-Site": "cross-site"})
    assert cross.status == 403
    plain = client.post("/api/grant", b"player=x", headers={"Content-Type": "text/plain"})
    assert plain.status == 415
    assert client.request("PUT", "/api/grant", grant_body()).status == 405
    assert client.get("/api/grant").status == 404
    assert consent.active_grants() == []
    ok = client.post("/api/grant", grant_body(),
                     headers={"Origin": f"http://127.0.0.1:{server.port}"})
    assert ok.status == 200, ok.body


def test_security_headers_and_no_cors(client: Client) -> None:
    reply = client.get("/")
    assert reply.headers["Content-Security-Policy"].startswith("default-src 'self'")
    assert reply.headers["X-Frame-Options"] == "DENY"
    assert reply.headers["Referrer-Policy"] == "no-referrer"
    assert not any(h.lower().startswith("access-control-") for h in reply.headers)
    page = reply.body.decode()
    assert "__TOKEN__" not in page and "token" not in page.lower()
    assert "http://" not in page.replace("http://www.w3.org", "")  # nothing from the network
    static = Path(media.__file__).parent / "static"
    for name in ("index.html", "app.js", "style.css"):
        text = (static / name).read_text()
        assert "https://" not in text and "//cdn" not in text, name
        assert "token=" not in text and TOKEN_HEADER not in text, name  # the page uses the cookie


def test_token_is_never_logged(client: Client, server: WebServer,
                               caplog: pytest.LogCaptureFixture) -> None:
    url = server.login_url()
    with caplog.at_level(logging.DEBUG, logger="capture.agent.web"):
        cookie = cookie_of(login(client, url))
        client.get("/", token=cookie)
        client.get("/", token="query")
        client.get("/api/status")
        client.get("/api/status?token=wrong-token-wrong-token", token=None)
    assert caplog.records, "requests are logged at debug level"
    for secret in (server.token, "wrong-token", url.split("code=")[1], cookie.split("=")[1]):
        assert secret not in caplog.text


# --- the API ---------------------------------------------------------------------------------
def test_status_passes_the_agents_report(client: Client, agent: FakeAgent) -> None:
    agent.state["last_segment_checks"] = [{"name": "fps", "ok": False, "detail": "12 of 30 fps"}]
    status = client.get("/api/status").json()
    assert status["reason"] == "paused: another window has focus"
    assert status["last_segment_checks"] == [
        {"name": "fps", "title": "Frame rate", "level": "warning", "detail": "12 of 30 fps",
         "sentence": "The video fell behind: it has fewer pictures per second than asked for."}]

    def broken() -> dict[str, Any]:
        raise RuntimeError("boom")

    agent.status = broken  # type: ignore[method-assign]
    status = client.get("/api/status").json()
    assert status["state"] == "unknown" and "did not report its state" in status["reason"]
    assert "boom" not in status["reason"], "no exception text on the page"


def test_consent_shows_the_exact_terms(client: Client) -> None:
    c = client.get("/api/consent").json()
    assert c["terms"] == {"version": TERMS_VERSION, "sha256": terms_sha256(),
                          "text": terms_text()}
    assert c["scope_kinds"] == list(consent.SCOPE_KINDS)
    assert "audio" not in c["scope_kinds"] and "audio" not in c["scope_descriptions"]
    assert c["sensitive_scope"] == []
    assert c["active"] == [] and c["history"] == [] and c["problem"] is None


def test_grant_and_revoke_round_trip(client: Client, agent: FakeAgent,
                                     capture_home: Path) -> None:
    reply = client.post("/api/grant", grant_body(games="factorygame, othergame"))
    assert reply.status == 200, reply.body
    receipt = reply.json()["receipt"]
    (grant,) = consent.active_grants()
    assert grant.receipt_id == receipt["receipt_id"]
    assert grant.method == "agent-web"
    assert grant.player == PLAYER and grant.games == ("factorygame", "othergame")
    assert grant.scope == ("video", "keyboard", "mouse")
    assert (grant.terms_version, grant.terms_sha256) == (TERMS_VERSION, terms_sha256())
    assert agent.changes == 1
    shown = client.get("/api/consent").json()
    assert [g["receipt_id"] for g in shown["active"]] == [grant.receipt_id]

    mine = make_session(capture_home)
    other_game = make_session(capture_home, game="keptgame",
                              session_id="20250301T120000Z-keptgame-000002")
    other_player = make_session(capture_home, player="Bob",
                                session_id="20250301T120000Z-factorygame-000003")
    client.get(f"/api/thumbnail/{mine.name}")  # something cached, to be deleted with it
    assert (capture_home / "cache" / "agent-web" / mine.name).is_dir()

    reply = client.post("/api/revoke", {"player": PLAYER, "receipt_id": grant.receipt_id})
    assert reply.status == 200, reply.body
    answer = reply.json()
    assert answer["withdrawn"] == [{"receipt_id": grant.receipt_id,
                                    "games": ["factorygame", "othergame"]}]
    assert answer["deleted"] == [mine.name]
    assert not mine.exists() and other_game.exists() and other_player.exists()
    assert not (capture_home / "cache" / "agent-web" / mine.name).exists()
    assert consent.active_grants() == []
    assert consent.receipt_status(grant.receipt_id) == "revoked"
    revocation = consent.all_entries()[-1]
    assert revocation.kind == "revoke" and revocation.method == "agent-web"
    assert agent.changes == 2

    # withdrawing everything (as `capture consent revoke --player` does) deletes all their sessions
    again = client.post("/api/revoke", {"player": PLAYER}).json()
    assert again["withdrawn"] == [] and again["deleted"] == [other_game.name]
    assert other_player.exists()


def test_grant_is_validated(client: Client) -> None:
    cases = [
        (grant_body(agreed=False), 400, "agree"),
        (grant_body(terms_version="v0"), 409, "terms changed"),
        (grant_body(terms_sha256="0" * 64), 409, "terms changed"),
        (grant_body(scope=["video", "smell"]), 400, "smell"),
        (grant_body(scope=[]), 400, "scope"),
        (grant_body(games=[]), 400, "game"),
        (grant_body(player="  "), 400, "player"),
        (grant_body(player=["x"]), 400, "player"),
        (grant_body(games=[1, 2]), 400, "games"),
    ]
    for body, status, words in cases:
        reply = client.post("/api/grant", body)
        assert reply.status == status, (body, reply.body)
        assert words in reply.json()["error"], reply.json()
    assert client.post("/api/grant", b"{not json").status == 400
    assert client.post("/api/grant", b"[1]").status == 400
    assert client.post("/api/grant", b"x" * 70_000).status == 413
    assert consent.active_grants() == []


def test_audio_is_not_offered(client: Client) -> None:
    """Nothing records sound, so the page neither lists audio nor accepts it."""
    c = client.get("/api/consent").json()
    assert "audio" not in c["scope_kinds"] and "- audio:" not in c["terms"]["text"]
    reply = client.post("/api/grant", grant_body(scope=["video", "audio"]))
    assert reply.status == 400 and "'audio' cannot be chosen" in reply.json()["error"]
    assert consent.active_grants() == []


def test_revoke_reports_damaged_sessions_and_deletes_the_rest(
        client: Client, capture_home: Path) -> None:
    client.post("/api/grant", grant_body())
    damaged = make_session(capture_home, session_id="20250301T120000Z-factorygame-00000a")
    (damaged / "manifest.json").write_bytes(b"\xff\xfe not utf-8")
    good = make_session(capture_home, session_id="20250301T120000Z-factorygame-00000b")
    reply = client.post("/api/revoke", {"player": PLAYER})
    assert reply.status == 200, reply.body
    answer = reply.json()
    assert answer["deleted"] == [good.name] and not good.exists()
    assert [p["path"] for p in answer["problems"]] == [str(damaged)]
    assert "not UTF-8" in answer["problems"][0]["reason"]
    assert consent.active_grants() == []
    # the player deletes the damaged one from the list, by its id
    (row,) = client.get("/api/sessions").json()["sessions"]
    assert row["id"] == damaged.name and row["status"] == "unreadable"
    assert client.post("/api/delete", {"id": damaged.name}).status == 200
    assert not damaged.exists()
    retry = client.post("/api/revoke", {"player": PLAYER}).json()
    assert retry == {"withdrawn": [], "deleted": [], "kept": [], "kept_games": [],
                     "problems": [], "warning": None}


def test_revoke_of_an_unknown_player_names_the_known_ones(client: Client) -> None:
    client.post("/api/grant", grant_body())
    reply = client.post("/api/revoke", {"player": "Alcie"})
    assert reply.status == 400 and repr(PLAYER) in reply.json()["error"]
    assert len(consent.active_grants()) == 1


def test_revoke_with_a_damaged_ledger_still_deletes(client: Client, capture_home: Path) -> None:
    client.post("/api/grant", grant_body())
    session = make_session(capture_home)
    ledger = capture_home / "consent" / "ledger.jsonl"
    ledger.write_text(ledger.read_text().replace(PLAYER, "Mallory"))
    reply = client.post("/api/revoke", {"player": PLAYER})
    assert reply.status == 409 and "1 local session(s) were deleted" in reply.json()["error"]
    assert not session.exists()


def test_sessions_list_thumbnail_preview_and_delete(client: Client, capture_home: Path,
                                                    agent: FakeAgent) -> None:
    session = make_session(capture_home)
    (row,) = client.get("/api/sessions").json()["sessions"]
    assert row["id"] == session.name and row["game"] == GAME and row["status"] == "complete"
    assert row["duration_s"] > 1.5 and row["frames"] == 60
    assert {c["name"] for c in row["checks"]} >= {"fps", "length"}
    assert all(c["level"] in ("ok", "warning", "error") for c in row["checks"])
    assert row["thumbnail"] == f"/api/thumbnail/{session.name}"

    thumb = client.get(row["thumbnail"])
    assert thumb.status == 200 and thumb.headers["Content-Type"] == "image/jpeg"
    image = cv2.imdecode(np.frombuffer(thumb.body, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None and image.shape == (48, 64, 3)
    tag = read_frame_tag(cv2.cvtColor(image, cv2.COLOR_BGR2RGB))
    assert 10 <= tag < 50, "the thumbnail shows a frame from inside the session"

    preview = client.get(row["preview"])
    assert preview.status == 200 and preview.headers["Content-Type"] == "video/webm"
    cached = capture_home / "cache" / "agent-web" / session.name
    (webm,) = cached.glob("*.preview.webm")
    assert webm.read_bytes() == preview.body
    with av.open(str(webm)) as container:
        assert container.streams.video[0].codec_context.name == "vp8"
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(frames) == int(media.video_duration_s(session / "video.mkv") * media.PREVIEW_FPS)
    tags = [read_frame_tag(f) for f in frames]
    assert tags == sorted(tags) and tags[0] == 0 and tags[-1] > 50
    assert not any(p.name.startswith(("thumb", "preview")) or p.suffix in (".jpg", ".webm")
                   for p in session.iterdir()), "nothing is added to the session bundle"

    assert client.post("/api/delete", {"id": "../sessions"}).status == 400
    assert client.post("/api/delete", {"id": str(session)}).status == 400
    assert client.post("/api/delete", {"id": session.name[:10]}).status == 404
    assert session.exists()
    reply = client.post("/api/delete", {"id": session.name})
    assert reply.status == 200 and reply.json() == {"deleted": [session.name]}
    assert not session.exists() and not cached.exists()
    assert agent.deleted == [session.name], "the agent is told (its upload and checks go)"
    assert client.get("/api/sessions").json()["sessions"] == []
    assert client.get(row["thumbnail"]).status == 404


def test_session_without_frames_has_no_picture(client: Client, capture_home: Path) -> None:
    session = make_session(capture_home)
    manifest = json.loads((session / "manifest.json").read_text())
    manifest["status"] = "recording"
    (session / "manifest.json").write_text(json.dumps(manifest))
    (session / "recording.lock").write_text(str(__import__("os").getpid()))
    (row,) = client.get("/api/sessions").json()["sessions"]
    assert row["thumbnail"] is None and row["media_problem"] == "still being recorded"
    assert client.get(f"/api/thumbnail/{session.name}").status == 404
    refused = client.post("/api/delete", {"id": session.name})
    assert refused.status == 409 and "being recorded" in refused.json()["error"]
    assert session.exists()


def test_stale_cache_is_pruned(client: Client, capture_home: Path) -> None:
    gone = capture_home / "cache" / "agent-web" / "20240101T000000Z-deleted-elsewhere"
    gone.mkdir(parents=True)
    (gone / "x.thumb.jpg").write_bytes(b"old")
    client.get("/api/sessions")
    assert not gone.exists()


def test_long_videos_are_sampled_by_seeking(capture_home: Path) -> None:
    session = make_session(capture_home)
    video = session / "video.mkv"
    times = [0.0, 0.5, 1.0, 1.9]
    by_seeking = media.frames_at(video, times, 64, sequential_limit_s=0)
    in_one_pass = media.frames_at(video, times, 64)
    assert [read_frame_tag(f) for f in by_seeking] == [read_frame_tag(f) for f in in_one_pass]
    with av.open(str(video)) as container:
        shown = [(f.time, read_frame_tag(f.to_ndarray(format="rgb24")))
                 for f in container.decode(video=0)]
    expected = [next(tag for t, tag in shown if t >= target) for target in times]
    assert [read_frame_tag(f) for f in in_one_pass] == expected
    assert len(set(expected)) == len(expected)


def test_normalise_checks() -> None:
    assert normalise_checks(None) is None
    assert normalise_checks([{"name": "fps", "ok": True, "value": 30, "detail": "30 fps"},
                             {"name": "length", "ok": False}, "junk",
                             {"name": "disk", "level": "error", "detail": "full"}]) == [
        {"name": "fps", "title": "Frame rate", "sentence": "The video kept up with the game.",
         "level": "ok", "detail": "30 fps"},
        {"name": "length", "title": "Length", "level": "warning", "detail": "",
         "sentence": "The segment is too short to use: it needs at least 5 seconds of play."},
        {"name": "disk", "title": "Disk", "sentence": "", "level": "error", "detail": "full"}]


def test_busy_port_is_a_plain_error(server: WebServer, agent: FakeAgent) -> None:
    with pytest.raises(CaptureError, match=f"127.0.0.1:{server.port}"):
        WebServer(agent, port=server.port)


# --- hostile requests ------------------------------------------------------------------------
def raw_exchange(server: WebServer, head: str, body: bytes = b"", *,
                 timeout_s: float = 10) -> tuple[int, dict[str, Any]]:
    """Send a hand-made request on a raw socket; return (status, JSON body) of the answer."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=timeout_s) as sock:
        sock.sendall(head.replace("\n", "\r\n").encode() + b"\r\n" + body)
        response = http.client.HTTPResponse(sock)
        response.begin()
        return response.status, json.loads(response.read() or b"null")


def post_head(server: WebServer, *lines: str) -> str:
    return "\n".join(["POST /api/grant HTTP/1.1", f"Host: 127.0.0.1:{server.port}",
                      f"{TOKEN_HEADER}: {server.token}", "Content-Type: application/json",
                      *lines, ""])


@pytest.mark.parametrize("length_lines, status, words", [
    (["Content-Length: -1"], 400, "whole number"),
    (["Content-Length: -99999999"], 400, "whole number"),
    (["Content-Length: 1e3"], 400, "whole number"),
    (["Content-Length: 5", "Content-Length: 6"], 400, "whole number"),
    ([], 411, "no Content-Length"),
    (["Transfer-Encoding: chunked"], 411, "not in chunks"),
    ([f"Content-Length: {web.MAX_BODY + 1}"], 413, "too large"),
    (["Content-Length: 99999999999999999999"], 413, "too large"),
])
def test_body_length_is_capped(server: WebServer, length_lines: list[str], status: int,
                               words: str) -> None:
    # the body that follows is never read: the answer comes at once, with nothing sent after
    # the head (the server would otherwise wait for bytes that never come)
    got, body = raw_exchange(server, post_head(server, *length_lines), timeout_s=5)
    assert (got, words in body["error"]) == (status, True), body
    assert consent.active_grants() == []


def test_body_cut_short_is_refused(server: WebServer) -> None:
    data = json.dumps(grant_body()).encode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        head = post_head(server, f"Content-Length: {len(data) + 50}")
        sock.sendall(head.replace("\n", "\r\n").encode() + b"\r\n" + data)
        sock.shutdown(socket.SHUT_WR)  # the client stops sending before the promised length
        response = http.client.HTTPResponse(sock)
        response.begin()
        assert response.status == 400 and b"ended early" in response.read()
    assert consent.active_grants() == []


@pytest.mark.parametrize("depth", [2_000, 30_000])
def test_deeply_nested_json_is_a_bad_request(client: Client, depth: int) -> None:
    body = b'{"player": ' + b"[" * depth + b"]" * depth + b"}"
    assert len(body) <= web.MAX_BODY
    reply = client.post("/api/grant", body)
    assert reply.status == 400 and "nested too deeply" in reply.json()["error"]
    assert client.get("/api/status").status == 200


def test_clients_that_go_away_leave_no_traceback(server: WebServer, capture_home: Path,
                                                 capfd: pytest.CaptureFixture[str],
                                                 caplog: pytest.LogCaptureFixture) -> None:
    session = make_session(capture_home)
    request = (f"GET /api/preview/{session.name} HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
               f"{TOKEN_HEADER}: {server.token}\r\n\r\n").encode()
    assert Client(server).get(f"/api/preview/{session.name}").status == 200  # made and cached
    capfd.readouterr()
    with caplog.at_level(logging.DEBUG, logger="capture.agent.web"):
        for _ in range(40):  # ask for the preview, then reset the connection before it arrives
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
            sock.sendall(request)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()
        time.sleep(0.5)
    assert Client(server).get("/api/status").status == 200
    err = capfd.readouterr().err
    assert "Traceback" not in err and "BrokenPipe" not in err and "Reset" not in err, err
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
    assert any("went away" in r.getMessage() for r in caplog.records), "the resets happened"


@pytest.mark.parametrize("how", ["absolute", "dotdot", "symlink"])
def test_media_only_from_inside_the_session(client: Client, capture_home: Path, tmp_path: Path,
                                            how: str) -> None:
    session = make_session(capture_home)
    elsewhere = tmp_path / "private" / "someone-elses.mkv"
    elsewhere.parent.mkdir()
    elsewhere.write_bytes((session / "video.mkv").read_bytes())  # a readable, decodable video
    manifest = json.loads((session / "manifest.json").read_text())
    entry = manifest["files"]["video.mkv"]
    if how == "symlink":
        (session / "video.mkv").unlink()
        (session / "video.mkv").symlink_to(elsewhere)
    else:
        name = str(elsewhere) if how == "absolute" else os.path.relpath(elsewhere, session)
        assert (session / name).resolve() == elsewhere.resolve()
        manifest["video"]["file"] = name
        manifest["files"][name] = manifest["files"][Path(name).name] = entry
        (session / "manifest.json").write_text(json.dumps(manifest))
    for kind in ("thumbnail", "preview"):
        reply = client.get(f"/api/{kind}/{session.name}")
        assert reply.status == 404, (kind, reply.body)
        assert "outside its session" in reply.json()["error"]
    assert not list((capture_home / "cache").rglob("*.jpg")), "nothing was decoded"


def test_media_of_a_malformed_manifest_is_a_404(client: Client, capture_home: Path) -> None:
    session = make_session(capture_home)
    manifest = json.loads((session / "manifest.json").read_text())
    manifest["files"]["video.mkv"]["sha256"] = "../../x"
    (session / "manifest.json").write_text(json.dumps(manifest))
    assert client.get(f"/api/thumbnail/{session.name}").status == 404


def test_full_disk_is_a_plain_answer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                     agent: FakeAgent) -> None:
    from tests.test_journal_disk_full import mount_small_disk

    for disk in mount_small_disk(tmp_path / "disk", 1024 * 1024):
        monkeypatch.setenv("CAPTURE_HOME", str(disk.root / "home"))
        (disk.root / "home").mkdir()
        disk.fill(leave=0)
        with WebServer(agent) as server:
            reply = Client(server).post("/api/grant", grant_body())
            assert reply.status == 507, reply.body
            ledger = disk.root / "home" / "consent" / "ledger.jsonl"  # the file is named
            assert reply.json()["error"] == f"{ledger}: disk full: free some space and try again"
            assert consent.active_grants() == []
            disk.free()
            assert Client(server).post("/api/grant", grant_body()).status == 200


def test_enter_in_the_terminal_prints_a_new_one_time_address(client: Client,
                                                             server: WebServer) -> None:
    printed: list[str] = []
    server.hand_out_login_urls(io.StringIO("\n\n"), printed.append)
    deadline = time.monotonic() + 5
    while len(printed) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(printed) == 2 and printed[0] != printed[1]
    for url in printed:
        assert login(client, url).status == 303
        assert login(client, url).status == 403
