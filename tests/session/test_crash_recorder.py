"""SIGKILL of the real recorder and of each of its children, in every phase, then recovery.

Phases: start-up, recording, segment hand-over, finalise. After each kill `capture sessions
recover` must finish every session, each kept frame must be in the video file, input may be
lost only in the last 250 ms before the kill (plus however long the machine kept the test itself
from running then), every session with frames must export and verify, and a second recovery
must change nothing.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest

from capture import consent
from capture.clock import now_ns
from capture.demo.game import WINDOW_CLASS
from capture.export import export_dataset, verify_dataset
from capture.inputs.xtest import XTestInjector
from capture.session import writer
from capture.session.manifest import read_manifest
from capture.session.reader import open_session

pytestmark = [pytest.mark.x11, pytest.mark.slow]

MAX_INPUT_LOSS_NS = 250_000_000
INJECT_PERIOD_NS = 10_000_000
SEGMENT_S = 1.5


@dataclass
class Trial:
    target: str   # recorder, grabber or encoder
    phase: str    # startup, recording, handover, finalise
    seed: int
    sent: list[int] = field(default_factory=list)  # host times of injected relative moves
    kill_ns: int = 0


def _start(xvfb, home: Path, out: Path, segment_s: float | None) -> subprocess.Popen[str]:
    env = {**os.environ, "DISPLAY": xvfb.display, "CAPTURE_HOME": str(home)}
    cmd = [sys.executable, "-m", "tests.session.record_driver", "--game", WINDOW_CLASS,
           "--out", str(out), "--display", xvfb.display]
    if segment_s:
        cmd += ["--segment-s", str(segment_s)]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=Path(__file__).resolve().parents[2])


def _wait_line(proc: subprocess.Popen[str], prefix: str, timeout_s: float = 40) -> str:
    assert proc.stderr is not None
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            raise AssertionError(f"recorder exited early ({proc.wait()})")
        if line.startswith(prefix):
            return line
    raise AssertionError(f"no line starting {prefix!r}")


def _children(pid: int) -> dict[str, int]:
    """The recorder's grabber and encoder (the encoder is the one holding video.mkv open)."""
    out: dict[str, int] = {}
    for child in psutil.Process(pid).children():
        try:
            if "resource_tracker" in " ".join(child.cmdline()):
                continue
            files = [f.path for f in child.open_files()]
        except psutil.Error:
            continue
        out["encoder" if any(f.endswith(".mkv") for f in files) else "grabber"] = child.pid
    return out


def _kill(trial: Trial, proc: subprocess.Popen[str]) -> None:
    pid = proc.pid if trial.target == "recorder" else _children(proc.pid).get(trial.target)
    trial.kill_ns = now_ns()
    os.kill(pid or proc.pid, signal.SIGKILL)


def _run(trial: Trial, xvfb, demo_game: int, home: Path, out: Path) -> subprocess.Popen[str]:
    rng = random.Random(trial.seed)
    proc = _start(xvfb, home, out, SEGMENT_S if trial.phase == "handover" else None)
    if trial.phase == "startup":
        time.sleep(rng.uniform(0.2, 2.5))
        _kill(trial, proc)
        return proc
    _wait_line(proc, "recording ")
    started = time.monotonic()
    stop_input = threading.Event()

    def inject() -> None:
        with XTestInjector(xvfb.display) as injector:
            injector.focus(demo_game)
            time.sleep(0.3)
            while not stop_input.is_set():
                injector.move_relative(1, 0)
                trial.sent.append(now_ns())
                time.sleep(INJECT_PERIOD_NS / 1e9)

    thread = threading.Thread(target=inject, daemon=True)
    thread.start()
    try:
        if trial.phase == "recording":
            time.sleep(rng.uniform(0.6, 2.0))
        elif trial.phase == "handover":
            time.sleep(max(0.0, SEGMENT_S + rng.uniform(-0.1, 0.5) - (time.monotonic() - started)))
        elif trial.phase == "finalise":
            time.sleep(1.2)
            proc.send_signal(signal.SIGTERM)
            time.sleep(rng.uniform(0.0, 0.4))
        _kill(trial, proc)
    finally:
        stop_input.set()
        thread.join(5)
    return proc


