"""`capture agent` end to end on Xvfb: a real game, real focus changes, the page in Chromium."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from capture import consent
from capture.clock import now_ns
from capture.demo.game import WINDOW_CLASS
from capture.export import export_dataset
from capture.export.verify import verify_dataset
from capture.inputs.xtest import XTestInjector
from capture.session.reader import open_session
from tests.agent import browser
from tests.agent.notifications import NotificationService, notification_service, private_bus
from tests.e2e.minetest import Minetest, available
from tests.x11windows import other_window, window_with_class

pytestmark = [pytest.mark.x11, pytest.mark.slow]


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


@dataclass
class RunningAgent:
    proc: subprocess.Popen[str]
    url: str                      # the one-time sign-in address it printed first
    log: Path
    notifications: NotificationService  # the desktop's notification service it talks to
    cookie: str | None = None     # "name=value", once signed in

    def new_login_url(self) -> str:
        """Press Enter in the agent's terminal; it prints a new one-time address."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write("\n")
        self.proc.stdin.flush()
        url = self.proc.stdout.readline().strip()
        assert "/login?code=" in url, url
        return url

    def status(self) -> dict[str, Any]:
        if self.cookie is None:  # sign in as a browser would, with an address of its own
            opener = urllib.request.build_opener(_NoRedirect)
            try:
                opener.open(self.new_login_url(), timeout=5)
            except urllib.error.HTTPError as exc:
                assert exc.code == 303, exc
                self.cookie = exc.headers["Set-Cookie"].split(";")[0]
        base = self.url.split("/login?")[0]
        request = urllib.request.Request(f"{base}/api/status", headers={"Cookie": self.cookie})
        with urllib.request.urlopen(request, timeout=5) as response:
            return json.loads(response.read())

    def wait_status(self, predicate: Callable[[dict[str, Any]], bool],
                    timeout_s: float = 20) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        status: dict[str, Any] = {}
        while time.monotonic() < deadline:
            status = self.status()
            if predicate(status):
                return status
            time.sleep(0.1)
        raise AssertionError(f"agent status never matched; last: {status}\n"
                             f"{self.log.read_text()[-3000:]}")


@pytest.fixture
def agent(xvfb, capture_home: Path, tmp_path: Path) -> Iterator[RunningAgent]:
    config = tmp_path / "config.toml"
    config.write_text("[agent]\nidle_pause_seconds = 30\nsegment_minutes = 10\n"
                      "open_browser = false\n")
    log = tmp_path / "agent.log"
    with private_bus() as bus, notification_service(bus) as notifications:
        env = {**os.environ, "DISPLAY": xvfb.display, "CAPTURE_HOME": str(capture_home),
               "CAPTURE_CONFIG": str(config), "DBUS_SESSION_BUS_ADDRESS": bus}
        with open(log, "w") as log_file:
            proc = subprocess.Popen([sys.executable, "-m", "capture", "agent", "--no-browser"],
                                    env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    stderr=log_file, text=True)
        try:
            assert proc.stdout is not None
            url = proc.stdout.readline().strip()
            assert url.startswith("http://127.0.0.1:") and "/login?code=" in url, \
                (url, log.read_text())
            yield RunningAgent(proc, url, log, notifications)
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(30)
            for stream in (proc.stdin, proc.stdout):
                if stream is not None:
                    stream.close()


def _stop_agent(agent: RunningAgent) -> None:
    agent.proc.send_signal(signal.SIGTERM)
    assert agent.proc.wait(30) == 0, agent.log.read_text()[-3000:]


