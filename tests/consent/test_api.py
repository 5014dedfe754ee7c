"""grant / require_consent / revoke / receipt_status through the public API."""

from __future__ import annotations

from pathlib import Path

import pytest

import capture.consent as consent
from capture.errors import BadInputError, CaptureError, ConsentError


def test_public_names_are_exactly_these() -> None:
    assert sorted(consent.__all__) == sorted([
        "SCOPE_KINDS", "ConsentReceipt", "Controller", "Revocation", "StudyTerms",
        "active_grants",
        "all_entries", "grant", "parse_scope", "receipt_status", "require_consent", "revoke",
        "withdraw",
    ])


def test_grant_then_require_returns_that_receipt(capture_home: Path) -> None:
    receipt = consent.grant("alice", ["Minetest"], ["video", "keyboard", "mouse"])
    found = consent.require_consent("minetest", {"video", "mouse"})
    assert found.receipt_id == receipt.receipt_id
    assert found.player == "alice"
    assert receipt.scope == ("video", "keyboard", "mouse")
    assert receipt.method == "cli-scripted"
    assert receipt.license == "CC-BY-4.0"
    assert not receipt.synthetic
    assert (capture_home / "consent" / "ledger.jsonl").is_file()


def test_game_names_match_case_insensitively(capture_home: Path) -> None:
    consent.grant("alice", ["SuperTuxKart"], ["video"])
    assert consent.require_consent("supertuxkart", {"video"}).games == ("SuperTuxKart",)
    assert consent.require_consent("SUPERTUXKART", set()).player == "alice"


def test_no_consent_at_all_is_refused(capture_home: Path) -> None:
    with pytest.raises(ConsentError, match="no consent for game 'minetest'"):
        consent.require_consent("minetest", {"video"})


def test_consent_for_another_game_is_refused(capture_home: Path) -> None:
    consent.grant("alice", ["minetest"], ["video"])
    with pytest.raises(ConsentError, match=r"no consent for game 'quake'; consented games: "
                                           r"minetest$"):
        consent.require_consent("quake", {"video"})


def test_insufficient_scope_names_the_missing_kind(capture_home: Path) -> None:
    consent.grant("alice", ["minetest"], ["video", "keyboard"])
    with pytest.raises(ConsentError, match=r"lacks 'mouse', 'gamepad'"):
        consent.require_consent("minetest", {"video", "mouse", "gamepad"})


def test_audio_is_refused_since_nothing_records_it(capture_home: Path) -> None:
    with pytest.raises(CaptureError, match="'audio' cannot be chosen"):
        consent.grant("alice", ["minetest"], ["video", "audio"])
    assert consent.all_entries() == []
    consent.grant("alice", ["minetest"], ["video"])
    with pytest.raises(ConsentError, match="'audio' cannot be recorded"):
        consent.require_consent("minetest", {"video", "audio"})


def test_newest_covering_grant_wins(capture_home: Path) -> None:
    consent.grant("alice", ["minetest"], ["video"])
    newer = consent.grant("alice", ["minetest"], ["video", "mouse"])
    assert consent.require_consent("minetest", {"video"}).receipt_id == newer.receipt_id


def test_several_players_need_a_choice(capture_home: Path) -> None:
    alice = consent.grant("alice", ["minetest"], ["video"])
    consent.grant("bob", ["minetest"], ["video"])
    with pytest.raises(ConsentError, match=r"several players.*pass --player"):
        consent.require_consent("minetest", {"video"})
    assert consent.require_consent("minetest", {"video"}, "alice").receipt_id == alice.receipt_id
    with pytest.raises(ConsentError, match=r"no consent from player 'carol'.*alice, bob"):
        consent.require_consent("minetest", {"video"}, "carol")


def test_revoke_then_refused_with_date(capture_home: Path) -> None:
    receipt = consent.grant("alice", ["minetest"], ["video"])
    revoked = consent.revoke("alice")
    assert [r.receipt_id for r in revoked] == [receipt.receipt_id]
    with pytest.raises(ConsentError, match=r"was revoked on \d{4}-\d\d-\d\d"):
        consent.require_consent("minetest", {"video"})
    assert consent.receipt_status(receipt.receipt_id) == "revoked"
    assert consent.active_grants() == []
    assert consent.revoke("alice") == []  # nothing left: appends nothing
    assert len(consent.all_entries()) == 2


def test_revoke_by_receipt_id_leaves_other_grants(capture_home: Path) -> None:
    first = consent.grant("alice", ["minetest"], ["video"])
    second = consent.grant("alice", ["quake"], ["video"])
    revoked = consent.revoke("alice", receipt_id=first.receipt_id)
    assert [r.receipt_id for r in revoked] == [first.receipt_id]
    assert consent.receipt_status(first.receipt_id) == "revoked"
    assert consent.receipt_status(second.receipt_id) == "active"
    assert consent.receipt_status("00000000-0000-4000-8000-000000000000") == "unknown"
    assert consent.require_consent("quake", {"video"}).receipt_id == second.receipt_id


