"""Runs the demo: Xvfb, the bundled game, a synthetic consent, record, export, verify, summary."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from capture.demo.game import WINDOW_CLASS
from capture.errors import CaptureError
from capture.processes import stop_process

if TYPE_CHECKING:
    from capture.demo.player import Tally
    from capture.export import ExportReport, VerifyReport

DEMO_PLAYER = "demo-player"
DEMO_SCOPE = ["video", "keyboard", "mouse"]


@contextmanager
def _display(display: str | None) -> Iterator[str]:
    if display:
        yield display
        return
    from capture.xserver import Xvfb

    with Xvfb(1280, 720) as server:
        yield server.display


@contextmanager
def _other_window(display: str) -> Iterator[int]:
    """A plain window of another program, to show that input there is never recorded."""
    from Xlib import X
    from Xlib import display as xdisplay

    d = xdisplay.Display(display)
    screen = d.screen()
    # Bottom-right corner, clear of the centred game: a screen grab would show an overlapping
    # window (X11 without a compositor cannot see beneath it).
    x, y = screen.width_in_pixels - 310, screen.height_in_pixels - 210
    window = screen.root.create_window(x, y, 300, 200, 0, screen.root_depth,
                                       background_pixel=screen.white_pixel,
                                       event_mask=X.KeyPressMask | X.ButtonPressMask)
    window.set_wm_class("capture-demo-other", "CaptureDemoOther")
    window.set_wm_name("another program")
    window.map()
    d.sync()
    try:
        yield window.id
    finally:
        window.destroy()
        d.close()


def _find_window(display: str, game: str, timeout_s: float = 20.0) -> int:
    from Xlib import display as xdisplay

    from capture.inputs.x11window import find_window

    d = xdisplay.Display(display)
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            found = find_window(d, game)
            if found is not None:
                return found[0]
            time.sleep(0.1)
    finally:
        d.close()
    raise CaptureError(f"the demo game's window did not appear within {timeout_s:g} s")


def _prepare_out(out: Path) -> Path:
    out = out.resolve()
    dataset = out / "dataset"
    if dataset.exists():
        if not (dataset / "meta" / "info.json").exists():
            raise CaptureError("exists and is not a dataset the demo made; choose another --out",
                               dataset)
        shutil.rmtree(dataset)
    out.mkdir(parents=True, exist_ok=True)
    return out


def run_demo(out: Path, *, duration_s: float = 20.0, display: str | None = None,
             say: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the whole demo and return its summary (also printed through `say`)."""
    out = _prepare_out(out)
    os.environ["CAPTURE_HOME"] = str(out / "home")  # the demo's consent never mixes with yours
    from capture import consent
    from capture.demo.player import ScriptedPlayer
    from capture.export import export_dataset, format_report
    from capture.export.verify import verify_dataset
    from capture.session.recorder import RecordOptions, record

    receipt = consent.grant(DEMO_PLAYER, [WINDOW_CLASS], DEMO_SCOPE, method="demo-synthetic",
                            synthetic=True,
                            purposes=["demonstration of capture (synthetic player)"])
    say(f"demo consent {receipt.receipt_id} (synthetic) for {WINDOW_CLASS}")
    with _display(display) as disp:
        env = {**os.environ, "DISPLAY": disp}
        game = subprocess.Popen([sys.executable, "-m", "capture.demo.game"], env=env)
        try:
            game_window = _find_window(disp, WINDOW_CLASS)
            with _other_window(disp) as other_window:
                started = threading.Event()
                stop = threading.Event()
                result: dict[str, Any] = {}

                def run_recorder() -> None:
                    try:
                        result["session"] = record(
                            RecordOptions(game=WINDOW_CLASS, fps=30, duration_s=duration_s,
                                          out=out / "sessions", display=disp,
                                          wait_timeout_s=20, player=DEMO_PLAYER,
                                          stop_when_game_exits=True),
                            stop=stop, say=say, on_started=lambda _p: started.set())
                    except BaseException as exc:
                        result["error"] = exc
                        started.set()

                recorder = threading.Thread(target=run_recorder, name="demo-recorder")
                recorder.start()
                started.wait(30)
                if "error" in result:
                    raise result["error"]
                player = ScriptedPlayer(disp, game_window, other_window)
                tally = player.play(duration_s, stop)
                recorder.join()
                if "error" in result:
                    raise result["error"]
        finally:
            stop_process(game)

    session_dir: Path = result["session"]
    dataset = out / "dataset"
    say(f"exporting {session_dir.name} -> {dataset}")
    report = export_dataset([session_dir], dataset)
    verification = verify_dataset(dataset)
    summary = _summarise(session_dir, dataset, report, verification, tally)
    say(format_report(report))
    say(verification.summary())
    for line in summary["lines"]:
        say(line)
    if not verification.ok:
        raise CaptureError("the exported dataset failed verification (see above)", dataset)
    return summary


