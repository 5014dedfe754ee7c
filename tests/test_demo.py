"""`capture demo` runs end to end from the CLI with no display, and its numbers add up."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from capture.export.verify import verify_dataset


@pytest.mark.x11
@pytest.mark.slow
def test_demo_records_exports_and_verifies(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "CAPTURE_HOME")}
    out = tmp_path / "demo"
    result = subprocess.run([sys.executable, "-m", "capture", "demo", "--out", str(out),
                             "--duration", "12"], env=env, capture_output=True, text=True,
                            timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    log = result.stderr
    assert "verify    OK" in log
    mouse = re.search(r"mouse\s+sent \(([+-]\d+), ([+-]\d+)\) while focused; per-frame actions "
                      r"sum to \(([+-]\d+), ([+-]\d+)\)", log)
    assert mouse, log
    sent, recorded = mouse.groups()[:2], mouse.groups()[2:]
    assert sent == recorded and sent != ("+0", "+0")
    keys = re.search(r"keys\s+(\d+) presses sent while focused, (\d+) recorded; (\d+) inputs "
                     r"sent to another window, none kept \(click 1, key 1, move 10, wheel 1; "
                     r"no recorded event in those", log)
    assert keys, log
    assert keys.group(1) == keys.group(2) and int(keys.group(3)) == 13
    assert verify_dataset(out / "dataset").ok
    # the demo's synthetic consent stays in the demo's own data dir
    assert (out / "home" / "consent" / "ledger.jsonl").exists()


def test_the_none_kept_claim_is_computed_from_the_events(tmp_path: Path) -> None:
    """The summary says "none kept" only when no recorded event falls where the player was
    using another window; a click that leaked into the session or the dataset is reported."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from capture.demo.player import Tally
    from capture.demo.run import elsewhere_line, kept_elsewhere_counts

    tally = Tally(elsewhere=Counter(key=1, move=10, click=1, wheel=1),
                  elsewhere_spans_ns=[(1_000, 2_000)])

    def table(rows: list[tuple[int, str, bool]]) -> pa.Table:
        t_ns, kinds, synthetic = zip(*rows, strict=True)
        return pa.table({"t_ns": list(t_ns), "kind": list(kinds), "synthetic": list(synthetic)})

    clean = table([(900, "key_press", False), (1_500, "focus_out", False),
                   (1_600, "key_release", True), (2_100, "button_press", False)])
    dataset = tmp_path / "dataset"
    (dataset / "meta" / "events" / "chunk-000").mkdir(parents=True)
    events_file = dataset / "meta" / "events" / "chunk-000" / "file-000.parquet"
    pq.write_table(clean, events_file)
    kept = kept_elsewhere_counts(tally, clean, dataset)
    assert kept == {"session": 0, "dataset": 0}
    assert "13 inputs sent to another window, none kept (click 1, key 1, move 10, wheel 1" \
        in elsewhere_line(tally, kept)

    leaked = table([(1_200, "button_press", False), (1_900, "wheel", False)])
    pq.write_table(leaked, events_file)
    kept = kept_elsewhere_counts(tally, leaked, dataset)
    assert kept == {"session": 2, "dataset": 2}
    line = elsewhere_line(tally, kept)
    assert "none kept" not in line and "KEPT: 2 recorded event(s)" in line
