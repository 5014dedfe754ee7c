"""Running the collector: data dir, admin token, database migration, store, and uvicorn."""

from __future__ import annotations

import logging
import os
import secrets
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from capture import paths
from capture.errors import CaptureError

from . import db
from .service import Limits, Settings, create_app
from .store import open_store

ADMIN_TOKEN_ENV = "CAPTURE_COLLECTOR_ADMIN_TOKEN"
ADMIN_TOKEN_FILE = "admin-token"


def data_dir() -> Path:
    """$CAPTURE_HOME/collector: the embedded database, the directory store, the admin token."""
    path = paths.data_dir() / "collector"
    path.mkdir(parents=True, exist_ok=True)
    return path


def admin_token(directory: Path, say: Callable[[str], None]) -> str:
    """The admin token: from $CAPTURE_COLLECTOR_ADMIN_TOKEN, else kept (0600) in `directory`;
    one is generated (and shown once, through `say`) at the first start."""
    from_env = os.environ.get(ADMIN_TOKEN_ENV, "").strip()
    if from_env:
        return from_env
    path = directory / ADMIN_TOKEN_FILE
    try:
        token = path.read_text(encoding="ascii").strip()
        if token:
            return token
    except FileNotFoundError:
        pass
    token = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as out:
        out.write(token + "\n")
    say(f"admin token (shown once; kept in {path}, or set {ADMIN_TOKEN_ENV}): {token}")
    return token


def stored_admin_token() -> str | None:
    """The admin token an admin command on this machine uses: the env var or the kept file."""
    from_env = os.environ.get(ADMIN_TOKEN_ENV, "").strip()
    if from_env:
        return from_env
    try:
        return (data_dir() / ADMIN_TOKEN_FILE).read_text(encoding="ascii").strip() or None
    except FileNotFoundError:
        return None


@dataclass
class ServeOptions:
    db_url: str | None = None
    store_url: str | None = None
    s3_endpoint: str | None = None
    host: str = "127.0.0.1"
    port: int = 8470
    tls_cert: Path | None = None
    tls_key: Path | None = None
    limits: Limits = Limits()  # noqa: RUF009 - frozen dataclass, shared safely


def build_settings(options: ServeOptions, say: Callable[[str], None]) -> Settings:
    directory = data_dir()
    engine = db.make_engine(options.db_url or db.default_url(directory))
    try:
        db.migrate(engine)
    except Exception as exc:
        raise CaptureError(f"cannot open or migrate the collector database: "
                           f"{type(exc).__name__}: {str(exc).splitlines()[0]}") from None
    store = open_store(options.store_url or directory / "store", s3_endpoint=options.s3_endpoint)
    return Settings(engine=engine, store=store, admin_token=admin_token(directory, say),
                    limits=options.limits)


def serve(options: ServeOptions, say: Callable[[str], None]) -> None:
    """Serve until SIGINT/SIGTERM; print the base URL on a line of its own once it accepts."""
    import uvicorn

    if bool(options.tls_cert) != bool(options.tls_key):
        raise CaptureError("give both --tls-cert and --tls-key, or neither")
    settings = build_settings(options, say)
    app = create_app(settings)
    swept = app.state.sweep()
    if swept:
        say(f"deleted {swept} stored object(s) of withdrawn bundles left by an interrupted run")
    family = socket.AF_INET6 if ":" in options.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((options.host, options.port))
    except OSError as exc:
        raise CaptureError(f"cannot listen on {options.host}:{options.port}: {exc.strerror}") \
            from None
    port = sock.getsockname()[1]
    scheme = "https" if options.tls_cert else "http"
    host = f"[{options.host}]" if ":" in options.host else options.host
    url = f"{scheme}://{host}:{port}"
    config = uvicorn.Config(app, log_level="warning", access_log=False,
                            ssl_certfile=str(options.tls_cert) if options.tls_cert else None,
                            ssl_keyfile=str(options.tls_key) if options.tls_key else None,
                            timeout_graceful_shutdown=5)
    _quiet_logs()

    class _Server(uvicorn.Server):
        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets=sockets)
            if self.started:
                say(f"collector: store {settings.store.url}, database "
                    f"{settings.engine.url.render_as_string(hide_password=True)}")
                print(url, flush=True)

    _Server(config).run(sockets=[sock])


def _quiet_logs() -> None:
    """Request logs would carry paths only (tokens travel in headers), but keep them off."""
    logging.getLogger("uvicorn.access").disabled = True


