"""Every kind of dataset we write, loaded and edited by the real LeRobot 0.6.1 and lerobot-doctor.

LeRobot needs Python 3.12 and torch, so it runs in its own venv (.venv-lerobot, made by
tools/setup.sh, or CAPTURE_LEROBOT_PYTHON) through tests/export/lerobot_driver.py.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from capture.export import layout
from capture.export.lerobot import export_dataset
from capture.export.stats import sample_count
from capture.export.verify import trace_consent, verify_dataset
from tests.factories import build_session, gameplay_script, read_frame_tag

from .conftest import PSEUDONYM_KEY, stub_consent
from .test_lerobot import data_table, decoded_tags, episodes_table

ROOT = Path(__file__).resolve().parents[2]
DRIVER = Path(__file__).with_name("lerobot_driver.py")
KINDS = ("native", "resized", "rollover")

# lerobot-doctor's checks of the format (must pass) and its content heuristics, which are aimed
# at robot joints and fire on gameplay inputs (documented in the README).
DOCTOR_FORMAT_CHECKS = {"Metadata & Format Compliance", "Temporal Consistency", "Video Integrity",
                        "Feature Consistency", "Portability"}
DOCTOR_FORMAT_GATE = "metadata,temporal,videos,consistency,portability"  # their --checks names
DOCTOR_HEURISTICS = {"Action Quality", "Data Distribution", "Episode Health", "Training Readiness",
                     "Anomaly Detection", "Per-Episode Summary"}


def lerobot_python() -> Path:
    configured = os.environ.get("CAPTURE_LEROBOT_PYTHON")
    python = Path(configured) if configured else ROOT / ".venv-lerobot/bin/python"
    if not python.exists():
        pytest.fail(f"the LeRobot venv is missing ({python}): run `bash tools/setup.sh` "
                    "(or point CAPTURE_LEROBOT_PYTHON at a Python with lerobot 0.6.1)")
    return python


def lerobot_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "PYTHON"))}
    env.update(HF_HUB_OFFLINE="1", HF_HOME=str(home / "hf"),
               HF_LEROBOT_HOME=str(home / "lerobot"), TQDM_DISABLE="1")
    return env


def run_driver(tmp: Path, command: str, *args: Path | str | int) -> tuple[dict[str, Any], Any]:
    """Run one driver command in the LeRobot venv; its JSON result and arrays (if any)."""
    out = tmp / f"{command}-{len(list(tmp.glob('*.json')))}"
    done = subprocess.run([str(lerobot_python()), str(DRIVER), command, str(out),
                           *map(str, args)], env=lerobot_env(tmp), capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, f"lerobot_driver {command} failed:\n{done.stderr[-4000:]}"
    result = json.loads(out.with_suffix(".json").read_text())
    arrays = np.load(out.with_suffix(".npz")) if out.with_suffix(".npz").exists() else None
    return result, arrays


def run_doctor(root: Path, tmp: Path) -> dict[str, Any]:
    doctor = lerobot_python().parent / "lerobot-doctor"
    done = subprocess.run([str(doctor), "check", str(root), "--json"], env=lerobot_env(tmp),
                          capture_output=True, text=True, timeout=600)
    assert done.stdout, done.stderr[-4000:]
    report: dict[str, Any] = json.loads(done.stdout)
    return report


@pytest.fixture(scope="module")
def datasets(tmp_path_factory: pytest.TempPathFactory,
             gameplay_session: Path) -> Iterator[dict[str, Path]]:
    """One dataset of each kind the exporter writes: native size (640x360, so image stats
    take LeRobot's downsampling path); resized and resampled; two sessions of two games rolled
    over into several data and video files and chunks."""
    base = tmp_path_factory.mktemp("real")
    other = build_session(base / "sessions", gameplay_script(
        seed=7, game="othergame", session_id="20250301T130000Z-othergame-000002"))
    wide = build_session(base / "sessions", gameplay_script(
        width=640, height=360, session_id="20250301T140000Z-factorygame-000003"))
    out = {kind: base / kind for kind in KINDS}
    with pytest.MonkeyPatch.context() as monkeypatch:
        stub_consent(monkeypatch, "active")
        export_dataset([wide], out["native"], pseudonym_key=PSEUDONYM_KEY)
        export_dataset([gameplay_session], out["resized"], fps=15, size=(32, 24),
                       pseudonym_key=PSEUDONYM_KEY)
        export_dataset([gameplay_session, other], out["rollover"], pseudonym_key=PSEUDONYM_KEY,
                       limits=layout.FileLimits(data_mb=0.001, video_mb=0.001, chunks_size=2))
    for root in out.values():
        assert verify_dataset(root).ok, verify_dataset(root).summary()
    yield out


@pytest.fixture(scope="module")
def lerobot_read(datasets: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
                 ) -> Callable[[str], tuple[dict[str, Any], Any]]:
    """The driver's `read` of a dataset kind, run once per kind."""
    done: dict[str, tuple[dict[str, Any], Any]] = {}

    def read(kind: str) -> tuple[dict[str, Any], Any]:
        if kind not in done:
            done[kind] = run_driver(tmp_path_factory.mktemp(f"read-{kind}"), "read",
                                    datasets[kind])
        return done[kind]
    return read


def video_tags(root: Path) -> list[int]:
    """Tags of every row's frame, decoded with PyAV from our files in row order."""
    episodes = episodes_table(root)
    info = json.loads((root / layout.INFO_PATH).read_text())
    tags: list[int] = []
    cache: dict[str, list[tuple[float | None, int]]] = {}
    for _, ep in episodes.iterrows():
        rel = info["video_path"].format(video_key=layout.VIDEO_KEY,
                                        chunk_index=ep[f"videos/{layout.VIDEO_KEY}/chunk_index"],
                                        file_index=ep[f"videos/{layout.VIDEO_KEY}/file_index"])
        frames = cache.setdefault(rel, decoded_tags(root / rel))
        first = round(ep[f"videos/{layout.VIDEO_KEY}/from_timestamp"] * info["fps"])
        tags += [tag for _, tag in frames[first:first + int(ep["length"])]]
    return tags


@pytest.mark.parametrize("kind", KINDS)
def test_lerobot_loads_every_frame_of_every_kind(
        datasets: dict[str, Path], kind: str,
        lerobot_read: Callable[[str], tuple[dict[str, Any], Any]]) -> None:
    root = datasets[kind]
    result, arrays = lerobot_read(kind)
    data = data_table(root)
    assert result["len"] == len(data) and result["num_episodes"] == len(episodes_table(root))
    for name in ("index", "episode_index", "frame_index", "task_index", "capture_time_ns"):
        np.testing.assert_array_equal(arrays[name].reshape(-1), data[name].to_numpy(), name)
    np.testing.assert_allclose(arrays["timestamp"].reshape(-1), data["timestamp"], atol=1e-6)
    for name in layout.action_features():
        np.testing.assert_array_equal(arrays[name], np.stack(data[name].to_numpy()), name)
    tasks = pd.read_parquet(root / layout.TASKS_PATH)
    assert result["tasks"] == [tasks.index[t] for t in data["task_index"]]
    # every frame LeRobot decodes is the one our file has at that row
    assert [read_frame_tag(image) for image in arrays["images"]] == video_tags(root)
    # stats.json has every feature and LeRobot's quantile keys
    stat_keys = sorted(["min", "max", "mean", "std", "count", "q01", "q10", "q50", "q90", "q99"])
    assert result["stats_keys"] == {f: stat_keys for f in result["features"]}


@pytest.mark.parametrize("kind", KINDS)
def test_our_episode_stats_equal_lerobots_own(
        datasets: dict[str, Path], kind: str,
        lerobot_read: Callable[[str], tuple[dict[str, Any], Any]]) -> None:
    """The stats/* columns hold what LeRobot's compute_episode_stats makes of the same rows."""
    root = datasets[kind]
    result, _ = lerobot_read(kind)
    episodes = pd.concat([pq.read_table(f).to_pandas()
                          for f in sorted(root.glob("meta/episodes/*/*.parquet"))],
                         ignore_index=True)
    assert len(result["episode_stats"]) == len(episodes)
    for row, theirs in enumerate(result["episode_stats"]):
        assert set(theirs) == set(layout.features(1, 1, 1)) - {layout.VIDEO_KEY}
        for feature, stats in theirs.items():
            for key, value in stats.items():
                ours = np.asarray(episodes.loc[row, f"stats/{feature}/{key}"].tolist())
                np.testing.assert_array_equal(ours, np.asarray(value),
                                              f"episode {row} {feature}/{key}")


@pytest.mark.parametrize("kind", KINDS)
def test_delta_timestamps_windows(
        datasets: dict[str, Path], kind: str,
        lerobot_read: Callable[[str], tuple[dict[str, Any], Any]]) -> None:
    """An image window [t - 1/fps, t] and an action window [t - 1/fps, t + 1/fps] per frame:
    LeRobot clamps to the episode and marks the clamped places as padding."""
    root = datasets[kind]
    _, arrays = lerobot_read(kind)
    data, episodes = data_table(root), episodes_table(root)
    tags = video_tags(root)
    delta = np.stack(data["action.mouse_delta"].to_numpy())
    assert len(arrays["window_actions"]) == len(data)
    for _, ep in episodes.iterrows():
        lo, hi = int(ep["dataset_from_index"]), int(ep["dataset_to_index"])
        for row in range(lo, hi):
            window = [row - 1, row, row + 1]
            want_pad = [not lo <= r < hi for r in window]
            clamped = [min(max(r, lo), hi - 1) for r in window]
            assert arrays["window_action_pad"][row].tolist() == want_pad, row
            np.testing.assert_array_equal(arrays["window_actions"][row], delta[clamped],
                                          str(row))
            assert arrays["window_image_pad"][row].tolist() == want_pad[:2], row
            assert [read_frame_tag(im) for im in arrays["window_images"][row]] == \
                [tags[r] for r in clamped[:2]], row


def test_dataloader_with_workers_sees_every_frame(datasets: dict[str, Path],
                                                  tmp_path: Path) -> None:
    root = datasets["rollover"]
    result, arrays = run_driver(tmp_path, "loader", root)
    n = len(data_table(root))
    assert sorted(arrays["index"].tolist()) == list(range(n))
    assert result["batches"] == -(-n // 16)
    tags = video_tags(root)
    assert [read_frame_tag(im) for im in arrays["images"]] == [tags[i] for i in arrays["index"]]


# delete_episodes renumbers these columns but keeps each episode's stats from before (LeRobot's
# behaviour for its own datasets too), so they cannot equal a recomputation. Tasks are renumbered
# in set order (`save_episode_tasks(list(set(tasks)))` in _copy_and_reindex_data), which varies
# from run to run with string hashing.
RENUMBERED = {"episode_index", "index", "task_index"}


# Stats of decoded frames against ours of the frames before encoding (as LeRobot computes them):
# compression ringing moves the extremes by up to 11 of 255 levels (0.043) on the tagged test
# pictures; mean, std and quantiles stayed within 0.003.
VIDEO_TOLERANCE = {"min": 0.06, "max": 0.06}


def assert_stats_close(written: dict[str, Any], recomputed: dict[str, Any]) -> None:
    assert set(written) == set(recomputed)
    for feature, stats in recomputed.items():
        if feature in RENUMBERED:
            continue
        video = feature == layout.VIDEO_KEY
        for key, value in stats.items():
            got, want = np.asarray(written[feature][key]), np.asarray(value)
            assert got.shape == want.shape, (feature, key)
            if key == "count":
                assert got.tolist() == want.tolist(), feature
            elif video:  # decoded (lossy) frames vs the frames before encoding
                np.testing.assert_allclose(got, want, atol=VIDEO_TOLERANCE.get(key, 0.01),
                                           err_msg=f"{feature}/{key}")
            else:
                np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6,
                                           err_msg=f"{feature}/{key}")


@pytest.mark.parametrize("kind", ["native", "rollover"])
def test_delete_episodes_and_split_keep_the_stats(datasets: dict[str, Path], kind: str,
                                         tmp_path: Path) -> None:
    root = datasets[kind]
    edited = tmp_path / "edited"
    result, _ = run_driver(tmp_path, "delete", root, edited, tmp_path / "splits", 0)
    kept = len(episodes_table(root)) - 1
    assert result["num_episodes"] == kept
    assert result["stats"], "LeRobot wrote an empty stats.json"
    assert set(result["stats"]) == set(json.loads((root / layout.INFO_PATH).read_text())[
        "features"])
    assert_stats_close(result["stats"], result["recomputed"])
    # split_dataset goes the same way: each part's stats.json is the aggregate of its episodes
    lengths = episodes_table(root)["length"].tolist()
    features = set(result["stats"])
    for name, episodes in (("first", lengths[:1]), ("rest", lengths[1:])):
        part = result["splits"][name]
        assert part["num_episodes"] == len(episodes) and part["len"] == sum(episodes)
        assert set(part["stats"]) == features, name
        assert part["stats"]["frame_index"]["count"] == [sum(episodes)], name
        assert part["stats"][layout.VIDEO_KEY]["count"] == [sum(sample_count(n)
                                                                for n in episodes)]
    # LeRobot's tools drop our consent columns, meta/consent.json and meta/events: verify says so
    report = verify_dataset(edited)
    messages = [str(p) for p in report.problems]
    assert any("episodes have lost their consent receipts" in m and "consent_receipt_id" in m
               for m in messages), report.summary()
    assert any(m.startswith(f"{layout.CONSENT_PATH}: is missing") for m in messages)
    assert any(m.startswith(f"{layout.EVENTS_DIR}: is missing") for m in messages)
    # ... and nothing else: what LeRobot wrote passes every LeRobot rule verify applies (video
    # timing, indices, stats.json = aggregate of the stats columns)
    assert {p.file for p in report.problems} <= {
        "meta/episodes/chunk-000/file-000.parquet", layout.EVENTS_DIR, layout.CONSENT_PATH,
        layout.CARD_PATH, layout.CHECKSUMS_PATH}, report.summary()
    assert report.episodes == kept and report.video_frames == result["len"]
    # ... and the original export's consent manifest traces every kept episode back
    traced = trace_consent(edited, root / layout.CONSENT_PATH)
    originals = episodes_table(root)
    assert [m.episode_index for m in traced] == list(range(kept))
    assert [m.source_episode_index for m in traced] == list(range(1, kept + 1))
    for match in traced:
        source = originals.iloc[match.source_episode_index]
        assert (match.session_id, match.consent_receipt_id, match.license, match.player) == (
            source["session_id"], source["consent_receipt_id"], source["license"],
            source["player"])
    # what LeRobot wrote from our files still passes lerobot-doctor's format checks
    checks = {c["name"]: c for c in run_doctor(edited, tmp_path)["checks"]}
    for name in DOCTOR_FORMAT_CHECKS:
        assert checks[name]["severity"] == "PASS", checks[name]


@pytest.mark.parametrize("kind", KINDS)
def test_lerobot_doctor_format_checks_pass(datasets: dict[str, Path], kind: str,
                                           tmp_path: Path) -> None:
    report = run_doctor(datasets[kind], tmp_path)
    checks = {c["name"]: c for c in report["checks"]}
    assert set(checks) >= DOCTOR_FORMAT_CHECKS, sorted(checks)
    assert set(checks) <= DOCTOR_FORMAT_CHECKS | DOCTOR_HEURISTICS, sorted(checks)
    for name in DOCTOR_FORMAT_CHECKS:
        assert checks[name]["severity"] == "PASS", checks[name]
    assert report["total_frames"] == len(data_table(datasets[kind]))
    stats_messages = [m["message"] for m in checks["Data Distribution"]["messages"]
                      if "stats.json" in m["message"]]
    assert stats_messages == ["stats.json found and loaded for comparison"], stats_messages
    # what docs/lerobot.md says: the only FAILs are "clipping" of sparse inputs (keys, wheel)
    fails = [(c["name"], m["message"]) for c in report["checks"] for m in c["messages"]
             if m["severity"] == "FAIL"]
    assert all(name == "Action Quality" and "clipping detected" in message
               and message.startswith(("action.keys_", "action.mouse_wheel"))
               for name, message in fails), fails
    # the gate docs/lerobot.md recommends: only the format checks, exit code 0
    doctor = lerobot_python().parent / "lerobot-doctor"
    gate = subprocess.run([str(doctor), "check", str(datasets[kind]), "--checks",
                           DOCTOR_FORMAT_GATE], env=lerobot_env(tmp_path), capture_output=True,
                          text=True, timeout=600)
    assert gate.returncode == 0, gate.stdout[-3000:]
