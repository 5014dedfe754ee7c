"""Desktop notifications (freedesktop Notify over the session D-Bus) when a recording starts/stops.

A notification is drawn by the desktop's notification service, not by the game, and shows on
the player's screen only while it lasts; the agent records only the game's own window, so it
cannot appear in a recording. When no service is reachable the player is told once (terminal and
page) and the agent carries on.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)

BUS_NAME = "org.freedesktop.Notifications"
OBJECT_PATH = "/org/freedesktop/Notifications"
APP_NAME = "capture"
TIMEOUT_MS = 5000      # how long the desktop shows a notification (-1: its own default)
CALL_TIMEOUT_S = 2.0   # a notification service that does not answer within this is unreachable
UNREACHABLE = ("no desktop notification service is reachable, so the agent cannot show a "
               "notification when recording starts or stops: watch this page or the terminal")


class Notifier:
    """Sends "recording started/stopped" notifications; never raises.

    `problem` is None while notifications work, else one plain sentence (said once through
    `say` the first time a notification cannot be delivered).
    """

    def __init__(self, *, say: Callable[[str], None] = print,
                 address: str = "SESSION") -> None:
        self.say = say
        self.address = address  # "SESSION" ($DBUS_SESSION_BUS_ADDRESS) or a bus address
        self.problem: str | None = None
        self.sent = 0
        self._lock = threading.Lock()

    def check(self) -> bool:
        """Ask the notification service who it is (at start, so a missing one is said at once);
        False (and the problem said once) if none answers."""
        return self._call(lambda: _server_name(self.address))

    def recording_started(self, game: str) -> bool:
        return self.send(f"Recording {game}", f"capture is recording {game} while its window "
                         "is in front. Open the agent's page to see or stop it.")

    def recording_stopped(self, game: str, why: str) -> bool:
        return self.send(f"Stopped recording {game}", f"capture stopped: {why}.")

    def send(self, summary: str, body: str) -> bool:
        """Show one notification; False (and the problem said once) if it could not be shown."""
        return self._call(lambda: _notify(self.address, summary, body))

    def in_background(self, send: Callable[[], bool]) -> None:
        """Run `send` (e.g. lambda: n.recording_started(game)) on its own thread, so a slow
        notification service never holds up the agent."""
        threading.Thread(target=send, name="capture-notify", daemon=True).start()

    def _call(self, action: Callable[[], object]) -> bool:
        with self._lock:
            try:
                action()
            except Exception as exc:  # any failure to reach the bus: fail visible, never crash
                log.debug("notification failed", exc_info=True)
                if self.problem is None:
                    self.problem = UNREACHABLE
                    self.say(f"warning: {UNREACHABLE} ({_why(exc)})")
                return False
            self.sent += 1
            if self.problem is not None:
                self.problem = None
                self.say("desktop notifications work again")
            return True


def _reply_body(address: str, member: str, signature: str | None,
                body: tuple[object, ...]) -> tuple[object, ...]:
    """Call `member` on the notification service; the reply's values (an error raises)."""
    from jeepney import DBusAddress, MessageType, new_method_call
    from jeepney.io.blocking import open_dbus_connection

    target = DBusAddress(OBJECT_PATH, bus_name=BUS_NAME, interface=BUS_NAME)
    message = new_method_call(target, member, signature, body)
    with open_dbus_connection(bus=address) as connection:
        reply = connection.send_and_get_reply(message, timeout=CALL_TIMEOUT_S)
    if reply.header.message_type == MessageType.error:
        raise RuntimeError(f"the service answered {reply.header.fields.get(4, 'an error')}")
    return tuple(reply.body)


def _server_name(address: str) -> str:
    """GetServerInformation: the notification service's name."""
    return str(_reply_body(address, "GetServerInformation", None, ())[0])


def _notify(address: str, summary: str, body: str) -> int:
    """One org.freedesktop.Notifications.Notify call; the id the service gave it."""
    reply = _reply_body(address, "Notify", "susssasa{sv}i",
                        (APP_NAME, 0, "media-record", summary, body, [], {"urgency": ("y", 1)},
                         TIMEOUT_MS))
    if not reply or not isinstance(reply[0], int):
        raise RuntimeError("the service did not answer with a notification id")
    return reply[0]


def _why(exc: BaseException) -> str:
    """Why the bus could not be reached, in a few words (no library trace)."""
    if isinstance(exc, KeyError):
        return "no session bus address is set"
    if isinstance(exc, FileNotFoundError | ConnectionRefusedError):
        return "the session bus is not running"
    if isinstance(exc, TimeoutError):
        return "the notification service did not answer"
    return "the session bus refused the call"
