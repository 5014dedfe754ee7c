"""The terms text shown before consent, and its pinned hash."""

from __future__ import annotations

import hashlib

import pytest

from capture.consent.records import SCOPE_KINDS
from capture.consent.terms import SCOPE_DESCRIPTIONS, TERMS_VERSION, terms_sha256, terms_text


def test_hash_is_of_the_exact_text() -> None:
    assert terms_sha256() == hashlib.sha256(terms_text().encode("utf-8")).hexdigest()
    assert TERMS_VERSION in terms_text()


def test_terms_cover_what_a_player_must_know() -> None:
    text = terms_text()
    for kind in SCOPE_KINDS:
        assert f"- {kind}:" in text
    for phrase in ("only while", "capture consent show", "capture consent revoke",
                   "dataset built afterwards", "CC-BY-4.0", "pseudonym", "data folder"):
        assert phrase in text


def test_every_scope_kind_has_a_summary_line() -> None:
    assert set(SCOPE_DESCRIPTIONS) == set(SCOPE_KINDS)


@pytest.mark.parametrize("version", ["v999", "../records", "x"])
def test_unknown_version_is_refused(version: str) -> None:
    with pytest.raises(ValueError, match="unknown terms version"):
        terms_text(version)
