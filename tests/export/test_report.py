"""`capture report`: the HTML page rendered in headless Chromium has every plot, with real data."""

from __future__ import annotations

import functools
import http.server
import json
import re
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from capture.cli import cli
from capture.export import purge
from capture.export.lerobot import export_dataset
from capture.export.quality import QualityFilters
from capture.export.report import DOCTOR_PATH, render_report
from capture.export.vocabulary import KEY_NAMES
from tests.agent.browser import open_page
from tests.factories import build_session, gameplay_script

from .conftest import PSEUDONYM_KEY, stub_consent

DOCTOR = {"tool": "lerobot-doctor", "version": "0.1",
          "findings": [{"severity": "warning", "check": "action_clipping",
                        "feature": "action.keys_pressed",
                        "message": "97% of values at the minimum",
                        "doc": "sparse key presses, expected for gameplay"},
                       {"level": "info", "name": "video_decode", "message": "all frames decode"}]}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three players, two games; exported with filters; then one player purged."""
    root = tmp_path_factory.mktemp("report")
    sessions = [build_session(root / "s", gameplay_script(
        seed=i + 11, receipt_id=f"r-{i}", player=f"Player {i}",
        game="othergame" if i == 2 else "factorygame",
        session_id=f"20250301T12000{i}Z-game-00000{i}")) for i in range(4)]
    out = root / "ds"
    with pytest.MonkeyPatch.context() as monkeypatch:
        stub_consent(monkeypatch, "active")
        export_dataset(sessions, out, pseudonym_key=PSEUDONYM_KEY,
                       quality=QualityFilters(idle_s=0.5, idle_mode="flag", min_segment_s=0.1))
    purge.purge_dataset(out, receipts=["r-3"], reason="receipt")
    return out


@pytest.fixture
def served(dataset: Path, tmp_path: Path) -> Iterator[str]:
    """The report written by the command, served on loopback (the page fetches nothing)."""
    doctor = tmp_path / "doctor.json"
    doctor.write_text(json.dumps(DOCTOR))
    out = tmp_path / "report.html"
    result = CliRunner().invoke(cli, ["report", str(dataset), "--out", str(out),
                                      "--doctor", str(doctor)])
    assert result.exit_code == 0, result.output
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/report.html"
    finally:
        server.shutdown()
        server.server_close()


def test_report_renders_every_plot_in_chromium(served: str, dataset: Path,
                                               tmp_path: Path) -> None:
    episodes = pd.read_parquet(dataset / "meta/episodes/chunk-000/file-000.parquet")
    data = pd.read_parquet(dataset / "data/chunk-000/file-000.parquet")
    with open_page(served, width=1100, height=900) as session:
        page = session.page
        charts = page.eval_on_selector_all(
            "svg.chart", "els => els.map(e => [e.dataset.chart, e.getBoundingClientRect().width,"
                         " e.getBoundingClientRect().height])")
        names = {c[0] for c in charts}
        assert {"hours-per-game", "hours-per-player", "fps-per-session", "gaps-per-session",
                "repeated-per-session", "mouse-dx", "mouse-dy", "key-frequency",
                "quality-removed"} <= names
        assert all(w > 100 and h > 20 for _, w, h in charts), charts
        # one timeline per episode, each with three non-empty series
        timelines = page.locator("svg.timeline")
        assert timelines.count() == len(episodes) == 6
        points = page.eval_on_selector_all(
            "svg.timeline polyline", "els => els.map(e => +e.dataset.points)")
        assert points == [int(n) for n in episodes["length"] for _ in range(3)]
        # bars carry the real numbers
        games = dict(page.eval_on_selector_all(
            "[data-chart=hours-per-game] .bar",
            "els => els.map(e => [e.dataset.label, +e.dataset.value])"))
        expected = episodes.assign(game=episodes["tasks"].map(lambda t: t[0])).groupby(
            "game")["length"].sum() / 30 / 3600
        assert games == pytest.approx(expected.to_dict(), rel=1e-5)
        assert page.locator("[data-chart=hours-per-player] .bar").count() == 3
        bins = page.eval_on_selector_all("[data-chart=mouse-dx] rect.bin",
                                         "els => els.map(e => +e.dataset.count)")
        assert sum(bins) == len(data) and max(bins) > 0
        keys = dict(page.eval_on_selector_all(
            "[data-chart=key-frequency] .bar",
            "els => els.map(e => [e.dataset.label, +e.dataset.value])"))
        pressed = np.stack(data["action.keys_pressed"].to_numpy()).sum(axis=0)
        assert keys == {KEY_NAMES[i]: pressed[i] for i in np.flatnonzero(pressed)}
        fps = page.eval_on_selector_all("[data-chart=fps-per-session] .bar",
                                        "els => els.map(e => +e.dataset.value)")
        assert len(fps) == 3 and all(25 < f < 31 for f in fps)
        gaps = page.eval_on_selector_all("[data-chart=gaps-per-session] .bar",
                                         "els => els.map(e => +e.dataset.value)")
        assert gaps == [1, 1, 1]  # gameplay_script drops one slot per session
        assert page.locator("#quality-table tr[data-filter]").count() == 6
        assert page.locator("#purge-table tr").count() == 2  # header + one purge
        assert page.locator("#doctor-table tr.finding").count() == 2
        assert "sparse key presses" in page.locator("#doctor-table").inner_text()
        summary = page.locator("#summary").inner_text()
        assert f"frames\t{len(data)}" in summary and "episodes\t6" in summary
        assert session.screenshot(tmp_path / "dataset-report.png").stat().st_size > 10_000
        session.assert_clean()


def test_report_reads_doctor_json_in_the_dataset_and_names_no_player(dataset: Path,
                                                                     tmp_path: Path) -> None:
    html = render_report(dataset)
    assert 'id="doctor-none"' in html and "<script" not in html and "http" not in html.replace(
        "http-equiv", "")
    for i in range(4):
        assert f"Player {i}" not in html
    copy = tmp_path / "ds"
    shutil.copytree(dataset, copy)
    (copy / DOCTOR_PATH).write_text(json.dumps(DOCTOR["findings"]))
    assert "action_clipping" in render_report(copy)


def test_report_reads_lerobot_doctors_own_json(dataset: Path, tmp_path: Path) -> None:
    """The shape `lerobot-doctor check DIR --json` prints (lerobot-doctor 0.2.0)."""
    native = {"total_frames": 363, "checks": [
        {"name": "Metadata & Format Compliance", "severity": "PASS",
         "messages": [{"severity": "PASS", "message": "info.json valid"}]},
        {"name": "Action Quality", "severity": "FAIL",
         "messages": [{"severity": "FAIL", "message": "action.keys_pressed: clipping detected"},
                      {"severity": "WARN", "message": "action.keys_held: 97% at minimum"},
                      {"severity": "PASS", "message": "action.mouse_delta ok"}]}]}
    path = tmp_path / "doctor.json"
    path.write_text(json.dumps(native))
    html = render_report(dataset, doctor=path)
    rows = re.findall(r'<tr class="finding (\w+)"><td>\w+</td><td>([^<]*)</td><td></td>'
                      r"<td>([^<]*)</td><td>([^<]*)</td>", html)
    assert rows == [
        ("pass", "Metadata &amp; Format Compliance", "passed", ""),
        ("fail", "Action Quality", "action.keys_pressed: clipping detected",
         "a content heuristic written for robot joints; expected on gameplay inputs "
         "(docs/lerobot.md)"),
        ("warn", "Action Quality", "action.keys_held: 97% at minimum",
         "a content heuristic written for robot joints; expected on gameplay inputs "
         "(docs/lerobot.md)")]


def test_report_errors_are_plain(tmp_path: Path) -> None:
    missing = CliRunner().invoke(cli, ["report", str(tmp_path)])
    assert missing.exit_code == 1 and "is not a dataset" in missing.output
    assert "Traceback" not in missing.output
