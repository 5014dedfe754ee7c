"""ObsClient against a real OBS under Xvfb, and against fake servers for the failure cases."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import socket
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from capture.clock import now_ns
from capture.video.obs.client import ObsClient, ObsError
from capture.xserver import Xvfb
from tests.obs.harness import ObsInstance, free_port, obs_available

pytestmark = [pytest.mark.x11,
              pytest.mark.skipif(not obs_available(), reason="needs OBS Studio and Xvfb")]
OBS_SIZE = (640, 360)




@pytest.fixture
def client(obs: ObsInstance) -> Iterator[ObsClient]:
    with ObsClient(obs.host, obs.port, obs.password) as connected:
        yield connected


def test_reads_version_and_video_settings(client: ObsClient) -> None:
    assert client.alive()
    assert client.version()["rpcVersion"] == 1
    video = client.video_settings()
    assert (video["outputWidth"], video["outputHeight"]) == (640, 360)
    assert video["fpsNumerator"] / video["fpsDenominator"] == 30


def test_failed_request_names_request_and_status(client: ObsClient) -> None:
    with pytest.raises(ObsError, match=r"GetInputSettings \(status 600: .*nope") as caught:
        client.call("GetInputSettings", inputName="nope")
    assert caught.value.code == 600
    assert client.alive()


def test_events_are_stamped_queued_and_matched(client: ObsClient) -> None:
    client.drain_events()
    before = now_ns()
    for n in range(3):
        client.call("BroadcastCustomEvent", eventData={"n": n})
    data, arrived_ns = client.wait_event("CustomEvent", lambda d: d.get("n") == 2, timeout_s=3)
    assert data == {"n": 2}
    assert before < arrived_ns <= now_ns()
    left = [(kind, data) for kind, data, _ in client.drain_events() if kind == "CustomEvent"]
    assert left == [("CustomEvent", {"n": 0}), ("CustomEvent", {"n": 1})]
    with pytest.raises(ObsError, match="no CustomEvent event within"):
        client.wait_event("CustomEvent", timeout_s=0.2)


def test_record_start_and_stop(client: ObsClient, obs: ObsInstance) -> None:
    client.drain_events()
    sent_ns = client.start_record()
    try:
        _, started_ns = client.wait_event(
            "RecordStateChanged", lambda d: d["outputState"] == "OBS_WEBSOCKET_OUTPUT_STARTED",
            timeout_s=10)
        assert sent_ns < started_ns
        time.sleep(0.5)
    finally:
        path = Path(client.stop_record())
    assert path.parent == obs.record_dir and path.suffix == ".mkv"
    client.wait_event("RecordStateChanged",
                      lambda d: d["outputState"] == "OBS_WEBSOCKET_OUTPUT_STOPPED", timeout_s=10)
    assert path.stat().st_size > 0


def test_closed_client_is_not_alive_and_refuses_calls(obs: ObsInstance) -> None:
    client = ObsClient(obs.host, obs.port, obs.password).connect()
    client.close()
    assert not client.alive()
    with pytest.raises(ObsError, match="GetVersion: the client closed the connection"):
        client.call("GetVersion")


def test_wrong_password_is_named_but_not_shown(obs: ObsInstance) -> None:
    wrong = "not-the-password-1234"
    with pytest.raises(ObsError, match="refused the password") as caught:
        ObsClient(obs.host, obs.port, wrong).connect()
    assert wrong not in str(caught.value) and obs.password not in str(caught.value)


def test_missing_password_says_one_is_needed(obs: ObsInstance) -> None:
    with pytest.raises(ObsError, match="requires a websocket password"):
        ObsClient(obs.host, obs.port, None).connect()


def test_nothing_listening_fails_fast() -> None:
    started = time.monotonic()
    with pytest.raises(ObsError, match="not running or its websocket server is off"):
        ObsClient("127.0.0.1", free_port(), "x", timeout_s=2).connect()
    assert time.monotonic() - started < 2


def _serve_once(handler: object) -> int:
    """A one-connection TCP server on a free port running `handler(conn)` on a thread."""
    server = socket.create_server(("127.0.0.1", 0))

    def run() -> None:
        with server:
            conn, _ = server.accept()
            with conn:
                handler(conn)  # type: ignore[operator]

    threading.Thread(target=run, daemon=True).start()
    return int(server.getsockname()[1])


def test_silent_server_times_out() -> None:
    port = _serve_once(lambda conn: time.sleep(3))
    started = time.monotonic()
    with pytest.raises(ObsError, match="did not answer within 1 s"):
        ObsClient("127.0.0.1", port, "x", timeout_s=1).connect()
    assert time.monotonic() - started < 1.8


def _act_as_obs_websocket_4(conn: socket.socket) -> None:
    request = b""
    while b"\r\n\r\n" not in request:
        request += conn.recv(4096)
    key = re.search(rb"Sec-WebSocket-Key: *(\S+)", request, re.IGNORECASE)[1]  # type: ignore[index]
    accept = base64.b64encode(hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
    conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                 b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n")
    header = conn.recv(2)   # a v4 server says nothing until asked; then it answers
    length = header[1] & 0x7F
    if length == 126:
        length = struct.unpack("!H", conn.recv(2))[0]
    conn.recv(4 + length, socket.MSG_WAITALL)
    reply = json.dumps({"message-id": "probe", "status": "ok",
                        "obs-websocket-version": "4.9.1"}).encode()
    conn.sendall(bytes([0x81, len(reply)]) + reply)
    time.sleep(1)


def test_v4_only_server_is_recognised() -> None:
    port = _serve_once(_act_as_obs_websocket_4)
    with pytest.raises(ObsError, match="old obs-websocket 4 protocol"):
        ObsClient("127.0.0.1", port, "x", timeout_s=1).connect()


def test_killed_obs_is_noticed_promptly(tmp_path: Path, xvfb: Xvfb) -> None:
    with ObsInstance(tmp_path / "doomed", xvfb.display) as doomed, \
            ObsClient(doomed.host, doomed.port, doomed.password) as client:
        assert client.alive()
        doomed.kill()
        deadline = time.monotonic() + 2
        while client.alive() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not client.alive()
        started = time.monotonic()
        with pytest.raises(ObsError, match=r"closed|quit or crashed"):
            client.call("GetVersion")
        with pytest.raises(ObsError, match="quit or crashed"):
            client.wait_event("RecordStateChanged", timeout_s=5)
        assert time.monotonic() - started < 1
