"""The only wrapper of obs-websocket-py: a v5 client with timeouts, status codes, an event queue."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import websocket
from obswebsocket import obsws

from capture.clock import now_ns
from capture.errors import CaptureError

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 4455

STATUS_SUCCESS = 100
STATUS_NOT_READY = 207
CLOSE_AUTHENTICATION_FAILED = 4009
CLOSE_UNSUPPORTED_RPC_VERSION = 4010
ALL_EVENTS = (1 << 11) - 1        # EventSubscription::All in obs-websocket 5.x (not high-volume)
NOT_READY_RETRY_S = 5.0           # OBS answers 207 for a moment right after it starts
MAX_QUEUED_EVENTS = 10_000

Event = tuple[str, dict[str, Any], int]   # (eventType, eventData, host ns at arrival)


class ObsError(CaptureError):
    """OBS cannot be reached, refused us, went away, or failed a request (with its status code)."""

    def __init__(self, problem: str, *, code: int | None = None) -> None:
        self.code = code
        super().__init__(problem)


class _V5Socket(obsws):
    """obsws restricted to protocol v5, with bounded waits and raw responses.

    The library's `connect` has no timeout, its `call` drops OBS's status code and comment, and its
    receive thread dies silently (or tries to join itself) when the connection drops; so this
    subclass keeps its state and auth helper but replaces those three parts.
    """

    def __init__(self, host: str, port: int, password: str | None, timeout_s: float) -> None:
        super().__init__(host, port, password or "", legacy=False, timeout=timeout_s)
        self.has_password = bool(password)
        self.lost_reason: str | None = None
        self.close_code: int | None = None
        self._id_lock = threading.Lock()

    # -- handshake ---------------------------------------------------------------------------
    def open(self, deadline: float) -> None:
        where = f"{self.host}:{self.port}"
        url_host = f"[{self.host}]" if ":" in self.host else self.host
        self.ws = websocket.WebSocket()
        try:
            self.ws.connect(f"ws://{url_host}:{self.port}", timeout=_remaining(deadline))
        except ConnectionRefusedError:
            raise ObsError(f"OBS is not running or its websocket server is off at {where} — "
                           "start OBS or run `capture obs setup`") from None
        except (TimeoutError, websocket.WebSocketTimeoutException):
            raise ObsError(f"OBS's websocket server at {where} did not answer within "
                           f"{self.timeout:g} s") from None
        except (OSError, websocket.WebSocketException) as exc:
            raise ObsError(f"cannot reach OBS's websocket server at {where}: {exc}") from None
        try:
            self._identify(where, deadline)
        except BaseException:
            self.ws.shutdown()
            raise
        self.ws.settimeout(None)   # the receive loop blocks; close() wakes it with abort()

    def _identify(self, where: str, deadline: float) -> None:
        try:
            hello = self._receive_json(deadline)
        except websocket.WebSocketTimeoutException:
            raise self._no_hello_error(where) from None
        if hello is None or hello.get("op") != 0:
            raise ObsError(f"the server at {where} is not obs-websocket 5 (no Hello message)")
        auth_challenge = hello.get("d", {}).get("authentication")
        identify: dict[str, Any] = {"rpcVersion": 1, "eventSubscriptions": ALL_EVENTS}
        if auth_challenge:
            if not self.has_password:
                raise ObsError(f"OBS at {where} requires a websocket password and none was given "
                               "— pass --obs-password, set OBS_WEBSOCKET_PASSWORD, or put "
                               "`password` in the [obs] table of capture's config file")
            identify["authentication"] = self._build_auth_string(
                auth_challenge["salt"], auth_challenge["challenge"])
        self.ws.send(json.dumps({"op": 1, "d": identify}))
        try:
            identified = self._receive_json(deadline)
        except websocket.WebSocketTimeoutException:
            raise ObsError(f"OBS at {where} did not finish the handshake within "
                           f"{self.timeout:g} s") from None
        if identified is None:
            raise self._closed_during_handshake_error(where)
        if identified.get("op") != 2:
            raise ObsError(f"OBS at {where} answered the handshake with op "
                           f"{identified.get('op')!r} instead of Identified")

    def _receive_json(self, deadline: float) -> dict[str, Any] | None:
        """The next JSON message, or None if the server closed (its close code is kept)."""
        self.ws.settimeout(_remaining(deadline))
        try:
            opcode, frame = self.ws.recv_data_frame()
        except websocket.WebSocketConnectionClosedException:
            self.close_code = None
            return None
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            data = frame.data or b""
            self.close_code = int.from_bytes(data[:2], "big") if len(data) >= 2 else None
            return None
        message: dict[str, Any] = json.loads(frame.data)
        return message

    def _no_hello_error(self, where: str) -> ObsError:
        # obs-websocket 4.x greets nobody: it waits for a request, so ask it something v4-shaped.
        try:
            self.ws.settimeout(1.0)
            self.ws.send(json.dumps({"request-type": "GetVersion", "message-id": "probe"}))
            reply = json.loads(self.ws.recv() or "{}")
        except (websocket.WebSocketException, OSError, ValueError):
            reply = {}
        if "message-id" in reply:
            return ObsError(f"OBS at {where} speaks only the old obs-websocket 4 protocol; "
                            "capture needs obs-websocket 5 (built into OBS 28 and later)")
        return ObsError(f"OBS's websocket server at {where} did not greet us within "
                        f"{self.timeout:g} s")

    def _closed_during_handshake_error(self, where: str) -> ObsError:
        code = self.close_code
        if code == CLOSE_AUTHENTICATION_FAILED or (code is None and self.has_password):
            return ObsError(f"OBS refused the password for its websocket server at {where} — "
                            "give the one set in OBS (Tools > WebSocket Server Settings) or run "
                            "`capture obs setup` to set it", code=code)
        if code == CLOSE_UNSUPPORTED_RPC_VERSION:
            return ObsError(f"OBS at {where} does not support obs-websocket RPC version 1",
                            code=code)
        return ObsError(f"OBS at {where} closed the connection during the handshake "
                        f"(close code {code})", code=code)

    # -- requests ------------------------------------------------------------------------------
    def send_request(self, request: str, data: dict[str, Any]) -> tuple[dict[str, Any], int]:
        """Send one request and wait for its raw response; returns (response `d`, host ns sent)."""
        with self._id_lock:
            request_id = str(self.id)
            self.id += 1
        answered = threading.Event()
        self.events[request_id] = answered
        payload = json.dumps({"op": 6, "d": {"requestType": request, "requestId": request_id,
                                             "requestData": data}})
        try:
            if self.lost_reason is not None:
                raise ObsError(f"{request}: {self.lost_reason}")
            sent_ns = now_ns()
            try:
                self.ws.send(payload)
            except (websocket.WebSocketException, OSError, AttributeError):
                raise ObsError(f"{request}: the connection to OBS is closed "
                               "(OBS quit or crashed)") from None
            answered.wait(self.timeout)
        finally:
            self.events.pop(request_id, None)
        answer = self.answers.pop(request_id, None)
        if answer is not None:
            return answer, sent_ns
        if self.lost_reason is not None:
            raise ObsError(f"{request}: {self.lost_reason}")
        raise ObsError(f"{request}: OBS did not answer within {self.timeout:g} s")

    # -- receiving -----------------------------------------------------------------------------
    def receive_loop(self, on_event: Callable[[str, dict[str, Any], int], None]) -> None:
        """Runs on the receive thread until the connection ends; never raises."""
        reason = "OBS closed the connection (it quit or crashed)"
        try:
            while True:
                opcode, data = self.ws.recv_data()
                arrived_ns = now_ns()
                if opcode == websocket.ABNF.OPCODE_CLOSE:
                    break
                try:
                    message = json.loads(data)
                except ValueError:
                    log.warning("ignoring a message from OBS that is not JSON")
                    continue
                body = message.get("d") or {}
                if message.get("op") == 5:
                    on_event(str(body.get("eventType")), body.get("eventData") or {}, arrived_ns)
                elif message.get("op") == 7 and body.get("requestId") in self.events:
                    self.answers[body["requestId"]] = body
                    self.events[body["requestId"]].set()
        except (websocket.WebSocketException, OSError, AttributeError) as exc:
            if not isinstance(exc, websocket.WebSocketConnectionClosedException):
                reason = f"the connection to OBS broke ({type(exc).__name__})"
        except Exception as exc:   # a bug here must not leave callers waiting for answers
            log.exception("OBS receive loop failed")
            reason = f"the OBS receive loop failed ({type(exc).__name__}: {exc})"
        finally:
            self.lost_reason = self.lost_reason or reason
            for waiting in list(self.events.values()):
                waiting.set()

    def close_socket(self) -> None:
        if self.lost_reason is None:
            self.lost_reason = "the client closed the connection"
        if self.ws is None:
            return
        try:
            if self.ws.connected:
                self.ws.send_close()
        except (websocket.WebSocketException, OSError):
            pass
        self.ws.abort()


def _remaining(deadline: float) -> float:
    return max(0.05, deadline - time.monotonic())


class ObsClient:
    """A connection to OBS's websocket server (protocol v5).

    Requests are made with `call()` from any thread except the receive thread. Every event OBS
    sends is stamped with the host clock when it arrives and queued; `wait_event()` takes the
    first queued match (including ones that arrived before the call: `drain_events()` first to
    ignore old ones) and `drain_events()` returns everything left. The password is never logged
    or put in an error message.
    """

    def __init__(self, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
                 password: str | None = None, *, timeout_s: float = 5.0) -> None:
        self.host = host
        self.port = port
        self.timeout_s = timeout_s
        self._password = password
        self._socket: _V5Socket | None = None
        self._receiver: threading.Thread | None = None
        self._events: deque[Event] = deque(maxlen=MAX_QUEUED_EVENTS)
        self._events_changed = threading.Condition()

    def __repr__(self) -> str:
        state = "connected" if self.alive() else "not connected"
        return f"ObsClient({self.host}:{self.port}, {state})"

    # -- connection ----------------------------------------------------------------------------
    def connect(self) -> ObsClient:
        """Connect and identify within `timeout_s`, or raise ObsError saying what went wrong."""
        if self._socket is not None:
            raise RuntimeError("ObsClient.connect() called twice")
        connection = _V5Socket(self.host, self.port, self._password, self.timeout_s)
        connection.open(time.monotonic() + self.timeout_s)
        self._socket = connection
        self._receiver = threading.Thread(target=connection.receive_loop, args=(self._enqueue,),
                                          name=f"obs-receive-{self.port}", daemon=True)
        self._receiver.start()
        return self

    def alive(self) -> bool:
        """False once OBS closed the connection, crashed, or `close()` was called."""
        return (self._socket is not None and self._socket.lost_reason is None
                and self._receiver is not None and self._receiver.is_alive())

    def close(self) -> None:
        if self._socket is None:
            return
        self._socket.close_socket()
        if self._receiver is not None and self._receiver is not threading.current_thread():
            self._receiver.join(timeout=2.0)
        if self._socket.ws is not None:
            self._socket.ws.shutdown()
        with self._events_changed:
            self._events_changed.notify_all()

    def __enter__(self) -> ObsClient:
        return self if self._socket is not None else self.connect()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- requests ------------------------------------------------------------------------------
    def call(self, request: str, /, **data: Any) -> dict[str, Any]:
        """Make one request with keyword arguments; returns OBS's responseData.

        Raises ObsError naming the request with OBS's status code and comment if it fails.
        Retries "not ready" (207) for a few seconds. Must not be called from the receive thread
        (an event handler) — it would wait for an answer only that thread can deliver.
        """
        return self._request(request, data)[0]

    def _request(self, request: str, data: dict[str, Any]) -> tuple[dict[str, Any], int]:
        if self._socket is None:
            raise ObsError(f"{request}: not connected to OBS (call connect() first)")
        if threading.current_thread() is self._receiver:
            raise RuntimeError("ObsClient.call() from the receive thread would deadlock")
        give_up = time.monotonic() + NOT_READY_RETRY_S
        while True:
            answer, sent_ns = self._socket.send_request(request, data)
            status = answer.get("requestStatus") or {}
            code = status.get("code")
            if status.get("result"):
                return answer.get("responseData") or {}, sent_ns
            if code == STATUS_NOT_READY and time.monotonic() < give_up:
                time.sleep(0.1)
                continue
            comment = status.get("comment")
            detail = f"status {code}" + (f": {comment}" if comment else "")
            raise ObsError(f"OBS refused {request} ({detail})", code=code)

    # -- events --------------------------------------------------------------------------------
    def _enqueue(self, event_type: str, data: dict[str, Any], arrived_ns: int) -> None:
        with self._events_changed:
            self._events.append((event_type, data, arrived_ns))
            self._events_changed.notify_all()

    def wait_event(self, event_type: str,
                   predicate: Callable[[dict[str, Any]], bool] | None = None,
                   timeout_s: float = 5.0) -> tuple[dict[str, Any], int]:
        """Take the first queued `event_type` event whose data passes `predicate`.

        Returns (eventData, host ns at arrival). Other events stay queued. Raises ObsError on
        timeout or if the connection ends first.
        """
        deadline = time.monotonic() + timeout_s
        with self._events_changed:
            while True:
                for queued in self._events:
                    kind, data, arrived_ns = queued
                    if kind == event_type and (predicate is None or predicate(data)):
                        self._events.remove(queued)
                        return data, arrived_ns
                if not self.alive():
                    reason = self._socket.lost_reason if self._socket else "not connected"
                    raise ObsError(f"waiting for {event_type}: {reason}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise ObsError(f"OBS sent no {event_type} event within {timeout_s:g} s")
                self._events_changed.wait(min(left, 0.5))

    def drain_events(self) -> list[Event]:
        """All queued events, oldest first, removing them from the queue."""
        with self._events_changed:
            events = list(self._events)
            self._events.clear()
        return events

    # -- convenience ---------------------------------------------------------------------------
    def version(self) -> dict[str, Any]:
        return self.call("GetVersion")

    def video_settings(self) -> dict[str, Any]:
        return self.call("GetVideoSettings")

    def record_status(self) -> dict[str, Any]:
        return self.call("GetRecordStatus")

    def stats(self) -> dict[str, Any]:
        """GetStats; its frame counters are cumulative since OBS started (take deltas)."""
        return self.call("GetStats")

    def start_record(self) -> int:
        """Send StartRecord; returns the host ns taken right before the request was sent."""
        return self._request("StartRecord", {})[1]

    def stop_record(self) -> str:
        """Send StopRecord; returns the recording's path as OBS reports it."""
        return str(self.call("StopRecord").get("outputPath", ""))
