"""Export speed: CPU per hour of gameplay against the ffmpeg CLI, Ray scaling, peak memory.

Run from the repository root: `.venv/bin/python bench/export_speed.py [--long-seconds 600]`.
Writes bench/results/export_speed.json. Every export runs as a child process timed by wait4
(CPU = user + system, peak RSS), next to the ffmpeg CLI doing the same transform on the same
video in the same run:

- a real recorded session (`capture demo --duration 20`, 640x360) exported at 256x144 by the
  CLI, with this tree's code and with the code before this work (`--before REV`);
- a synthetic 720p session recorded like the built-in recorder, on the grid: native size
  (the fast path, packets copied) and 256x144 (re-encoded); a 10-minute one for steady-state
  throughput and peak memory;
- four sessions with the local engine and with Ray at 1 and 2 workers (wall time).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from export_common import (
    ROOT,
    Run,
    build_textured_session,
    export_child,
    ffmpeg_copy,
    ffmpeg_transcode,
    machine,
    timed,
    video_seconds,
    write_results,
)

SMALL = (256, 144)


def _run(run: Run) -> dict[str, Any]:
    return {"cpu_s": round(run.cpu_s, 3), "wall_s": round(run.wall_s, 3),
            "max_rss_mb": round(run.max_rss_mb, 1), **run.detail}


def _realtime(seconds: float, cpu: float) -> float:
    """Hours of gameplay per core-hour: source seconds per CPU second."""
    return round(seconds / cpu, 1)


def _record_demo(work: Path) -> tuple[Path, Path]:
    capture = ROOT / ".venv" / "bin" / "capture"
    subprocess.run([str(capture), "demo", "--out", str(work / "demo"), "--duration", "20"],
                   check=True, stdout=subprocess.DEVNULL)
    (session,) = (work / "demo" / "sessions").iterdir()
    return session, work / "demo" / "home"


def _cli(code: Path, session: Path, out: Path, home: Path, *extra: str) -> Run:
    """`capture export` of the tree at `code` (its own import path), as a user runs it."""
    env = {**os.environ, "CAPTURE_HOME": str(home), "PYTHONPATH": str(code)}
    script = "import sys; from capture.cli import main; sys.exit(main())"
    return timed(cwd=out.parent, env=env, cmd=[
        sys.executable, "-c", script, "export", str(session), "--out", str(out),
        "--size", f"{SMALL[0]}x{SMALL[1]}", *extra])


def demo_case(work: Path, session: Path | None, home: Path | None,
              before: str) -> dict[str, Any]:
    if session is None or home is None:
        session, home = _record_demo(work)
    seconds = video_seconds(session / "video.mkv")
    old = work / "before-src"
    old.mkdir()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", before], check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(old)], input=archive, check=True)
    before_run = _cli(old, session, work / "demo-before", home)
    after_run = _cli(ROOT, session, work / "demo-after", home, "--workers", "1")
    python_only = timed([sys.executable, "-c", "pass"], cwd=work)
    ffmpeg = ffmpeg_transcode(session / "video.mkv", work / "demo-ffmpeg.mp4", size=SMALL,
                              fps=30)
    return {
        "session": "capture demo --duration 20 (real recording, 640x360, 30 fps)",
        "source_seconds": round(seconds, 2), "size": f"{SMALL[0]}x{SMALL[1]}",
        "before": {"rev": before, **_run(before_run)}, "after": _run(after_run),
        "python_startup_cpu_s": round(python_only.cpu_s, 3),
        "ffmpeg_cli": _run(ffmpeg),
        "after_over_ffmpeg": round(after_run.cpu_s / ffmpeg.cpu_s, 2),
        "before_over_ffmpeg": round(before_run.cpu_s / ffmpeg.cpu_s, 2),
    }


def synthetic_case(work: Path, session: Path, label: str) -> dict[str, Any]:
    video = session / "video.mkv"
    seconds = video_seconds(video)
    native = export_child([session], work / f"{label}-native")
    copy = ffmpeg_copy(video, work / f"{label}-copy.mp4")
    small = export_child([session], work / f"{label}-small", size=f"{SMALL[0]}x{SMALL[1]}")
    ffmpeg_small = ffmpeg_transcode(video, work / f"{label}-small.mp4", size=SMALL, fps=30)
    return {
        "source_seconds": round(seconds, 2),
        "native_fast_path": {
            **_run(native), "x_realtime_per_core": _realtime(seconds, native.cpu_s),
            "x_realtime_per_core_in_process": _realtime(
                seconds, native.detail["export_cpu_s_in_process"]),
            "ffmpeg_cli_copy": _run(copy),
            "ffmpeg_cli_copy_x_realtime_per_core": _realtime(seconds, copy.cpu_s),
        },
        "reencode_256x144": {
            **_run(small), "x_realtime_per_core": _realtime(seconds, small.cpu_s),
            "ffmpeg_cli": _run(ffmpeg_small),
            "ffmpeg_cli_x_realtime_per_core": _realtime(seconds, ffmpeg_small.cpu_s),
            "over_ffmpeg_cli": round(small.cpu_s / ffmpeg_small.cpu_s, 3),
            "over_ffmpeg_cli_in_process": round(
                small.detail["export_cpu_s_in_process"] / ffmpeg_small.cpu_s, 3),
        },
    }


def scaling_case(work: Path, sessions: list[Path]) -> dict[str, Any]:
    size = f"{SMALL[0]}x{SMALL[1]}"
    runs: dict[str, Any] = {}
    for label, engine, workers in [("local_1", "local", 1), ("local_2", "local", 2),
                                   ("ray_1", "ray", 1), ("ray_2", "ray", 2)]:
        run = export_child(sessions, work / f"scale-{label}", size=size, workers=workers,
                           engine=engine)
        runs[label] = _run(run)
    for engine in ("local", "ray"):
        runs[f"{engine}_speedup_2_over_1"] = round(
            runs[f"{engine}_1"]["wall_s"] / runs[f"{engine}_2"]["wall_s"], 2)
    runs["note"] = ("wall times; Ray's CPU is spent in its worker processes, which the "
                    "child's rusage does not see (cpu_s covers the driver only)")
    return runs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo-session", type=Path, default=None,
                        help="a recorded session to use instead of recording one")
    parser.add_argument("--demo-home", type=Path, default=None,
                        help="the CAPTURE_HOME whose ledger holds the demo session's consent")
    parser.add_argument("--before", default="169d636",
                        help="git revision of the code before this work")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--long-seconds", type=float, default=600.0)
    parser.add_argument("--scaling-seconds", type=float, default=20.0)
    args = parser.parse_args()
    if shutil.which("ffmpeg") is None:
        print("ffmpeg is not installed", file=sys.stderr)
        return 1
    results: dict[str, Any] = {"machine": machine()}
    with tempfile.TemporaryDirectory(prefix="export-bench-") as tmp:
        work = Path(tmp)
        results["real_demo_session"] = demo_case(work, args.demo_session, args.demo_home,
                                                 args.before)
        print("demo:", results["real_demo_session"], flush=True)
        short = build_textured_session(work / "s", seconds=args.seconds, width=1280,
                                       height=720, session_id="bench-720p-short")
        results["synthetic_720p_short"] = synthetic_case(work, short, "short")
        print("short:", results["synthetic_720p_short"], flush=True)
        scale = [build_textured_session(work / "scale", seconds=args.scaling_seconds,
                                        width=1280, height=720, session_id=f"bench-scale-{i}")
                 for i in range(4)]
        results["scaling_4_sessions_720p_to_256x144"] = scaling_case(work, scale)
        print("scaling:", results["scaling_4_sessions_720p_to_256x144"], flush=True)
        long = build_textured_session(work / "l", seconds=args.long_seconds, width=1280,
                                      height=720, session_id="bench-720p-long")
        results["synthetic_720p_long"] = synthetic_case(work, long, "long")
        print("long:", results["synthetic_720p_long"], flush=True)
    results["goals"] = {
        "fast_path_x_realtime_per_core_at_least": 100,
        "reencode_over_ffmpeg_cli_at_most": 1.3,
    }
    path = write_results("export_speed.json", results)
    print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