def _summarise(session_dir: Path, dataset: Path, report: ExportReport,
               verification: VerifyReport, tally: Tally) -> dict[str, Any]:
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from capture.inputs import EventKind
    from capture.session.reader import open_session

    session = open_session(session_dir)
    qa = session.manifest.qa
    assert qa is not None
    data = pq.read_table(sorted((dataset / "data").glob("*/*.parquet")))
    deltas = data.column("action.mouse_delta").combine_chunks().flatten().to_numpy()
    recorded_dx, recorded_dy = float(deltas[0::2].sum()), float(deltas[1::2].sum())
    events = session.events()
    presses = pc.sum(pc.equal(events.column("kind"), EventKind.KEY_PRESS.value)).as_py() or 0
    sent_presses = sum(tally.key_presses.values())
    kept_elsewhere = kept_elsewhere_counts(tally, events, dataset)
    lines = [
        "",
        "== capture demo ==",
        f"session   {session_dir}",
        f"dataset   {dataset}",
        f"recorded  {qa.frames} frames in {qa.duration_s:.1f} s, "
        f"{qa.fps_achieved:.1f} fps achieved, {qa.dropped_frames} dropped, "
        f"focused {qa.focused_s:.1f} s",
        f"inputs    {qa.input_total} events: "
        + ", ".join(f"{k} {v}" for k, v in qa.input_counts.items()),
        f"mouse     sent ({tally.mouse_dx:+.0f}, {tally.mouse_dy:+.0f}) while focused; "
        f"per-frame actions sum to ({recorded_dx:+.0f}, {recorded_dy:+.0f})",
        f"keys      {sent_presses} presses sent while focused, {presses} recorded; "
        + elsewhere_line(tally, kept_elsewhere),
        f"dataset   {report.episodes} episodes, {report.frames} frames at {report.fps} fps, "
        f"{report.events} events ({report.events_outside_episodes} outside episodes)",
        "alignment |capture time - grid time| worst episode p50/p95/max: "
        f"{max(e.offset_ms_p50 for e in report.episode_reports):.2f} / "
        f"{max(e.offset_ms_p95 for e in report.episode_reports):.2f} / "
        f"{max(e.offset_ms_max for e in report.episode_reports):.2f} ms",
        f"verify    {'OK' if verification.ok else 'FAILED'}",
    ]
    return {"session": str(session_dir), "dataset": str(dataset), "lines": lines,
            "mouse_sent": (tally.mouse_dx, tally.mouse_dy),
            "mouse_recorded": (recorded_dx, recorded_dy),
            "presses_sent": sent_presses, "presses_recorded": presses,
            "elsewhere_sent": dict(tally.elsewhere),
            "elsewhere_kept": kept_elsewhere}


INPUT_KINDS_IGNORED = ("focus_in", "focus_out")  # focus changes are not inputs sent elsewhere


def kept_elsewhere_counts(tally: Tally, events: Any, dataset: Path) -> dict[str, int]:
    """How many recorded input events (not focus changes, not synthetic releases) fall in the
    spans when the player was typing, moving, clicking and scrolling in another window: in the
    session's events and in the dataset's raw event stream."""
    import pyarrow.parquet as pq

    def count(t_ns: list[int], kinds: list[str], synthetic: list[bool | None]) -> int:
        return sum(1 for t, kind, synth in zip(t_ns, kinds, synthetic, strict=True)
                   if kind not in INPUT_KINDS_IGNORED and not synth
                   and any(a <= t <= b for a, b in tally.elsewhere_spans_ns))

    exported = pq.read_table(sorted((dataset / "meta" / "events").glob("*/*.parquet")),
                             columns=["t_ns", "kind", "synthetic"])
    return {name: count(table.column("t_ns").to_pylist(), table.column("kind").to_pylist(),
                        table.column("synthetic").to_pylist())
            for name, table in (("session", events), ("dataset", exported))}


def elsewhere_line(tally: Tally, kept: dict[str, int]) -> str:
    """The summary's claim about input sent to another window, as counted by
    kept_elsewhere_counts."""
    sent = tally.sent_while_unfocused
    if not tally.elsewhere_spans_ns:
        return "no input was sent to another window"
    kinds = ", ".join(f"{k} {v}" for k, v in sorted(tally.elsewhere.items()))
    span_s = sum(b - a for a, b in tally.elsewhere_spans_ns) / 1e9
    if not any(kept.values()):
        return (f"{sent} inputs sent to another window, none kept ({kinds}; no recorded event "
                f"in those {span_s:.1f} s, in the session or the dataset)")
    return (f"{sent} inputs sent to another window, KEPT: {kept['session']} recorded event(s) "
            f"in the session and {kept['dataset']} in the dataset fall in those {span_s:.1f} s")
