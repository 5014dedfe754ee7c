"""Drive the agent's page in Debian's headless Chromium with Playwright (reusable by e2e tests)."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import pytest

if TYPE_CHECKING:
    from playwright.sync_api import BrowserContext, Page, Route

CHROMIUM = Path("/usr/bin/chromium")
# Without the networking flags Chromium keeps calling home, which this machine refuses.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync",
                 "--autoplay-policy=no-user-gesture-required"]
LOOPBACK = {"127.0.0.1", "localhost"}
TIMEOUT_MS = 15_000


def require_chromium() -> None:
    """Skip the calling test (with the reason) if Debian's Chromium or Playwright is missing."""
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is absent (apt-get install chromium)")
    pytest.importorskip("playwright.sync_api", reason="pip install playwright")


@dataclass
class PageSession:
    """An open page with everything it complained about or tried to fetch from elsewhere."""

    page: Page
    context: BrowserContext
    console_errors: list[str] = field(default_factory=list)
    offsite_requests: list[str] = field(default_factory=list)

    def assert_clean(self) -> None:
        """No script error, no CSP violation, no request that left this computer."""
        assert not self.offsite_requests, f"fetched from the network: {self.offsite_requests}"
        assert not self.console_errors, f"the page reported errors: {self.console_errors}"

    def screenshot(self, path: Path | str) -> Path:
        self.page.screenshot(path=str(path), full_page=True)
        return Path(path)


@contextmanager
def open_page(url: str, *, width: int = 1280, height: int = 900,
              ignore_console: tuple[str, ...] = ()) -> Iterator[PageSession]:
    """Launch /usr/bin/chromium with a fresh profile, open `url` and yield the page.

    Requests to any host but 127.0.0.1/localhost are aborted and recorded; console errors
    whose text contains one of `ignore_console` are not recorded.
    """
    require_chromium()
    from playwright.sync_api import sync_playwright

    profile = Path(tempfile.mkdtemp(prefix="capture-chromium-"))
    try:
        with sync_playwright() as p:
            context = p.chromium.launch_persistent_context(
                str(profile), executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS,
                viewport={"width": width, "height": height}, service_workers="block")
            try:
                session = PageSession(page=context.pages[0] if context.pages
                                      else context.new_page(), context=context)

                def guard(route: Route) -> None:
                    if urlsplit(route.request.url).hostname in LOOPBACK:
                        route.continue_()
                    else:
                        session.offsite_requests.append(route.request.url)
                        route.abort()

                def on_console(message: Any) -> None:
                    if message.type == "error" and not any(
                            s in message.text for s in ignore_console):
                        session.console_errors.append(message.text)

                context.route("**/*", guard)
                session.page.on("console", on_console)
                session.page.on("pageerror", lambda exc: session.console_errors.append(str(exc)))
                session.page.set_default_timeout(TIMEOUT_MS)
                session.page.goto(url)
                yield session
            finally:
                context.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)


# --- what a player does on the page -------------------------------------------------------------
def grant_via_form(page: Page, player: str, games: list[str], scope: list[str]) -> str:
    """Fill in and submit the consent form; return the message the page shows."""
    page.get_by_label("Your player name or pseudonym").fill(player)
    page.get_by_label("Games to record", exact=False).fill(", ".join(games))
    for kind in scope:
        page.locator(f"#scope-{kind}").check()
    page.get_by_label("I have read the terms above", exact=False).check()
    page.get_by_role("button", name="Give consent").click()
    message = page.locator("#grant-message.ok, #grant-message.error")
    message.wait_for()
    return message.inner_text()


def grant_card(page: Page, player: str) -> Any:
    return page.locator("#grants li.grant").filter(has_text=player)


def revoke_via_ui(page: Page, player: str) -> str:
    """Withdraw the player's (first) grant with its button and confirm; return the message."""
    card = grant_card(page, player).first
    card.get_by_role("button", name="Withdraw…").click()
    card.get_by_role("button", name="Yes, withdraw and delete").click()
    grant_card(page, player).first.wait_for(state="detached")
    return page.locator("#grant-message").inner_text()


def session_card(page: Page, session_id: str) -> Any:
    return page.locator(f'#sessions li.card[data-session="{session_id}"]')


def wait_for_session(page: Page, session_id: str, timeout_ms: int = 20_000) -> Any:
    """The card of a session, once the page lists it (it polls every few seconds)."""
    card = session_card(page, session_id)
    card.wait_for(timeout=timeout_ms)
    return card


def thumbnail_width(card: Any) -> int:
    """naturalWidth of the card's thumbnail once it has loaded (0 if it failed)."""
    img = card.locator("img.thumb")
    img.wait_for()
    handle = img.element_handle()
    card.page.wait_for_function("img => img.complete", arg=handle)
    return int(img.evaluate("img => img.naturalWidth"))


def play_preview(card: Any) -> dict[str, Any]:
    """Press the card's Preview button; return the video's state once it has played a while."""
    card.get_by_role("button", name="Preview").click()
    video = card.locator("video.preview")
    video.wait_for()
    handle = video.element_handle()
    card.page.wait_for_function("v => v.readyState >= 2 && v.currentTime > 0.2", arg=handle)
    return dict(video.evaluate(
        "v => ({width: v.videoWidth, height: v.videoHeight, time: v.currentTime, "
        "paused: v.paused, error: v.error && v.error.message})"))


def delete_via_ui(page: Page, session_id: str) -> None:
    """Delete a session with its card's button and confirm; wait until the card is gone."""
    card = session_card(page, session_id)
    card.get_by_role("button", name="Delete…").click()
    card.get_by_role("button", name="Yes, delete").click()
    card.wait_for(state="detached")
