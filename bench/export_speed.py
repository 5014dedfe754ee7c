"""Export speed: a 60 s 30 fps 1280x720 factory session exported, against ffmpeg's decode time.

Run from the repository root: `python bench/export_speed.py [--seconds 60]`. Writes
bench/results/export_speed.json and prints a summary.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import av
import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from capture.export import layout, lerobot  # noqa: E402
from capture.export.verify import verify_dataset  # noqa: E402
from tests.factories import build_session, gameplay_script, tagged_frame  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "export_speed.json"
_TEXTURE: dict[tuple[int, int], np.ndarray] = {}


def textured_frame(index: int, width: int, height: int) -> np.ndarray:
    """A scrolling smooth texture with fine grain (work for H.264), the index blocks on top."""
    if (width, height) not in _TEXTURE:
        rng = np.random.default_rng(0)
        coarse = rng.integers(0, 256, (height // 16 + 1, width // 16 + 1, 3), dtype=np.uint8)
        smooth = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
        grain = rng.integers(-12, 13, (height, width, 3))
        _TEXTURE[(width, height)] = np.clip(smooth + grain, 0, 255).astype(np.uint8)
    picture = np.roll(_TEXTURE[(width, height)], (index * 3, index * 5), axis=(0, 1)).copy()
    tags = tagged_frame(index, width // 4, height // 4)
    picture[: height // 4, : width // 4] = tags
    return picture


def ffmpeg_decode_seconds(video: Path) -> float:
    began = time.perf_counter()
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(video), "-f", "null", "-"], check=True)
    return time.perf_counter() - began


def ffmpeg_transcode_seconds(video: Path, out: Path, fps: int) -> float:
    """The floor for export: ffmpeg re-encoding the source with the export's encoder settings."""
    began = time.perf_counter()
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(video), "-c:v", layout.VIDEO_CODEC,
                    "-preset", layout.VIDEO_PRESET, "-crf", str(layout.VIDEO_CRF),
                    "-g", str(layout.GOP_SECONDS * fps), "-pix_fmt", layout.VIDEO_PIX_FMT,
                    "-y", str(out)], check=True)
    return time.perf_counter() - began


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=720)
    parser.add_argument("--fps", type=int, default=30)
    args = parser.parse_args()
    if shutil.which("ffmpeg") is None:
        print("ffmpeg is not installed", file=sys.stderr)
        return 1

    with tempfile.TemporaryDirectory(prefix="export-bench-") as tmp:
        work = Path(tmp)
        began = time.perf_counter()
        script = gameplay_script(seconds=args.seconds, fps=args.fps, width=args.width,
                                 height=args.height, painter=textured_frame)
        session = build_session(work / "sessions", script)
        build_s = time.perf_counter() - began
        video = session / "video.mkv"
        video_bytes = video.stat().st_size
        decode_s = min(ffmpeg_decode_seconds(video) for _ in range(2))
        transcode_s = ffmpeg_transcode_seconds(video, work / "transcode.mp4", args.fps)

        lerobot._receipt_status = lambda *_args, **_kwargs: "active"  # bench: no ledger
        began = time.perf_counter()
        report = lerobot.export_dataset([session], work / "dataset", pseudonym_key=b"b" * 32)
        export_s = time.perf_counter() - began

        began = time.perf_counter()
        check = verify_dataset(work / "dataset")
        verify_s = time.perf_counter() - began
        dataset_bytes = sum(p.stat().st_size for p in (work / "dataset").rglob("*")
                            if p.is_file())
        source_frames = len(script.capture_times_ns)

    results = {
        "source": {"frames": source_frames, "width": args.width, "height": args.height,
                   "fps": args.fps, "video_bytes": video_bytes, "build_s": round(build_s, 2)},
        "ffmpeg_decode_s": round(decode_s, 3),
        "ffmpeg_decode_fps": round(source_frames / decode_s, 1),
        "export_s": round(export_s, 3),
        "export_frames": report.frames,
        "export_fps": round(report.frames / export_s, 1),
        "export_over_decode": round(export_s / decode_s, 2),
        "ffmpeg_transcode_s": round(transcode_s, 3),
        "export_over_transcode": round(export_s / transcode_s, 2),
        "verify_s": round(verify_s, 3),
        "verify_ok": check.ok,
        "dataset_mb": round(dataset_bytes / 2**20, 2),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "pyav": av.__version__, "platform": platform.platform()},
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(f"source: {source_frames} frames {args.width}x{args.height} @ {args.fps} fps "
          f"(built in {build_s:.1f} s)")
    print(f"ffmpeg decode: {decode_s:.2f} s ({results['ffmpeg_decode_fps']} frames/s)")
    print(f"export:        {export_s:.2f} s ({results['export_fps']} frames/s), "
          f"{results['export_over_decode']}x ffmpeg's decode time, "
          f"{results['export_over_transcode']}x an ffmpeg transcode with the same encoder "
          f"settings ({transcode_s:.2f} s)")
    print(f"verify:        {verify_s:.2f} s, {'ok' if check.ok else 'PROBLEMS'}; dataset "
          f"{results['dataset_mb']} MB")
    print(f"wrote {RESULTS.relative_to(ROOT)}")
    return 0 if check.ok else 1


if __name__ == "__main__":
    sys.exit(main())
