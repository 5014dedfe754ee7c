"""Ledger entries match schemas/consent-record.v1.schema.json, written and read back."""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import capture.consent as consent
from capture.errors import BadInputError
from capture.formats import CONSENT_RECORD_SCHEMA, schemas_dir, validate_json


def _written(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_schema_is_valid_2020_12() -> None:
    schema = json.loads((schemas_dir() / CONSENT_RECORD_SCHEMA).read_text())
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(schema)


def test_every_written_entry_kind_validates(capture_home: Path) -> None:
    consent.grant("alice", ["minetest", "quake"], ["video", "gamepad"])
    consent.grant("demo", ["capture-demo"], ["video"], method="demo-synthetic", synthetic=True)
    consent.revoke("alice", games=["quake"])
    ledger = capture_home / "consent" / "ledger.jsonl"
    written = _written(ledger)
    assert [e["kind"] for e in written] == ["grant", "grant", "revoke"]
    for obj in written:
        validate_json(obj, CONSENT_RECORD_SCHEMA, ledger)


@pytest.mark.parametrize(("change", "where"), [
    (lambda e: e.pop("terms_sha256"), "(top level)"),
    (lambda e: e.update(method="telepathy"), "method"),
    (lambda e: e.update(extra_field=1), "(top level)"),
    (lambda e: e.update(kind="maybe"), "kind"),
    (lambda e: e["purposes"][0].update(consent_type="implied"), "purposes/0/consent_type"),
    (lambda e: e.update(games=["a", "a"]), "games"),
])
def test_schema_rejects_malformed_grants(capture_home: Path, change, where: str) -> None:
    consent.grant("alice", ["minetest"], ["video"])
    [entry] = _written(capture_home / "consent" / "ledger.jsonl")
    change(entry)
    with pytest.raises(BadInputError, match=re.escape(f"at {where}")):
        validate_json(entry, CONSENT_RECORD_SCHEMA, "x")


def test_schema_rejects_revoke_without_withdrawn(capture_home: Path) -> None:
    consent.grant("alice", ["minetest"], ["video"])
    consent.revoke("alice")
    entry = _written(capture_home / "consent" / "ledger.jsonl")[1]
    entry["withdrawn"] = []
    with pytest.raises(BadInputError, match="at withdrawn"):
        validate_json(entry, CONSENT_RECORD_SCHEMA, "x")


names = st.text(st.characters(blacklist_categories=("Cc", "Cs")), min_size=1,
                max_size=40).filter(lambda s: s.strip())


@settings(max_examples=40, deadline=None)
@given(player=names, games=st.lists(names, min_size=1, max_size=3))
def test_any_reasonable_names_round_trip(player: str, games: list[str]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        ledger = Path(tmp) / "ledger.jsonl"
        receipt = consent.grant(player, games, ["video"], ledger_path=ledger)
        [read_back] = consent.all_entries(ledger_path=ledger)
        assert read_back == receipt
        assert read_back.player == player.strip()
        found = consent.require_consent(games[0].casefold(), {"video"}, ledger_path=ledger)
        assert found.receipt_id == receipt.receipt_id


def test_entry_kinds_allow_exactly_the_common_fields() -> None:
    """The grant and revoke defs list the common fields as `true`: keep them in step."""
    schema = json.loads((schemas_dir() / CONSENT_RECORD_SCHEMA).read_text())
    common = set(schema["$defs"]["common"]["properties"]) - {"kind"}
    for kind in ("grant", "revoke"):
        props = schema["$defs"][kind]["properties"]
        assert {name for name, rule in props.items() if rule is True} == common
