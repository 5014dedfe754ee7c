"""`capture report`: a dataset as one HTML page (inline SVG, no script, no network access)."""

# lerobot-doctor findings come from a file given with --doctor, else DATASET/meta/doctor.json:
# - lerobot-doctor's own output (`lerobot-doctor check DATASET --json > doctor.json`):
#   {"checks": [{"name", "severity", "messages": [{"severity", "message"}]}], ...};
# - or a list of findings, or {"findings": [...]}, each {"severity" (or "level"), "check" (or
#   "name"), "message", optional "feature" and "doc" (what the finding means for gameplay data)}.
# Keep the file outside the dataset (--doctor) when the dataset lists its files' checksums.

from __future__ import annotations

import html
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from capture import __version__
from capture.errors import BadInputError, CaptureError
from capture.export import layout
from capture.export.purge import read_purge_log
from capture.export.quality import read_quality
from capture.export.vocabulary import KEY_NAMES

DOCTOR_PATH = "meta/doctor.json"
MAX_TIMELINES = 60        # episodes drawn as timelines (the first ones, in order)
TIMELINE_POINTS = 400     # points per timeline at most (frames are binned beyond that)
TOP_KEYS = 30
_W, _H = 640, 180         # chart size in px
_COLOURS = ("#3465a4", "#cc0000", "#4e9a06", "#f57900", "#75507b", "#c4a000")


def esc(value: object) -> str:
    return html.escape(str(value), quote=True)


# --- SVG primitives --------------------------------------------------------------------------
def bar_chart(chart: str, labels: list[str], values: list[float], *, unit: str,
              title: str, width: int = _W) -> str:
    """Horizontal bars, one per label, each with its value written next to it."""
    if not labels:
        return f'<p class="empty" data-chart="{esc(chart)}">nothing to show</p>'
    row = 22
    height = row * len(labels) + 10
    top = max(values) or 1.0
    label_w = min(260, 8 * max(len(x) for x in labels) + 10)
    span = width - label_w - 90
    parts = [f'<svg class="chart" data-chart="{esc(chart)}" role="img" width="{width}" '
             f'height="{height}" viewBox="0 0 {width} {height}"><title>{esc(title)}</title>']
    for i, (label, value) in enumerate(zip(labels, values, strict=True)):
        y = 5 + i * row
        w = max(1.0, span * value / top) if value > 0 else 0.0
        parts.append(
            f'<g class="bar" data-label="{esc(label)}" data-value="{value:.6g}">'
            f'<text x="{label_w - 6}" y="{y + 15}" text-anchor="end">{esc(label)}</text>'
            f'<rect x="{label_w}" y="{y + 2}" width="{w:.1f}" height="{row - 6}" '
            f'fill="{_COLOURS[0]}"/>'
            f'<text x="{label_w + w + 5:.1f}" y="{y + 15}">{value:.3g} {esc(unit)}</text></g>')
    parts.append("</svg>")
    return "".join(parts)


