"""Consent ledger entries as pydantic models (Kantara Consent Receipt v1.1 / ISO/IEC TS 27560)."""

from __future__ import annotations

import hashlib
import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, TypeAdapter

# --- vocabularies -----------------------------------------------------------------------------
# The kinds capture records, hence the only ones a new grant may name.
SCOPE_KINDS: tuple[str, ...] = ("video", "keyboard", "mouse", "gamepad")
# Kinds once offered that nothing records: old ledger entries naming them still parse (the hash
# chain is untouched), are shown marked, and a new grant or recording naming them is refused.
RETIRED_SCOPE_KINDS: dict[str, str] = {
    "audio": "nothing in capture records sound, so it is not offered",
}
COLLECTION_METHODS: tuple[str, ...] = ("cli-interactive", "cli-scripted", "demo-synthetic",
                                       "agent-web")
ScopeKind = Literal["video", "keyboard", "mouse", "gamepad", "audio"]  # as recorded
CollectionMethod = Literal["cli-interactive", "cli-scripted", "demo-synthetic", "agent-web"]

RECORD_VERSION = 1                     # our ledger entry format: schemas/consent-record.v1
RECEIPT_SPEC_VERSION = "KI-CR-v1.1.0"  # the Kantara Consent Receipt spec the fields follow
GENESIS_HASH = "0" * 64                # prev_hash of the first entry

# --- defaults a grant gets unless told otherwise ----------------------------------------------
DEFAULT_LICENSE = "CC-BY-4.0"
DEFAULT_JURISDICTION = "unspecified"
DEFAULT_CONTROLLER_NAME = "capture (local)"
DEFAULT_CONTROLLER_CONTACT = "the person who operates capture on this computer"
DEFAULT_PURPOSES: tuple[str, ...] = (
    "Building datasets of gameplay video aligned with the player's inputs, for research on and "
    "training of AI models (for example world models and game-playing agents)",
)
PURPOSE_CATEGORY = "research and development"
TERMINATION = ("until withdrawn with `capture consent revoke`; datasets built after withdrawal "
               "leave the withdrawn data out")
THIRD_PARTY_NAME = "anyone who receives a dataset exported from this computer"
# Scope kind -> sensitive data category it can carry. Empty since audio (voices) was retired;
# old grants that named audio keep their recorded sensitive_categories.
SENSITIVE_SCOPE_KINDS: dict[str, str] = {}

Sha256Hex = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
Uuid4 = Annotated[str, StringConstraints(
    pattern=r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")]
UtcTimestamp = Annotated[str, StringConstraints(
    pattern=r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?Z$")]
Text = Annotated[str, StringConstraints(min_length=1, max_length=1000)]
Name = Annotated[str, StringConstraints(
    min_length=1, max_length=200, pattern=r"^[^\x00-\x1f\x7f]+$")]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Controller(_Frozen):
    """Who is responsible for the recorded data (Kantara piiControllers[])."""

    name: Text
    contact: Text


class Purpose(_Frozen):
    """One purpose of processing (Kantara services[].purposes[])."""

    purpose: Text
    category: Text
    consent_type: Literal["explicit"]
    data_categories: tuple[ScopeKind, ...] = Field(min_length=1)
    termination: Text
    third_party_disclosure: bool
    third_party_name: Text | None


class _Entry(_Frozen):
    """Fields every ledger entry carries: format, chain position and when/how it was collected."""

    record_version: Literal[1]
    version: Literal["KI-CR-v1.1.0"]
    seq: int = Field(ge=1)
    prev_hash: Sha256Hex
    hash: Sha256Hex
    receipt_id: Uuid4
    timestamp: UtcTimestamp
    monotonic_ns: int
    player: Name  # the PII principal, as the player gave it (a name or pseudonym)
    method: CollectionMethod


class StudyRef(_Frozen):
    """The collector study a grant was given to (absent for grants under the built-in terms)."""

    id: Name
    collector: Text


class ConsentReceipt(_Entry):
    """A grant: the player agreed that these games may be recorded with this scope."""

    kind: Literal["grant"]
    jurisdiction: Text
    language: Text
    controller: Controller
    terms_version: Text
    terms_sha256: Sha256Hex
    purposes: tuple[Purpose, ...] = Field(min_length=1)
    games: tuple[Name, ...] = Field(min_length=1)
    scope: tuple[ScopeKind, ...] = Field(min_length=1)
    license: Text
    sensitive: bool
    sensitive_categories: tuple[Text, ...]
    synthetic: bool
    study: StudyRef | None = None  # set when the terms are a collector study's, not built in

    def covers_game(self, game: str) -> bool:
        """True if `game` is one of this grant's games (case-insensitive)."""
        return game_key(game) in {game_key(g) for g in self.games}


class WithdrawnGames(_Frozen):
    """The games of one grant that a revocation withdrew."""

    receipt_id: Uuid4
    games: tuple[Name, ...] = Field(min_length=1)


class Revocation(_Entry):
    """A withdrawal: the listed games of the listed grants are no longer consented."""

    kind: Literal["revoke"]
    requested_receipt_id: Uuid4 | None  # what the player asked for, as given
    requested_games: tuple[Name, ...] | None
    withdrawn: tuple[WithdrawnGames, ...] = Field(min_length=1)


LedgerEntry = Annotated[ConsentReceipt | Revocation, Field(discriminator="kind")]
_ENTRY_ADAPTER: TypeAdapter[ConsentReceipt | Revocation] = TypeAdapter(LedgerEntry)


def parse_entry(obj: dict[str, Any]) -> ConsentReceipt | Revocation:
    """The typed entry for a ledger line's JSON object (raises pydantic.ValidationError)."""
    return _ENTRY_ADAPTER.validate_python(obj)


def game_key(game: str) -> str:
    """How game names compare: case-insensitively, ignoring surrounding spaces."""
    return game.strip().casefold()


def human_time(timestamp: str) -> str:
    """'2025-01-02 03:04:05 UTC' from an entry's ISO timestamp."""
    return f"{timestamp[:10]} {timestamp[11:19]} UTC"


def canonical_json(obj: dict[str, Any]) -> bytes:
    """Sorted keys, no whitespace, ASCII only: the bytes an entry's hash is taken over."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                      allow_nan=False).encode("ascii")


def entry_hash(obj: dict[str, Any]) -> str:
    """SHA-256 (hex) of an entry's canonical JSON without its own `hash` field."""
    body = {k: v for k, v in obj.items() if k != "hash"}
    return hashlib.sha256(canonical_json(body)).hexdigest()
