"""Benchmark: `capture upload` throughput to a collector on loopback vs curl PUT of the bytes."""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

# Starts a moto S3 server and `capture collector serve` (SQLite database, that S3 as its store)
# on loopback, enrolls a player, makes a session whose video is N MiB of random bytes, and times
# (a) `capture upload` of it (tus, checksummed chunks, then the collector's checks and assembly)
# and (b) curl PUT of the same bytes to the same S3 through a presigned URL.
# Usage: python bench/upload.py [--mib 64] [--chunk-mib 4] [--repeats 3]
RESULTS = Path(__file__).resolve().parent / "results" / "upload.json"
ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _capture(home: Path, *args: str) -> str:
    out = subprocess.run([sys.executable, "-m", "capture", *args], capture_output=True,
                         text=True, check=True, env={**os.environ, "CAPTURE_HOME": str(home)})
    return out.stdout


def _big_session(home: Path, receipt_id: str, player: str, mib: int, n: int) -> Path:
    sys.path.insert(0, str(ROOT))
    from capture.session.manifest import FileEntry, read_manifest, write_manifest
    from capture.session.reader import sha256_file
    from tests.factories import build_session, gameplay_script

    session = build_session(home / "sessions", gameplay_script(
        receipt_id=receipt_id, player=player, synthetic=False,
        session_id=f"20250301T120000Z-factorygame-{n:06d}"))
    video = session / "video.mkv"
    with open(video, "wb") as out:
        for _ in range(mib):
            out.write(secrets.token_bytes(1 << 20))
    record = read_manifest(session)
    files = dict(record.files)
    files["video.mkv"] = FileEntry(sha256=sha256_file(video), bytes=video.stat().st_size)
    write_manifest(session, record.updated(files=files))
    return session