@pytest.mark.game
@pytest.mark.skipif(not available(), reason="minetest is not installed")
def test_agent_records_a_real_game_only_while_it_is_focused(xvfb, agent, capture_home,
                                                            tmp_path) -> None:
    consent.grant("player-1", ["minetest"], ["video", "keyboard", "mouse"])
    agent.wait_status(lambda s: s["state"] == "waiting")
    other_display, other = other_window(xvfb.display)
    game = Minetest(tmp_path / "minetest", xvfb.display)
    inject = XTestInjector(xvfb.display)
    try:
        game.wait_ready()
        inject.focus(other.id)
        agent.wait_status(lambda s: s["game"] == "minetest" and s["state"] == "paused")
        inject.focus(window_with_class(xvfb.display, "Minetest"))
        status = agent.wait_status(lambda s: s["state"] == "recording")
        assert status["reason"] == "minetest is focused"
        time.sleep(0.5)
        inject.key_down("w")
        time.sleep(0.6)
        inject.key_up("w")
        for _ in range(20):
            inject.move_relative(5, 0)
            time.sleep(0.01)

        inject.focus(other.id)
        status = agent.wait_status(lambda s: s["state"] == "paused")
        assert "another window" in status["reason"]
        away_from = now_ns()
        inject.tap("e", 0.2)
        for _ in range(10):
            inject.move_relative(40, 40)
            time.sleep(0.01)
        away_to = now_ns()
        time.sleep(0.3)
        inject.focus(window_with_class(xvfb.display, "Minetest"))
        agent.wait_status(lambda s: s["state"] == "recording")
        time.sleep(0.5)
        for _ in range(10):
            inject.move_relative(-3, 2)
            time.sleep(0.01)
        time.sleep(0.5)
    finally:
        inject.close()
        game.stop()
        other_display.close()
    status = agent.wait_status(lambda s: s["state"] == "waiting" and "exited" in s["reason"])
    assert status["last_segment_checks"], "no record-time checks shown after recording"
    _stop_agent(agent)

    listed = json.loads(subprocess.run(
        [sys.executable, "-m", "capture", "sessions", "list", "--json"], check=True,
        capture_output=True, text=True,
        env={**os.environ, "CAPTURE_HOME": str(capture_home)}).stdout)
    assert len(listed) == 1 and listed[0]["game"] == "minetest"
    segment_dirs = [Path(s["path"]) for s in listed[0]["segments"]]
    assert all(s["status"] == "complete" and s["checks"] for s in listed[0]["segments"])
    events = [e for d in segment_dirs for e in open_session(d).events().to_pylist()]
    assert not [e for e in events if away_from <= e["t_ns"] <= away_to
                and e["kind"] not in ("focus_in", "focus_out")]
    assert not any(e.get("key") == "e" for e in events)
    assert sum(e["dx"] for e in events if e["kind"] == "motion") == 20 * 5 - 10 * 3

    dataset = tmp_path / "dataset"
    export_dataset(segment_dirs, dataset)
    assert verify_dataset(dataset).ok


def test_agent_page_grant_record_delete_revoke_in_chromium(xvfb, agent, capture_home,
                                                          tmp_path) -> None:
    browser.require_chromium()
    with browser.open_page(agent.url) as session:
        page = session.page
        # on start it says what it waits for (terminal and page)
        page.locator("#status-reason").filter(has_text="waiting for consent").wait_for()
        assert "waiting for consent: no one has consented" in agent.log.read_text()
        message = browser.grant_via_form(page, "page-player", [WINDOW_CLASS],
                                         ["video", "keyboard", "mouse"])
        assert "page-player" in message or "consent" in message.lower()
        grants = consent.active_grants()
        assert [g.method for g in grants] == ["agent-web"]
        agent.wait_status(lambda s: s["state"] == "waiting" and WINDOW_CLASS in s["reason"])

        game = subprocess.Popen([sys.executable, "-m", "capture.demo.game", "--size", "320x240"],
                                env={**os.environ, "DISPLAY": xvfb.display})
        try:
            agent.wait_status(lambda s: s["game"] == WINDOW_CLASS)
            window = window_with_class(xvfb.display, WINDOW_CLASS)
            with XTestInjector(xvfb.display) as inject:
                inject.focus(window)
                status = agent.wait_status(lambda s: s["state"] == "recording")
                page.get_by_text(status["reason"]).first.wait_for()
                for _ in range(30):
                    inject.move_relative(3, 1)
                    time.sleep(0.05)
                inject.tap("d", 0.3)
        finally:
            game.terminate()
            game.wait(10)
        agent.wait_status(lambda s: s["state"] == "waiting" and "exited" in s["reason"])
        # a notification on the desktop (never in the game's window) at start and stop
        wanted = [f"Recording {WINDOW_CLASS}", f"Stopped recording {WINDOW_CLASS}"]
        deadline = time.monotonic() + 10  # sent on a thread of their own
        while agent.notifications.summaries() != wanted and time.monotonic() < deadline:
            time.sleep(0.05)
        assert agent.notifications.summaries() == wanted
        started, stopped = agent.notifications.shown
        assert started.closed_ns is not None, "the start notice is taken down before recording"
        assert "notification service" not in agent.log.read_text()  # no "cannot notify"
        assert "recording starts in 3 s, once the desktop notification has gone" in \
            agent.log.read_text()
        sessions = list((capture_home / "sessions").iterdir())
        assert len(sessions) == 1
        # nothing of the notices is in the video: it starts after the first was taken down, and
        # the last came after the last frame
        times = open_session(sessions[0]).frames().column("capture_time_ns").to_pylist()
        assert started.closed_ns < times[0] and times[-1] < stopped.shown_ns
        session_id = sessions[0].name
        card = browser.wait_for_session(page, session_id)
        assert browser.thumbnail_width(card) > 0
        assert agent.status()["last_segment_checks"]
        browser.delete_via_ui(page, session_id)
        assert not sessions[0].exists()
        # the deleted session's checks are gone from the status panel too
        agent.wait_status(lambda s: s["last_segment_checks"] is None)
        page.locator("#status-checks-box").wait_for(state="hidden")
        browser.revoke_via_ui(page, "page-player")
        assert consent.active_grants() == []
        session.assert_clean()
    _stop_agent(agent)
