"""The dataset card (README.md): provenance, consent, licences, features and the key vocabulary."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from capture import __version__, formats
from capture.align import GAP_FACTOR
from capture.export import layout
from capture.export.vocabulary import (
    GAMEPAD_AXES,
    GAMEPAD_BUTTONS,
    KEY_ALIASES,
    KEY_NAMES,
    MOUSE_BUTTONS,
)


@dataclass(frozen=True, slots=True)
class SessionSummary:
    """What the card says about one exported session."""

    session_id: str
    game: str
    license: str
    synthetic_consent: bool
    episodes: int
    frames: int


def _hub_license(licenses: set[str]) -> str:
    return next(iter(licenses)).lower() if len(licenses) == 1 else "other"


def _quality_lines(quality: Mapping[str, Any] | None) -> list[str]:
    if not quality:
        return ["No quality filter was applied at export (`capture export --help` lists them).",
                ""]
    lines = [f"Quality filters applied at export: {quality['episodes_before']} -> "
             f"{quality['episodes_after']} episodes, {quality['frames_before']} -> "
             f"{quality['frames_after']} frames (`meta/quality.json` has the details).", "",
             "| filter | episodes removed | frames removed | seconds removed |",
             "|---|---|---|---|"]
    lines += [f"| {name} | {r['episodes']} | {r['frames']} | {r['seconds']:.1f} |"
              for name, r in quality["removed"].items()]
    flagged = quality.get("idle_flagged") or []
    if flagged:
        lines += ["", f"Idle spans flagged but kept: {len(flagged)} "
                      f"({sum(s['seconds'] for s in flagged):.1f} s)."]
    return [*lines, ""]


def _purge_lines(purges: Sequence[Mapping[str, Any]]) -> list[str]:
    lines = ["A withdrawn consent reaches this dataset through `capture dataset purge`, which "
             "removes every frame, event and video frame of the withdrawn sessions and appends "
             "to `meta/purge-log.jsonl` (counts, receipt ids and times; no names)."]
    if not purges:
        return [*lines, "No purge has been applied to this dataset.", ""]
    removed = sum(int(p["episodes_removed"]) for p in purges)
    frames = sum(int(p["frames_removed"]) for p in purges)
    return [*lines, "", f"Purges applied: {len(purges)}, the last on {purges[-1]['utc']}; "
                        f"{removed} episodes and {frames} frames removed in all.", ""]


def _loading_lines(name: str, location: str | None) -> list[str]:
    where = location or f"/path/to/{name}"
    note = ("" if location else " (replace the path with where this folder is)")
    return [
        "## Loading",
        "",
        f"With LeRobot (`pip install \"lerobot[dataset]\"`, Python 3.12+){note}:",
        "",
        "```python",
        "import os",
        "os.environ.setdefault(\"HF_HUB_OFFLINE\", \"1\")  # a local dataset: no hub needed",
        "from lerobot.datasets.lerobot_dataset import LeRobotDataset",
        "",
        f"dataset = LeRobotDataset(repo_id=\"local/{name}\", root={where!r})",
        "frame = dataset[0]  # observation.image, action.*, timestamp, ...",
        "print(len(dataset), sorted(frame))",
        "```",
        "",
        "With Hugging Face `datasets` (the per-frame table; the video stays in `videos/`):",
        "",
        "```python",
        "from datasets import load_dataset",
        "",
        f"frames = load_dataset(\"parquet\", data_files={where + '/data/*/*.parquet'!r}, "
        "split=\"train\")",
        "print(frames)",
        "```",
        "",
    ]


def render_card(*, name: str, fps: int, width: int, height: int, max_episode_s: float,
                sessions: list[SessionSummary], quality: Mapping[str, Any] | None = None,
                purges: Sequence[Mapping[str, Any]] | None = None,
                location: str | None = None) -> str:
    """The card; `location` is the dataset's absolute path, for loading snippets that work as
    written (None: a placeholder path)."""
    licenses = {s.license for s in sessions}
    games = sorted({s.game for s in sessions})
    synthetic = sum(s.synthetic_consent for s in sessions)
    frames = sum(s.frames for s in sessions)
    episodes = sum(s.episodes for s in sessions)
    frames_per_license: Counter[str] = Counter()
    for s in sessions:
        frames_per_license[s.license] += s.frames
    docs = {f["name"]: f.get("doc", "") for f in
            formats.arrow_schema_doc(layout.FRAMES_SCHEMA)["fields"]}
    feature_rows = [f"| `{layout.VIDEO_KEY}` | video {width}x{height} H.264 yuv420p, {fps} fps "
                    "| the game window |"]
    for feature, spec in layout.features(width, height, fps).items():
        if feature == layout.VIDEO_KEY:
            continue
        shape = "x".join(str(d) for d in spec["shape"])
        feature_rows.append(f"| `{feature}` | {spec['dtype']}[{shape}] | {docs.get(feature, '')} |")
    aliases = ", ".join(f"`{a}`->`{t}`" for a, t in KEY_ALIASES.items() if a.lower() != t)
    lines = [
        "---",
        f"license: {_hub_license(licenses)}",
        "tags:",
        "  - LeRobot",
        "  - gameplay",
        "  - world-model",
        "configs:",
        "  - config_name: default",
        "    data_files: data/*/*.parquet",
        "---",
        "",
        f"# {name}",
        "",
        f"Gameplay video with the player's inputs aligned per frame, in the LeRobot v3.0 format "
        f"(`codebase_version` {layout.CODEBASE_VERSION}). Exported by capture {__version__}.",
        "",
        f"{episodes} episodes, {frames} frames at {fps} fps ({frames / fps / 60:.1f} min) from "
        f"{len(sessions)} recording session{'s' if len(sessions) != 1 else ''} of: "
        f"{', '.join(games)}.",
        "",
        "## Provenance and consent",
        "",
        "Every session was recorded by capture under an explicit, revocable consent receipt of "
        "the player. The export checked each receipt against the consent ledger and refused "
        "sessions whose consent was withdrawn or could not be found. Players are named only by a "
        "keyed pseudonym (`player` in `meta/episodes`: an HMAC of the name under the exporter's "
        "secret key); raw names and window titles are not included.",
        "",
        f"Sessions with synthetic consent (demo or test data, no real player): {synthetic} of "
        f"{len(sessions)}.",
        "",
        "| licence | sessions | frames |",
        "|---|---|---|",
        *(f"| {lic} | {sum(s.license == lic for s in sessions)} | {frames_per_license[lic]} |"
          for lic in sorted(licenses)),
        "",
        "Each episode row carries its `session_id`, `consent_receipt_id`, `license`, `player` "
        "and `synthetic_consent`; use them to honour licences and later withdrawals. "
        f"`{layout.CONSENT_PATH}` repeats them by episode and by session, with each episode's "
        "first and last `capture_time_ns`. Tools that know only LeRobot's columns and files "
        "(LeRobot's `dataset_tools`: delete, split, merge) drop these columns, "
        f"`{layout.CONSENT_PATH}` and `meta/events`; keep the original "
        f"`{layout.CONSENT_PATH}` with any edited copy: the edited episodes are matched back to "
        "their consent by capture times (`capture.export.verify.trace_consent`).",
        "",
        "## Quality filters",
        "",
        *_quality_lines(quality),
        "## Withdrawals",
        "",
        *_purge_lines(list(purges or [])),
        "## Integrity and statistics",
        "",
        f"`{layout.CHECKSUMS_PATH}` lists the SHA-256 of every other file; "
        "`capture dataset verify` recomputes them. `meta/stats.json` and the per-episode "
        "`stats/<feature>/<stat>` columns of `meta/episodes` hold min, max, mean, std, count "
        "and the quantiles q01, q10, q50, q90, q99, computed as LeRobot 0.6.1 computes them "
        "(per episode: 5,000-bin histogram quantiles; video from sampled frames, per channel "
        "in [0, 1]; dataset: LeRobot's aggregation, quantiles as count-weighted means of the "
        "episodes').",
        "",
        "## Alignment",
        "",
        "Video frames and inputs were stamped on one host monotonic clock. A session is cut into "
        f"continuous runs where consecutive frames are at most {GAP_FACTOR} recording intervals "
        "apart (longer gaps are pauses, e.g. the game lost focus), runs into episodes of at most "
        f"{max_episode_s:g} s. Episode frame i covers the host-clock interval "
        "[grid_start_ns + round(i*1e9/fps), the next grid time) and shows the recorded frame "
        "captured nearest to its start (`capture_time_ns`). Actions summarise that interval: "
        "mouse deltas and wheel clicks are summed, never averaged; held keys and buttons are "
        "multi-hot of anything down at any time in the interval, with holds tracked across "
        "frames, episodes and pauses. Every raw input event is kept in "
        "`meta/events/chunk-*/file-*.parquet` with the episode and frame it falls in (null "
        "while paused). Alignment quality per episode is in the `alignment/*` columns of "
        "`meta/episodes`.",
        "",
        "## Features",
        "",
        "| feature | type | meaning |",
        "|---|---|---|",
        *feature_rows,
        "",
        "Multi-hot features are uint8 0/1.",
        "",
        "## Vocabularies",
        "",
        f"Mouse buttons: {', '.join(MOUSE_BUTTONS)}.",
        "",
        f"Gamepad axes: {', '.join(GAMEPAD_AXES)}; buttons (SDL GameController names): "
        f"{', '.join(GAMEPAD_BUTTONS)}.",
        "",
        f"Keys ({len(KEY_NAMES)} slots, X11 keysym names of a US keyboard; keys outside the "
        "vocabulary count in `other`): " + ", ".join(f"`{k}`" for k in KEY_NAMES) + ".",
        "",
        "Upper-case letters count as their lower-case key; other names of the same physical "
        f"key: {aliases}.",
        "",
        *_loading_lines(name, location),
    ]
    return "\n".join(lines)
