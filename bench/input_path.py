"""Benchmark: raw mouse events/s the X11 input backend captures without loss, and its CPU cost."""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import queue
import statistics
import sys
import threading
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from Xlib import X
from Xlib.display import Display

from capture.clock import now_ns
from capture.inputs._xorg import XorgInputBackend
from capture.inputs.xtest import XTestInjector
from capture.xserver import Xvfb

RATES = (250, 500, 1000, 2000, 4000, 8000, 16000, 32000)
GAME = "benchgame"
DRAIN_TIMEOUT_S = 3.0
RESULTS = Path(__file__).parent / "results" / "input_path.json"


def capture_process(display: str, conn: Connection) -> None:
    """Child: run the backend into a queue; answer snapshots of what arrived and the CPU used."""
    backend = XorgInputBackend(GAME, display=display)
    events: queue.SimpleQueue[Any] = queue.SimpleQueue()
    lock = threading.Lock()
    state = {"motion": 0, "sum_dx": 0.0, "focused": False}
    latencies_ns: list[int] = []

    def consume() -> None:
        while (event := events.get()) is not None:
            with lock:
                if event.kind == "motion":
                    state["motion"] += 1
                    state["sum_dx"] += event.dx
                    latencies_ns.append(now_ns() - event.t_ns)
                elif event.kind in ("focus_in", "focus_out"):
                    state["focused"] = event.kind == "focus_in"

    consumer = threading.Thread(target=consume, name="bench-consumer")
    consumer.start()
    backend.start(events.put)
    while (command := conn.recv()) != "stop":
        assert command == "snapshot"
        cpu_s = time.process_time()
        with lock:
            ordered = sorted(latencies_ns)
            latencies_ns.clear()
            conn.send({
                **state, "cpu_s": cpu_s, "wall_ns": now_ns(),
                "latency_p50_ms": ordered[len(ordered) // 2] / 1e6 if ordered else None,
                "latency_p99_ms": ordered[int(len(ordered) * 0.99)] / 1e6 if ordered else None,
            })
    backend.stop()
    events.put(None)
    consumer.join()
    conn.send({"notes": backend.info()["notes"]})


def inject_process(display: str, conn: Connection) -> None:
    """Child: for each (rate, seconds) asked, send relative moves of +1 px at that pace."""
    with XTestInjector(display) as injector:
        while (command := conn.recv()) is not None:
            rate, seconds = command
            total = int(rate * seconds)
            sent = 0
            start = time.monotonic()
            while sent < total:
                due = min(total, int((time.monotonic() - start) * rate) + 1)
                for _ in range(due - sent):
                    injector.move_relative(1, 0, sync=False)
                sent = due
                injector.flush()
                time.sleep(0.0005)
            injector.sync()
            conn.send({"sent": sent, "inject_s": time.monotonic() - start})


def run(seconds: float) -> dict[str, Any]:
    spawn = multiprocessing.get_context("spawn")
    with Xvfb() as server:
        display = Display(server.display)
        window = display.screen().root.create_window(
            0, 0, 640, 480, 0, X.CopyFromParent, X.InputOutput, X.CopyFromParent)
        window.set_wm_class(GAME, "BenchGame")
        window.map()
        display.sync()
        window.set_input_focus(X.RevertToParent, X.CurrentTime)
        display.sync()

        capture_conn, capture_child_conn = spawn.Pipe()
        inject_conn, inject_child_conn = spawn.Pipe()
        capture = spawn.Process(target=capture_process, args=(server.display, capture_child_conn))
        inject = spawn.Process(target=inject_process, args=(server.display, inject_child_conn))
        capture.start()
        inject.start()
        try:
            return _measure(capture_conn, inject_conn, seconds)
        finally:
            capture_conn.send("stop")
            notes = capture_conn.recv()["notes"]
            inject_conn.send(None)
            capture.join(10)
            inject.join(10)
            display.close()
            print("backend notes:", "; ".join(notes))


def _snapshot(conn: Connection) -> dict[str, Any]:
    conn.send("snapshot")
    return conn.recv()


def _measure(capture: Connection, inject: Connection, seconds: float) -> dict[str, Any]:
    deadline = time.monotonic() + 10
    while not _snapshot(capture)["focused"]:
        assert time.monotonic() < deadline, "the capture process never saw the game focused"
        time.sleep(0.02)

    idle_before = _snapshot(capture)
    time.sleep(1.0)
    idle_after = _snapshot(capture)
    idle_cpu = _cpu_percent(idle_before, idle_after)

    runs = []
    for rate in RATES:
        before = _snapshot(capture)
        inject.send((rate, seconds))
        injected = inject.recv()
        drained_at = time.monotonic()
        while True:
            after = _snapshot(capture)
            received = after["motion"] - before["motion"]
            if received >= injected["sent"] or time.monotonic() - drained_at > DRAIN_TIMEOUT_S:
                break
            time.sleep(0.005)
        runs.append({
            "target_rate": rate,
            "achieved_rate": round(injected["sent"] / injected["inject_s"]),
            "sent": injected["sent"],
            "received": received,
            "deltas_exact": after["sum_dx"] - before["sum_dx"] == injected["sent"],
            "drain_s": round(time.monotonic() - drained_at, 3),
            "cpu_percent": round(_cpu_percent(before, after), 1),
            "latency_p50_ms": after["latency_p50_ms"],
            "latency_p99_ms": after["latency_p99_ms"],
        })
        print(_describe(runs[-1]), flush=True)

    lossless = [r for r in runs if r["received"] == r["sent"] and r["deltas_exact"]
                and r["drain_s"] < 0.5]
    return {
        "benchmark": "input_path",
        "backend": XorgInputBackend.name,
        "seconds_per_rate": seconds,
        "host": {"python": platform.python_version(), "cpus": os.cpu_count(),
                 "machine": platform.machine(),
                 "load_average_1min_at_end": round(os.getloadavg()[0], 2)},
        "idle_cpu_percent": round(idle_cpu, 2),
        "cpu_percent_at_1000": next(r["cpu_percent"] for r in runs if r["target_rate"] == 1000),
        "max_lossless_rate": max((r["achieved_rate"] for r in lossless), default=0),
        "runs": runs,
    }


def _cpu_percent(before: dict[str, Any], after: dict[str, Any]) -> float:
    wall_s = (after["wall_ns"] - before["wall_ns"]) / 1e9
    return 100 * (after["cpu_s"] - before["cpu_s"]) / wall_s


def _describe(run: dict[str, Any]) -> str:
    latency = ""
    if run["latency_p50_ms"] is not None:
        latency = f", latency p50 {run['latency_p50_ms']:.2f} ms p99 {run['latency_p99_ms']:.2f} ms"
    return (f"{run['target_rate']:>5}/s (achieved {run['achieved_rate']}/s): "
            f"{run['received']}/{run['sent']} received, drain {run['drain_s']} s, "
            f"CPU {run['cpu_percent']} %{latency}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=5.0, help="injection time per rate")
    args = parser.parse_args()
    result = run(args.seconds)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"idle CPU {result['idle_cpu_percent']} %, CPU at 1000 events/s "
          f"{result['cpu_percent_at_1000']} %, lossless up to {result['max_lossless_rate']} "
          f"events/s (median of per-rate p50 latency "
          f"{statistics.median(r['latency_p50_ms'] for r in result['runs']):.2f} ms); "
          f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
