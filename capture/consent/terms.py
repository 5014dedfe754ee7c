"""The plain-language terms a player sees before consenting, and the hash that pins them."""

from __future__ import annotations

import hashlib
import re
from functools import cache
from importlib import resources

TERMS_VERSION = "v2"  # v1 (which offered audio) stays, for the receipts that pin it

# One line per scope kind for the summary of choices shown with the terms.
SCOPE_DESCRIPTIONS: dict[str, str] = {
    "video": "the picture of the game while it is focused",
    "keyboard": "keys pressed and released, including text typed into the game",
    "mouse": "mouse movements, buttons and scrolling",
    "gamepad": "game controller buttons, sticks and triggers",
}

_VERSION_NAME = re.compile(r"^v\d+$")


@cache
def terms_text(version: str = TERMS_VERSION) -> str:
    """The exact terms text of `version` (line endings normalised to '\\n')."""
    if not _VERSION_NAME.match(version):
        raise ValueError(f"unknown terms version {version!r}")
    source = resources.files(__package__).joinpath("terms", f"{version}.md")
    try:
        raw = source.read_bytes()
    except FileNotFoundError:
        raise ValueError(f"unknown terms version {version!r}") from None
    return raw.decode("utf-8").replace("\r\n", "\n")


def terms_sha256(version: str = TERMS_VERSION) -> str:
    """SHA-256 (hex) of the UTF-8 bytes of terms_text(version): what a receipt records."""
    return hashlib.sha256(terms_text(version).encode("utf-8")).hexdigest()
