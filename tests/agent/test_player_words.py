"""What the agent tells players: checks in words, one input count, no internal notes, deleted
checks gone, the start line, sending after review, and desktop notifications over D-Bus."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import httpx
import pytest

from capture import consent
from capture.agent.agent import Agent
from capture.agent.notify import ANNOUNCE_S, UNREACHABLE, Notifier
from capture.agent.settings import AgentSettings
from capture.agent.web import WebServer
from capture.cli.record import session_summary
from capture.session import store, writer
from capture.session.check_words import CHECK_WORDS, check_line, describe_check, input_count
from capture.session.checks import active_inputs
from capture.session.manifest import read_manifest
from capture.uploader import enrollment
from capture.uploader.uploader import is_released
from tests.agent.notifications import notification_service, private_bus
from tests.factories import build_recording, build_session, factory_video_result, gameplay_script

COLLECTOR = "http://127.0.0.1:8470"


@pytest.fixture
def bus() -> Iterator[str]:
    with private_bus() as address:
        yield address


def _agent(bus: str, said: list[str], **settings: object) -> Agent:
    return Agent(AgentSettings(**settings), display=":99", say=said.append,  # type: ignore[arg-type]
                 notifier=Notifier(say=said.append, address=bus))


def _enroll(session: Path) -> None:
    """Enrollment of the session's consent in a study on COLLECTOR (what `capture enroll` keeps)."""
    enrollment.save(enrollment.Enrollment(
        collector=COLLECTOR, study="lab-study", player_id="p-1", pseudonym="alice",
        receipt_id=read_manifest(session).consent.receipt_id, device_token="t" * 32,
        token_expires_at="2099-01-01T00:00:00Z", registry_seq=0, registry_hash="0" * 64))


# --- checks in words, one input count ----------------------------------------------------------
def test_every_check_the_recorder_runs_has_words(capture_home: Path) -> None:
    session = build_session(capture_home / "sessions", gameplay_script(seconds=2.0))
    qa = read_manifest(session).qa
    assert qa is not None and qa.checks
    for check in qa.checks:
        words = describe_check(check.to_dict())
        assert check.name in CHECK_WORDS, f"no player words for the check {check.name!r}"
        assert "_" not in words["title"] and words["title"][0].isupper()
        assert words["sentence"] == (CHECK_WORDS[check.name].passed if check.ok
                                     else CHECK_WORDS[check.name].failed)
    assert describe_check({"name": "dropped_frames", "ok": False})["title"] == "Dropped frames"
    assert describe_check({"name": "new_check", "ok": True})["title"] == "New check"
    assert check_line("dropped_frames", False, "9 frame slots dropped (3.0 %)") == (
        "Dropped frames: Too many pictures were lost, perhaps because the computer was busy. "
        "(9 frame slots dropped (3.0 %))")


def test_the_card_and_the_cli_show_the_input_count_the_check_counted(capture_home: Path) -> None:
    session = build_session(capture_home / "sessions", gameplay_script(seconds=2.0))
    qa = read_manifest(session).qa
    assert qa is not None
    (check,) = [c for c in qa.checks if c.name == "input_activity"]
    # releases and focus changes are recorded too, so the raw event total is a different number
    assert qa.input_total > check.value == active_inputs(qa) == input_count(qa) > 0
    with WebServer(_NoAgent()) as web:
        (card,) = httpx.get(f"{web.url}api/sessions",
                            headers={"X-Capture-Token": web.token}).json()["sessions"]
    assert card["inputs"] == check.value
    assert f"inputs {check.value}" in session_summary(session)[0]


def test_no_internal_notes_reach_the_page(capture_home: Path) -> None:
    script = gameplay_script(seconds=2.0)
    session = build_recording(capture_home / "sessions", script)
    backend_note = "XShmGetImage took 41234567 ns (libXext: BadMatch)"  # as a backend reports
    writer.finalise(session, video_result=replace(factory_video_result(script),
                                                  notes=[backend_note]))
    qa = read_manifest(session).qa
    assert qa is not None and backend_note in qa.notes
    with WebServer(_NoAgent()) as web:
        text = httpx.get(f"{web.url}api/sessions", headers={"X-Capture-Token": web.token}).text
    for note in qa.notes:
        assert note not in text
    assert '"notes"' not in text


