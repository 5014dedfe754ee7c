"""Crash suite numbers: kills at every file operation of finalise, recovery and export, at random
instants, and of the real recorder and its children; what each trial lost.

Writes bench/results/crash_suite.json. Run: `python bench/crash_suite.py [--recorder-rounds N]`
(a few minutes on 2 cores with one round of the 9 real-recorder trials).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from capture.export import export_dataset, lerobot, verify_dataset  # noqa: E402
from capture.session import writer  # noqa: E402
from capture.session.manifest import read_manifest  # noqa: E402
from capture.session.reader import open_session  # noqa: E402
from tests.factories import (  # noqa: E402
    build_recording,
    build_session,
    factory_video_result,
    gameplay_script,
)
from tests.killpoints import run_killed_at  # noqa: E402

SCRIPT = gameplay_script(seconds=2)


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _after_crash(session_dir: Path) -> dict[str, Any]:
    """Recover if needed and measure what was lost; `ok` says every invariant held."""
    recovered = read_manifest(session_dir).status == "recording"
    if recovered:
        writer.recover(session_dir)
    session = open_session(session_dir)
    before = {p.name: p.read_bytes() for p in session_dir.iterdir() if p.is_file()}
    try:
        writer.recover(session_dir)
        idempotent = False
    except Exception:
        idempotent = before == {p.name: p.read_bytes() for p in session_dir.iterdir()
                                if p.is_file()}
    events_lost = len(SCRIPT.events) - session.events().num_rows
    frames_lost = len(SCRIPT.capture_times_ns) - session.frames().num_rows
    return {"recovered": recovered, "events_lost": events_lost, "frames_lost": frames_lost,
            "idempotent": idempotent,
            "ok": events_lost == 0 and frames_lost == 0 and idempotent}


def kill_point_trials(work: Path) -> list[dict[str, Any]]:
    templates = {
        "finalise": build_recording(work / "t-clean", SCRIPT, recorder_pid=_dead_pid()),
        "recover": build_recording(work / "t-crashed", SCRIPT, extra_logged_frames=3,
                                   torn_event=True, recorder_pid=_dead_pid()),
    }
    trials = []
    for kind, template in templates.items():
        point = 0
        while True:
            point += 1
            session = Path(shutil.copytree(template, work / f"{kind}-{point}" / template.name))

            def run(s: Path = session, k: str = kind) -> None:
                if k == "finalise":
                    writer.finalise(s, video_result=factory_video_result(SCRIPT))
                else:
                    writer.recover(s)

            outcome = run_killed_at(point, run, work)
            trials.append({"operation": kind, "kill": "file-operation", "point": point,
                           "before": outcome.operation, "killed": outcome.killed,
                           **_after_crash(session)})
            if not outcome.killed:
                break
    return trials


def random_trials(work: Path, count: int, seed: int = 1) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    clean = build_recording(work / "r-clean", SCRIPT, recorder_pid=_dead_pid())
    trials = []
    for trial in range(count):
        session = Path(shutil.copytree(clean, work / f"random-{trial}" / clean.name))
        delay = rng.uniform(0.0, 0.3)
        pid = os.fork()
        if pid == 0:
            try:
                writer.finalise(session, video_result=factory_video_result(SCRIPT))
            finally:
                os._exit(0)
        time.sleep(delay)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        trials.append({"operation": "finalise", "kill": "random-instant",
                       "delay_ms": round(delay * 1000, 1),
                       "killed": os.WIFSIGNALED(status), **_after_crash(session)})
    return trials


def export_trials(work: Path) -> list[dict[str, Any]]:
    session = build_session(work / "export-src", SCRIPT)
    lerobot._receipt_status = lambda *_a, **_k: "active"  # the factory's receipt is synthetic
    trials, point = [], 0
    while True:
        point += 1
        out = work / f"export-{point}" / "dataset"
        out.parent.mkdir(parents=True)
        outcome = run_killed_at(point, lambda o=out: export_dataset([session], o), work)
        state = "absent" if not out.exists() else (
            "verified" if verify_dataset(out).ok else "broken")
        trials.append({"operation": "export", "kill": "file-operation", "point": point,
                       "before": outcome.operation, "killed": outcome.killed,
                       "dataset": state, "ok": state != "broken" and
                       (state == "absent") == outcome.killed})
        if not outcome.killed:
            break
    return trials


def withdrawal_trials(work: Path) -> list[dict[str, Any]]:
    """`withdraw` killed before each file operation (ledger append, head, each rename and
    removal of three sessions): the ledger reads, sessions are whole or gone, a retry ends it."""
    from capture import consent
    from capture.session import store
    from capture.withdrawal import withdraw

    trials, point = [], 0
    while True:
        point += 1
        home = work / f"withdraw-{point}"
        os.environ["CAPTURE_HOME"] = str(home)
        consent.grant("alice", ["factorygame"], ["video"])
        mine = [build_session(home / "sessions", gameplay_script(
            seconds=1, player="alice", session_id=f"20250301T120000Z-factorygame-a{i}"))
            for i in range(3)]
        before = len(consent.all_entries())
        outcome = run_killed_at(point, lambda: withdraw("alice"), work)
        entries = len(consent.all_entries())
        left = [d for d in mine if d.exists()]
        whole = True
        for d in left:
            try:
                open_session(d)
            except Exception:
                whole = False
        ordered = entries > before or left == mine  # nothing deleted before the ledger said so
        retry = withdraw("alice")
        done = retry.complete and not any(d.exists() for d in mine) and not store.tombstones()
        trials.append({"operation": "withdraw", "kill": "file-operation", "point": point,
                       "before": outcome.operation, "killed": outcome.killed,
                       "sessions_left_whole": whole, "ok": whole and ordered and done})
        if not outcome.killed:
            return trials


def recorder_trials(rounds: int) -> list[dict[str, Any]]:
    """Real recordings killed by the crash test's own procedure, every target and phase it
    has (tests/session/test_crash_recorder.py), `rounds` times."""
    from tests.session.test_crash_recorder import TRIALS

    results = []
    for _ in range(rounds):
        for trial in TRIALS:
            started = time.monotonic()
            proc = subprocess.run(
                [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                 f"tests/session/test_crash_recorder.py::test_kill_then_recover"
                 f"[{trial.target}-{trial.phase}]"], cwd=ROOT, capture_output=True, text=True)
            results.append({"operation": "record", "kill": f"{trial.target}-{trial.phase}",
                            "ok": proc.returncode == 0,
                            "seconds": round(time.monotonic() - started, 1)})
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--random-trials", type=int, default=40)
    parser.add_argument("--recorder-rounds", type=int, default=1,
                        help="times to run each of the 9 real-recorder kill trials")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        os.environ["CAPTURE_HOME"] = str(work / "home")
        trials = kill_point_trials(work) + random_trials(work, args.random_trials) + \
            export_trials(work) + withdrawal_trials(work) + recorder_trials(args.recorder_rounds)
    by_operation = Counter(t["operation"] for t in trials)
    failed = [t for t in trials if not t["ok"]]
    summary = {
        "trials": len(trials),
        "by_operation": dict(by_operation),
        "kill_points": sorted({t["before"] for t in trials if t.get("before")}),
        "failed": failed,
        "events_lost_max": max((t.get("events_lost", 0) for t in trials), default=0),
        "frames_lost_max": max((t.get("frames_lost", 0) for t in trials), default=0),
    }
    result = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
              "summary": summary, "trials": trials}
    out = ROOT / "bench" / "results" / "crash_suite.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
