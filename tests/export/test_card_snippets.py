"""The card's loading snippets work as written: run for real, with HF datasets and LeRobot."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from capture.export import layout
from tests.export.test_lerobot_real import lerobot_python


def _snippets(dataset: Path) -> list[str]:
    card = (dataset / layout.CARD_PATH).read_text(encoding="utf-8")
    return re.findall(r"```python\n(.*?)```", card, re.S)


def test_the_card_ends_with_loading_snippets_that_run(exported, tmp_path: Path) -> None:
    dataset, report = exported
    lerobot_snippet, hf_snippet = _snippets(dataset)
    assert str(dataset.resolve()) in hf_snippet and str(dataset.resolve()) in lerobot_snippet
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "HF_HOME": str(tmp_path / "hf")}
    hf = subprocess.run([sys.executable, "-c", hf_snippet], capture_output=True, text=True,
                        cwd=tmp_path, env=env, timeout=300)
    assert hf.returncode == 0, hf.stderr[-2000:]
    assert f"num_rows: {report.frames}" in hf.stdout
    lr = subprocess.run([str(lerobot_python()), "-c", lerobot_snippet], capture_output=True,
                        text=True, cwd=tmp_path, env=env, timeout=600)
    assert lr.returncode == 0, lr.stderr[-2000:]
    assert lr.stdout.split()[0] == str(report.frames)
