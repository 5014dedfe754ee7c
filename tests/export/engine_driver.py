"""One export in a process of its own, for the Ray engine: Ray's threads (gRPC's among them)
outlive `ray.shutdown()`, and a later fork of a process holding them can hang it, so Ray never
runs inside the test process. Usage: python -m tests.export.engine_driver '{"inputs": [...],
"out": ..., "engine": {...}, "size": [w, h] | null}'; prints the report's summary as JSON."""

from __future__ import annotations

import json
import sys

import pytest

from capture.export.engine import EngineOptions
from capture.export.lerobot import export_dataset
from tests.export.conftest import PSEUDONYM_KEY, stub_consent


def main() -> None:
    args = json.loads(sys.argv[1])
    size = tuple(args["size"]) if args.get("size") else None
    with pytest.MonkeyPatch.context() as monkeypatch:
        stub_consent(monkeypatch, "active")
        report = export_dataset(args["inputs"], args["out"], pseudonym_key=PSEUDONYM_KEY,
                                engine=EngineOptions(**args["engine"]), size=size)
    print(json.dumps({"engine": report.engine, "sessions": report.sessions,
                      "copied": [e.copied for e in report.episode_reports]}))


if __name__ == "__main__":
    main()
