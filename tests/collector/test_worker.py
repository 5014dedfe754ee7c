"""The agent's background uploader: delay, review, bandwidth pacing, progress and retention."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from capture.uploader import enrollment
from capture.uploader.uploader import is_released
from capture.uploader.worker import Pacer, UploadSettings, UploadWorker
from tests.collector.conftest import ADMIN_TOKEN, STUDY, LiveCollector, wait_for
from tests.factories import build_session, gameplay_script


def _enrolled_session(live: LiveCollector, home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("CAPTURE_HOME", str(home))
    with httpx.Client(base_url=live.url,
                      headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as admin:
        admin.post("/v1/studies", json=STUDY)
        code = admin.post("/v1/studies/s1/invites").json()["code"]
    study = enrollment.fetch_study(live.url, code)
    enrolled, _ = enrollment.enroll(live.url, code, study, "dana", method="cli-scripted")
    script = gameplay_script(receipt_id=enrolled.receipt_id, player="dana", synthetic=False,
                             seconds=6, width=320, height=240)
    return build_session(home / "sessions", script)


def _accepted_on_collector(live: LiveCollector) -> int:
    with httpx.Client(base_url=live.url,
                      headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as admin:
        return len(admin.get("/v1/admin/sessions").json())


def test_delay_progress_and_retention(live_collector: LiveCollector, tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    session = _enrolled_session(live_collector, tmp_path / "dana", monkeypatch)
    worker = UploadWorker(UploadSettings(delay_minutes=0.02, bandwidth_kib_s=48, keep_days=0))
    assert worker.queue(session)
    worker.start()
    try:
        seen: list[dict[str, object]] = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            [state] = worker.states()
            seen.append(state)
            if state["status"] == "accepted":
                break
            time.sleep(0.02)
        statuses = [s["status"] for s in seen]
        assert statuses[0] == "waiting" and statuses[-1] == "accepted"
        partial = [s["percent"] for s in seen if s["status"] == "uploading"]
        assert any(0 < float(p) < 100 for p in partial), partial  # the page can show a %
        assert _accepted_on_collector(live_collector) == 1
        wait_for(lambda: not session.exists(), 30, "the local copy to be deleted")
    finally:
        worker.stop()


def test_after_review_waits_for_the_player(live_collector: LiveCollector, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    session = _enrolled_session(live_collector, tmp_path / "dana", monkeypatch)
    worker = UploadWorker(UploadSettings(after_review=True))
    worker.queue(session)
    worker.start()
    try:
        time.sleep(1.5)
        assert [s["status"] for s in worker.states()] == ["waiting"]
        assert _accepted_on_collector(live_collector) == 0
        worker.release(session.name)
        wait_for(lambda: worker.states()[0]["status"] == "accepted", 60, "the upload")
        assert session.exists()  # keep_days None: the local copy stays
    finally:
        worker.stop()


def test_a_release_outlives_an_agent_restart(live_collector: LiveCollector, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    session = _enrolled_session(live_collector, tmp_path / "fay", monkeypatch)
    first = UploadWorker(UploadSettings(after_review=True, delay_minutes=60))
    first.queue(session)
    first.start()
    first.release(session.name)     # released, but not due for an hour: the agent then stops
    first.stop()
    assert _accepted_on_collector(live_collector) == 0
    again = UploadWorker(UploadSettings(after_review=True))
    again.queue(session)
    again.start()
    try:
        wait_for(lambda: again.states()[0]["status"] == "accepted", 60, "the upload")
    finally:
        again.stop()
    assert is_released(session.name)
    again.forget(session.name)     # the player deleted the session: its release goes with it
    assert not is_released(session.name)


def test_sessions_without_an_enrolled_consent_are_not_queued(
        live_collector: LiveCollector, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CAPTURE_HOME", str(tmp_path / "erin"))
    session = build_session(tmp_path / "erin" / "sessions", gameplay_script())
    assert not UploadWorker(UploadSettings()).queue(session)


def test_pacer_keeps_the_average_rate() -> None:
    now = [0.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    pacer = Pacer(1000, sleep=sleep, clock=lambda: now[0])
    pacer.spent(500)   # 0.5 s worth at once
    now[0] += 0.1      # the send itself took 0.1 s
    pacer.spent(500)
    assert slept == pytest.approx([0.5, 0.4])
    assert now[0] == pytest.approx(1.0)


@pytest.mark.x11
def test_the_agent_uploads_what_was_queued_when_it_starts(
        live_collector: LiveCollector, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        xvfb: object) -> None:
    """Sessions left queued (e.g. by an agent that was stopped) go up when the agent starts,
    and the page's status shows each one's upload state."""
    import threading

    from capture.agent.agent import Agent
    from capture.agent.settings import AgentSettings

    session = _enrolled_session(live_collector, tmp_path / "dana", monkeypatch)
    lines: list[str] = []
    agent = Agent(AgentSettings(), say=lines.append)
    stop = threading.Event()
    runner = threading.Thread(target=agent.run, args=(stop,), daemon=True)
    runner.start()
    try:
        wait_for(lambda: [u["status"] for u in agent.status()["uploads"]] == ["accepted"], 60,
                 "the queued session to be accepted")
        assert f"{session.name} is queued for upload" in lines
        assert _accepted_on_collector(live_collector) == 1
        # the page shows it, and withdrawing on the page tells the collector
        from capture.agent.web import WebServer

        with WebServer(agent) as page:
            headers = {"X-Capture-Token": page.token}
            sessions = httpx.get(f"{page.url.split('?')[0].rstrip('/')}/api/sessions",
                                 headers=headers).json()["sessions"]
            [card] = [c for c in sessions if c["id"] == session.name]
            assert card["upload"]["status"] == "accepted"
            receipt_id = enrollment.load_all()[0].receipt_id
            answer = httpx.post(f"{page.url.split('?')[0].rstrip('/')}/api/revoke",
                                headers=headers,
                                json={"player": "dana", "receipt_id": receipt_id}).json()
            assert any("confirmed the withdrawal" in line for line in answer["collector"]), answer
        assert _accepted_on_collector(live_collector) == 0
    finally:
        stop.set()
        runner.join(30)
