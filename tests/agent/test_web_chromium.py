"""The agent's page in headless Chromium: grant, a session appears, preview, delete, revoke."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from capture import consent
from capture.agent.web import WebServer
from capture.consent.terms import TERMS_VERSION, terms_sha256, terms_text
from tests.agent import browser
from tests.collector.conftest import live_collector  # noqa: F401  (a fixture used below)
from tests.factories import build_session, gameplay_script

PLAYER = "Alice Example"
GAME = "factorygame"
SCREENSHOT = Path("/tmp/capture-agent-page.png")


class ScriptedAgent:
    """A stand-in AgentView: a fixed state, and a count of consent changes."""

    def __init__(self) -> None:
        self.changes = 0

    def status(self) -> dict[str, Any]:
        return {"state": "recording", "game": GAME, "reason": f"{GAME} is focused",
                "backend": {"name": "builtin", "state": "capturing", "detail": "XShm, 30 fps"},
                "session_id": "20250301T120000Z-factorygame-000009", "segment": 2,
                "since_utc": "2025-03-01T12:00:00Z",
                "last_segment_checks": [
                    {"name": "fps", "ok": True, "detail": "29.9 of 30 fps achieved"},
                    {"name": "input_activity", "ok": False, "detail": "no input"}]}

    def consent_changed(self) -> None:
        self.changes += 1

    def release_upload(self, session_id: str) -> bool:
        return False

    def session_deleted(self, session_id: str) -> None:
        pass


@pytest.fixture
def agent() -> ScriptedAgent:
    return ScriptedAgent()


@pytest.fixture
def server(capture_home: Path, agent: ScriptedAgent) -> Iterator[WebServer]:
    browser.require_chromium()
    with WebServer(agent) as web:
        yield web


def test_page_grant_session_delete_revoke(server: WebServer, agent: ScriptedAgent,
                                          capture_home: Path) -> None:
    with browser.open_page(server.login_url()) as s:
        page = s.page
        # the status panel shows what the agent says
        page.locator("#status-reason").filter(has_text=f"{GAME} is focused").wait_for()
        assert page.locator("#status-state").inner_text() == "Recording"
        assert "segment 2" in page.locator("#status-session").inner_text()
        checks = page.locator("#status-checks").inner_text()
        assert "✓ OK Frame rate: The video kept up with the game. (29.9 of 30 fps achieved)" \
            in checks
        assert ("⚠ warning Input activity: No keyboard, mouse or gamepad input was recorded. "
                "(no input)") in checks
        assert "input_activity" not in checks and "fps:" not in checks

        # the exact terms are shown before anyone agrees
        page.locator("#terms").filter(has_text="Consent to record your gameplay").wait_for()
        assert page.locator("#terms-raw").text_content() == terms_text()
        shown = " ".join(page.locator("#terms").inner_text().split())
        assert shown == " ".join(re.sub(r"^#+ |^- |`", "", terms_text(), flags=re.M).split())
        assert page.locator("#terms-sha").text_content() == terms_sha256()
        assert page.locator("#scope-audio").count() == 0  # nothing records sound
        assert not page.locator("#scope-video").is_checked()

        message = browser.grant_via_form(page, PLAYER, [GAME, "othergame"],
                                         ["video", "keyboard", "mouse"])
        assert "Consent recorded" in message, message
        (grant,) = consent.active_grants()
        assert grant.method == "agent-web" and grant.player == PLAYER
        assert grant.games == (GAME, "othergame")
        assert grant.scope == ("video", "keyboard", "mouse")
        assert (grant.terms_version, grant.terms_sha256) == (TERMS_VERSION, terms_sha256())
        assert agent.changes == 1
        browser.grant_card(page, PLAYER).wait_for()

        # a recording lands on disk: the page lists it with its picture and preview
        session = build_session(capture_home / "sessions", gameplay_script(seconds=3.0))
        card = browser.wait_for_session(page, session.name)
        assert card.locator(".card-game").inner_text() == GAME
        assert "complete" in card.inner_text()
        assert "✓ OK" in card.locator(".checks").inner_text()
        assert browser.thumbnail_width(card) == 64
        video = browser.play_preview(card)
        assert video["width"] == 64 and video["error"] is None and not video["paused"]
        s.screenshot(SCREENSHOT)

        browser.delete_via_ui(page, session.name)
        assert not session.exists()
        assert not (capture_home / "cache" / "agent-web" / session.name).exists()

        # revoking deletes the player's sessions of those games too
        second = build_session(capture_home / "sessions", gameplay_script(
            seconds=1.0, session_id="20250301T120000Z-factorygame-000002"))
        browser.wait_for_session(page, second.name)
        message = browser.revoke_via_ui(page, PLAYER)
        assert "Deleted 1 local session" in message, message
        assert not second.exists()
        browser.session_card(page, second.name).wait_for(state="detached")
        assert consent.active_grants() == []
        assert consent.receipt_status(grant.receipt_id) == "revoked"
        assert consent.all_entries()[-1].method == "agent-web"
        assert agent.changes == 2
        assert page.locator("#grants-empty").is_visible()
        s.assert_clean()


def test_page_without_token_is_refused(server: WebServer) -> None:
    with browser.open_page(server.url, ignore_console=("401",)) as s:
        assert "not signed in" in s.page.content()
        s.assert_clean()


def test_one_time_address_signs_in_with_a_cookie_scripts_cannot_read(
        server: WebServer, agent: ScriptedAgent) -> None:
    login = server.login_url()
    with browser.open_page(login, ignore_console=("403",)) as s:
        page = s.page
        page.locator("#status-reason").filter(has_text=f"{GAME} is focused").wait_for()
        assert page.url == server.url, "the address bar keeps no code and no token"
        assert page.evaluate("document.cookie") == "", "the cookie is HttpOnly"
        (cookie,) = s.context.cookies()
        assert (cookie["name"], cookie["httpOnly"], cookie["sameSite"]) == \
            (server.cookie_name, True, "Strict")
        assert cookie["expires"] == -1, "a session cookie"
        assert server.token not in cookie["value"] and login.split("=")[1] not in cookie["value"]
        # the page's own changes go through with the cookie (grant from the form)
        message = browser.grant_via_form(page, PLAYER, [GAME], ["video"])
        assert "Consent recorded" in message, message
        assert agent.changes == 1

        # another site's form cannot make changes with the cookie (SameSite=Strict + Origin)
        page.goto("about:blank")
        page.set_content(f'''<form id=f method=POST action="{server.url}api/revoke"
            enctype="text/plain"><input name='{{"player":"{PLAYER}","x":"' value='"}}'>
            </form>''')
        with page.expect_navigation():
            page.evaluate("document.getElementById('f').submit()")
        assert consent.active_grants(), "the cross-site form changed nothing"

        # the same address again, without the cookie (another browser, or later): used up
        s.context.clear_cookies()
        page.goto(login)
        assert "already used or has expired" in page.content()
        page.goto(server.url)
        assert "not signed in" in page.content()
        s.console_errors.clear()  # the refusals above are logged by the browser as 4xx


class ReviewingAgent:
    """A stand-in AgentView with upload-after-review on: uploads the test moves along by hand."""

    def __init__(self) -> None:
        self.uploads: dict[str, dict[str, Any]] = {}
        self.released: list[str] = []
        self.changes = 0

    def status(self) -> dict[str, Any]:
        return {"state": "waiting", "game": None,
                "reason": "waiting for a consented game to run: watching factorygame",
                "backend": {"name": "builtin", "state": "idle", "detail": ""},
                "session_id": None, "segment": None, "since_utc": None,
                "last_segment_checks": None, "uploads": list(self.uploads.values()),
                "upload_after_review": True,
                "notifications": "no desktop notification service is reachable"}

    def consent_changed(self) -> None:
        self.changes += 1

    def release_upload(self, session_id: str) -> bool:
        upload = self.uploads.get(session_id)
        if upload is None or upload["status"] != "waiting" or upload["released"]:
            return False
        upload["released"] = True
        self.released.append(session_id)
        return True

    def session_deleted(self, session_id: str) -> None:
        self.uploads.pop(session_id, None)


def test_page_folds_consent_names_checks_and_sends_after_review(capture_home: Path) -> None:
    from capture.session.manifest import read_manifest
    from capture.uploader import enrollment

    browser.require_chromium()
    consent.grant(PLAYER, [GAME], ["video", "keyboard", "mouse"])
    session = build_session(capture_home / "sessions", gameplay_script(seconds=1.0))
    manifest = read_manifest(session)
    enrollment.save(enrollment.Enrollment(
        collector="http://127.0.0.1:8470", study="lab-study", player_id="p-1",
        pseudonym="alice", receipt_id=manifest.consent.receipt_id, device_token="t" * 32,
        token_expires_at="2099-01-01T00:00:00Z", registry_seq=0, registry_hash="0" * 64))
    agent = ReviewingAgent()
    sid = manifest.session_id
    agent.uploads[sid] = {"session_id": sid, "status": "waiting", "percent": 0.0,
                          "reason": None, "released": False}
    with WebServer(agent) as web, browser.open_page(web.login_url()) as s:
        page = s.page
        # what the agent waits for, and that it cannot show notifications
        page.locator("#status-reason").filter(has_text="watching factorygame").wait_for()
        assert "no desktop notification service" in page.locator("#status-notify").inner_text()

        # someone consented: the form is folded, and opens again to grant another
        browser.grant_card(page, PLAYER).wait_for()
        box = page.locator("#grant-box")
        assert box.evaluate("d => d.open") is False
        assert not page.get_by_label("Your player name or pseudonym").is_visible()
        page.get_by_text("Give another consent").click()
        assert box.evaluate("d => d.open") is True
        message = browser.grant_via_form(page, "Bob", ["othergame"], ["video"])
        assert "Consent recorded for Bob" in message, message
        page.wait_for_function("() => !document.getElementById('grant-box').open")
        assert page.locator("#grant-message").is_visible()

        # the card: checks in words, the input count its check counted, no internal notes
        card = browser.wait_for_session(page, session.name)
        checks = card.locator(".checks").inner_text()
        assert "Length: The segment is too short to use" in checks
        assert "Input activity: Your keyboard, mouse or gamepad input was recorded." in checks
        assert "_" not in checks, checks
        qa = manifest.qa
        assert qa is not None
        (activity,) = [c for c in qa.checks if c.name == "input_activity"]
        inputs = card.locator("dt", has_text="Inputs").locator("xpath=following-sibling::dd[1]")
        assert inputs.inner_text() == str(activity.value)

        # sending after review, then the upload's state as the collector reports it
        upload = card.locator(".upload-waiting")
        assert "not sent" in upload.inner_text()
        card.get_by_role("button", name="Send to 127.0.0.1:8470").click()
        card = browser.session_card(page, session.name)
        card.locator("dd", has_text="queued").wait_for()
        assert agent.released == [sid]
        assert card.get_by_role("button", name="Send to 127.0.0.1:8470").count() == 0
        agent.uploads[sid].update(status="uploading", percent=42.7)
        card.locator("dd", has_text="uploading, 42 %").wait_for()
        agent.uploads[sid].update(status="rejected", percent=0.0,
                                  reason="the game is not part of this study")
        card.locator("dd", has_text="rejected by the collector: the game is not part of this "
                                    "study").wait_for()
        agent.uploads[sid].update(status="accepted", percent=100.0, reason=None)
        card.locator("dd", has_text="accepted by the collector").wait_for()
        s.screenshot(Path("/tmp/capture-agent-page-review.png"))
        s.assert_clean()


def test_page_shows_the_collectors_confirmation_of_a_withdrawal(
        capture_home: Path, live_collector: Any) -> None:  # noqa: F811 (the fixture)
    import httpx

    from capture.uploader import enrollment
    from capture.uploader.uploader import upload_session
    from tests.collector.conftest import ADMIN_TOKEN, STUDY

    browser.require_chromium()
    with httpx.Client(base_url=live_collector.url,
                      headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as admin:
        admin.post("/v1/studies", json=STUDY).raise_for_status()
        code = admin.post("/v1/studies/s1/invites").json()["code"]
    study = enrollment.fetch_study(live_collector.url, code)
    enrolled, _ = enrollment.enroll(live_collector.url, code, study, "dana",
                                    method="cli-scripted")
    session = build_session(capture_home / "sessions", gameplay_script(
        receipt_id=enrolled.receipt_id, player="dana", synthetic=False, seconds=6,
        width=320, height=240))
    assert upload_session(session).status == "accepted"
    with WebServer(ReviewingAgent()) as web, browser.open_page(web.login_url()) as s:
        page = s.page
        browser.grant_card(page, "dana").wait_for()
        message = browser.revoke_via_ui(page, "dana")
        where = live_collector.url.split("//")[1]
        assert (f"The collector at {where} confirmed the withdrawal and deleted the 1 "
                "session(s) of yours it held.") in message, message
        assert "registry" not in message and "Traceback" not in message
        s.assert_clean()
