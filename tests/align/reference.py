"""Slow, obvious re-implementations of the alignment rules, to check capture.align against."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from capture import formats
from capture.align import EpisodeGrid, key_slot


def events_table(rows: list[dict[str, Any]]) -> pa.Table:
    return formats.table_from_rows(rows, formats.arrow_schema(formats.EVENTS_SCHEMA))


def frame_intervals(episodes: list[EpisodeGrid]) -> list[tuple[int, int, int, int]]:
    """(episode position, frame, start_ns, end_ns) of every output frame."""
    out = []
    for e, episode in enumerate(episodes):
        bounds = [episode.start_ns + round(i * 1e9 / episode.fps) for i in
                  range(episode.n_frames)] + [episode.end_ns]
        out += [(e, i, bounds[i], bounds[i + 1]) for i in range(episode.n_frames)]
    return out


def locate(t: int, intervals: list[tuple[int, int, int, int]]) -> tuple[int, int] | None:
    hits = [(e, i) for e, i, a, b in intervals if a <= t < b]
    assert len(hits) <= 1, f"time {t} lies in {len(hits)} frames"
    return hits[0] if hits else None


def key_holds(events: list[dict[str, Any]]) -> list[tuple[int, int, float]]:
    """(slot, pressed at, released at or inf) of every key hold, replaying events in order."""
    down: dict[Any, tuple[int, int]] = {}
    holds: list[tuple[int, int, float]] = []
    for ev in sorted(events, key=lambda e: e["t_ns"]):
        if ev["kind"] not in ("key_press", "key_release"):
            continue
        slot = key_slot(ev.get("key"))
        ident = slot if slot != key_slot(None) else ("other", ev.get("key"))
        if ev["kind"] == "key_press":
            down.setdefault(ident, (slot, ev["t_ns"]))
        elif ident in down:
            s, since = down.pop(ident)
            holds.append((s, since, ev["t_ns"]))
    holds += [(s, since, float("inf")) for s, since in down.values()]
    return holds


def keys_held(events: list[dict[str, Any]], intervals: list[tuple[int, int, int, int]],
              width: int) -> np.ndarray:
    out = np.zeros((len(intervals), width), dtype=np.uint8)
    for row, (_, _, a, b) in enumerate(intervals):
        for slot, since, until in key_holds(events):
            if (since < b and until > a) or a <= since < b:
                out[row, slot] = 1
    return out
