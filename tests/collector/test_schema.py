"""The collector's schema and documents: migrations upgrade old databases, the OpenAPI document
served is the one in schemas/, and both stores behave alike."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from capture.collector import db
from capture.collector.openapi import checked_in_path, document, render
from capture.collector.store import LocalStore, S3Store, Store, check_key, open_store
from tests.collector.conftest import ADMIN_TOKEN, S3, LiveCollector, Postgres


def _upgrade_from_revision_1(url: str) -> None:
    engine = db.make_engine(url)
    try:
        db.migrate(engine, "0001")
        assert db.current_revision(engine) == "0001"
        with engine.begin() as conn:
            conn.execute(sa.text(
                "INSERT INTO studies (id, name, terms_text, terms_version, terms_sha256, games, "
                "scope, purposes, licence, controller, created_at) VALUES ('old', 'Old', 't', "
                "'1', :sha, '[\"g\"]', '[\"video\"]', '[\"p\"]', 'CC0-1.0', "
                "'{\"name\": \"n\", \"contact\": \"c\"}', :now)"),
                {"sha": "0" * 64, "now": db.now()})
            columns = {c["name"] for c in sa.inspect(conn).get_columns("studies")}
            assert "retention_days" not in columns
            assert "purges" not in sa.inspect(conn).get_table_names()
        db.migrate(engine)
        assert db.current_revision(engine) == "0003"
        with engine.connect() as conn:
            row = conn.execute(sa.select(db.studies)).one()
            assert (row.id, row.games, row.retention_days) == ("old", ["g"], 365)
            assert conn.execute(sa.select(sa.func.count()).select_from(db.purges)).scalar() == 0
            assert "claimed_at" in {c["name"] for c in sa.inspect(conn).get_columns("bundles")}
            # the tables the code declares are exactly what the migrations built
            assert compare_metadata(MigrationContext.configure(conn), db.metadata) == []
        db.migrate(engine)  # at the head already: nothing to do, nothing breaks
    finally:
        engine.dispose()


def test_sqlite_upgrades_from_revision_1(tmp_path: Path) -> None:
    _upgrade_from_revision_1(db.default_url(tmp_path))


def test_postgresql_upgrades_from_revision_1(postgres: Postgres) -> None:
    _upgrade_from_revision_1(postgres.new_database())


def test_served_openapi_document_is_the_checked_in_one(live_collector: LiveCollector) -> None:
    served = httpx.get(live_collector.url + "/v1/openapi.json").json()
    assert render(served) == checked_in_path().read_text(encoding="utf-8"), \
        "the API changed: run .venv/bin/python tools/collector_openapi.py"
    assert render(document()) == render(served)
    assert set(served["paths"]) >= {"/v1/studies", "/v1/enrollment", "/v1/bundles",
                                    "/v1/uploads/{upload_id}", "/v1/revocations",
                                    "/v1/admin/sessions"}
    assert json.loads(checked_in_path().read_text())["openapi"].startswith("3.")
    assert httpx.get(live_collector.url + "/v1/studies",
                     headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}).status_code == 200


@pytest.fixture(params=["directory", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    if request.param == "directory":
        return LocalStore(tmp_path / "store")
    s3: S3 = request.getfixturevalue("s3")
    bucket = s3.new_bucket()
    made = open_store(f"s3://{bucket}/some/prefix", s3_endpoint=s3.endpoint)
    assert isinstance(made, S3Store)
    return made


def test_stores_put_get_list_and_delete_alike(store: Store) -> None:
    store.put("a/b/one.bin", b"1")
    store.put_stream("a/b/two.bin", iter([b"tw", b"o" * 100_000]))
    store.put("a/c/three.bin", b"")
    assert store.get("a/b/two.bin") == b"tw" + b"o" * 100_000
    assert store.list("a/b") == ["a/b/one.bin", "a/b/two.bin"]
    assert store.exists("a/c/three.bin") and not store.exists("a/c/nope")
    with store.open("a/b/one.bin") as body:
        assert body.read() == b"1"
    with pytest.raises(KeyError):
        store.get("a/missing")
    store.put("a/b/one.bin", b"replaced")
    assert store.get("a/b/one.bin") == b"replaced"
    assert store.delete_prefix("a/b") == 2
    assert store.list("a") == ["a/c/three.bin"]
    store.delete("a/c/three.bin")
    assert store.list("") == []


@pytest.mark.parametrize("key", ["../x", "a/../b", "/abs", "a//b", ".hidden", "a/b\\c", ""])
def test_store_keys_must_be_path_safe(key: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        check_key(key)
    with pytest.raises(ValueError):
        LocalStore(tmp_path).put(key, b"x")
