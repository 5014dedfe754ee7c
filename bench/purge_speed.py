"""Purge cost: one of three players removed from a dataset, one video file vs one per session.

Run from the repository root: `python bench/purge_speed.py [--seconds 20]`. Writes
bench/results/purge_speed.json and prints a summary. The purge re-encodes every video file that
holds both removed and kept episodes (whole file, the export's encoder settings) and hard-links
the others; it splices each rewritten file (packets of whole GOPs copied, only the GOPs a cut
falls inside encoded again), or re-encodes the whole file when the stream cannot be spliced.
This measures both ways (the second by refusing the splice) and how much picture quality a
second encode loses (PSNR of every kept frame, before against after).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import av
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from export_speed import textured_frame  # noqa: E402

from capture.export import layout, lerobot, purge  # noqa: E402
from capture.export.verify import verify_dataset  # noqa: E402
from tests.factories import build_session, gameplay_script  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "purge_speed.json"


def frames_by_episode(root: Path) -> dict[tuple[str, int, int], list[np.ndarray]]:
    """(session, segment, part) -> decoded luma of its frames."""
    import pandas as pd

    episodes = pd.read_parquet(root / "meta/episodes/chunk-000/file-000.parquet")
    info = json.loads((root / layout.INFO_PATH).read_text())
    fps = info["fps"]
    decoded: dict[tuple[int, int], list[np.ndarray]] = {}
    out = {}
    for _, ep in episodes.iterrows():
        key = (int(ep["videos/observation.image/chunk_index"]),
               int(ep["videos/observation.image/file_index"]))
        if key not in decoded:
            path = root / info["video_path"].format(video_key=layout.VIDEO_KEY,
                                                    chunk_index=key[0], file_index=key[1])
            with av.open(str(path)) as c:
                decoded[key] = [f.to_ndarray(format="gray").astype(np.float64)
                                for f in c.decode(video=0)]
        first = round(ep["videos/observation.image/from_timestamp"] * fps)
        out[(ep["session_id"], int(ep["segment_index"]), int(ep["segment_part"]))] = \
            decoded[key][first:first + int(ep["length"])]
    return out


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(((a - b) ** 2).mean())
    return 99.0 if mse == 0 else 10 * np.log10(255 ** 2 / mse)


def run_case(work: Path, sessions: list[Path], limits: layout.FileLimits,
             splice: bool) -> dict[str, Any]:
    out = work / f"ds-{limits.video_mb:g}-{splice}"
    began = time.perf_counter()
    lerobot._receipt_status = lambda r, game, ledger_path: "active"  # type: ignore[assignment]
    export = lerobot.export_dataset(sessions, out, pseudonym_key=b"k" * 32, limits=limits)
    export_s = time.perf_counter() - began
    before = frames_by_episode(out)
    reencode_s = [0.0]
    real = purge._cut_video
    real_splice = purge._splice

    def refuse(*args: Any) -> None:
        raise purge._CannotSplice("benchmark: whole-file re-encode")

    if not splice:
        purge._splice = refuse  # type: ignore[assignment]

    def timed(*args: Any, **kwargs: Any) -> int:
        t = time.perf_counter()
        try:
            return real(*args, **kwargs)
        finally:
            reencode_s[0] += time.perf_counter() - t

    purge._cut_video = timed  # type: ignore[assignment]
    cpu = os.times()
    began = time.perf_counter()
    result = purge.purge_dataset(out, receipts=["r-1"], reason="receipt")
    purge_s = time.perf_counter() - began
    cpu_after = os.times()
    purge._cut_video = real  # type: ignore[assignment]
    purge._splice = real_splice  # type: ignore[assignment]
    after = frames_by_episode(out)
    check = verify_dataset(out)
    assert check.ok, check.summary()
    scores = [psnr(x, y) for k in after for x, y in zip(before[k], after[k], strict=True)]
    entry = result.log_entry or {}
    return {
        "video_files_mb_limit": limits.video_mb,
        "splice": splice,
        "video_frames_copied": entry.get("video_frames_copied"),
        "video_frames_reencoded": entry.get("video_frames_reencoded"),
        "export_seconds": round(export_s, 3),
        "frames_before": int(export.frames), "frames_after": entry.get("frames_after"),
        "video_files_rewritten": entry.get("video_files_rewritten"),
        "purge_seconds": round(purge_s, 3),
        "purge_cpu_seconds": round((cpu_after.user - cpu.user) + (cpu_after.system - cpu.system),
                                   3),
        "video_cut_seconds": round(reencode_s[0], 3),
        "kept_frames_psnr_db_min": round(min(scores), 2),
        "kept_frames_psnr_db_median": round(float(np.median(scores)), 2),
        "kept_frames_identical": int(sum(s == 99.0 for s in scores)),
        "kept_frames": len(scores),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=360)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="purge-bench-") as tmp:
        work = Path(tmp)
        sessions = [build_session(work / "s", gameplay_script(
            seconds=args.seconds, seed=i, width=args.width, height=args.height,
            painter=textured_frame, receipt_id=f"r-{i}", player=f"P{i}",
            session_id=f"20250301T12000{i}Z-factorygame-00000{i}")) for i in range(3)]
        cases = [run_case(work, sessions, layout.DEFAULT_LIMITS, splice=True),
                 run_case(work, sessions, layout.DEFAULT_LIMITS, splice=False),
                 run_case(work, sessions, layout.FileLimits(video_mb=0.001), splice=True)]
        shutil.rmtree(work / "s")
    record = {
        "what": "purge one of three players' sessions: one shared video file spliced, the "
                "same file re-encoded whole, and one video file per episode (linked)",
        "session_seconds": args.seconds, "size": f"{args.width}x{args.height}",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "load_1min": os.getloadavg()[0]},
        "cases": cases,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
