"""A pytest plugin: a test that leaves a process running fails, and the process is ended.

Every process the suite starts inherits CAPTURE_TEST_RUN (set once per run). After each test,
any such process that was not running before the test (fixtures of a wider scope start theirs
before the check's snapshot) gets a few seconds to exit; the rest are killed and the test errors,
naming them. A leaked busy loop once starved everything after it until CI timed out.

Children started with an environment that does not inherit os.environ are not seen.
"""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from collections.abc import Iterator

import psutil
import pytest

RUN_VARIABLE = "CAPTURE_TEST_RUN"
GRACE_S = 5.0

Identity = tuple[int, float]   # pid, create time (a pid alone may be reused)


def pytest_configure(config: pytest.Config) -> None:
    os.environ[RUN_VARIABLE] = uuid.uuid4().hex     # a pytest run inside a test gets its own


def started_by_this_run() -> dict[Identity, psutil.Process]:
    """Processes alive now (zombies excluded) that carry this run's marker, except ourselves."""
    marker = os.environ[RUN_VARIABLE]
    ourselves = {os.getpid(), *(p.pid for p in psutil.Process().parents())}
    found: dict[Identity, psutil.Process] = {}
    for process in psutil.process_iter(["pid", "create_time", "status"]):
        if process.pid in ourselves or process.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        try:
            if process.environ().get(RUN_VARIABLE) == marker and not is_our_helper(process):
                found[(process.pid, process.info["create_time"])] = process
        except (psutil.Error, OSError):
            continue
    return found


def is_our_helper(process: psutil.Process) -> bool:
    """multiprocessing's fork server and resource tracker: started once for the test process
    (by the export's worker pool), reused by later tests, ended when the test process exits."""
    command = " ".join(process.cmdline())
    return process.ppid() == os.getpid() and any(
        f"from multiprocessing.{helper} import main" in command
        for helper in ("forkserver", "resource_tracker"))


def describe(process: psutil.Process) -> str:
    try:
        return f"pid {process.pid}: {' '.join(process.cmdline())[:200]}"
    except psutil.Error:
        return f"pid {process.pid}"


def kill_all(processes: list[psutil.Process]) -> list[str]:
    """SIGKILL each (already gone is fine); returns what they were, for the report."""
    described = [describe(p) for p in processes]
    for process in processes:
        with contextlib.suppress(psutil.Error):
            process.kill()
    psutil.wait_procs(processes, timeout=5)
    return described


def started_during(before: set[Identity]) -> dict[Identity, psutil.Process]:
    """Processes of this run that were not running at `before`, except the children (at any
    depth) of those that were: a wider-scoped fixture's server may start helpers at any time
    (Ray's head starts its raylet and log monitor after it answers)."""
    found = {}
    for key, process in started_by_this_run().items():
        if key in before:
            continue
        try:
            ancestors = {(p.pid, p.create_time()) for p in process.parents()}
        except psutil.Error:
            continue
        if not ancestors & before:
            found[key] = process
    return found


@pytest.fixture(autouse=True)
def no_process_left_behind() -> Iterator[None]:
    before = set(started_by_this_run())
    yield
    deadline = time.monotonic() + GRACE_S
    while True:
        left = started_during(before)
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    if not left:
        return
    described = kill_all(list(left.values()))
    pytest.fail("the test left processes running (now killed):\n  " + "\n  ".join(described),
                pytrace=False)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fixtures of every scope have stopped by now: whatever still runs was left behind."""
    deadline = time.monotonic() + GRACE_S
    while (left := started_by_this_run()) and time.monotonic() < deadline:
        time.sleep(0.1)
    if not left:
        return
    described = kill_all(list(left.values()))
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line("processes left running after the suite (now killed):\n  "
                            + "\n  ".join(described), red=True)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED
