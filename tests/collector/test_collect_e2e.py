"""End to end on loopback: enroll, upload, export from the collector, verify, withdraw."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from capture.collector.store import Store, open_store
from tests.collector.conftest import (
    ADMIN_TOKEN,
    S3,
    Collector,
    Postgres,
    create_study,
    enroll,
    run_capture,
)

pytestmark = pytest.mark.slow


def _stored_files(store: Store) -> dict[str, bytes]:
    return {k: store.get(k) for k in store.list("bundles")}


def _round_trip(tmp_path: Path, builder: Path, collector: Collector, store: Store) -> None:
    url = collector.url
    study = create_study(builder, url)
    alice = enroll(builder, url, study, tmp_path / "alice", "alice-7")
    session = alice.session()

    uploaded = run_capture(alice.home, "upload", "--chunk-kib", "32")
    assert uploaded.stdout.strip() == f"{session.name}: accepted"

    stored = _stored_files(store)
    prefix = f"bundles/{study}/"
    by_name = {k.rsplit("/", 1)[1]: v for k, v in stored.items() if k.startswith(prefix)}
    local = {p.name: p.read_bytes() for p in session.iterdir() if p.is_file()}
    assert by_name == local  # every file, byte for byte, and nothing else

    listed = json.loads(run_capture(builder, "collector", "sessions", "--url", url, "--study",
                                    study, "--json").stdout)
    assert [r["session_id"] for r in listed] == [session.name]
    assert listed[0]["player_id"].startswith("p-") and "alice" not in listed[0]["player_id"]

    other = run_capture(builder, "export", f"collector+{url}/{study}?game=othergame", "--out",
                        str(tmp_path / "other"), check=False)
    assert other.returncode != 0 and "no accepted session that matches" in other.stderr
    day = listed[0]["accepted_at"][:10]
    dataset = tmp_path / "dataset"
    run_capture(builder, "export", f"collector+{url}/{study}?game=FactoryGame&since={day}"
                f"&until={day}", "--out", str(dataset))
    verified = run_capture(builder, "dataset", "verify", str(dataset))
    assert "ok" in verified.stdout.lower()
    info = json.loads((dataset / "meta" / "info.json").read_text())
    assert info["total_episodes"] >= 1 and info["total_frames"] > 0

    revoked = run_capture(alice.home, "consent", "revoke", "--player", "alice-7", "--yes")
    assert "confirmed the withdrawal" in revoked.stdout, revoked.stdout
    assert _stored_files(store) == {}
    assert json.loads(run_capture(builder, "collector", "sessions", "--url", url,
                                  "--json").stdout) == []
    purges = json.loads(run_capture(builder, "collector", "purges", "--url", url,
                                    "--json").stdout)
    assert [(p["dataset_name"], p["session_id"]) for p in purges] == [("dataset", session.name)]
    again = run_capture(builder, "export", f"collector+{url}/{study}", "--out",
                        str(tmp_path / "again"), check=False)
    assert again.returncode != 0 and "no accepted session" in again.stderr
    assert not (tmp_path / "again").exists()

    log = collector.log()
    assert ADMIN_TOKEN not in log and alice.token not in log


def test_embedded_collector_round_trip(tmp_path: Path, builder_home: Path,
                                       collectors: list[Collector]) -> None:
    collector = Collector(builder_home).start()
    collectors.append(collector)
    store = open_store(builder_home / "collector" / "store")
    _round_trip(tmp_path, builder_home, collector, store)
    assert (builder_home / "collector" / "collector.sqlite3").is_file()


def test_postgres_and_s3_round_trip(tmp_path: Path, builder_home: Path,
                                    collectors: list[Collector], postgres: Postgres,
                                    s3: S3) -> None:
    bucket = s3.new_bucket()
    collector = Collector(builder_home, db=postgres.new_database(),
                          store=f"s3://{bucket}/collected", s3_endpoint=s3.endpoint).start()
    collectors.append(collector)
    store = open_store(f"s3://{bucket}/collected", s3_endpoint=s3.endpoint)
    _round_trip(tmp_path, builder_home, collector, store)


def test_export_straight_from_the_store_checks_consent_there(
        tmp_path: Path, builder_home: Path, collectors: list[Collector], postgres: Postgres,
        s3: S3) -> None:
    bucket = s3.new_bucket()
    collector = Collector(builder_home, db=postgres.new_database(),
                          store=f"s3://{bucket}/c", s3_endpoint=s3.endpoint).start()
    collectors.append(collector)
    study = create_study(builder_home, collector.url)
    bob = enroll(builder_home, collector.url, study, tmp_path / "bob", "bob")
    bob.session()
    run_capture(bob.home, "upload")
    dataset = tmp_path / "from-store"
    run_capture(builder_home, "export", f"s3://{bucket}/c", "--out", str(dataset),
                AWS_ENDPOINT_URL=s3.endpoint)
    assert run_capture(builder_home, "dataset", "verify", str(dataset)).returncode == 0
    # the receipt's status object in the store is what an export from the store honours
    store = open_store(f"s3://{bucket}/c", s3_endpoint=s3.endpoint)
    status = json.loads(store.get(f"consent/{bob.receipt_id}.json"))
    assert status["status"] == "active"
    store.put(f"consent/{bob.receipt_id}.json",
              json.dumps({**status, "status": "revoked", "active_games": []}).encode())
    refused = run_capture(builder_home, "export", f"s3://{bucket}/c", "--out",
                          str(tmp_path / "refused"), check=False, AWS_ENDPOINT_URL=s3.endpoint)
    assert refused.returncode == 3 and "is revoked at the collector" in refused.stderr
