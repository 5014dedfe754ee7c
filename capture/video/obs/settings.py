"""Where OBS's websocket is and its password: command line > environment > config > defaults."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from capture.config import config_table
from capture.errors import CaptureError
from capture.video.obs.client import DEFAULT_HOST, DEFAULT_PORT

HOST_VARIABLE = "OBS_WEBSOCKET_HOST"
PORT_VARIABLE = "OBS_WEBSOCKET_PORT"
PASSWORD_VARIABLE = "OBS_WEBSOCKET_PASSWORD"


@dataclass(frozen=True, slots=True)
class ObsSettings:
    """How to reach OBS. The password never shows in repr() or public_dict()."""

    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    password: str | None = field(default=None, repr=False)

    def __repr__(self) -> str:
        shown = "None" if self.password is None else "'********'"
        return f"ObsSettings(host={self.host!r}, port={self.port}, password={shown})"

    def public_dict(self) -> dict[str, Any]:
        """What may be logged or stored in a session: no password, only whether one is set."""
        return {"host": self.host, "port": self.port, "password_set": bool(self.password)}


def _port_from_environment() -> int | None:
    raw = os.environ.get(PORT_VARIABLE)
    if raw is None or not raw.strip():
        return None
    try:
        port = int(raw)
    except ValueError:
        port = 0
    if not 1 <= port <= 65535:
        raise CaptureError(f"{PORT_VARIABLE} must be an integer 1-65535, not {raw!r}")
    return port


def resolve(cli_host: str | None = None, cli_port: int | None = None,
            cli_password: str | None = None) -> ObsSettings:
    """Each value from the first place that has it: CLI, environment, `[obs]` table, default."""
    table = config_table("obs")
    table.reject_unknown({"host", "port", "password"})
    file_host, file_port = table.string("host"), table.integer("port", 1, 65535)
    file_password = table.string("password")   # all read first, so a bad value is always reported
    host = cli_host or os.environ.get(HOST_VARIABLE) or file_host or DEFAULT_HOST
    port = cli_port or _port_from_environment() or file_port or DEFAULT_PORT
    password = (cli_password if cli_password is not None
                else os.environ.get(PASSWORD_VARIABLE, file_password))
    return ObsSettings(host=host, port=port, password=password or None)
