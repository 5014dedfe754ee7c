"""Keyframe interval vs training access: LeRobot DataLoader samples/s on our datasets, g=60 vs g=2.

Run from the repository root: `.venv/bin/python bench/export_gop.py`. Writes
bench/results/export_gop.json. One synthetic 720p session is exported at 640x360 and 256x144
with a keyframe every 2 s (g=60 at 30 fps) and every 2 frames (g=2, LeRobot's default), with
H.264 and (where PyAV has libsvtav1) AV1. Each dataset is then read in random order:

- by LeRobot 0.6.1's own LeRobotDataset + torch DataLoader (batch 8, shuffled, no workers),
  in the LeRobot virtualenv (`--lerobot-python`, default /work/wt/lerobot/.venv-lerobot), and
- by PyAV seeking to random frames (the decoding work a loader does, without torch),

reporting samples per second of wall time and per CPU second (the machine is shared, so CPU
seconds are the steadier number), the dataset's size and the export's CPU time.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import av

sys.path.insert(0, str(Path(__file__).resolve().parent))

from export_common import (
    build_textured_session,
    export_child,
    machine,
    write_results,
)

LEROBOT_LOADER = r"""
import json, os, sys, time
os.environ["HF_HUB_OFFLINE"] = "1"
import torch
from lerobot.datasets.lerobot_dataset import LeRobotDataset
root, n = sys.argv[1], int(sys.argv[2])
dataset = LeRobotDataset("local/bench", root=root)
loader = torch.utils.data.DataLoader(dataset, batch_size=8, shuffle=True, num_workers=0,
                                     generator=torch.Generator().manual_seed(0))
batches = iter(loader)
next(batches)  # warm-up: decoder set-up is not per sample
wall, cpu, samples = time.perf_counter(), time.process_time(), 0
for batch in batches:
    samples += len(batch["index"])
    if samples >= n:
        break
print(json.dumps({"samples": samples, "wall_s": time.perf_counter() - wall,
                  "cpu_s": time.process_time() - cpu}))
"""


def pyav_random_access(video: Path, samples: int, fps: int) -> dict[str, float]:
    """Seek to random frames and decode up to each (what a loader does per sample)."""
    with av.open(str(video)) as container:
        stream = container.streams.video[0]
        frames = stream.frames or sum(1 for _ in container.demux(stream))
    rng = random.Random(0)
    targets = [rng.randrange(frames) for _ in range(samples)]
    wall, cpu = time.perf_counter(), time.process_time()
    decoded = 0
    with av.open(str(video)) as container:
        stream = container.streams.video[0]
        assert stream.time_base is not None
        for target in targets:
            ts = int(target / fps / stream.time_base)
            container.seek(ts, stream=stream, backward=True, any_frame=False)
            for frame in container.decode(stream):
                decoded += 1
                if frame.pts is not None and frame.pts >= ts:
                    break
    wall_s, cpu_s = time.perf_counter() - wall, time.process_time() - cpu
    return {"samples_per_s": round(samples / wall_s, 1),
            "samples_per_cpu_s": round(samples / cpu_s, 1),
            "frames_decoded_per_sample": round(decoded / samples, 2)}


def lerobot_loader(python: Path, dataset: Path, samples: int) -> dict[str, Any]:
    done = subprocess.run([str(python), "-c", LEROBOT_LOADER, str(dataset), str(samples)],
                          capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1:] or ["failed"]}
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return {"samples_per_s": round(result["samples"] / result["wall_s"], 1),
            "samples_per_cpu_s": round(result["samples"] / result["cpu_s"], 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--samples", type=int, default=400)
    parser.add_argument("--lerobot-python", type=Path,
                        default=Path("/work/wt/lerobot/.venv-lerobot/bin/python"))
    args = parser.parse_args()
    codecs = ["h264"] + (["av1"] if "libsvtav1" in av.codecs_available else [])
    rows = []
    with tempfile.TemporaryDirectory(prefix="export-gop-") as tmp:
        work = Path(tmp)
        session = build_textured_session(work / "s", seconds=args.seconds, width=1280,
                                         height=720, session_id="bench-gop")
        for codec in codecs:
            for size in ("640x360", "256x144"):
                for g in (60, 2):
                    out = work / f"{codec}-{size}-g{g}"
                    run = export_child([session], out, size=size, gop_seconds=g / 30,
                                       codec=codec)
                    video = next((out / "videos").rglob("*.mp4"))
                    row: dict[str, Any] = {
                        "codec": codec, "size": size, "g": g,
                        "export_cpu_s": round(run.cpu_s, 2),
                        "video_mb": round(video.stat().st_size / 2**20, 2),
                        "pyav_random_access": pyav_random_access(video, args.samples, 30),
                    }
                    if args.lerobot_python.exists():
                        row["lerobot_dataloader"] = lerobot_loader(args.lerobot_python, out,
                                                                   args.samples)
                    rows.append(row)
                    print(row, flush=True)
    results = {"machine": machine(), "source": {"seconds": args.seconds, "size": "1280x720",
                                                 "fps": 30},
               "samples": args.samples, "datasets": rows}
    path = write_results("export_gop.json", results)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