def histogram(chart: str, counts: np.ndarray, edges: np.ndarray, *, title: str,
              colour: str = _COLOURS[0], log: bool = True) -> str:
    """Vertical bars over bins; heights on a log scale by default (counts span decades)."""
    n = len(counts)
    left, bottom = 50, 30
    plot_w, plot_h = _W - left - 10, _H - bottom - 10
    scaled = np.log10(counts + 1) if log else counts.astype(float)
    top = float(scaled.max()) or 1.0
    bw = plot_w / max(n, 1)
    parts = [f'<svg class="chart" data-chart="{esc(chart)}" role="img" width="{_W}" '
             f'height="{_H}" viewBox="0 0 {_W} {_H}"><title>{esc(title)}</title>',
             f'<line x1="{left}" y1="{10 + plot_h}" x2="{_W - 10}" y2="{10 + plot_h}" '
             'stroke="#888"/>']
    for i in range(n):
        h = plot_h * scaled[i] / top
        x = left + i * bw
        parts.append(f'<rect class="bin" data-count="{int(counts[i])}" '
                     f'data-from="{edges[i]:.6g}" data-to="{edges[i + 1]:.6g}" '
                     f'x="{x:.1f}" y="{10 + plot_h - h:.1f}" width="{max(bw - 1, 1):.1f}" '
                     f'height="{h:.1f}" fill="{colour}"><title>{edges[i]:.4g} to '
                     f'{edges[i + 1]:.4g}: {int(counts[i])}</title></rect>')
    for i in (0, n // 2, n):
        x = left + i * bw
        parts.append(f'<text x="{x:.1f}" y="{_H - 10}" text-anchor="middle">'
                     f'{edges[min(i, n)]:.3g}</text>')
    parts.append(f'<text x="5" y="20">{"log " if log else ""}count</text></svg>')
    return "".join(parts)


def timeline(chart: str, series: dict[str, np.ndarray], *, seconds: float,
             title: str) -> str:
    """Lines over an episode's time, each series scaled to its own maximum."""
    left, plot_w, h_each = 40, _W - 50, 34
    height = h_each * len(series) + 24
    parts = [f'<svg class="chart timeline" data-chart="{esc(chart)}" role="img" width="{_W}" '
             f'height="{height}" viewBox="0 0 {_W} {height}"><title>{esc(title)}</title>']
    for k, (name, values) in enumerate(series.items()):
        y0 = 4 + k * h_each
        top = float(np.max(values)) if len(values) else 0.0
        if len(values) > 1:
            xs = left + np.arange(len(values)) * plot_w / (len(values) - 1)
            ys = y0 + h_each - 6 - (values / (top or 1.0)) * (h_each - 10)
            points = " ".join(f"{x:.1f},{y:.1f}" for x, y in zip(xs, ys, strict=True))
            parts.append(f'<polyline class="series" data-series="{esc(name)}" '
                         f'data-max="{top:.6g}" data-points="{len(values)}" points="{points}" '
                         f'fill="none" stroke="{_COLOURS[k % len(_COLOURS)]}" '
                         'stroke-width="1.2"/>')
        parts.append(f'<text x="{left + 4}" y="{y0 + 10}" class="series-label">{esc(name)} '
                     f'(max {top:.3g})</text>')
    parts.append(f'<text x="{left}" y="{height - 4}">0 s</text><text x="{_W - 10}" '
                 f'y="{height - 4}" text-anchor="end">{seconds:.1f} s</text></svg>')
    return "".join(parts)


# --- reading the dataset ----------------------------------------------------------------------
@dataclass(slots=True)
class _Dataset:
    """What the report needs, read data file by data file (an episode never spans two files):
    per-row mouse deltas (float32), per-episode counts, and rows of the first episodes only."""

    root: Path
    info: dict[str, Any]
    episodes: pd.DataFrame
    dx: np.ndarray
    dy: np.ndarray
    rows: int = 0
    pressed: np.ndarray = field(default_factory=lambda: np.zeros(len(KEY_NAMES), np.int64))
    shown: dict[int, int] = field(default_factory=dict)     # episode -> distinct source frames
    dropped: dict[int, int] = field(default_factory=dict)   # episode -> gaps in capture times
    timelines: dict[int, dict[str, np.ndarray]] = field(default_factory=dict)


def _matrix(table: pa.Table, name: str) -> np.ndarray:
    column = table.column(name).combine_chunks()
    values: np.ndarray = column.flatten().to_numpy(zero_copy_only=False)
    return values.reshape(len(column), -1)


def _load(root: Path) -> _Dataset:
    info_path = root / layout.INFO_PATH
    if not info_path.is_file():
        raise CaptureError("is not a dataset (meta/info.json is missing)", root)
    try:
        info = json.loads(info_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise BadInputError(f"is not valid JSON ({exc.msg})", info_path) from None
    episode_files = sorted(root.glob("meta/episodes/chunk-*/file-*.parquet"))
    episodes = (pd.concat([pd.read_parquet(p) for p in episode_files], ignore_index=True)
                if episode_files else pd.DataFrame())
    drawn = set(episodes["episode_index"].head(MAX_TIMELINES).tolist()) if len(episodes) else set()
    columns = ["episode_index", "capture_time_ns", "action.mouse_delta", "action.keys_held",
               "action.keys_pressed", "action.mouse_buttons"]
    ds = _Dataset(root=root, info=info, episodes=episodes, dx=np.zeros(0, np.float32),
                  dy=np.zeros(0, np.float32))
    dxs, dys = [], []
    for path in sorted(root.glob("data/chunk-*/file-*.parquet")):
        table = pq.read_table(path, columns=columns)
        ds.rows += table.num_rows
        deltas = _matrix(table, "action.mouse_delta").astype(np.float32)
        dxs.append(deltas[:, 0])
        dys.append(deltas[:, 1])
        ds.pressed += _matrix(table, "action.keys_pressed").astype(np.int64).sum(axis=0)
        episode = table.column("episode_index").to_numpy()
        capture = table.column("capture_time_ns").to_numpy()
        held = _matrix(table, "action.keys_held")
        buttons = _matrix(table, "action.mouse_buttons")
        for ep in np.unique(episode).tolist():
            rows = episode == ep
            times = np.unique(capture[rows])
            ds.shown[ep] = len(times)
            spacing = np.diff(times)
            step = float(np.median(spacing)) if len(spacing) else 0.0
            ds.dropped[ep] = (int(np.clip(np.round(spacing / step) - 1, 0, None).sum())
                              if step else 0)
            if ep in drawn:
                ds.timelines[ep] = {
                    "mouse |dx|+|dy|": _binned(np.abs(deltas[rows]).sum(axis=1)),
                    "keys held": _binned(held[rows].sum(axis=1).astype(float)),
                    "mouse buttons held": _binned(buttons[rows].sum(axis=1).astype(float))}
    if dxs:
        ds.dx, ds.dy = np.concatenate(dxs), np.concatenate(dys)
    return ds


# lerobot-doctor's checks written for robot joints: on gameplay inputs they fire without anything
# being wrong (docs/lerobot.md says why, check by check).
DOCTOR_HEURISTICS = {"Action Quality", "Data Distribution", "Episode Health", "Training Readiness",
                     "Anomaly Detection", "Per-Episode Summary"}
HEURISTIC_DOC = ("a content heuristic written for robot joints; expected on gameplay inputs "
                 "(docs/lerobot.md)")


def _from_doctor_checks(checks: list[Any], path: Path) -> list[dict[str, Any]]:
    """lerobot-doctor --json's checks, one finding per message that is not a PASS."""
    out: list[dict[str, Any]] = []
    for check in checks:
        if not isinstance(check, dict):
            raise BadInputError("every check must be a JSON object", path)
        name = str(check.get("name", ""))
        doc = HEURISTIC_DOC if name in DOCTOR_HEURISTICS else ""
        messages = [m for m in check.get("messages") or [] if isinstance(m, dict)]
        shown = [m for m in messages if str(m.get("severity", "")).upper() != "PASS"]
        if not shown:
            out.append({"severity": check.get("severity", "info"), "check": name,
                        "message": "passed" if str(check.get("severity")).upper() == "PASS"
                        else "", "doc": doc})
        out += [{"severity": m.get("severity", check.get("severity", "info")), "check": name,
                 "message": m.get("message", ""), "doc": doc} for m in shown]
    return out


def read_doctor(path: Path) -> list[dict[str, str]]:
    """lerobot-doctor findings, normalised to {severity, check, message, feature, doc}."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise BadInputError(f"is not valid JSON ({exc.msg})", path) from None
    if isinstance(raw, dict) and isinstance(raw.get("checks"), list):
        raw = _from_doctor_checks(raw["checks"], path)
    items = raw.get("findings") if isinstance(raw, dict) else raw
    if not isinstance(items, list):
        raise BadInputError("needs a list of findings (or {\"findings\": [...]})", path)
    out = []
    for item in items:
        if not isinstance(item, dict):
            raise BadInputError("every finding must be a JSON object", path)
        out.append({"severity": str(item.get("severity", item.get("level", "info"))).lower(),
                    "check": str(item.get("check", item.get("name", ""))),
                    "message": str(item.get("message", "")),
                    "feature": str(item.get("feature", "") or ""),
                    "doc": str(item.get("doc", "") or "")})
    return out


# --- sections ---------------------------------------------------------------------------------
def _hours_section(ds: _Dataset, fps: int) -> str:
    eps = ds.episodes
    if eps.empty:
        return "<p>No episodes.</p>"
    hours = eps["length"] / fps / 3600
    games = eps.assign(game=eps["tasks"].map(lambda t: next(iter(t), "?")), h=hours)
    per_game = games.groupby("game")["h"].sum().sort_values(ascending=False)
    per_player = games.groupby("player")["h"].sum().sort_values(ascending=False)
    return ("<h3>Hours per game</h3>" + bar_chart(
                "hours-per-game", per_game.index.tolist(), per_game.tolist(), unit="h",
                title="hours per game")
            + "<h3>Hours per player (keyed pseudonyms)</h3>" + bar_chart(
                "hours-per-player", [p[:14] + "…" for p in per_player.index],
                per_player.tolist(), unit="h", title="hours per player"))


def _session_rates(ds: _Dataset, fps: int) -> pd.DataFrame:
    """Per session: source fps achieved, frames the recorder dropped (gaps in the capture
    times of the frames shown, in units of their median spacing), source frames resampling
    skipped, and exported frames repeating the frame before."""
    rows = []
    for session_id, eps in ds.episodes.groupby("session_id", sort=False):
        index = eps["episode_index"].tolist()
        shown = sum(ds.shown.get(e, 0) for e in index)
        seconds = float(eps["length"].sum()) / fps
        skipped = int(eps["alignment/source_frames_dropped"].sum())
        rows.append({"session": str(session_id),
                     "fps": (shown + skipped) / seconds if seconds else 0.0,
                     "dropped": sum(ds.dropped.get(e, 0) for e in index), "skipped": skipped,
                     "repeated": int(eps["alignment/source_frames_repeated"].sum())})
    return pd.DataFrame(rows, columns=["session", "fps", "dropped", "skipped", "repeated"])


def _rates_section(ds: _Dataset, fps: int) -> str:
    rates = _session_rates(ds, fps)
    labels = [s[:32] for s in rates["session"]]
    return ("<h3>Source frame rate per session</h3>"
            f"<p>Source frames captured per second of exported time (dataset: {fps} fps).</p>"
            + bar_chart("fps-per-session", labels, rates["fps"].tolist(), unit="fps",
                        title="fps per session")
            + "<h3>Gaps in the frames shown, per session</h3>"
            "<p>Source frame intervals missing between consecutive frames shown (a gap of k "
            "median intervals counts k - 1): frames the recorder dropped, or that resampling "
            "skipped.</p>"
            + bar_chart("gaps-per-session", labels,
                        [float(v) for v in rates["dropped"]], unit="frames",
                        title="gaps per session")
            + "<h3>Source frames skipped by resampling per session</h3>"
            + bar_chart("skipped-per-session", labels,
                        [float(v) for v in rates["skipped"]], unit="frames",
                        title="skipped per session")
            + "<h3>Repeated frames per session</h3>"
            + bar_chart("repeated-per-session", labels,
                        [float(v) for v in rates["repeated"]], unit="frames",
                        title="repeated per session"))


def _histograms_section(ds: _Dataset) -> str:
    parts = []
    for values, name in ((ds.dx, "dx"), (ds.dy, "dy")):
        moving = values[values != 0]
        lim = float(np.percentile(np.abs(moving), 99)) if len(moving) else 1.0
        edges = np.linspace(-max(lim, 1.0), max(lim, 1.0), 41)
        counts, _ = np.histogram(np.clip(values, edges[0], edges[-1]), bins=edges)
        parts.append(f"<h3>Mouse {name} per frame (raw device units, summed)</h3>"
                     + histogram(f"mouse-{name}", counts, edges,
                                 title=f"mouse {name} histogram"))
    pressed = ds.pressed
    order = [int(i) for i in np.argsort(-pressed, kind="stable")[:TOP_KEYS] if pressed[i] > 0]
    parts.append(f"<h3>Key presses (top {TOP_KEYS})</h3>" + bar_chart(
        "key-frequency", [KEY_NAMES[i] for i in order], [float(pressed[i]) for i in order],
        unit="presses", title="key presses"))
    return "".join(parts)


def _timelines_section(ds: _Dataset, fps: int) -> str:
    parts = []
    for _, ep in ds.episodes.head(MAX_TIMELINES).iterrows():
        series = ds.timelines.get(int(ep["episode_index"]), {})
        seconds = int(ep["length"]) / fps
        parts.append(f'<div class="episode" data-episode="{int(ep["episode_index"])}">'
                     f'<h4>Episode {int(ep["episode_index"])} · {esc(ep["session_id"])} · '
                     f'{seconds:.1f} s</h4>'
                     + timeline(f"timeline-{int(ep['episode_index'])}", series,
                                seconds=seconds, title=f"episode {ep['episode_index']}")
                     + "</div>")
    more = len(ds.episodes) - MAX_TIMELINES
    if more > 0:
        parts.append(f"<p>{more} more episodes not drawn.</p>")
    return "".join(parts) or "<p>No episodes.</p>"


def _binned(values: np.ndarray) -> np.ndarray:
    """At most TIMELINE_POINTS points: the maximum of each bin (spikes stay visible)."""
    if len(values) <= TIMELINE_POINTS:
        return values
    bins = np.array_split(values, TIMELINE_POINTS)
    return np.array([b.max() for b in bins])


def _quality_section(root: Path) -> str:
    record = read_quality(root)
    if record is None:
        return ('<p id="quality-none">The export applied no quality filter '
                "(meta/quality.json is absent).</p>")
    active = {k: v for k, v in record["filters"].items() if v not in (None, False)}
    removed = record["removed"]
    rows = "".join(f'<tr data-filter="{esc(name)}"><td>{esc(name)}</td><td>{r["episodes"]}</td>'
                   f'<td>{r["frames"]}</td><td>{r["seconds"]:.1f}</td><td>{r["sessions"]}</td>'
                   "</tr>" for name, r in removed.items())
    flagged = record["idle_flagged"]
    return (f"<p>At export, filters <code>{esc(json.dumps(active))}</code>: "
            f"{record['episodes_before']} → {record['episodes_after']} episodes, "
            f"{record['frames_before']} → {record['frames_after']} frames.</p>"
            '<table id="quality-table"><tr><th>filter</th><th>episodes</th><th>frames</th>'
            f"<th>seconds</th><th>sessions</th></tr>{rows}</table>"
            + bar_chart("quality-removed", list(removed),
                        [float(r["seconds"]) for r in removed.values()], unit="s",
                        title="seconds removed per filter")
            + (f"<p>Idle spans flagged and kept: {len(flagged)} "
               f"({sum(s['seconds'] for s in flagged):.1f} s).</p>" if flagged else ""))


def _purge_section(root: Path) -> str:
    log = read_purge_log(root)
    if not log:
        return "<p>No purge has changed this dataset.</p>"
    rows = "".join(f"<tr><td>{esc(e['utc'])}</td><td>{esc(e['reason'])}</td>"
                   f"<td>{e['episodes_removed']}</td><td>{e['frames_removed']}</td>"
                   f"<td>{len(e['receipt_ids'])}</td></tr>" for e in log)
    return ('<table id="purge-table"><tr><th>UTC</th><th>why</th><th>episodes removed</th>'
            f"<th>frames removed</th><th>receipts</th></tr>{rows}</table>")


def _doctor_section(findings: list[dict[str, str]] | None, source: str) -> str:
    if findings is None:
        return ('<p id="doctor-none">No lerobot-doctor findings were given '
                f"({esc(DOCTOR_PATH)} is absent; see --doctor).</p>")
    by_severity = Counter(f["severity"] for f in findings)
    rows = "".join(f'<tr class="finding {esc(f["severity"])}"><td>{esc(f["severity"])}</td>'
                   f'<td>{esc(f["check"])}</td><td>{esc(f["feature"])}</td>'
                   f'<td>{esc(f["message"])}</td><td>{esc(f["doc"])}</td></tr>'
                   for f in findings)
    summary = ", ".join(f"{n} {s}" for s, n in sorted(by_severity.items())) or "none"
    return (f"<p>From {esc(source)}: {summary}.</p>"
            '<table id="doctor-table"><tr><th>severity</th><th>check</th><th>feature</th>'
            f"<th>finding</th><th>what it means here</th></tr>{rows}</table>")


_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:2em auto;max-width:1000px;color:#222}
h1{font-size:1.6em} h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}
svg.chart{display:block;margin:.3em 0 1em;background:#fafafa;border:1px solid #eee}
svg text{font:11px system-ui,sans-serif;fill:#333}
table{border-collapse:collapse;margin:.5em 0} td,th{border:1px solid #ddd;padding:2px 8px}
.finding.error td:first-child,.finding.fail td:first-child{color:#c00;font-weight:bold}
.finding.warning td:first-child,.finding.warn td:first-child{color:#b60}
.summary td:first-child{font-weight:bold}
"""


def render_report(dataset: Path | str, *, doctor: Path | str | None = None) -> str:
    """The report of `dataset` as one HTML document (everything inline)."""
    root = Path(dataset)
    ds = _load(root)
    fps = int(ds.info["fps"])
    doctor_path = Path(doctor) if doctor is not None else root / DOCTOR_PATH
    if doctor is not None and not doctor_path.is_file():
        raise CaptureError("doctor findings file does not exist", doctor_path)
    findings = read_doctor(doctor_path) if doctor_path.is_file() else None
    frames = int(ds.info["total_frames"])
    height, width = ds.info["features"][layout.VIDEO_KEY]["shape"][:2]
    sessions = ds.episodes["session_id"].nunique() if not ds.episodes.empty else 0
    players = ds.episodes["player"].nunique() if not ds.episodes.empty else 0
    summary = (
        '<table class="summary" id="summary">'
        f"<tr><td>episodes</td><td>{int(ds.info['total_episodes'])}</td></tr>"
        f"<tr><td>frames</td><td>{frames}</td></tr>"
        f"<tr><td>hours</td><td>{frames / fps / 3600:.3f}</td></tr>"
        f"<tr><td>sessions</td><td>{sessions}</td></tr>"
        f"<tr><td>players (pseudonymised)</td><td>{players}</td></tr>"
        f"<tr><td>video</td><td>{width}x{height} at {fps} fps</td></tr></table>")
    body = [
        f"<h1>Dataset report: {esc(root.resolve().name)}</h1>",
        f"<p>Made by capture {esc(__version__)} from {esc(root.resolve())}. Players appear only "
        "by keyed pseudonym.</p>", summary,
        '<h2 id="hours">Hours per game and player</h2>', _hours_section(ds, fps),
        '<h2 id="rates">Frame rate and drops</h2>', _rates_section(ds, fps),
        '<h2 id="histograms">Mouse and keys</h2>', _histograms_section(ds),
        '<h2 id="quality">What the quality filters removed</h2>', _quality_section(root),
        '<h2 id="purges">Withdrawals purged</h2>', _purge_section(root),
        '<h2 id="doctor">lerobot-doctor findings</h2>',
        _doctor_section(findings, str(doctor_path)),
        '<h2 id="timelines">Per-episode action timelines</h2>', _timelines_section(ds, fps),
    ]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; "
            "style-src 'unsafe-inline'\">"
            f"<title>{esc(root.resolve().name)}: dataset report</title><style>{_CSS}</style>"
            "</head><body>" + "\n".join(body) + "</body></html>\n")


def write_report(dataset: Path | str, out: Path | str | None = None, *,
                 doctor: Path | str | None = None) -> Path:
    """Write the report (default: DATASET-report.html next to the dataset, which stays as it
    was); written whole, then renamed into place."""
    root = Path(dataset)
    target = (Path(out) if out is not None
              else root.resolve().parent / f"{root.resolve().name}-report.html")
    text = render_report(root, doctor=doctor)
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(target)
    return target
