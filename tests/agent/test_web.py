"""The agent's page server without a browser: loopback only, token, Host/Origin checks, the API."""

from __future__ import annotations

import http.client
import json
import logging
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np
import pytest

from capture import consent
from capture.agent import media
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

    def status(self) -> dict[str, Any]:
        return dict(self.state)

    def consent_changed(self) -> None:
        self.changes += 1


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
        sent = {"Host": self.host}
        if token == "header":
            sent[TOKEN_HEADER] = self.server.token
        elif token == "query":
            path += ("&" if "?" in path else "?") + f"token={self.server.token}"
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
    assert server.url == f"http://127.0.0.1:{server.port}/?token={server.token}"
    assert len(server.token) >= 32
    with pytest.raises(OSError), socket.create_connection(("127.0.0.2", server.port), timeout=2):
        pass  # another address on this host (as another host would reach it) is not served


def test_token_is_required(client: Client, server: WebServer) -> None:
    assert client.get("/", token=None).status == 401
    assert client.get("/api/status", token=None).status == 401
    assert client.get("/app.js", token=None).status == 401
    wrong = client.get("/api/status", token=None, headers={TOKEN_HEADER: "x" * 32})
    assert wrong.status == 403
    assert client.get(f"/api/status?token={'y' * 32}", token=None).status == 403
    assert "error" in wrong.json()
    assert client.get("/?token=" + server.token, token=None).status == 200
    assert client.get("/api/status", token="query").status == 200
    assert client.get("/api/status").status == 200


def test_changes_need_the_token_header(client: Client) -> None:
    reply = client.post("/api/grant", grant_body(), token="query")
    assert reply.status == 401
    assert consent.active_grants() == []


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
    reply = client.get("/", token="query")
    assert reply.headers["Content-Security-Policy"].startswith("default-src 'self'")
    assert reply.headers["X-Frame-Options"] == "DENY"
    assert reply.headers["Referrer-Policy"] == "no-referrer"
    assert not any(h.lower().startswith("access-control-") for h in reply.headers)
    page = reply.body.decode()
    assert "__TOKEN__" not in page
    assert "http://" not in page.replace("http://www.w3.org", "")  # nothing from the network
    static = Path(media.__file__).parent / "static"
    for name in ("index.html", "app.js", "style.css"):
        text = (static / name).read_text()
        assert "https://" not in text and "//cdn" not in text, name


def test_token_is_never_logged(client: Client, server: WebServer,
                               caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="capture.agent.web"):
        client.get("/", token="query")
        client.get("/api/status")
        client.get("/api/status?token=wrong-token-wrong-token", token=None)
    assert caplog.records, "requests are logged at debug level"
    assert server.token not in caplog.text
    assert "wrong-token" not in caplog.text


# --- the API ---------------------------------------------------------------------------------
def test_status_passes_the_agents_report(client: Client, agent: FakeAgent) -> None:
    agent.state["last_segment_checks"] = [{"name": "fps", "ok": False, "detail": "12 of 30 fps"}]
    status = client.get("/api/status").json()
    assert status["reason"] == "paused: another window has focus"
    assert status["last_segment_checks"] == [
        {"name": "fps", "level": "warning", "detail": "12 of 30 fps"}]

    def broken() -> dict[str, Any]:
        raise RuntimeError("boom")

    agent.status = broken  # type: ignore[method-assign]
    status = client.get("/api/status").json()
    assert status["state"] == "unknown" and "boom" in status["reason"]


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


def test_sessions_list_thumbnail_preview_and_delete(client: Client, capture_home: Path) -> None:
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
        {"name": "fps", "level": "ok", "detail": "30 fps"},
        {"name": "length", "level": "warning", "detail": ""},
        {"name": "disk", "level": "error", "detail": "full"}]


def test_busy_port_is_a_plain_error(server: WebServer, agent: FakeAgent) -> None:
    with pytest.raises(CaptureError, match=f"127.0.0.1:{server.port}"):
        WebServer(agent, port=server.port)
