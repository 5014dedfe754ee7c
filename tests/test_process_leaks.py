"""The suite's leak check: a test that leaves a process running errors, and the process ends."""

from __future__ import annotations

from pathlib import Path

import psutil
import pytest

INNER = '''
import subprocess
from pathlib import Path

def test_leaves_a_sleeper(tmp_path):
    sleeper = subprocess.Popen(["sleep", "600"])
    (Path(__file__).parent / "pid").write_text(str(sleeper.pid))

def test_stops_its_child():
    child = subprocess.Popen(["sleep", "600"])
    child.kill()
    child.wait()
'''


def test_a_process_left_running_fails_the_test_and_is_killed(
        pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).resolve().parents[1]))
    pytester.makeconftest('pytest_plugins = ["tests.process_leaks"]\n')
    pytester.makepyfile(test_inner=INNER)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(["*the test left processes running (now killed)*", "*sleep 600*"])
    pid = int((pytester.path / "pid").read_text())
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
