"""Dataset export: consented session bundles -> LeRobot v3.0 datasets, and their verification."""

# The names below are imported on first use (PEP 562), so `capture.export.vocabulary` and
# `capture.export.layout` can be imported without PyAV, OpenCV or pandas.

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from capture.export.lerobot import (
        EpisodeReport,
        ExportReport,
        export_dataset,
        format_report,
    )
    from capture.export.verify import VerifyReport, verify_dataset

_HOMES = {
    "EpisodeReport": "capture.export.lerobot",
    "ExportReport": "capture.export.lerobot",
    "export_dataset": "capture.export.lerobot",
    "format_report": "capture.export.lerobot",
    "VerifyReport": "capture.export.verify",
    "verify_dataset": "capture.export.verify",
}

__all__ = [
    "EpisodeReport",
    "ExportReport",
    "VerifyReport",
    "export_dataset",
    "format_report",
    "verify_dataset",
]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_HOMES])