def _timing_while_uploading(player: Path, receipt_id: str,
                            args: argparse.Namespace) -> dict[str, Any]:
    """The built-in recorder's capture-timing error (bench/capture_timing.py's case: the clock
    window at 30 fps, 1280x720) with no upload, then while `capture upload` sends a bundle at
    full speed on the same machine; the recorder's targets must hold in both."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from capture_timing import run_case

    from capture.xserver import Xvfb

    cases = {}
    with Xvfb(1280, 720) as server, tempfile.TemporaryDirectory() as work:
        cases["no upload"] = run_case(server.display, 30, 0, args.timing_seconds, (1280, 720),
                                      Path(work) / "quiet")
        session = _big_session(player, receipt_id, "bench", max(args.mib, 640), 99)
        upload = subprocess.Popen([sys.executable, "-m", "capture", "upload", str(session)],
                                  env={**os.environ, "CAPTURE_HOME": str(player)},
                                  stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        time.sleep(1.0)  # the upload is under way
        cases["while uploading"] = run_case(server.display, 30, 0, args.timing_seconds,
                                            (1280, 720), Path(work) / "uploading")
        still_uploading = upload.poll() is None
        out, _ = upload.communicate(timeout=600)
    keep = ("frames", "dropped_slots", "abs_error_ms", "frames_over_one_interval",
            "of_which_clock_not_redrawn", "recorder_cpu_percent", "targets_met")
    return {"upload_still_running_at_end": still_uploading,
            "upload_result": out.strip().splitlines()[-1] if out.strip() else "",
            "cases": {name: {k: case[k] for k in keep} for name, case in cases.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mib", type=int, default=64)
    parser.add_argument("--chunk-mib", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--timing-seconds", type=float, default=10.0,
                        help="length of each capture-timing recording (0: skip that part)")
    args = parser.parse_args()

    import boto3
    from moto.server import ThreadedMotoServer

    os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench",
                      AWS_DEFAULT_REGION="us-east-1")
    s3_port = _free_port()
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=s3_port, verbose=False)
    moto.start()
    endpoint = f"http://127.0.0.1:{s3_port}"
    s3 = boto3.client("s3", endpoint_url=endpoint)
    s3.create_bucket(Bucket="bench")
    tmp = Path(tempfile.mkdtemp(prefix="capture-bench-upload-"))
    builder, player = tmp / "builder", tmp / "player"
    token = secrets.token_urlsafe(24)
    os.environ["CAPTURE_COLLECTOR_ADMIN_TOKEN"] = token
    serve = subprocess.Popen([sys.executable, "-m", "capture", "collector", "serve", "--port",
                              "0", "--store", "s3://bench/collected", "--s3-endpoint", endpoint],
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                             env={**os.environ, "CAPTURE_HOME": str(builder)})
    try:
        url = serve.stdout.readline().strip() if serve.stdout else ""
        server = psutil.Process(serve.pid)
        (tmp / "terms.md").write_text("Bench terms.\n")
        study = _capture(builder, "collector", "study", "create", "--url", url, "--name", "bench",
                         "--terms", str(tmp / "terms.md"), "--game", "factorygame", "--scope",
                         "video,keyboard,mouse,gamepad", "--purpose", "bench", "--licence",
                         "CC0-1.0").split()[-1]
        code = _capture(builder, "collector", "invite", "--url", url, "--study",
                        study).split()[-1]
        _capture(player, "enroll", url, code, "--player", "bench", "--yes")
        receipt = json.loads(next((player / "enrollments").glob("*.json")).read_text())
        runs: list[dict[str, Any]] = []
        for n in range(1, args.repeats + 1):
            session = _big_session(player, receipt["receipt_id"], "bench", args.mib, n)
            size = sum(p.stat().st_size for p in session.iterdir())
            cpu0 = server.cpu_times()
            began = time.monotonic()
            out = _capture(player, "upload", str(session), "--chunk-kib",
                           str(args.chunk_mib * 1024))
            upload_s = time.monotonic() - began
            cpu1 = server.cpu_times()
            assert out.strip().endswith("accepted"), out
            presigned = s3.generate_presigned_url(
                "put_object", Params={"Bucket": "bench", "Key": f"curl/{n}"}, ExpiresIn=600)
            began = time.monotonic()
            subprocess.run(["curl", "-sS", "-f", "-o", "/dev/null", "-T",
                            str(session / "video.mkv"), presigned], check=True)
            curl_s = time.monotonic() - began
            video_bytes = (session / "video.mkv").stat().st_size
            runs.append({
                "bundle_bytes": size, "upload_s": round(upload_s, 3),
                "upload_mib_s": round(size / upload_s / (1 << 20), 1),
                "curl_bytes": video_bytes, "curl_s": round(curl_s, 3),
                "curl_mib_s": round(video_bytes / curl_s / (1 << 20), 1),
                "collector_cpu_s": round((cpu1.user + cpu1.system) - (cpu0.user + cpu0.system),
                                         2),
                "collector_rss_mib": round(server.memory_info().rss / (1 << 20), 1)})
            print(json.dumps(runs[-1]), flush=True)
        timing = (_timing_while_uploading(player, receipt["receipt_id"], args)
                  if args.timing_seconds > 0 else None)
        result = {
            "bench": "upload",
            "capture_timing_while_uploading": timing, "machine": {"cpus": os.cpu_count(), "python":
                                           platform.python_version()},
            "setup": {"mib": args.mib, "chunk_mib": args.chunk_mib, "store": "moto S3 on loopback",
                      "database": "SQLite", "transport": "http on loopback"},
            "runs": runs,
            "note": "upload_s counts the whole `capture upload` process: start-up, local "
                    "hash check, tus chunks with SHA-256 checksums, and the collector's "
                    "assembly and checks; curl_s is one PUT of the video bytes only.",
        }
        RESULTS.write_text(json.dumps(result, indent=2) + "\n")
        print(RESULTS)
    finally:
        serve.terminate()
        serve.wait(20)
        moto.stop()


if __name__ == "__main__":
    main()
