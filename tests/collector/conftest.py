"""Collector test infrastructure: a throwaway PostgreSQL cluster, a moto S3 server, collector
processes, players with their own data dirs, and a TCP proxy that can cut or corrupt traffic."""

from __future__ import annotations

import base64
import contextlib
import glob
import hashlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from capture.uploader import enrollment
from capture.uploader.enrollment import Enrollment
from tests.factories import build_session, gameplay_script

ROOT = Path(__file__).resolve().parents[2]
ADMIN_TOKEN = "test-admin-" + secrets.token_hex(16)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- PostgreSQL ---------------------------------------------------------------------------------
@dataclass
class Postgres:
    """A throwaway cluster run by the `postgres` user on a loopback port (trust auth)."""

    port: int
    made: list[str] = field(default_factory=list)

    def new_database(self) -> str:
        import psycopg

        name = "t_" + secrets.token_hex(6)
        with psycopg.connect(f"postgresql://postgres@127.0.0.1:{self.port}/postgres",
                             autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return f"postgresql://postgres@127.0.0.1:{self.port}/{name}"


def _pg_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not found:
        pytest.fail("PostgreSQL server binaries not found: run tools/setup.sh (package "
                    "postgresql)")
    return found[-1]


def _as_postgres(*args: str) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else list(args)


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    base = Path(tempfile.mkdtemp(prefix="capture-pg-"))
    data, sockets = base / "data", base / "sock"
    sockets.mkdir()
    os.chmod(base, 0o755)
    if os.geteuid() == 0:
        shutil.chown(base, "postgres")
        shutil.chown(sockets, "postgres")
    port = free_port()
    subprocess.run(_as_postgres(_pg_bin("initdb"), "-D", str(data), "-A", "trust", "-U",
                                "postgres", "--no-sync"), check=True, capture_output=True)
    subprocess.run(_as_postgres(_pg_bin("pg_ctl"), "-D", str(data), "-w", "-l",
                                str(base / "log"), "-o",
                                f"-p {port} -k {sockets} -h 127.0.0.1 -c fsync=off",
                                "start"), check=True, capture_output=True)
    try:
        yield Postgres(port)
    finally:
        subprocess.run(_as_postgres(_pg_bin("pg_ctl"), "-D", str(data), "-m", "fast", "-w",
                                    "stop"), capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


# --- S3 (moto server) ---------------------------------------------------------------------------
@dataclass
class S3:
    endpoint: str

    def new_bucket(self) -> str:
        import boto3

        name = "b-" + secrets.token_hex(6)
        boto3.client("s3", endpoint_url=self.endpoint).create_bucket(Bucket=name)
        return name


@pytest.fixture(scope="session")
def s3() -> Iterator[S3]:
    from moto.server import ThreadedMotoServer

    saved = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                                            "AWS_DEFAULT_REGION")}
    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
                      AWS_DEFAULT_REGION="us-east-1")
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield S3(f"http://127.0.0.1:{port}")
    finally:
        server.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


# --- collector processes ------------------------------------------------------------------------
def _env(home: Path, **extra: str) -> dict[str, str]:
    env = {**os.environ, "CAPTURE_HOME": str(home), "PYTHONUNBUFFERED": "1", **extra}
    return env


class Collector:
    """`capture collector serve` as a real process."""

    def __init__(self, home: Path, *, db: str | None = None, store: str | None = None,
                 s3_endpoint: str | None = None, port: int = 0,
                 extra: tuple[str, ...] = ()) -> None:
        self.home, self.db, self.store, self.s3_endpoint = home, db, store, s3_endpoint
        self.port, self.extra = port, extra
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""
        self.stderr_path = home / f"collector-{secrets.token_hex(3)}.log"

    def start(self) -> Collector:
        args = [sys.executable, "-m", "capture", "collector", "serve", "--port", str(self.port)]
        if self.db:
            args += ["--db", self.db]
        if self.store:
            args += ["--store", self.store]
        if self.s3_endpoint:
            args += ["--s3-endpoint", self.s3_endpoint]
        self.home.mkdir(parents=True, exist_ok=True)
        with open(self.stderr_path, "a") as log:
            self.proc = subprocess.Popen(
                [*args, *self.extra], stdout=subprocess.PIPE, stderr=log, text=True,
                env=_env(self.home, CAPTURE_COLLECTOR_ADMIN_TOKEN=ADMIN_TOKEN))
        line: list[str] = []
        reader = threading.Thread(target=lambda: line.append(self.proc.stdout.readline()),
                                  daemon=True)
        reader.start()
        reader.join(60)
        if not line or not line[0].startswith("http"):
            self.kill()
            pytest.fail(f"collector did not start: {self.stderr_path.read_text()}")
        self.url = line[0].strip()
        self.port = int(self.url.rsplit(":", 1)[1])
        return self

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self._close()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()
        self._close()

    def _close(self) -> None:
        if self.proc and self.proc.stdout and not self.proc.stdout.closed:
            self.proc.stdout.close()

    def log(self) -> str:
        return self.stderr_path.read_text()


