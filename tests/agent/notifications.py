"""A private D-Bus session bus, and a notification service on it that records Notify calls."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from jeepney import MessageType, new_method_return
from jeepney.bus_messages import message_bus
from jeepney.io.blocking import open_dbus_connection

from capture.agent.notify import BUS_NAME, OBJECT_PATH
from capture.clock import now_ns


@dataclass
class Shown:
    """One notification as the service received it."""

    app: str
    summary: str
    body: str
    expire_ms: int
    shown_ns: int                   # host monotonic clock (capture.clock.now_ns), as frames are
    closed_ns: int | None = None    # when CloseNotification took it down


@dataclass
class NotificationService:
    """Owns org.freedesktop.Notifications on a bus and keeps what it was asked to show."""

    address: str
    shown: list[Shown] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def serve(self, ready: threading.Event) -> None:
        with open_dbus_connection(bus=self.address) as conn:
            reply = conn.send_and_get_reply(message_bus.RequestName(BUS_NAME), timeout=5)
            assert reply.body[0] == 1, f"could not own {BUS_NAME}: {reply.body}"
            ready.set()
            while not self._stop.is_set():
                try:
                    msg = conn.receive(timeout=0.2)
                except TimeoutError:
                    continue
                h = msg.header
                if h.message_type != MessageType.method_call or h.fields.get(1) != OBJECT_PATH:
                    continue
                member = h.fields.get(3)
                if member == "Notify":
                    app, _replaces, _icon, summary, body, _actions, _hints, expire = msg.body
                    self.shown.append(Shown(app, summary, body, expire, now_ns()))
                    conn.send(new_method_return(msg, "u", (len(self.shown),)))
                elif member == "CloseNotification":
                    (notification_id,) = msg.body
                    if 0 < notification_id <= len(self.shown):
                        self.shown[notification_id - 1].closed_ns = now_ns()
                    conn.send(new_method_return(msg))
                elif member == "GetServerInformation":
                    conn.send(new_method_return(msg, "ssss", ("test", "capture", "1", "1.2")))

    def stop(self) -> None:
        self._stop.set()

    def summaries(self) -> list[str]:
        return [s.summary for s in self.shown]


@contextmanager
def private_bus() -> Iterator[str]:
    """A dbus-daemon of our own (session configuration, socket in a temp dir); its address."""
    daemon = shutil.which("dbus-daemon")
    if daemon is None:
        pytest.skip("dbus-daemon is not installed (Debian package dbus-daemon)")
    socket_dir = Path(tempfile.mkdtemp(prefix="capture-bus-"))
    proc = subprocess.Popen([daemon, "--session", "--nofork", "--print-address=1",
                             f"--address=unix:dir={socket_dir}"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        address = proc.stdout.readline().strip()
        assert address.startswith("unix:"), (address, proc.stderr and proc.stderr.read())
        yield address
    finally:
        proc.terminate()
        proc.wait(10)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
        shutil.rmtree(socket_dir, ignore_errors=True)


@contextmanager
def notification_service(address: str) -> Iterator[NotificationService]:
    """A notification service on the bus at `address`, running until the block ends."""
    service = NotificationService(address)
    ready = threading.Event()
    thread = threading.Thread(target=service.serve, args=(ready,), daemon=True)
    thread.start()
    assert ready.wait(10), "the notification service did not start"
    try:
        yield service
    finally:
        service.stop()
        thread.join(5)
