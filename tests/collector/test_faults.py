"""Faults on the way up: a collector killed mid-upload (finished by a second instance on the same
PostgreSQL + S3), a connection cut mid-chunk, a chunk corrupted in flight, a client restarted."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from capture.collector.store import Store, open_store
from tests.collector.conftest import (
    ADMIN_TOKEN,
    S3,
    Collector,
    Player,
    Postgres,
    Proxy,
    _env,
    create_study,
    enroll,
    run_capture,
    wait_for,
)

pytestmark = pytest.mark.slow


def _big_session(player: Player) -> Path:
    return player.session(seconds=6, width=320, height=240)


def _assert_stored_identical(store: Store, session: Path) -> None:
    keys = [k for k in store.list("bundles") if f"/{session.name}/" in k]
    stored = {k.rsplit("/", 1)[1]: store.get(k) for k in keys}
    assert stored == {p.name: p.read_bytes() for p in session.iterdir() if p.is_file()}
    assert store.list("uploads") == []  # chunks are gone once the bundle is assembled


def _start_upload(player: Player, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "capture", "upload", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=_env(player.home, CAPTURE_COLLECTOR_ADMIN_TOKEN=ADMIN_TOKEN))


def _accepted_rows(builder: Path, url: str) -> list[dict[str, object]]:
    return list(json.loads(run_capture(builder, "collector", "sessions", "--url", url,
                                       "--json").stdout))


def test_collector_killed_mid_upload_another_instance_finishes_it(
        tmp_path: Path, builder_home: Path, collectors: list[Collector], postgres: Postgres,
        s3: S3) -> None:
    database, bucket = postgres.new_database(), s3.new_bucket()
    store_url = f"s3://{bucket}/c"
    first, second = (Collector(builder_home, db=database, store=store_url,
                               s3_endpoint=s3.endpoint).start() for _ in range(2))
    collectors += [first, second]
    proxy = Proxy(first.port)  # the one address players know
    try:
        study = create_study(builder_home, first.url)
        alice = enroll(builder_home, proxy.url, study, tmp_path / "alice", "alice")
        session = _big_session(alice)
        total = sum(p.stat().st_size for p in session.iterdir())
        proxy.rate = 40_000
        upload = _start_upload(alice, "--wait", "--chunk-kib", "8")
        wait_for(lambda: proxy.bytes_up > total // 3, 60, "a third of the bundle to go up")
        first.kill()  # mid-upload, without warning
        proxy.retarget(second.port)
        out, err = upload.communicate(timeout=120)
        assert upload.returncode == 0, out + err
        assert out.strip() == f"{session.name}: accepted"
        assert "resuming" in err  # it noticed the drop and resumed
        rows = _accepted_rows(builder_home, second.url)
        assert [r["session_id"] for r in rows] == [session.name]  # accepted exactly once
        _assert_stored_identical(open_store(store_url, s3_endpoint=s3.endpoint), session)
    finally:
        proxy.close()


def test_cut_connection_and_corrupted_chunk_are_recovered(
        tmp_path: Path, builder_home: Path, collectors: list[Collector]) -> None:
    collector = Collector(builder_home).start()
    collectors.append(collector)
    proxy = Proxy(collector.port)
    try:
        study = create_study(builder_home, collector.url)
        alice = enroll(builder_home, proxy.url, study, tmp_path / "alice", "alice")
        session = _big_session(alice)
        proxy.cut_at = 30_000  # in the middle of the fourth or so 8 KiB chunk
        proxy.corrupt_next_patch = True  # and one chunk's body damaged on the way
        result = run_capture(alice.home, "upload", "--wait", "--chunk-kib", "8")
        assert result.stdout.strip() == f"{session.name}: accepted"
        assert proxy.cut_at is None and proxy.corrupted == 1
        assert proxy.checksum_refusals == 1  # the collector refused the damaged chunk (460)
        _assert_stored_identical(open_store(builder_home / "collector" / "store"), session)
    finally:
        proxy.close()


def test_a_restarted_client_resumes_from_the_last_confirmed_chunk(
        tmp_path: Path, builder_home: Path, collectors: list[Collector]) -> None:
    collector = Collector(builder_home).start()
    collectors.append(collector)
    proxy = Proxy(collector.port)
    try:
        study = create_study(builder_home, collector.url)
        alice = enroll(builder_home, proxy.url, study, tmp_path / "alice", "alice")
        session = _big_session(alice)
        total = sum(p.stat().st_size for p in session.iterdir())
        proxy.rate = 40_000
        upload = _start_upload(alice, "--chunk-kib", "8")
        wait_for(lambda: proxy.bytes_up > total // 2, 60, "half of the bundle to go up")
        upload.send_signal(signal.SIGKILL)
        upload.communicate(timeout=30)
        sent_before = proxy.bytes_up
        proxy.rate = None
        result = run_capture(alice.home, "upload", "--chunk-kib", "8")  # queued: no names
        assert result.stdout.strip() == f"{session.name}: accepted"
        resent = proxy.bytes_up - sent_before
        assert resent < total * 0.75, f"resent {resent} of {total} bytes: it did not resume"
        _assert_stored_identical(open_store(builder_home / "collector" / "store"), session)
        assert [r["session_id"] for r in _accepted_rows(builder_home, collector.url)] == \
            [session.name]
    finally:
        proxy.close()
