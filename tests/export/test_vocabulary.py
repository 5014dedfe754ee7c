"""The dataset vocabulary module: a leaf any layer may import, cheap to import with the layout."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _modules_after(statements: str) -> set[str]:
    """sys.modules of a fresh interpreter after running `statements`."""
    code = f"{statements}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                            text=True, check=True)
    return set(json.loads(result.stdout))


def test_vocabulary_and_layout_import_without_video_or_pandas() -> None:
    loaded = _modules_after("import capture.export.vocabulary\nimport capture.export.layout")
    assert {"capture.export.vocabulary", "capture.export.layout"} <= loaded
    assert not loaded & {"av", "cv2", "pandas"}, sorted(loaded & {"av", "cv2", "pandas"})
    assert "capture.export.lerobot" not in loaded


def test_vocabulary_imports_nothing_of_capture() -> None:
    loaded = _modules_after("import capture.export.vocabulary")
    assert {m for m in loaded if m.startswith("capture")} == {
        "capture", "capture.export", "capture.export.vocabulary"}


def test_the_package_names_still_resolve_on_first_use() -> None:
    loaded = _modules_after(
        "from capture.export import export_dataset, verify_dataset, layout\n"
        "assert export_dataset.__module__ == 'capture.export.lerobot'\n"
        "assert verify_dataset.__module__ == 'capture.export.verify'")
    assert {"capture.export.lerobot", "capture.export.verify"} <= loaded
    result = subprocess.run([sys.executable, "-c", "import capture.export as e; e.nothing"],
                            cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 1 and "has no attribute 'nothing'" in result.stderr
