"""Crash consistency of export: killed at any file operation, the dataset path holds nothing or
the whole verified dataset, and the next export clears what the killed one left behind."""

from __future__ import annotations

import os
from pathlib import Path

from capture.export import export_dataset, verify_dataset
from capture.export.lerobot import remove_stale_partials
from tests.killpoints import run_killed_at


def test_export_killed_at_every_file_operation(gameplay_session: Path, tmp_path: Path,
                                               consent_active: None) -> None:
    point, killed = 0, 0
    while True:
        point += 1
        out = tmp_path / f"run-{point}" / "dataset"
        out.parent.mkdir()
        outcome = run_killed_at(point, lambda o=out: export_dataset([gameplay_session], o),
                                tmp_path)
        assert outcome.error is None, outcome.error
        if out.exists():
            assert verify_dataset(out).ok, f"kill point {point}: a broken dataset was left"
        leftovers = [p for p in out.parent.iterdir() if p.name.startswith(".dataset.partial-")]
        assert remove_stale_partials(out) == leftovers
        assert not any(p.name.startswith(".dataset.partial-") for p in out.parent.iterdir())
        if not outcome.killed:
            assert out.exists()
            break
        killed += 1
        assert not out.exists(), f"kill point {point} ({outcome.operation}) left a dataset"
    assert killed >= 5


def test_a_running_exports_partial_is_left_alone(tmp_path: Path) -> None:
    out = tmp_path / "dataset"
    mine = tmp_path / f".dataset.partial-{os.getpid()}-abcd"
    mine.mkdir()
    assert remove_stale_partials(out) == []
    assert mine.exists()
