"""Dataset export: consented session bundles -> LeRobot v3.0 datasets, and their verification."""

from capture.export.lerobot import EpisodeReport, ExportReport, export_dataset, format_report
from capture.export.verify import VerifyReport, verify_dataset

__all__ = [
    "EpisodeReport",
    "ExportReport",
    "VerifyReport",
    "export_dataset",
    "format_report",
    "verify_dataset",
]
