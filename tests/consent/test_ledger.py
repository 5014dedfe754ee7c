"""The hash-chained ledger: verified reads, tamper detection, concurrent appends."""

from __future__ import annotations

import itertools
import json
import threading
from pathlib import Path

import pytest

import capture.consent as consent
from capture.consent.ledger import head_path, read_entries
from capture.consent.records import GENESIS_HASH, entry_hash
from capture.errors import BadInputError


@pytest.fixture
def ledger(capture_home: Path) -> Path:
    """A ledger of three entries: two grants and a revocation."""
    first = consent.grant("alice", ["minetest"], ["video", "keyboard"])
    consent.grant("bob", ["quake"], ["video"])
    consent.revoke("alice", receipt_id=first.receipt_id)
    return capture_home / "consent" / "ledger.jsonl"


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines(keepends=True)


def _refused(path: Path, match: str) -> BadInputError:
    with pytest.raises(BadInputError, match=match) as caught:
        read_entries(path)
    assert str(path) in str(caught.value)
    assert caught.value.path == path
    return caught.value


def test_chain_links_every_entry(ledger: Path) -> None:
    entries = read_entries(ledger)
    assert [e.seq for e in entries] == [1, 2, 3]
    assert entries[0].prev_hash == GENESIS_HASH
    for before, after in itertools.pairwise(entries):
        assert after.prev_hash == before.hash
    for line in _lines(ledger):
        obj = json.loads(line)
        assert entry_hash(obj) == obj["hash"]
        assert line == json.dumps(obj, sort_keys=True, separators=(",", ":")) + "\n"


def test_missing_ledger_reads_as_empty(capture_home: Path) -> None:
    assert read_entries(capture_home / "consent" / "ledger.jsonl") == []


def test_edited_field_is_detected(ledger: Path) -> None:
    lines = _lines(ledger)
    obj = json.loads(lines[1])
    obj["scope"] = ["video", "keyboard", "mouse", "gamepad", "audio"]
    lines[1] = json.dumps(obj) + "\n"
    ledger.write_text("".join(lines))
    _refused(ledger, r"line 2 \(seq 2\): its hash does not match its content")


def test_edited_and_rehashed_entry_breaks_the_next_link(ledger: Path) -> None:
    lines = _lines(ledger)
    obj = json.loads(lines[0])
    obj["scope"] = ["video", "keyboard", "mouse"]
    obj["hash"] = entry_hash(obj)
    lines[0] = json.dumps(obj) + "\n"
    ledger.write_text("".join(lines))
    _refused(ledger, r"line 2 \(seq 2\): prev_hash is not the hash of the entry before it")


def test_deleted_line_is_detected(ledger: Path) -> None:
    lines = _lines(ledger)
    del lines[1]
    ledger.write_text("".join(lines))
    _refused(ledger, r"line 2 \(seq 3\): expected seq 2")


def test_swapped_lines_are_detected(ledger: Path) -> None:
    lines = _lines(ledger)
    lines[0], lines[1] = lines[1], lines[0]
    ledger.write_text("".join(lines))
    _refused(ledger, r"line 1 \(seq 2\): expected seq 1")


def test_garbage_line_is_detected(ledger: Path) -> None:
    lines = _lines(ledger)
    lines.insert(2, "this is not json\n")
    ledger.write_text("".join(lines))
    _refused(ledger, "line 3 is not valid JSON")


def test_non_object_line_is_detected(ledger: Path) -> None:
    ledger.write_text("".join(_lines(ledger)) + "[1, 2]\n")
    _refused(ledger, "line 4 is not a JSON object")


def test_schema_violation_names_line_and_field(ledger: Path) -> None:
    lines = _lines(ledger)
    obj = json.loads(lines[0])
    obj["scope"] = ["video", "smell"]
    obj["hash"] = entry_hash(obj)
    lines[0] = json.dumps(obj) + "\n"
    ledger.write_text("".join(lines))
    _refused(ledger, r"line 1 \(seq 1\): does not match consent-record.v1.schema.json at scope/1")


def test_cut_off_last_line_is_detected(ledger: Path) -> None:
    ledger.write_bytes(ledger.read_bytes()[:-20])
    _refused(ledger, "line 3 does not end with a newline")


def test_entries_removed_from_the_end_are_detected(ledger: Path) -> None:
    ledger.write_text("".join(_lines(ledger)[:2]))  # drops the revocation: consent would revive
    _refused(ledger, "ends at seq 2 but ledger.jsonl.head records seq 3")


def test_deleted_ledger_with_head_is_detected(ledger: Path) -> None:
    ledger.unlink()
    _refused(ledger, "ledger file is missing")


def test_rewritten_ledger_is_detected_by_head(ledger: Path) -> None:
    lines = _lines(ledger)
    obj = json.loads(lines[2])
    obj["timestamp"] = "2000-01-01T00:00:00.000000Z"
    obj["hash"] = entry_hash(obj)
    lines[2] = json.dumps(obj) + "\n"
    ledger.write_text("".join(lines))
    _refused(ledger, "seq 3 has a different hash than ledger.jsonl.head records")


def test_ledger_ahead_of_head_is_accepted(ledger: Path) -> None:
    """A crash between appending a line and updating the head leaves the head behind."""
    head = head_path(ledger)
    first = json.loads(_lines(ledger)[0])
    head.write_text(json.dumps({"seq": 1, "hash": first["hash"]}))
    assert len(read_entries(ledger)) == 3


def test_damaged_head_is_reported(ledger: Path) -> None:
    head_path(ledger).write_text("{")
    with pytest.raises(BadInputError, match="not a valid ledger head") as caught:
        read_entries(ledger)
    assert caught.value.path == head_path(ledger)


def test_revocation_of_unknown_grant_is_detected(ledger: Path) -> None:
    lines = _lines(ledger)
    obj = json.loads(lines[2])
    obj["withdrawn"][0]["receipt_id"] = "00000000-0000-4000-8000-000000000000"
    obj["hash"] = entry_hash(obj)
    lines[2] = json.dumps(obj) + "\n"
    ledger.write_text("".join(lines))
    head_path(ledger).unlink()
    _refused(ledger, "seq 3: withdraws receipt 00000000-0000-4000-8000-000000000000, which is "
                     "not an earlier grant")


def test_concurrent_appends_keep_the_chain(capture_home: Path) -> None:
    def grant_many(worker: int) -> None:
        for n in range(5):
            consent.grant(f"player-{worker}", [f"game-{n}"], ["video"])

    threads = [threading.Thread(target=grant_many, args=(w,)) for w in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    entries = read_entries(capture_home / "consent" / "ledger.jsonl")
    assert [e.seq for e in entries] == list(range(1, 31))