def run_capture(home: Path, *args: str, check: bool = True, timeout: float = 120,
                **env: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([sys.executable, "-m", "capture", *args], capture_output=True,
                            text=True, timeout=timeout,
                            env=_env(home, CAPTURE_COLLECTOR_ADMIN_TOKEN=ADMIN_TOKEN, **env))
    if check and result.returncode != 0:
        pytest.fail(f"capture {' '.join(args)} exited {result.returncode}:\n{result.stdout}\n"
                    f"{result.stderr}")
    return result


TERMS = "We record factorygame while it has focus.\nYou can withdraw at any time.\n"


def create_study(builder: Path, url: str, name: str = "Factory Study") -> str:
    terms = builder / "terms.md"
    terms.parent.mkdir(parents=True, exist_ok=True)
    terms.write_text(TERMS)
    out = run_capture(builder, "collector", "study", "create", "--url", url, "--name", name,
                      "--terms", str(terms), "--game", "factorygame", "--scope",
                      "video,keyboard,mouse,gamepad", "--purpose", "world model research",
                      "--licence", "CC-BY-4.0").stdout
    return out.strip().splitlines()[-1]


@dataclass
class Player:
    home: Path
    pseudonym: str
    receipt_id: str = ""
    token: str = ""

    def session(self, n: int = 1, **overrides: Any) -> Path:
        script = gameplay_script(receipt_id=self.receipt_id, player=self.pseudonym,
                                 synthetic=False,
                                 session_id=f"20250301T120000Z-factorygame-{n:06d}",
                                 **overrides)
        return build_session(self.home / "sessions", script)


def enroll(builder: Path, url: str, study: str, home: Path, pseudonym: str) -> Player:
    code = run_capture(builder, "collector", "invite", "--url", url, "--study",
                       study).stdout.strip().splitlines()[-1]
    run_capture(home, "enroll", url, code, "--player", pseudonym, "--yes")
    import json

    [record] = [json.loads(p.read_text()) for p in (home / "enrollments").glob("*.json")]
    return Player(home, pseudonym, record["receipt_id"], record["device_token"])


# --- a TCP proxy that can cut or corrupt --------------------------------------------------------
class Proxy:
    """Forwards loopback TCP to `target`; can cut every connection after N more bytes upstream,
    or flip one byte in the body of the next PATCH request."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.bytes_up = 0
        self.cut_at: int | None = None
        self.corrupt_next_patch = False
        self.corrupted = 0
        self.checksum_refusals = 0  # 460 answers seen coming back
        self.rate: float | None = None  # bytes per second upstream, None: as fast as it goes
        self.lock = threading.Lock()
        self.conns: list[socket.socket] = []
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
            except OSError:
                client.close()
                continue
            with self.lock:
                self.conns += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False),
                             daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, up: bool) -> None:
        patch_state = 0
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if up:
                    data, patch_state = self._mutate(data, patch_state)
                    with self.lock:
                        if self.cut_at is not None and self.bytes_up + len(data) >= self.cut_at:
                            keep = max(self.cut_at - self.bytes_up, 0)
                            dst.sendall(data[:keep])
                            self.bytes_up += keep
                            self.cut_at = None
                            raise ConnectionAbortedError("cut by the test")
                        self.bytes_up += len(data)
                if not up and data.startswith(b"HTTP/1.1 460"):
                    with self.lock:
                        self.checksum_refusals += 1
                dst.sendall(data)
                if up and self.rate:
                    time.sleep(len(data) / self.rate)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()

    def _mutate(self, data: bytes, state: int) -> tuple[bytes, int]:
        """state 0: nothing pending; 1: inside a PATCH's headers; 2: its body comes next."""
        if not self.corrupt_next_patch:
            return data, 0
        if data.startswith(b"PATCH "):
            state = 1
        if state == 0:
            return data, 0
        body_at = 0
        if state == 1:
            end = data.find(b"\r\n\r\n")
            if end < 0:
                return data, 1
            body_at = end + 4
            if body_at >= len(data):
                return data, 2
        flipped = bytearray(data)
        flipped[body_at] ^= 0xFF
        self.corrupt_next_patch = False
        self.corrupted += 1
        return bytes(flipped), 0

    def retarget(self, port: int) -> None:
        self.target_port = port

    def close(self) -> None:
        self.closed = True
        self.listener.close()
        with self.lock:
            for s in self.conns:
                with contextlib.suppress(OSError):
                    s.close()


@pytest.fixture
def builder_home(tmp_path: Path) -> Path:
    home = tmp_path / "builder"
    home.mkdir()
    return home


@pytest.fixture
def collectors() -> Iterator[list[Collector]]:
    started: list[Collector] = []
    yield started
    for c in started:
        c.stop()


def wait_for(predicate: Any, timeout: float = 60.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}")


# --- a study with two enrolled players on a live collector ----------------------------------
STUDY = {"id": "s1", "name": "Study One", "terms_text": TERMS, "terms_version": "1",
         "games": ["factorygame"], "scope": ["video", "keyboard", "mouse", "gamepad"],
         "purposes": ["research"], "licence": "CC-BY-4.0", "controller_name": "Lab",
         "controller_contact": "lab@example.org"}


@dataclass
class World:
    live: LiveCollector
    admin: httpx.Client
    alice: Enrollment
    bob: Enrollment
    homes: dict[str, Path]
    monkeypatch: pytest.MonkeyPatch
    clients: list[httpx.Client] = field(default_factory=list)

    def player(self, who: Enrollment) -> httpx.Client:
        http = httpx.Client(base_url=self.live.url,
                            headers={"Authorization": f"Bearer {who.device_token}"})
        self.clients.append(http)
        return http

    def as_player(self, name: str) -> None:
        self.monkeypatch.setenv("CAPTURE_HOME", str(self.homes[name]))

    def session(self, name: str, who: Enrollment, n: int = 1, **kw: Any) -> Path:
        script = gameplay_script(receipt_id=who.receipt_id, player=who.pseudonym,
                                 synthetic=False, seconds=2.0,
                                 session_id=f"20250301T120000Z-factorygame-{n:06d}", **kw)
        return build_session(self.homes[name] / "sessions", script)

    def count(self, table: sa.Table) -> int:
        with self.live.settings.engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())

    def stored(self) -> list[str]:
        return sorted(str(p.relative_to(self.live.store_root))
                      for p in self.live.store_root.rglob("*") if p.is_file())


