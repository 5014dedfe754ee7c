"""Consent: players opt in per game and scope, and withdraw; nothing is recorded without it."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from capture import paths
from capture.clock import ClockPair
from capture.errors import CaptureError, ConsentError

from .ledger import GrantState, append_entry, grant_states, read_entries
from .records import (
    COLLECTION_METHODS,
    DEFAULT_CONTROLLER_CONTACT,
    DEFAULT_CONTROLLER_NAME,
    DEFAULT_JURISDICTION,
    DEFAULT_LICENSE,
    DEFAULT_PURPOSES,
    PURPOSE_CATEGORY,
    RECEIPT_SPEC_VERSION,
    RECORD_VERSION,
    RETIRED_SCOPE_KINDS,
    SCOPE_KINDS,
    SENSITIVE_SCOPE_KINDS,
    TERMINATION,
    THIRD_PARTY_NAME,
    ConsentReceipt,
    Controller,
    Revocation,
    game_key,
    human_time,
)
from .terms import TERMS_VERSION, terms_sha256

__all__ = [
    "SCOPE_KINDS",
    "ConsentReceipt",
    "Controller",
    "Revocation",
    "StudyTerms",
    "active_grants",
    "all_entries",
    "grant",
    "parse_scope",
    "receipt_status",
    "require_consent",
    "revoke",
    "withdraw",
]

@dataclass(frozen=True)
class StudyTerms:
    """A collector study's terms a grant is given under instead of the built-in terms."""

    study_id: str
    collector: str
    terms_version: str
    terms_sha256: str


_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")


# --- granting ---------------------------------------------------------------------------------
def grant(player: str, games: list[str], scope: list[str], *,
          purposes: list[str] | None = None, license: str = DEFAULT_LICENSE,
          method: str = "cli-scripted", synthetic: bool = False,
          ledger_path: Path | None = None, controller: Controller | None = None,
          jurisdiction: str = DEFAULT_JURISDICTION,
          study: StudyTerms | None = None) -> ConsentReceipt:
    """Record that `player` consents to `games` being recorded with `scope`; return the receipt.

    The receipt pins the current terms (version and SHA-256 of their text), or with `study`
    the collector study's terms and binds the grant to that study. Raises CaptureError
    naming the bad value if a choice is invalid (unknown scope kind, empty game name, ...).
    """
    if method not in COLLECTION_METHODS:
        raise CaptureError(f"unknown collection method {method!r} "
                           f"(choose from {', '.join(COLLECTION_METHODS)})")
    if method == "demo-synthetic" and not synthetic:
        raise CaptureError("a 'demo-synthetic' consent must be marked synthetic=True")
    kinds = parse_scope(scope)
    if not kinds:
        raise CaptureError(f"choose at least one scope kind from {', '.join(SCOPE_KINDS)}")
    controller = controller or Controller(name=DEFAULT_CONTROLLER_NAME,
                                          contact=DEFAULT_CONTROLLER_CONTACT)
    now = ClockPair.now()
    sensitive_categories = sorted({SENSITIVE_SCOPE_KINDS[k] for k in kinds
                                   if k in SENSITIVE_SCOPE_KINDS})
    body: dict[str, Any] = {
        "kind": "grant",
        "record_version": RECORD_VERSION,
        "version": RECEIPT_SPEC_VERSION,
        "receipt_id": str(uuid.uuid4()),
        "timestamp": now.utc,
        "monotonic_ns": now.monotonic_ns,
        "player": _clean_text(player, "player"),
        "method": method,
        "jurisdiction": _clean_text(jurisdiction, "jurisdiction"),
        "language": "en",
        "controller": controller.model_dump(mode="json"),
        "terms_version": study.terms_version if study else TERMS_VERSION,
        "terms_sha256": study.terms_sha256 if study else terms_sha256(),
        "purposes": [_purpose(text, kinds) for text in _clean_purposes(purposes)],
        "games": list(_clean_games(games)),
        "scope": list(kinds),
        "license": _clean_text(license, "licence"),
        "sensitive": bool(sensitive_categories),
        "sensitive_categories": sensitive_categories,
        "synthetic": synthetic,
    }
    if study is not None:
        body["study"] = {"id": study.study_id, "collector": study.collector}
    entry = append_entry(_ledger(ledger_path), lambda _entries: body)
    assert isinstance(entry, ConsentReceipt)
    return entry


