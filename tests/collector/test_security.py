"""Security of the collector API: auth everywhere, players kept apart, bad input refused with a
reason and nothing stored, size caps, tokens kept out of logs, TLS."""

from __future__ import annotations

import hashlib
import json
import logging
import subprocess
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from capture.collector import db
from capture.collector.openapi import document
from capture.uploader import enrollment, uploader
from tests.collector.conftest import (
    ADMIN_TOKEN,
    Collector,
    World,
    start_bundle,
    tus_headers,
)


def _fill(path: str) -> str:
    return (path.replace("{study}", "s1").replace("{bundle_id}", "b").replace("{name}", "n")
            .replace("{upload_id}", "u").replace("{receipt_id}", "r"))


def test_every_endpoint_needs_a_token_and_admin_ones_the_admin_token(world: World) -> None:
    paths = document()["paths"]
    bob = world.player(world.bob)
    checked = 0
    for path, methods in paths.items():
        for method in methods:
            url = _fill(path)
            if path.startswith("/v1/enrollment"):
                body = {"code": "not-a-real-code", "pseudonym": "x", "receipt": {}}
                if path.endswith("/study"):
                    body = {"code": "not-a-real-code"}
                answer = httpx.request(method.upper(), world.live.url + url, json=body)
                assert answer.status_code in (401, 422), (method, path, answer.text)
                checked += 1
                continue
            anonymous = httpx.request(method.upper(), world.live.url + url)
            assert anonymous.status_code == 401, (method, path, anonymous.status_code)
            wrong = httpx.request(method.upper(), world.live.url + url,
                                  headers={"Authorization": "Bearer wrong-token"})
            assert wrong.status_code == 401, (method, path)
            if "/admin/" in path or path.startswith("/v1/studies"):
                assert bob.request(method.upper(), url).status_code == 401, (method, path)
            checked += 1
    assert checked >= 15


def test_players_cannot_read_list_or_overwrite_each_other(world: World) -> None:
    world.as_player("alice")
    alice_session = world.session("alice", world.alice)
    [result] = uploader.upload_sessions([alice_session], chunk_size=64 << 10)
    assert result.status == "accepted"
    stored_before = {k: (world.live.store_root / k).read_bytes() for k in world.stored()}
    alice, bob = world.player(world.alice), world.player(world.bob)
    [mine] = alice.get("/v1/bundles").json()

    assert bob.get("/v1/bundles").json() == []
    assert bob.get(f"/v1/bundles/{mine['bundle_id']}").status_code == 404
    assert bob.post(f"/v1/bundles/{mine['bundle_id']}/complete").status_code == 404
    upload_url = mine["files"][0]["upload_url"]
    assert bob.head(upload_url).status_code == 404
    patch = bob.patch(upload_url, content=b"x", headers=tus_headers(0, b"x"))
    assert patch.status_code in (404, 409)
    # the same session id under bob's token is bob's own bundle, and alice's receipt is not his
    manifest_text = (alice_session / "manifest.json").read_text()
    takeover = bob.post("/v1/bundles", json={"manifest_text": manifest_text})
    assert takeover.status_code == 422
    assert "was not recorded by this collector when you enrolled" in takeover.json()["reason"]
    assert bob.get(f"/v1/admin/bundles/{mine['bundle_id']}/files/video.mkv").status_code == 401
    # bob cannot withdraw alice's consent either
    world.as_player("alice")
    line = enrollment.ledger_line(world.alice.receipt_id)
    revocation = {**line, "kind": "revoke"}
    assert bob.post("/v1/revocations", json={"entry": revocation}).status_code in (400, 403, 422)
    after = {k: (world.live.store_root / k).read_bytes() for k in world.stored()}
    assert {k: v for k, v in after.items() if "/bundles/" in f"/{k}"} == \
        {k: v for k, v in stored_before.items() if "/bundles/" in f"/{k}"}
    assert alice.get(f"/v1/bundles/{mine['bundle_id']}").json()["status"] == "accepted"


def test_a_chunk_with_a_wrong_checksum_is_refused_and_nothing_moves(world: World) -> None:
    world.as_player("alice")
    state = start_bundle(world, world.session("alice", world.alice))
    alice = world.player(world.alice)
    item = state["files"][0]
    data = b"\0" * min(item["length"], 1000)
    answer = alice.patch(item["upload_url"], content=data,
                         headers=tus_headers(0, data, hashlib.sha256(b"other").digest()))
    assert answer.status_code == 460
    assert "does not match its sha256 checksum" in answer.json()["reason"]
    assert alice.head(item["upload_url"]).headers["Upload-Offset"] == "0"
    assert world.count(db.upload_chunks) == 0
    assert not [k for k in world.stored() if k.startswith("uploads/")]
    missing = alice.patch(item["upload_url"], content=data,
                          headers={k: v for k, v in tus_headers(0, data).items()
                                   if k != "Upload-Checksum"})
    assert missing.status_code == 400 and "Upload-Checksum" in missing.json()["reason"]