def test_the_cli_names_failed_checks_in_words(capture_home: Path) -> None:
    session = build_session(capture_home / "sessions", gameplay_script(seconds=1.0))
    failed = [line for line in session_summary(session) if line.startswith("check failed: ")]
    assert failed and all("_" not in line.split(":")[1] for line in failed), failed
    assert any(line.startswith("check failed: Length: The segment is too short") for line in failed)


# --- the agent's own words -----------------------------------------------------------------------
def test_a_deleted_sessions_checks_disappear(capture_home: Path, bus: str) -> None:
    said: list[str] = []
    agent = _agent(bus, said)
    first = build_session(capture_home / "sessions", gameplay_script(seconds=1.0))
    agent._report_checks(first)  # what the loop does right after a segment is finalised
    assert agent.status()["last_segment_checks"]
    assert any(line.startswith("  Length: ") for line in said), said
    with WebServer(agent) as web:
        headers = {"X-Capture-Token": web.token, "Origin": web.url.rstrip("/")}
        assert httpx.get(f"{web.url}api/status", headers=headers).json()["last_segment_checks"]
        reply = httpx.post(f"{web.url}api/delete", json={"id": first.name}, headers=headers)
        assert reply.status_code == 200, reply.text
        assert httpx.get(f"{web.url}api/status",
                         headers=headers).json()["last_segment_checks"] is None
    # deleted elsewhere (e.g. `capture sessions delete`): gone from the status too
    second = build_session(capture_home / "sessions", gameplay_script(
        seconds=1.0, session_id="20250301T120000Z-factorygame-000002"))
    agent._report_checks(second)
    assert agent.status()["last_segment_checks"]
    store.delete_session(second)
    assert agent.status()["last_segment_checks"] is None


def test_the_agent_says_what_it_waits_for_on_start(capture_home: Path, bus: str) -> None:
    said: list[str] = []
    agent = _agent(bus, said)
    stop = threading.Event()
    stop.set()
    agent.run(stop)
    assert said[0].startswith("waiting for consent: no one has consented to a game"), said
    assert "give consent on the agent's page" in said[0]
    assert agent.status()["reason"].startswith("waiting for consent")
    # no notification service on this bus: said at start, once, and shown on the page
    assert said[1].startswith(f"warning: {UNREACHABLE}"), said
    assert agent.status()["notifications"] == UNREACHABLE

    consent.grant("Bob", ["0ad"], ["keyboard"])  # no video: the agent cannot record it
    said.clear()
    _agent(bus, said).run(stop)
    assert said[0].startswith("waiting for consent: the consent given does not include video")
    consent.grant("Alice", ["minetest", "SuperTuxKart"], ["video", "keyboard"])
    said.clear()
    agent = _agent(bus, said)
    agent.run(stop)
    assert said[0] == "waiting for a consented game to run: watching minetest, SuperTuxKart"


# --- sending after review ----------------------------------------------------------------------
def test_release_after_review_through_the_page(capture_home: Path, bus: str) -> None:
    said: list[str] = []
    agent = _agent(bus, said, upload_after_review=True)
    session = build_session(capture_home / "sessions", gameplay_script(seconds=1.0))
    _enroll(session)
    assert agent.uploads.queue(session)
    session_id = read_manifest(session).session_id
    with WebServer(agent) as web:
        headers = {"X-Capture-Token": web.token, "Origin": web.url.rstrip("/")}
        data = httpx.get(f"{web.url}api/sessions", headers=headers).json()
        (card,) = data["sessions"]
        assert data["upload_after_review"] is True
        assert card["collector"] == "127.0.0.1:8470"
        assert (card["upload"]["status"], card["upload"]["released"]) == ("waiting", False)
        reply = httpx.post(f"{web.url}api/release", json={"id": session.name}, headers=headers)
        assert reply.status_code == 200, reply.text
        (card,) = httpx.get(f"{web.url}api/sessions", headers=headers).json()["sessions"]
        assert card["upload"]["released"] is True
        assert is_released(session_id)  # kept on disk: the worker may now upload it
        # a session that is not waiting to be sent is refused in plain words
        other = build_session(capture_home / "sessions", gameplay_script(
            seconds=1.0, session_id="20250301T120000Z-factorygame-000003"))
        reply = httpx.post(f"{web.url}api/release", json={"id": other.name}, headers=headers)
        assert reply.status_code == 409 and "not waiting to be sent" in reply.json()["error"]