def parse_scope(values: Iterable[str]) -> tuple[str, ...]:
    """Scope kinds from values that may hold comma-separated lists, in canonical order.

    Raises CaptureError naming the first unknown kind.
    """
    chosen: set[str] = set()
    for value in values:
        for part in value.split(","):
            kind = part.strip().lower()
            if not kind:
                continue
            if kind in RETIRED_SCOPE_KINDS:
                raise CaptureError(f"scope kind {kind!r} cannot be chosen: "
                                   f"{RETIRED_SCOPE_KINDS[kind]} (choose from "
                                   f"{', '.join(SCOPE_KINDS)})")
            if kind not in SCOPE_KINDS:
                raise CaptureError(f"unknown scope kind {part.strip()!r} "
                                   f"(choose from {', '.join(SCOPE_KINDS)})")
            chosen.add(kind)
    return tuple(k for k in SCOPE_KINDS if k in chosen)


def _purpose(text: str, kinds: tuple[str, ...]) -> dict[str, Any]:
    return {
        "purpose": text,
        "category": PURPOSE_CATEGORY,
        "consent_type": "explicit",
        "data_categories": list(kinds),
        "termination": TERMINATION,
        "third_party_disclosure": True,
        "third_party_name": THIRD_PARTY_NAME,
    }


def _clean_text(value: str, what: str) -> str:
    text = value.strip() if isinstance(value, str) else ""
    if not text:
        raise CaptureError(f"the {what} must not be empty")
    if _CONTROL_CHARS.search(text):
        raise CaptureError(f"the {what} {text!r} contains control characters")
    if len(text) > 200:
        raise CaptureError(f"the {what} is longer than 200 characters")
    return text


def _clean_games(games: Iterable[str]) -> tuple[str, ...]:
    """Game names stripped, first spelling kept when two differ only by case."""
    if isinstance(games, str):
        games = [games]
    cleaned: dict[str, str] = {}
    for game in games:
        name = _clean_text(game, "game name")
        cleaned.setdefault(game_key(name), name)
    if not cleaned:
        raise CaptureError("name at least one game")
    return tuple(cleaned.values())


def _clean_purposes(purposes: list[str] | None) -> tuple[str, ...]:
    if purposes is None:
        return DEFAULT_PURPOSES
    texts = tuple(dict.fromkeys(p.strip() for p in purposes if p.strip()))
    if not texts:
        raise CaptureError("give at least one purpose (or none, for the default purpose)")
    too_long = [p for p in texts if len(p) > 1000]
    if too_long:
        raise CaptureError(f"purpose {too_long[0][:40]!r}... is longer than 1000 characters")
    return texts


# --- withdrawing ------------------------------------------------------------------------------
def revoke(player: str, games: list[str] | None = None, receipt_id: str | None = None, *,
           method: str = "cli-scripted", ledger_path: Path | None = None) -> list[ConsentReceipt]:
    """Withdraw `player`'s consent and return the grants it withdrew (as recorded).

    Without `receipt_id`: every grant of the player; with it: that grant only. With `games`
    (None or empty: all), only those games of them; the grants' other games stay consented.
    Returns [] and appends nothing if no active grant matches.
    """
    revocation = withdraw(player, games, receipt_id, method=method, ledger_path=ledger_path)
    if revocation is None:
        return []
    states = grant_states(read_entries(_ledger(ledger_path)))
    return [states[item.receipt_id].receipt for item in revocation.withdrawn]


def withdraw(player: str, games: list[str] | None = None, receipt_id: str | None = None, *,
             method: str = "cli-scripted", ledger_path: Path | None = None) -> Revocation | None:
    """Like revoke(), but return the revocation entry (which games of which grants), or None."""
    if method not in COLLECTION_METHODS:
        raise CaptureError(f"unknown collection method {method!r}")
    player = _clean_text(player, "player")
    wanted = _clean_games(games) if games else None
    wanted_keys = {game_key(g) for g in wanted} if wanted else None

    def build(entries: list[ConsentReceipt | Revocation]) -> dict[str, Any] | None:
        states = grant_states(entries)
        if receipt_id is not None:
            state = states.get(receipt_id)
            if state is None:
                raise ConsentError(f"no grant has receipt id {receipt_id!r}")
            if state.receipt.player != player:
                raise ConsentError(f"receipt {receipt_id} is not a grant of player {player!r}")
            targets = [state]
        else:
            targets = [s for s in states.values() if s.receipt.player == player]
        withdrawn = []
        for state in targets:
            gone = [g for g in state.active_games
                    if wanted_keys is None or game_key(g) in wanted_keys]
            if gone:
                withdrawn.append({"receipt_id": state.receipt.receipt_id, "games": gone})
        if not withdrawn:
            return None
        now = ClockPair.now()
        return {
            "kind": "revoke",
            "record_version": RECORD_VERSION,
            "version": RECEIPT_SPEC_VERSION,
            "receipt_id": str(uuid.uuid4()),
            "timestamp": now.utc,
            "monotonic_ns": now.monotonic_ns,
            "player": player,
            "method": method,
            "requested_receipt_id": receipt_id,
            "requested_games": list(wanted) if wanted else None,
            "withdrawn": withdrawn,
        }

    entry = append_entry(_ledger(ledger_path), build)
    assert entry is None or isinstance(entry, Revocation)
    return entry


