"""Code-quality gates that run with the suite: ruff, module docstrings, schemas in sync."""

from __future__ import annotations

import ast
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_ruff_clean() -> None:
    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    if ruff is None:
        pytest.fail("ruff is not installed (pip install -e '.[test]')")
    result = subprocess.run([ruff, "check", "capture", "tests", "bench", "tools"], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_module_has_a_one_line_docstring() -> None:
    missing = []
    for path in sorted((ROOT / "capture").rglob("*.py")):
        doc = ast.get_docstring(ast.parse(path.read_text()))
        if not doc or "\n" in doc.strip():
            missing.append(str(path.relative_to(ROOT)))
    assert not missing, f"modules without a one-line docstring: {missing}"


def test_schema_files_are_valid_json_and_versioned() -> None:
    for path in sorted((ROOT / "schemas").glob("*.json")):
        doc = json.loads(path.read_text())
        assert ".v" in path.name, f"{path.name} has no version in its name"
        if path.name.endswith(".arrow.json"):
            assert {"name", "version", "fields"} <= doc.keys(), path.name
        elif "openapi" in doc:  # an HTTP API's document (OpenAPI 3.1 has no $schema key)
            assert doc["openapi"].startswith("3."), path.name
        else:
            assert doc.get("$schema", "").startswith("https://json-schema.org/"), path.name


def test_mypy_strict_clean() -> None:
    mypy = shutil.which("mypy", path=str(Path(sys.executable).parent)) or shutil.which("mypy")
    if mypy is None:
        pytest.fail("mypy is not installed (pip install -e '.[test]')")
    result = subprocess.run([mypy], cwd=ROOT, capture_output=True, text=True)  # [tool.mypy]
    assert result.returncode == 0, result.stdout + result.stderr