# --- desktop notifications ---------------------------------------------------------------------
def test_notifications_reach_a_real_notification_service(bus: str) -> None:
    said: list[str] = []
    notifier = Notifier(say=said.append, address=bus)
    with notification_service(bus) as service:
        assert notifier.check()
        assert notifier.recording_started("minetest")
        assert notifier.recording_stopped("minetest", "minetest exited")
        shown = notifier.announce_recording("supertuxkart")
        assert shown == 3
        notifier.close(shown)
        notifier.close(12345)  # not (or no longer) shown: nothing happens
    assert service.summaries() == ["Recording minetest", "Stopped recording minetest",
                                   "Recording supertuxkart"]
    assert service.shown[0].app == "capture" and "minetest" in service.shown[0].body
    assert service.shown[2].expire_ms == ANNOUNCE_S * 1000
    assert service.shown[2].closed_ns is not None and service.shown[0].closed_ns is None
    assert notifier.problem is None and said == []


@pytest.mark.parametrize("where", ["a bus without a notification service", "no bus at all"])
def test_no_notification_service_is_said_once_and_shown(bus: str, where: str,
                                                        tmp_path: Path) -> None:
    address = bus if where.startswith("a bus") else f"unix:path={tmp_path}/no-such-bus"
    said: list[str] = []
    notifier = Notifier(say=said.append, address=address)
    assert not notifier.recording_started("minetest")
    assert not notifier.recording_stopped("minetest", "it exited")
    assert notifier.problem == UNREACHABLE
    assert len(said) == 1 and said[0].startswith(f"warning: {UNREACHABLE}")
    assert "Traceback" not in said[0] and "jeepney" not in said[0]
    if where.startswith("a bus"):  # a service that starts later is used, and that is said
        with notification_service(bus) as service:
            assert notifier.recording_started("minetest")
        assert service.summaries() == ["Recording minetest"]
        assert notifier.problem is None and said[-1] == "desktop notifications work again"


def test_the_page_shows_that_notifications_cannot_be_shown(capture_home: Path,
                                                           tmp_path: Path) -> None:
    said: list[str] = []
    agent = Agent(AgentSettings(), display=":99", say=said.append,
                  notifier=Notifier(say=said.append, address=f"unix:path={tmp_path}/none"))
    assert agent.status()["notifications"] is None
    agent.notifier.recording_started("minetest")
    with WebServer(agent) as web:
        status = httpx.get(f"{web.url}api/status", headers={"X-Capture-Token": web.token}).json()
    assert status["notifications"] == UNREACHABLE
    json.dumps(status)


class _NoAgent:
    """An agent with nothing going on (for the sessions list alone)."""

    def status(self) -> dict[str, object]:
        return {"state": "waiting", "game": None, "reason": "", "uploads": []}

    def consent_changed(self) -> None:
        pass

    def release_upload(self, session_id: str) -> bool:
        return False

    def session_deleted(self, session_id: str) -> None:
        pass


def test_an_unreachable_collector_is_said_in_plain_words(capture_home: Path, bus: str) -> None:
    import socket
    import time

    with socket.create_server(("127.0.0.1", 0)) as sock:
        closed_port = sock.getsockname()[1]  # nothing listens here once the block ends
    said: list[str] = []
    agent = _agent(bus, said)
    grant = consent.grant("Alice Example", ["factorygame"],
                          ["video", "keyboard", "mouse", "gamepad"])
    session = build_session(capture_home / "sessions", gameplay_script(
        seconds=1.0, receipt_id=grant.receipt_id))
    _enroll(session)
    enrolled = enrollment.load_all()[0]
    enrollment.save(replace(enrolled, collector=f"http://127.0.0.1:{closed_port}"))
    assert agent.uploads.queue(session)
    agent.uploads.start()
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            (state,) = agent.uploads.states()
            if state["reason"]:
                break
            time.sleep(0.1)
        assert "Error" in state["reason"], state  # the worker keeps the library's words...
        with WebServer(agent) as web:
            (card,) = httpx.get(f"{web.url}api/sessions",
                                headers={"X-Capture-Token": web.token}).json()["sessions"]
    finally:
        agent.uploads.stop()
    # ... and the page says it plainly
    assert card["upload"] == {**state, "released": False,
                              "reason": "the collector cannot be reached right now; the agent "
                                        "keeps trying"}