def test_a_manifest_that_does_not_match_its_files_is_rejected_for_good(world: World) -> None:
    world.as_player("alice")
    session = world.session("alice", world.alice)
    video = session / "video.mkv"
    original = video.read_bytes()
    state = start_bundle(world, session)
    damaged = bytearray(original)
    damaged[len(damaged) // 2] ^= 0x55
    alice = world.player(world.alice)
    for item in state["files"]:
        data = bytes(damaged) if item["name"] == "video.mkv" else \
            (session / item["name"]).read_bytes()
        answer = alice.patch(item["upload_url"], content=data, headers=tus_headers(0, data))
        assert answer.status_code == 204, answer.text
    verdict = alice.post(f"/v1/bundles/{state['bundle_id']}/complete")
    assert verdict.status_code == 422
    assert verdict.json()["reason"].startswith("video.mkv does not match the manifest")
    assert not [k for k in world.stored() if k.startswith("bundles/")]
    again = alice.post("/v1/bundles", json={"manifest_text": (session / "manifest.json")
                                            .read_text()})
    assert again.status_code == 422 and again.json()["reason"] == verdict.json()["reason"]
    # the uploader reports the rejection (with its reason) and records it
    [result] = uploader.upload_sessions([session])
    assert result.status == "rejected" and "video.mkv does not match" in (result.reason or "")


def test_malformed_json_and_oversized_bodies_get_a_reason_and_change_nothing(
        world: World) -> None:
    alice = world.player(world.alice)
    before = (world.count(db.bundles), world.stored())
    bad = alice.post("/v1/bundles", content=b"{not json",
                     headers={"Content-Type": "application/json"})
    assert bad.status_code == 400 and bad.json()["reason"] == "the request body is not valid JSON"
    huge = alice.post("/v1/bundles", json={"manifest_text": "x" * 700_000})
    assert huge.status_code == 413 and "larger than" in huge.json()["reason"]
    not_manifest = alice.post("/v1/bundles", json={"manifest_text": "[1, 2]"})
    assert not_manifest.status_code == 422
    assert (world.count(db.bundles), world.stored()) == before


def test_oversized_chunk_and_unsafe_names_are_refused(world: World) -> None:
    world.as_player("alice")
    session = world.session("alice", world.alice)
    state = start_bundle(world, session)
    alice = world.player(world.alice)
    big = b"\0" * ((256 << 10) + 1)
    answer = alice.patch(state["files"][0]["upload_url"], content=big, headers=tus_headers(0, big))
    assert answer.status_code == 413
    manifest = json.loads((session / "manifest.json").read_text())
    manifest["session_id"] = "20250301T120000Z-other"
    manifest["files"]["../escape"] = manifest["files"]["video.mkv"]
    unsafe = alice.post("/v1/bundles", json={"manifest_text": json.dumps(manifest)})
    assert unsafe.status_code == 422 and "not a safe name" in unsafe.json()["reason"]
    download = world.admin.get(f"/v1/admin/bundles/{state['bundle_id']}/files/..%2Fx")
    assert download.status_code in (400, 404)


def test_wrong_and_expired_tokens_are_refused(world: World) -> None:
    wrong = httpx.get(world.live.url + "/v1/bundles",
                      headers={"Authorization": "Bearer " + world.alice.device_token + "x"})
    assert wrong.status_code == 401 and "not known" in wrong.json()["reason"]
    with world.live.settings.engine.begin() as conn:
        conn.execute(db.players.update().where(db.players.c.id == world.alice.player_id)
                     .values(token_expires_at=db.now() - timedelta(seconds=1)))
    expired = world.player(world.alice).get("/v1/bundles")
    assert expired.status_code == 401 and "expired" in expired.json()["reason"]
    assert world.player(world.bob).get("/v1/bundles").status_code == 200


def test_replayed_and_forged_revocations_are_refused(world: World) -> None:
    from capture.consent import withdraw

    world.as_player("alice")
    revocation = withdraw("alice", None)
    assert revocation is not None
    entry = enrollment.ledger_line(revocation.receipt_id)
    alice = world.player(world.alice)
    forged = {**entry, "withdrawn": [{"receipt_id": world.bob.receipt_id, "games":
                                      ["factorygame"]}]}
    answer = alice.post("/v1/revocations", json={"entry": forged})
    assert answer.status_code == 400 and "altered" in answer.json()["reason"]
    registry_before = world.count(db.registry)
    first = alice.post("/v1/revocations", json={"entry": entry})
    assert first.status_code == 200 and first.json()["entry_hash"] == entry["hash"]
    replay = alice.post("/v1/revocations", json={"entry": entry})
    assert replay.status_code == 409 and "already recorded" in replay.json()["reason"]
    assert world.count(db.registry) == registry_before + 1
    chain = world.admin.get("/v1/admin/registry").json()
    assert chain["problems"] == [] and [e["kind"] for e in chain["entries"]] == \
        ["grant", "grant", "revoke"]


def test_a_withdrawn_receipt_is_refused_whatever_the_local_ledger_says(world: World) -> None:
    """Rolling the local ledger back (deleting the revocation and its head) does not help."""
    from capture import paths
    from capture.consent import withdraw
    from capture.uploader.outbox import notify_collector_of_revocation

    world.as_player("alice")
    ledger = paths.ledger_path()
    before = ledger.read_bytes()
    head_before = ledger.with_name(ledger.name + ".head").read_bytes()
    revocation = withdraw("alice", None)
    [delivery] = notify_collector_of_revocation(revocation)
    assert delivery.status == "acknowledged"
    ledger.write_bytes(before)  # the rollback the issue describes
    ledger.with_name(ledger.name + ".head").write_bytes(head_before)
    [result] = uploader.upload_sessions([world.session("alice", world.alice)])
    assert result.status == "rejected"
    assert "was withdrawn; the collector accepts nothing more under it" in (result.reason or "")


def test_quota_and_study_limits_are_enforced_with_reasons(world: World) -> None:
    world.as_player("bob")
    manifest_path = world.session("bob", world.bob, 3) / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["files"]["video.mkv"]["bytes"] = 60 << 20
    over = world.player(world.bob).post("/v1/bundles",
                                        json={"manifest_text": json.dumps(manifest)})
    assert over.status_code == 422 and "quota" in over.json()["reason"]
    manifest = json.loads(manifest_path.read_text())
    manifest["session_id"] += "-b"
    manifest["game"]["name"] = "othergame"
    other = world.player(world.bob).post("/v1/bundles",
                                         json={"manifest_text": json.dumps(manifest)})
    assert other.status_code == 422 and "not one of study 's1'" in other.json()["reason"]


def test_tokens_never_reach_the_logs(world: World, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    world.as_player("alice")
    uploader.upload_sessions([world.session("alice", world.alice)], chunk_size=64 << 10)
    world.admin.get("/v1/admin/sessions")
    httpx.get(world.live.url + "/v1/bundles", headers={"Authorization": "Bearer leaked-123"})
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "/v1/bundles" in text  # the access log is on in this fixture, and was captured
    for secret in (ADMIN_TOKEN, world.alice.device_token, "leaked-123"):
        assert secret not in text


def test_tls_with_a_certificate(tmp_path: Path, collectors: list[Collector]) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    collector = Collector(tmp_path / "home", extra=("--tls-cert", str(cert), "--tls-key",
                                                    str(key))).start()
    collectors.append(collector)
    assert collector.url.startswith("https://")
    answer = httpx.get(collector.url + "/v1/studies", verify=str(cert),
                       headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert answer.status_code == 200 and answer.json() == []
    with pytest.raises(httpx.HTTPError):
        httpx.get(collector.url.replace("https", "http") + "/v1/studies", timeout=5)


def test_invite_codes_work_once_and_expire(world: World, tmp_path: Path) -> None:
    code = world.admin.post("/v1/studies/s1/invites").json()["code"]
    world.monkeypatch.setenv("CAPTURE_HOME", str(tmp_path / "carol"))
    study = enrollment.fetch_study(world.live.url, code)
    enrollment.enroll(world.live.url, code, study, "carol", method="cli-scripted")
    players = world.count(db.players)
    with pytest.raises(enrollment.CaptureError, match="already used"):
        enrollment.fetch_study(world.live.url, code)
    late = world.admin.post("/v1/studies/s1/invites").json()["code"]
    with world.live.settings.engine.begin() as conn:
        conn.execute(db.invites.update().values(expires_at=db.now() - timedelta(seconds=1))
                     .where(db.invites.c.used_at.is_(None)))
    with pytest.raises(enrollment.CaptureError, match="expired"):
        enrollment.fetch_study(world.live.url, late)
    unknown = httpx.post(world.live.url + "/v1/enrollment/study", json={"code": "x" * 20})
    assert unknown.status_code == 401 and "not known" in unknown.json()["reason"]
    assert world.count(db.players) == players
