"""The one host clock every timestamp is on, and (monotonic, UTC) pairs that anchor it."""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

if sys.platform == "win32":
    now_ns = time.perf_counter_ns
    CLOCK_NAME = "QueryPerformanceCounter"
else:
    now_ns = time.monotonic_ns
    CLOCK_NAME = "CLOCK_MONOTONIC"


@dataclass(frozen=True, slots=True)
class ClockPair:
    """A host-clock reading taken together with wall-clock UTC."""

    monotonic_ns: int
    utc: str  # ISO 8601 with microseconds and 'Z'

    @classmethod
    def now(cls) -> ClockPair:
        before = now_ns()
        wall = datetime.now(UTC)
        after = now_ns()
        return cls(monotonic_ns=(before + after) // 2, utc=utc_iso(wall))

    def to_dict(self) -> dict[str, int | str]:
        return {"monotonic_ns": self.monotonic_ns, "utc": self.utc}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ClockPair:
        return cls(monotonic_ns=int(d["monotonic_ns"]), utc=str(d["utc"]))


def utc_iso(dt: datetime | None = None) -> str:
    dt = dt or datetime.now(UTC)
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