# --- checking ---------------------------------------------------------------------------------
def require_consent(game: str, scope: set[str], player: str | None = None, *,
                    ledger_path: Path | None = None) -> ConsentReceipt:
    """The newest active grant for `game` (case-insensitive) whose scope covers `scope`.

    Raises ConsentError saying what is missing; a damaged or edited ledger raises BadInputError
    (fail closed). The receipt's `games` lists only the games still consented.
    """
    retired = sorted(set(scope) & set(RETIRED_SCOPE_KINDS))
    if retired:
        raise ConsentError(f"{retired[0]!r} cannot be recorded: {RETIRED_SCOPE_KINDS[retired[0]]}")
    unknown = sorted(set(scope) - set(SCOPE_KINDS))
    if unknown:
        raise ConsentError(f"unknown scope kind {unknown[0]!r} "
                           f"(choose from {', '.join(SCOPE_KINDS)})")
    player = player.strip() if player is not None else None
    states = list(grant_states(read_entries(_ledger(ledger_path))).values())
    for_game = [s for s in states if s.receipt.covers_game(game)]
    mine = [s for s in for_game if player is None or s.receipt.player == player]
    active = [s for s in mine if s.is_active_for(game)]
    who = f" from player {player!r}" if player is not None else ""
    if not active:
        if mine:
            newest = max(mine, key=lambda s: s.withdrawn_by[game_key(game)].seq)
            revocation = newest.withdrawn_by[game_key(game)]
            raise ConsentError(
                f"consent{who} for game {game!r} was revoked on "
                f"{human_time(revocation.timestamp)} "
                f"(receipt {newest.receipt.receipt_id}); it must be granted again to record")
        others = sorted({s.receipt.player for s in for_game if s.is_active_for(game)})
        hint = f" (players with consent for it: {', '.join(others)})" if others else ""
        consented = sorted({g for s in states for g in s.active_games
                            if player is None or s.receipt.player == player}, key=game_key)
        named = (f"; consented games{who}: {', '.join(consented)}" if consented
                 else f"; no game has consent{who} (`capture consent grant` gives it)")
        raise ConsentError(f"no consent{who} for game {game!r}{hint}{named}")
    covering = [s for s in active if set(scope) <= set(s.receipt.scope)]
    if not covering:
        newest = max(active, key=lambda s: s.receipt.seq)
        missing = [k for k in SCOPE_KINDS if k in scope and k not in newest.receipt.scope]
        raise ConsentError(
            f"consent{who} for game {game!r} (receipt {newest.receipt.receipt_id}) lacks "
            f"{', '.join(repr(k) for k in missing)}; it covers only "
            f"{', '.join(newest.receipt.scope)}")
    players = sorted({s.receipt.player for s in covering})
    if len(players) > 1:
        raise ConsentError(f"several players have consent for game {game!r} "
                           f"({', '.join(players)}): pass --player")
    return _current(max(covering, key=lambda s: s.receipt.seq))


def receipt_status(receipt_id: str, *, game: str | None = None,
                   ledger_path: Path | None = None) -> str:
    """'active', 'revoked' or 'unknown'.

    Without `game`, a grant with any game withdrawn counts as 'revoked' (fail closed). With
    `game`, the status of that game under the grant ('unknown' if the grant does not list it).
    """
    state = grant_states(read_entries(_ledger(ledger_path))).get(receipt_id)
    if state is None:
        return "unknown"
    if game is None:
        return "active" if state.status == "active" else "revoked"
    if not state.receipt.covers_game(game):
        return "unknown"
    return "active" if state.is_active_for(game) else "revoked"


def active_grants(*, ledger_path: Path | None = None) -> list[ConsentReceipt]:
    """Grants with a game still consented, oldest first; `games` lists only those games."""
    states = grant_states(read_entries(_ledger(ledger_path))).values()
    return [_current(s) for s in states if s.active_games]


def all_entries(*, ledger_path: Path | None = None) -> list[ConsentReceipt | Revocation]:
    """Every ledger entry as recorded (grants and revocations), after verifying the chain."""
    return read_entries(_ledger(ledger_path))


def _current(state: GrantState) -> ConsentReceipt:
    """The receipt with `games` narrowed to the games not withdrawn."""
    if not state.withdrawn_by:
        return state.receipt
    return state.receipt.model_copy(update={"games": state.active_games})


def _ledger(ledger_path: Path | str | None) -> Path:
    return Path(ledger_path) if ledger_path is not None else paths.ledger_path()