def _check(trial: Trial, home: Path, out: Path, tmp_path: Path) -> int:
    """The invariants after a kill; returns the number of sessions checked."""
    env = {**os.environ, "CAPTURE_HOME": str(home)}
    listed = json.loads(subprocess.run(
        [sys.executable, "-m", "capture", "sessions", "list", "--json"], env=env, check=True,
        capture_output=True, text=True).stdout)
    dirs = sorted(out.iterdir()) if out.exists() else []
    known = {Path(s["path"]).resolve() for run in listed for s in run["segments"]}
    assert {d.resolve() for d in dirs} <= known, "a session is missing from the index"
    result = subprocess.run([sys.executable, "-m", "capture", "sessions", "recover"], env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    states = {d: {p.name: p.stat().st_mtime_ns for p in d.iterdir()} for d in dirs}
    again = subprocess.run([sys.executable, "-m", "capture", "sessions", "recover"], env=env,
                           capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and "no session needs recovery" in again.stdout
    assert states == {d: {p.name: p.stat().st_mtime_ns for p in d.iterdir()} for d in dirs}

    motions: list[int] = []
    for d in dirs:
        manifest = read_manifest(d)
        assert manifest.is_final, (d, manifest.status)
        session = open_session(d)
        frames = session.frames()
        decodable = writer._count_decodable_frames(session.video_path)
        assert frames.num_rows <= decodable, "a frame row points past the video's frames"
        motions += [e["t_ns"] for e in session.events().to_pylist() if e["kind"] == "motion"]
        if frames.num_rows:
            dataset = tmp_path / f"dataset-{d.name}"
            export_dataset([d], dataset)
            assert verify_dataset(dataset).ok
    sent = [t for t in trial.sent if t <= trial.kill_ns]
    if sent and trial.phase in ("recording", "handover"):
        assert motions, "no input survived"
        allowed = MAX_INPUT_LOSS_NS + machine_stall_ns(sent, trial.kill_ns)
        assert sent[-1] - max(motions) <= allowed, \
            f"{(sent[-1] - max(motions)) / 1e6:.0f} ms of input lost (allowed {allowed / 1e6:.0f})"
        early = [t for t in sent if t <= trial.kill_ns - allowed - 50_000_000]
        assert len(motions) >= len(early), f"{len(early) - len(motions)} early moves lost"
    return len(dirs)


def machine_stall_ns(sent: list[int], kill_ns: int) -> int:
    """How long the injecting thread (a bystander at the recorder's priority, sending every
    10 ms) could not run in the last 2 s before the kill: on 2 busy cores (a hand-over starts
    two processes) the recorder cannot read input then either. The loss allowed grows by it;
    a recorder that keeps input back by design (it once held a hand-over's input in memory
    for up to 3 s) is still caught."""
    recent = [t for t in sent if t >= kill_ns - 2_000_000_000] + [kill_ns]
    gaps = [b - a for a, b in itertools.pairwise(recent)]
    return max(0, max(gaps, default=0) - INJECT_PERIOD_NS)


TRIALS = [Trial(target, phase, seed)
          for seed, (target, phase) in enumerate([
              ("recorder", "startup"), ("encoder", "startup"),
              ("recorder", "recording"), ("grabber", "recording"), ("encoder", "recording"),
              ("recorder", "handover"), ("encoder", "handover"),
              ("recorder", "finalise"), ("grabber", "finalise"),
          ])]


@pytest.mark.parametrize("trial", TRIALS, ids=lambda t: f"{t.target}-{t.phase}")
def test_kill_then_recover(trial: Trial, xvfb, demo_game, capture_home, tmp_path) -> None:
    consent.grant("p1", [WINDOW_CLASS], ["video", "keyboard", "mouse"])
    out = tmp_path / "out"
    proc = _run(trial, xvfb, demo_game, capture_home, out)
    said = ""
    try:
        try:
            said = proc.communicate(timeout=10)[1]
        except subprocess.TimeoutExpired:
            # A child of the segment being handed over died: that segment is finished as
            # incomplete (or, the new segment's, it never starts) and recording goes on in the
            # other one, until told to stop.
            assert trial.phase == "handover", "the recorder did not stop after its child died"
            proc.send_signal(signal.SIGTERM)
            said = proc.communicate(timeout=60)[1]
    finally:
        if proc.poll() is None:
            proc.kill()
    incomplete = out.exists() and any(read_manifest(d).status == "incomplete"
                                      for d in out.iterdir())
    if trial.target != "recorder" and trial.phase == "recording":
        assert incomplete
        assert proc.returncode not in (0, None), "a recorder whose child died exits non-zero"
    if trial.target != "recorder" and trial.phase == "handover":
        assert incomplete or "could not start a new segment" in said, said
    time.sleep(0.5)  # orphaned children notice their owner is gone and finish the file
    _check(trial, capture_home, out, tmp_path)


def test_record_stops_at_once_when_consent_is_withdrawn(xvfb, demo_game, capture_home,
                                                        tmp_path) -> None:
    consent.grant("p1", [WINDOW_CLASS], ["video", "keyboard", "mouse"])
    out = tmp_path / "out"
    proc = _start(xvfb, capture_home, out, None)
    _wait_line(proc, "recording ")
    time.sleep(1.0)
    env = {**os.environ, "CAPTURE_HOME": str(capture_home)}
    revoked_at = time.monotonic()
    subprocess.run([sys.executable, "-m", "capture", "consent", "revoke", "--player", "p1",
                    "--yes"], env=env, check=True, capture_output=True, timeout=60)
    _, stderr = proc.communicate(timeout=30)
    assert time.monotonic() - revoked_at < 10
    assert proc.returncode == 3, stderr
    assert "withdrawn" in stderr and "nothing of it was kept" in stderr
    assert "not a session directory" not in stderr
    assert list(out.iterdir()) == []
