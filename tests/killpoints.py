"""Kill points: run an operation in a forked child that SIGKILLs itself at its Nth file operation.

The child counts the calls that change files (open for writing, replace, rename, unlink, rmdir,
mkdir, fsync) and, right before the Nth one, sends itself SIGKILL: a real kill at a known
instant, with no hook in the code under test. Running it for N = 1, 2, ... until the operation
completes visits every point between two file operations.
"""

from __future__ import annotations

import builtins
import os
import signal
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_WRITE_MODES = ("w", "a", "x", "+")
_PATCHED_OS = ("replace", "rename", "unlink", "remove", "rmdir", "mkdir", "fsync")


@dataclass(frozen=True)
class Outcome:
    killed: bool          # True: killed at the point; False: the operation ran to its end
    point: int            # the kill point asked for
    operation: str | None  # which call it was killed before
    error: str | None = None  # a Python error raised in the child (a bug, reported)


def run_killed_at(point: int, operation: Callable[[], Any], report_dir: Path) -> Outcome:
    """Run `operation` in a forked child killed right before its `point`-th file operation."""
    report = report_dir / f"killpoint-{os.getpid()}-{point}.txt"
    report.unlink(missing_ok=True)
    pid = os.fork()
    if pid == 0:  # the child
        try:
            _arm(point, report)
            operation()
        except BaseException:
            report.write_text("error\n" + traceback.format_exc())
            os._exit(1)
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    text = report.read_text() if report.exists() else ""
    report.unlink(missing_ok=True)
    if os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL:
        return Outcome(killed=True, point=point, operation=text.strip() or None)
    if os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0:
        return Outcome(killed=False, point=point, operation=None)
    return Outcome(killed=False, point=point, operation=None, error=text or f"status {status}")


def every_kill_point(operation: Callable[[], Any], report_dir: Path,
                     limit: int = 500) -> Iterator[Outcome]:
    """Outcomes for N = 1, 2, ... up to and including the first run that completes."""
    for point in range(1, limit + 1):
        outcome = run_killed_at(point, operation, report_dir)
        yield outcome
        if not outcome.killed:
            return
    raise AssertionError(f"the operation did not complete within {limit} kill points")


def _arm(point: int, report: Path) -> None:
    """In the child: count file operations and SIGKILL this process at the `point`-th."""
    count = 0
    real_write_text = Path.write_text

    def tick(name: str) -> None:
        nonlocal count
        count += 1
        if count == point:
            real_write_text(report, name)
            os.kill(os.getpid(), signal.SIGKILL)

    for name in _PATCHED_OS:
        real = getattr(os, name)

        def patched(*args: Any, _real: Any = real, _name: str = name, **kwargs: Any) -> Any:
            tick(f"os.{_name}")
            return _real(*args, **kwargs)

        setattr(os, name, patched)
    real_open = builtins.open

    def patched_open(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        if any(m in mode for m in _WRITE_MODES):
            tick(f"open({Path(str(file)).name!r}, {mode!r})")
        return real_open(file, mode, *args, **kwargs)

    builtins.open = patched_open
