"""Fixtures for export tests: factory sessions, stubbed consent and one shared exported dataset."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from capture.export import lerobot
from capture.export.lerobot import ExportReport, export_dataset
from tests.factories import build_session, gameplay_script

PSEUDONYM_KEY = b"0123456789abcdef0123456789abcdef"


def stub_consent(monkeypatch: pytest.MonkeyPatch, status: str | Callable[[str], str]) -> None:
    """Make the export see `status` for every receipt (or status(receipt_id))."""
    def receipt_status(receipt_id: str, game: str, ledger_path: Path | None) -> str:
        return status(receipt_id) if callable(status) else status

    monkeypatch.setattr(lerobot, "_receipt_status", receipt_status)


@pytest.fixture
def consent_active(monkeypatch: pytest.MonkeyPatch) -> None:
    stub_consent(monkeypatch, "active")


@pytest.fixture(scope="module")
def gameplay_session(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_session(tmp_path_factory.mktemp("sessions"), gameplay_script())


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory,
             gameplay_session: Path) -> Iterator[tuple[Path, ExportReport]]:
    """The gameplay session exported once at native size (read-only for tests)."""
    out = tmp_path_factory.mktemp("datasets") / "gameplay"
    with pytest.MonkeyPatch.context() as monkeypatch:
        stub_consent(monkeypatch, "active")
        report = export_dataset([gameplay_session], out, pseudonym_key=PSEUDONYM_KEY)
    yield out, report
