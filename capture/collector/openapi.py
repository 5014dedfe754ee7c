"""The collector's OpenAPI document, as served at /v1/openapi.json and kept in schemas/."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from capture import formats

from .service import Limits, Settings, create_app
from .store import LocalStore

DOCUMENT = "collector-openapi.v1.json"


def document() -> dict[str, Any]:
    """The OpenAPI document of the API (it does not depend on the database or store)."""
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(engine=sa.create_engine("sqlite://"), store=LocalStore(Path(tmp)),
                            admin_token="unused", limits=Limits())
        return create_app(settings).openapi()


def render(doc: dict[str, Any]) -> str:
    return json.dumps(doc, indent=2, sort_keys=True) + "\n"


def checked_in_path() -> Path:
    return formats.schemas_dir() / DOCUMENT
