"""verify_dataset reads its JSON files fail-safe: a bad byte is a named problem, not a traceback."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from capture.cli import cli
from capture.export.lerobot import ExportReport
from capture.export.verify import verify_dataset


@pytest.mark.parametrize("name", ["meta/info.json", "meta/stats.json"])
def test_non_utf8_json_is_a_named_problem(exported: tuple[Path, ExportReport], tmp_path: Path,
                                          name: str) -> None:
    root = Path(shutil.copytree(exported[0], tmp_path / "copy"))
    path = root / name
    path.write_bytes(path.read_bytes().replace(b'"', b'"\xe9', 1))  # one latin-1 byte
    at = path.read_bytes().index(b"\xe9")
    report = verify_dataset(root)
    assert not report.ok
    assert [(p.file, p.message) for p in report.problems
            if p.file == name and "SHA-256" not in p.message] == \
        [(name, f"is not UTF-8 text (byte {at})")], report.summary()
    result = CliRunner().invoke(cli, ["dataset", "verify", str(root)])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert f"{name}: is not UTF-8 text" in result.output


def test_unreadable_info_json_is_a_named_problem(tmp_path: Path) -> None:
    (tmp_path / "meta" / "info.json").mkdir(parents=True)  # a folder where the file should be
    report = verify_dataset(tmp_path)
    assert [p.file for p in report.problems] == ["meta/info.json"], report.summary()
