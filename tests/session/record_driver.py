"""Runs the recorder in a process of its own for crash tests: `capture record` plus segments."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

from capture.errors import CaptureError
from capture.session.manifest import read_manifest
from capture.session.recorder import RecordOptions, record


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--game", required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--display", required=True)
    parser.add_argument("--segment-s", type=float, default=None)
    args = parser.parse_args()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    opts = RecordOptions(game=args.game, out=args.out, display=args.display, fps=30,
                         wait_timeout_s=20, max_segment_s=args.segment_s)
    try:
        last = record(opts, stop=stop, say=lambda m: print(m, file=sys.stderr, flush=True))
    except CaptureError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        sys.exit(exc.exit_code)
    print(last, flush=True)
    if read_manifest(last).status == "incomplete":  # as `capture record` does
        sys.exit(1)


if __name__ == "__main__":
    main()