@pytest.fixture
def world(live_collector: LiveCollector, tmp_path: Path,
          monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    admin = httpx.Client(base_url=live_collector.url,
                         headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert admin.post("/v1/studies", json=STUDY).status_code == 201
    homes = {"alice": tmp_path / "alice", "bob": tmp_path / "bob"}
    enrolled = {}
    for name, home in homes.items():
        monkeypatch.setenv("CAPTURE_HOME", str(home))
        code = admin.post("/v1/studies/s1/invites").json()["code"]
        study = enrollment.fetch_study(live_collector.url, code)
        enrolled[name], _ = enrollment.enroll(live_collector.url, code, study, name,
                                              method="cli-scripted")
    made = World(live_collector, admin, enrolled["alice"], enrolled["bob"], homes, monkeypatch)
    yield made
    for http in [admin, *made.clients]:
        http.close()


def tus_headers(offset: int, data: bytes, checksum: bytes | None = None) -> dict[str, str]:
    digest = checksum if checksum is not None else hashlib.sha256(data).digest()
    return {"Tus-Resumable": "1.0.0", "Content-Type": "application/offset+octet-stream",
            "Upload-Offset": str(offset),
            "Upload-Checksum": "sha256 " + base64.b64encode(digest).decode()}


def start_bundle(world: World, session: Path) -> dict[str, Any]:
    answer = world.player(world.alice).post(
        "/v1/bundles", json={"manifest_text": (session / "manifest.json").read_text()})
    assert answer.status_code == 201, answer.text
    return dict(answer.json())


__all__ = ["STUDY", "Collector", "Player", "Proxy", "World", "create_study", "enroll", "free_port",
           "replace", "run_capture", "start_bundle", "tus_headers", "wait_for", "world"]


# --- an in-process collector (the real app on uvicorn, in a thread) ------------------------------
@dataclass
class LiveCollector:
    url: str
    settings: Any
    store_root: Path


@pytest.fixture
def live_collector(tmp_path: Path) -> Iterator[LiveCollector]:
    import uvicorn

    from capture.collector import db
    from capture.collector.service import Limits, Settings, create_app
    from capture.collector.store import LocalStore

    engine = db.make_engine(db.default_url(tmp_path))
    db.migrate(engine)
    store_root = tmp_path / "store"
    settings = Settings(engine=engine, store=LocalStore(store_root), admin_token=ADMIN_TOKEN,
                        limits=Limits(max_json_bytes=600_000, max_chunk_bytes=256 << 10,
                                      quota_bytes=50 << 20))
    sock = socket.create_server(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(create_app(settings), log_level="debug",
                                           access_log=True))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    wait_for(lambda: server.started, 30, "the collector to start")
    try:
        yield LiveCollector(f"http://127.0.0.1:{sock.getsockname()[1]}", settings, store_root)
    finally:
        server.should_exit = True
        thread.join(15)
        sock.close()
        engine.dispose()