def test_revoke_by_receipt_of_another_player_is_refused(capture_home: Path) -> None:
    bobs = consent.grant("bob", ["minetest"], ["video"])
    with pytest.raises(ConsentError, match="not a grant of player 'alice'"):
        consent.revoke("alice", receipt_id=bobs.receipt_id)
    with pytest.raises(ConsentError, match="no grant has receipt id"):
        consent.revoke("alice", receipt_id="nonsense")
    assert consent.receipt_status(bobs.receipt_id) == "active"


def test_revoke_some_games_keeps_the_others(capture_home: Path) -> None:
    receipt = consent.grant("alice", ["minetest", "Quake"], ["video"])
    consent.revoke("alice", games=["quake"])
    with pytest.raises(ConsentError, match="revoked"):
        consent.require_consent("QUAKE", {"video"})
    kept = consent.require_consent("minetest", {"video"})
    assert kept.receipt_id == receipt.receipt_id
    assert kept.games == ("minetest",)  # narrowed to what is still consented
    assert consent.receipt_status(receipt.receipt_id) == "revoked"  # fail closed without game
    assert consent.receipt_status(receipt.receipt_id, game="minetest") == "active"
    assert consent.receipt_status(receipt.receipt_id, game="quake") == "revoked"
    assert consent.receipt_status(receipt.receipt_id, game="doom") == "unknown"
    assert [g.games for g in consent.active_grants()] == [("minetest",)]


def test_revoke_only_touches_that_player(capture_home: Path) -> None:
    consent.grant("alice", ["minetest"], ["video"])
    bobs = consent.grant("bob", ["minetest"], ["video"])
    consent.revoke("alice")
    assert consent.require_consent("minetest", {"video"}).receipt_id == bobs.receipt_id


def test_synthetic_demo_consent(capture_home: Path) -> None:
    receipt = consent.grant("demo", ["capture-demo"], ["video", "keyboard"],
                            method="demo-synthetic", synthetic=True)
    assert receipt.synthetic and receipt.method == "demo-synthetic"
    with pytest.raises(CaptureError, match="synthetic"):
        consent.grant("demo", ["capture-demo"], ["video"], method="demo-synthetic")


@pytest.mark.parametrize(("args", "message"), [
    (("alice", ["minetest"], ["video", "smell"]), "unknown scope kind 'smell'"),
    (("alice", ["minetest"], []), "at least one scope kind"),
    (("alice", [], ["video"]), "at least one game"),
    (("alice", ["  "], ["video"]), "game name must not be empty"),
    (("", ["minetest"], ["video"]), "player must not be empty"),
    (("al\nice", ["minetest"], ["video"]), "control characters"),
])
def test_bad_choices_are_rejected_naming_the_value(capture_home: Path, args: tuple,
                                                   message: str) -> None:
    with pytest.raises(CaptureError, match=message):
        consent.grant(*args)
    assert consent.all_entries() == []


def test_receipt_pins_the_terms_and_purposes(capture_home: Path) -> None:
    from capture.consent.terms import TERMS_VERSION, terms_sha256

    receipt = consent.grant("alice", ["minetest"], ["mouse", "video"],
                            purposes=["world model research"], license="CC0-1.0")
    assert (receipt.terms_version, receipt.terms_sha256) == (TERMS_VERSION, terms_sha256())
    assert receipt.scope == ("video", "mouse")
    assert receipt.license == "CC0-1.0"
    [purpose] = receipt.purposes
    assert purpose.purpose == "world model research"
    assert purpose.consent_type == "explicit"
    assert purpose.data_categories == ("video", "mouse")
    assert not receipt.sensitive and receipt.sensitive_categories == ()


def test_explicit_ledger_path(tmp_path: Path) -> None:
    ledger = tmp_path / "elsewhere" / "ledger.jsonl"
    receipt = consent.grant("alice", ["minetest"], ["video"], ledger_path=ledger)
    assert consent.require_consent("minetest", {"video"}, ledger_path=ledger) == receipt
    assert consent.receipt_status(receipt.receipt_id, ledger_path=ledger) == "active"


def test_tampered_ledger_fails_closed(capture_home: Path) -> None:
    consent.grant("alice", ["minetest"], ["video"])
    ledger = capture_home / "consent" / "ledger.jsonl"
    ledger.write_text(ledger.read_text().replace('"alice"', '"mallory"'))
    with pytest.raises(BadInputError, match="edited"):
        consent.require_consent("minetest", {"video"})
    with pytest.raises(BadInputError):
        consent.receipt_status("x")
    with pytest.raises(BadInputError):
        consent.grant("bob", ["minetest"], ["video"])  # never append to a broken chain
