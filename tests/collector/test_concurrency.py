"""Requests racing on one bundle: each answer is the bundle's state (never a server error), and
the bundle is assembled and stored once, whole; a claim left by a dead instance is taken over."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

from capture.collector import db
from capture.collector.service import CLAIM_LEASE
from capture.uploader import uploader
from tests.collector.conftest import World, start_bundle, tus_headers

CHUNK = 200_000
RACERS = 6


def uploaded_not_completed(world: World) -> tuple[dict[str, Any], Path]:
    """Alice's session with every byte uploaded and `complete` not yet asked for."""
    world.as_player("alice")
    session = world.session("alice", world.alice)
    state = start_bundle(world, session)
    alice = world.player(world.alice)
    for item in state["files"]:
        data = (session / item["name"]).read_bytes()
        for offset in range(0, len(data), CHUNK):
            piece = data[offset:offset + CHUNK]
            answer = alice.patch(item["upload_url"], content=piece,
                                 headers=tus_headers(offset, piece))
            assert answer.status_code == 204, answer.text
    return state, session


def stored_bundle(world: World, session: Path) -> dict[str, bytes]:
    prefix = next(p for p in (world.live.store_root / "bundles").rglob(session.name)
                  if p.is_dir())
    return {p.name: p.read_bytes() for p in prefix.iterdir()}


def set_claim(world: World, bundle_id: str, age: timedelta) -> None:
    """As if an instance had claimed the bundle `age` ago and then died."""
    with world.live.settings.engine.begin() as conn:
        conn.execute(db.bundles.update().where(db.bundles.c.id == bundle_id)
                     .values(status="assembling", claimed_at=db.now() - age))


def test_simultaneous_completes_store_the_bundle_once_and_all_get_its_state(
        world: World) -> None:
    state, session = uploaded_not_completed(world)
    url = f"/v1/bundles/{state['bundle_id']}/complete"
    start = threading.Barrier(RACERS)

    def race(_: int) -> tuple[int, str]:
        with httpx.Client(base_url=world.live.url, timeout=60, headers={
                "Authorization": f"Bearer {world.alice.device_token}"}) as http:
            start.wait()
            answer = http.post(url)
            return answer.status_code, answer.json().get("status", answer.text)

    with ThreadPoolExecutor(RACERS) as pool:
        answers = list(pool.map(race, range(RACERS)))
    assert all(answer in ((200, "accepted"), (202, "assembling")) for answer in answers), answers
    assert (200, "accepted") in answers
    alice = world.player(world.alice)
    assert alice.get(f"/v1/bundles/{state['bundle_id']}").json()["status"] == "accepted"
    assert stored_bundle(world, session) == {p.name: p.read_bytes() for p in session.iterdir()
                                             if p.is_file()}
    assert not [k for k in world.stored() if k.startswith("uploads/")]


def test_a_fresh_claim_answers_assembling_and_a_lapsed_one_is_taken_over(world: World) -> None:
    state, session = uploaded_not_completed(world)
    bundle_id = state["bundle_id"]
    alice = world.player(world.alice)
    set_claim(world, bundle_id, timedelta(seconds=1))
    busy = alice.post(f"/v1/bundles/{bundle_id}/complete")
    assert (busy.status_code, busy.json()["status"]) == (202, "assembling")
    assert not (world.live.store_root / "bundles").exists()
    # The uploader asks again while the bundle is being assembled; the claim then lapses (its
    # instance died) and the next ask takes it over and stores it.
    lapse = threading.Timer(1.5, set_claim, (world, bundle_id, CLAIM_LEASE + timedelta(1)))
    lapse.start()
    try:
        with httpx.Client(base_url=world.live.url, headers={
                "Authorization": f"Bearer {world.alice.device_token}"}) as http:
            verdict = uploader.complete(http, bundle_id)
    finally:
        lapse.cancel()
    assert verdict["status"] == "accepted"
    assert stored_bundle(world, session) == {p.name: p.read_bytes() for p in session.iterdir()
                                             if p.is_file()}
    with world.live.settings.engine.connect() as conn:
        row = conn.execute(sa.select(db.bundles).where(db.bundles.c.id == bundle_id)).one()
    assert row.status == "accepted" and row.finished_at is not None
