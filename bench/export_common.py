"""Shared parts of the export benchmarks: synthetic sessions, CPU-timed child runs, ffmpeg CLI.

Run the benchmarks from the repository root (`.venv/bin/python bench/export_speed.py`).
`python bench/export_common.py export ...` is the child the benchmarks time: it exports with
the consent check answered "active" (benchmark sessions have no ledger) and prints its own CPU
time spent inside export_dataset as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

RESULTS = ROOT / "bench" / "results"
_TEXTURE: dict[tuple[int, int], np.ndarray] = {}


def textured_frame(index: int, width: int, height: int) -> np.ndarray:
    """A scrolling smooth texture with fine grain (work for H.264), the index blocks on top."""
    from tests.factories import tagged_frame

    if (width, height) not in _TEXTURE:
        rng = np.random.default_rng(0)
        coarse = rng.integers(0, 256, (height // 16 + 1, width // 16 + 1, 3), dtype=np.uint8)
        smooth = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
        grain = rng.integers(-12, 13, (height, width, 3))
        _TEXTURE[(width, height)] = np.clip(smooth + grain, 0, 255).astype(np.uint8)
    picture = np.roll(_TEXTURE[(width, height)], (index * 3, index * 5), axis=(0, 1))
    picture[: height // 4, : width // 4] = tagged_frame(index % 4096, width // 4, height // 4)
    return picture


def build_textured_session(root: Path, *, seconds: float, width: int, height: int,
                           fps: int = 30, session_id: str) -> Path:
    """A session as the built-in recorder writes it (H.264 without B-frames, a keyframe every
    2 s, ms pts in Matroska; preset ultrafast to build it quickly) whose frames sit exactly on
    the 1/fps grid (so export may copy them). Frames are encoded one at a time."""
    from tests.factories import SessionScript, build_session, frame_times

    n = int(seconds * fps)
    times, dropped = frame_times(n, fps)
    script = SessionScript(capture_times_ns=times, dropped_before=dropped, fps=fps, width=width,
                           height=height, session_id=session_id, painter=textured_frame,
                           preset="ultrafast", gop=2 * fps,
                           encoder_options={"tune": "zerolatency", "crf": "23"})
    return build_session(root, script)


@dataclass(frozen=True, slots=True)
class Run:
    cpu_s: float        # user + system CPU of the child process (and its children)
    wall_s: float
    max_rss_mb: float   # peak resident memory of the largest child
    detail: dict[str, Any]


def timed(cmd: list[str], *, env: dict[str, str] | None = None,
          cwd: Path | None = None) -> Run:
    """Run a command to completion: its CPU time (wait4 rusage, children included) and peak
    memory (RSS of it and its children, sampled every 20 ms: rusage's maxrss would report the
    forking parent's RSS)."""
    import psutil

    began = time.perf_counter()
    out_file = tempfile.TemporaryFile()  # noqa: SIM115 (closed below)
    process = subprocess.Popen(cmd, stdout=out_file, env=env, cwd=cwd)
    peak = 0
    watched = psutil.Process(process.pid)
    while True:
        try:
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
        except ChildProcessError:
            raise RuntimeError(f"lost track of {cmd[0]}") from None
        if pid:
            break
        try:
            rss = watched.memory_info().rss + sum(
                c.memory_info().rss for c in watched.children(recursive=True))
            peak = max(peak, rss)
        except psutil.Error:
            pass
        time.sleep(0.02)
    process.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - began
    out_file.seek(0)
    out = out_file.read()
    out_file.close()
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{cmd[0]} failed ({os.waitstatus_to_exitcode(status)}): {cmd}")
    last = out.decode().strip().splitlines()[-1:] if out else []
    detail = json.loads(last[0]) if last and last[0].startswith("{") else {}
    return Run(cpu_s=usage.ru_utime + usage.ru_stime, wall_s=wall,
               max_rss_mb=peak / 2**20, detail=detail)


def export_child(sessions: list[Path], out: Path, *, size: str = "native", workers: int = 1,
                 engine: str = "local", gop_seconds: float | None = None,
                 codec: str | None = None) -> Run:
    cmd = [sys.executable, str(Path(__file__)), "export", "--out", str(out), "--size", size,
           "--workers", str(workers), "--engine", engine]
    if gop_seconds is not None:
        cmd += ["--gop-seconds", str(gop_seconds)]
    if codec is not None:
        cmd += ["--codec", codec]
    return timed(cmd + [str(s) for s in sessions], cwd=out.parent)


def ffmpeg_transcode(video: Path, out: Path, *, size: tuple[int, int] | None,
                     fps: int) -> Run:
    """The ffmpeg CLI doing export's re-encode: decode, scale (area), libx264 veryfast crf 23
    with the same GOP, constant frame rate into mp4."""
    from capture.export import layout

    vf = ["-vf", f"scale={size[0]}:{size[1]}:flags=area"] if size else []
    return timed(["ffmpeg", "-v", "error", "-y", "-i", str(video), *vf, "-c:v",
                  layout.VIDEO_CODEC, "-preset", layout.VIDEO_PRESET, "-crf",
                  str(layout.VIDEO_CRF), "-g", str(layout.GOP_SECONDS * fps), "-pix_fmt",
                  layout.VIDEO_PIX_FMT, "-r", str(fps), "-an", str(out)])


def ffmpeg_copy(video: Path, out: Path) -> Run:
    """The ffmpeg CLI doing the fast path's transform: the packets into mp4, no re-encode."""
    return timed(["ffmpeg", "-v", "error", "-y", "-i", str(video), "-c", "copy", "-an",
                  str(out)])


def machine() -> dict[str, Any]:
    try:
        load = os.getloadavg()
    except OSError:
        load = (float("nan"),) * 3
    return {"cpus": os.cpu_count(), "python": platform.python_version(),
            "pyav": av.__version__, "platform": platform.platform(),
            "load_average_1_5_15": [round(x, 2) for x in load],
            "note": "a machine shared with other developers: CPU seconds are the measure, "
                    "wall times vary with their load"}


def write_results(name: str, results: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / name
    path.write_text(json.dumps(results, indent=2) + "\n")
    return path


def _child(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("sessions", nargs="+")
    parser.add_argument("--out", required=True)
    parser.add_argument("--size", default="native")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--engine", default="local")
    parser.add_argument("--gop-seconds", type=float, default=None)
    parser.add_argument("--codec", default=None)
    args = parser.parse_args(argv)
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    from capture.export import lerobot
    from capture.export.engine import EngineOptions

    lerobot._receipt_status = lambda *_a, **_k: "active"  # benchmark sessions: no ledger
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    size = None if args.size == "native" else tuple(int(v) for v in args.size.split("x"))
    report = lerobot.export_dataset(
        args.sessions, args.out, size=size, pseudonym_key=b"b" * 32, codec=args.codec,
        gop_seconds=args.gop_seconds,
        engine=EngineOptions(engine=args.engine, workers=args.workers))
    cpu2 = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({
        "import_cpu_s": round(cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime - cpu0.ru_stime, 3),
        "export_cpu_s_in_process": round(cpu2.ru_utime + cpu2.ru_stime - cpu1.ru_utime
                                         - cpu1.ru_stime, 3),
        "frames": report.frames, "episodes": report.episodes,
        "episodes_copied": report.episodes_copied, "seconds": round(report.seconds, 3),
        "worker_cpu_s": round(report.worker_cpu_s, 3)}))
    return 0


def video_seconds(video: Path) -> float:
    with av.open(str(video)) as container:
        stream = container.streams.video[0]
        last = 0
        frames = 0
        for packet in container.demux(stream):
            if packet.size and packet.pts is not None:
                last = max(last, packet.pts)
                frames += 1
        assert stream.time_base is not None
        return float(Fraction(last) * stream.time_base) + 1 / float(stream.average_rate or 30)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "export":
        sys.exit(_child(sys.argv[2:]))
    print(__doc__)
