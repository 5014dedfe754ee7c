"""Desktop notifications (freedesktop Notify over the session D-Bus) as recording starts/stops."""

# Both video backends grab the screen area of the game's window, so a notification drawn over
# it would be in the frames. So it never is: the "recording starts" notice is shown for
# ANNOUNCE_S, closed, and only then does the recording begin; "recording stopped" is sent after
# the recording has stopped. When no service is reachable the player is told once (terminal and
# page) and the agent records without the notice.

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)

BUS_NAME = "org.freedesktop.Notifications"
OBJECT_PATH = "/org/freedesktop/Notifications"
APP_NAME = "capture"
TIMEOUT_MS = 5000      # how long the desktop shows a notification (-1: its own default)
ANNOUNCE_S = 3.0       # the "recording starts" notice shows this long; the recording starts after
CALL_TIMEOUT_S = 2.0   # a notification service that does not answer within this is unreachable
UNREACHABLE = ("no desktop notification service is reachable, so the agent cannot show a "
               "notification when recording starts or stops: watch the agent's page or its "
               "terminal")


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
        return self.announce_recording(game) is not None

    def announce_recording(self, game: str) -> int | None:
        """Show "Recording GAME" for ANNOUNCE_S; its id (for close()), or None if not shown."""
        shown: list[int] = []
        ok = self._call(lambda: shown.append(_notify(
            self.address, f"Recording {game}",
            f"capture starts recording {game} in {ANNOUNCE_S:g} s, once this notice has gone, "
            "and records only while its window is in front. Open the agent's page to see or "
            "stop it.", int(ANNOUNCE_S * 1000))))
        return shown[0] if ok and shown else None

    def close(self, notification_id: int) -> None:
        """Take a notification off the screen now (before a recording starts); never raises."""
        with self._lock:
            try:
                _reply_body(self.address, "CloseNotification", "u", (notification_id,))
            except Exception:  # gone already, or the service went away: nothing to take down
                log.debug("closing notification %s failed", notification_id, exc_info=True)

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


def _notify(address: str, summary: str, body: str, timeout_ms: int = TIMEOUT_MS) -> int:
    """One org.freedesktop.Notifications.Notify call; the id the service gave it."""
    reply = _reply_body(address, "Notify", "susssasa{sv}i",
                        (APP_NAME, 0, "media-record", summary, body, [], {"urgency": ("y", 1)},
                         timeout_ms))
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
