"""Purging withdrawn episodes from built datasets: re-indexing, real video, atomic swap, the log."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import av
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from capture.cli import cli
from capture.consent.pseudonym import keyed_pseudonym
from capture.errors import BadInputError
from capture.export import layout, purge
from capture.export.lerobot import export_dataset
from capture.export.verify import verify_dataset
from tests.factories import build_session, gameplay_script, read_frame_tag
from tests.killpoints import run_killed_at

from .conftest import PSEUDONYM_KEY, stub_consent

RECEIPTS = ("r-anna-0001", "r-bert-0002", "r-cleo-0003")
PLAYERS = ("Anna Example", "Bert Example", "Cleo Example")


def data_table(root: Path) -> pd.DataFrame:
    return pd.concat([pd.read_parquet(p) for p in sorted(root.glob("data/*/*.parquet"))],
                     ignore_index=True)


def data_arrow(root: Path) -> pa.Table:
    return pa.concat_tables([pq.read_table(p) for p in sorted(root.glob("data/*/*.parquet"))])


def episodes_table(root: Path) -> pd.DataFrame:
    return pd.concat([pd.read_parquet(p)
                      for p in sorted(root.glob("meta/episodes/*/*.parquet"))],
                     ignore_index=True)


def events_table(root: Path) -> pd.DataFrame:
    return pq.read_table(root / "meta/events/chunk-000/file-000.parquet").to_pandas()


def episode_tags(root: Path) -> list[list[int]]:
    """Per episode, the tag decoded from each of its video frames (the source frame shown)."""
    info = json.loads((root / layout.INFO_PATH).read_text())
    decoded: dict[tuple[int, int], dict[int, int]] = {}
    out = []
    for _, ep in episodes_table(root).iterrows():
        key = (int(ep["videos/observation.image/chunk_index"]),
               int(ep["videos/observation.image/file_index"]))
        if key not in decoded:
            path = root / info["video_path"].format(video_key=layout.VIDEO_KEY,
                                                    chunk_index=key[0], file_index=key[1])
            with av.open(str(path)) as container:
                decoded[key] = {round(f.time * 30): read_frame_tag(f.to_ndarray(format="rgb24"))
                                for f in container.decode(video=0)}
        first = round(ep["videos/observation.image/from_timestamp"] * 30)
        out.append([decoded[key][first + i] for i in range(int(ep["length"]))])
    return out


def episode_pixels(root: Path) -> list[list[np.ndarray]]:
    """Per episode, the decoded pictures of its frames."""
    info = json.loads((root / layout.INFO_PATH).read_text())
    out = []
    for _, ep in episodes_table(root).iterrows():
        path = root / info["video_path"].format(
            video_key=layout.VIDEO_KEY, chunk_index=int(ep["videos/observation.image/chunk_index"]),
            file_index=int(ep["videos/observation.image/file_index"]))
        first = round(ep["videos/observation.image/from_timestamp"] * 30)
        with av.open(str(path)) as container:
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
        out.append(frames[first:first + int(ep["length"])])
    return out


def test_a_stream_that_cannot_be_spliced_is_re_encoded_whole(
        three_players: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        references: References) -> None:
    def refuse(*args: object) -> None:
        raise purge._CannotSplice("open GOPs")

    monkeypatch.setattr(purge, "_splice", refuse)
    root = fresh_copy(three_players, tmp_path)
    entry = purge.purge_dataset(root, receipts=[RECEIPTS[0]], reason="receipt").log_entry
    assert entry is not None and entry["video_frames_copied"] == 0
    assert entry["video_frames_reencoded"] == entry["frames_after"]
    assert_purged_equals_old_minus(three_players, root, {RECEIPTS[0]}, references)


def tree_digest(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def sessions(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("purge-sessions")
    return [build_session(root, gameplay_script(
        seed=i + 3, receipt_id=RECEIPTS[i], player=PLAYERS[i],
        session_id=f"20250301T12000{i}Z-factorygame-00000{i}")) for i in range(3)]


def _export(sessions: list[Path], out: Path, **kwargs: Any) -> Path:
    with pytest.MonkeyPatch.context() as monkeypatch:
        stub_consent(monkeypatch, "active")
        export_dataset(sessions, out, pseudonym_key=PSEUDONYM_KEY, **kwargs)
    return out


@pytest.fixture(scope="module")
def three_players(tmp_path_factory: pytest.TempPathFactory, sessions: list[Path]) -> Path:
    """Three players' sessions in one dataset (one video file, one data file)."""
    return _export(sessions, tmp_path_factory.mktemp("purge-ds") / "three")


@pytest.fixture(scope="module")
def rolled_over(tmp_path_factory: pytest.TempPathFactory, sessions: list[Path]) -> Path:
    """The same, with a new data and video file for every episode and 2 files per chunk."""
    return _export(sessions, tmp_path_factory.mktemp("purge-ds") / "rolled",
                   limits=layout.FileLimits(data_mb=0.001, video_mb=0.001, chunks_size=2))


References = Callable[[set[str]], Path]


@pytest.fixture(scope="module")
def references(tmp_path_factory: pytest.TempPathFactory, sessions: list[Path]) -> References:
    """The dataset exported afresh from the sessions a purge keeps (by receipts removed)."""
    made: dict[frozenset[str], Path] = {}

    def reference(removed: set[str]) -> Path:
        key = frozenset(removed)
        if key not in made:
            kept = [s for s, r in zip(sessions, RECEIPTS, strict=True) if r not in removed]
            made[key] = _export(kept, tmp_path_factory.mktemp("purge-ref") / "ref")
        return made[key]

    return reference


def fresh_copy(src: Path, parent: Path) -> Path:
    dst = parent / src.name
    shutil.copytree(src, dst)
    return dst


def assert_purged_equals_old_minus(old: Path, new: Path, receipts: set[str],
                                   references: References) -> None:
    """The new dataset is the old one without those receipts' episodes, re-indexed; its
    statistics are those of a fresh export of the sessions kept."""
    old_eps, new_eps = episodes_table(old), episodes_table(new)
    kept = old_eps[~old_eps["consent_receipt_id"].isin(receipts)].reset_index(drop=True)
    assert len(new_eps) == len(kept) and not set(new_eps["consent_receipt_id"]) & receipts
    assert new_eps["episode_index"].tolist() == list(range(len(kept)))
    for column in ("session_id", "segment_index", "length", "grid_start_ns", "player",
                   "consent_receipt_id", "alignment/offset_ms_p95"):
        assert new_eps[column].tolist() == kept[column].tolist(), column
    old_data, new_data = data_table(old), data_table(new)
    rows = old_data[old_data["episode_index"].isin(kept["episode_index"])].reset_index(drop=True)
    assert new_data["index"].tolist() == list(range(len(rows)))
    assert new_data["episode_index"].tolist() == rows["episode_index"].map(
        dict(zip(kept["episode_index"], new_eps["episode_index"], strict=True))).tolist()
    for column in ("frame_index", "timestamp", "capture_time_ns", "action.mouse_delta",
                   "action.keys_held"):
        assert np.array_equal(np.stack(new_data[column].to_numpy()),
                              np.stack(rows[column].to_numpy())), column
    old_tags = episode_tags(old)
    assert episode_tags(new) == [old_tags[i] for i in kept["episode_index"]]
    info = json.loads((new / layout.INFO_PATH).read_text())
    assert info["total_frames"] == len(new_data) and info["total_episodes"] == len(new_eps)
    assert info["splits"] == {"train": f"0:{len(new_eps)}"}
    stats = json.loads((new / layout.STATS_PATH).read_text())
    deltas = np.stack(new_data["action.mouse_delta"].to_numpy()).astype(np.float64)
    assert stats["action.mouse_delta"]["count"] == [len(new_data)]
    assert stats["action.mouse_delta"]["mean"] == pytest.approx(deltas.mean(axis=0).tolist())
    assert stats["index"]["max"] == [len(new_data) - 1]
    fresh = json.loads((references(receipts) / layout.STATS_PATH).read_text())
    assert set(stats) == set(fresh)
    for feature, entry in fresh.items():
        for key, value in entry.items():
            close = (dict(rel=0.05, abs=0.03) if feature == layout.VIDEO_KEY and key != "count"
                     else dict(rel=1e-6, abs=1e-9))  # image: the frames encoded again differ
            assert np.asarray(stats[feature][key], dtype=float) == pytest.approx(
                np.asarray(value, dtype=float), **close), (feature, key)
    old_events, new_events = events_table(old), events_table(new)
    kept_sessions = set(kept["session_id"])
    assert len(new_events) == int(old_events["session_id"].isin(kept_sessions).sum())
    assert set(new_events["session_id"]) == kept_sessions
    placed = new_events.dropna(subset=["episode_index"])
    for _, ev in placed.iterrows():  # every event still sits in its frame's interval
        ep = new_eps.iloc[int(ev["episode_index"])]
        a = int(ep["grid_start_ns"]) + round(int(ev["frame_index"]) * 1e9 / 30)
        b = int(ep["grid_start_ns"]) + round((int(ev["frame_index"]) + 1) * 1e9 / 30)
        assert ep["session_id"] == ev["session_id"] and a <= ev["t_ns"] < b
    card = (new / layout.CARD_PATH).read_text()
    assert f"{len(new_eps)} episodes, {len(new_data)} frames" in card
    check = verify_dataset(new)
    assert check.ok, check.summary()
    assert check.video_frames == len(new_data)


def test_purge_by_receipt_removes_that_players_episodes_everywhere(
        three_players: Path, tmp_path: Path, references: References) -> None:
    root = fresh_copy(three_players, tmp_path)
    before = episodes_table(root)
    plan = purge.plan_purge(root, receipts=[RECEIPTS[1]], reason="receipt")
    assert plan.remove == tuple(before.index[before["consent_receipt_id"] == RECEIPTS[1]])
    assert tree_digest(root) == tree_digest(three_players)  # planning changes nothing
    result = purge.apply_purge(plan)
    assert_purged_equals_old_minus(three_players, root, {RECEIPTS[1]}, references)
    entry = result.log_entry
    assert entry is not None and entry["receipt_ids"] == [RECEIPTS[1]]
    assert entry["episodes_removed"] == len(plan.remove) == 2
    assert entry["frames_removed"] == int(before.loc[list(plan.remove), "length"].sum())
    assert entry["video_files_rewritten"] == 1 and entry["reason"] == "receipt"
    # spliced: whole GOPs copied as they were, only GOPs a cut falls inside encoded again (the
    # export starts every episode on a keyframe, so cuts between episodes copy everything)
    assert entry["video_frames_copied"] + entry["video_frames_reencoded"] == len(data_table(root))
    assert entry["video_frames_copied"] > 0
    old_pixels = episode_pixels(three_players)
    kept = [i for i, r in enumerate(before["consent_receipt_id"]) if r != RECEIPTS[1]]
    identical = sum(np.array_equal(a, b) for k, new in zip(kept, episode_pixels(root), strict=True)
                    for a, b in zip(old_pixels[k], new, strict=True))
    assert identical >= entry["video_frames_copied"]
    assert purge.read_purge_log(root) == [entry]
    assert not list(tmp_path.glob(".three.purge-*"))  # the old copy is gone
    for path in root.rglob("*"):
        if path.is_file():
            assert b"Bert Example" not in path.read_bytes(), path


def test_purge_by_player_over_rolled_over_files_renumbers_them(
        rolled_over: Path, tmp_path: Path, references: References) -> None:
    root = fresh_copy(rolled_over, tmp_path)
    pseudonym = keyed_pseudonym(PLAYERS[0], PSEUDONYM_KEY)
    result = purge.purge_dataset(root, players=[pseudonym], reason="player")
    assert_purged_equals_old_minus(rolled_over, root, {RECEIPTS[0]}, references)
    assert result.log_entry is not None and result.log_entry["video_files_rewritten"] == 0
    videos = sorted(p.relative_to(root).as_posix()
                    for p in root.glob("videos/observation.image/*/*.mp4"))
    assert videos == ["videos/observation.image/chunk-000/file-000.mp4",
                      "videos/observation.image/chunk-000/file-001.mp4",
                      "videos/observation.image/chunk-001/file-000.mp4",
                      "videos/observation.image/chunk-001/file-001.mp4"]
    # unchanged video files are the old ones, byte for byte (linked, not re-encoded)
    old = tree_digest(rolled_over)
    new = tree_digest(root)
    assert new["videos/observation.image/chunk-000/file-000.mp4"] == \
        old["videos/observation.image/chunk-001/file-000.mp4"]
    assert "Anna Example" not in (root / purge.PURGE_LOG_PATH).read_text()


def test_purging_a_second_receipt_appends_to_the_log_and_hf_datasets_loads_it(
        three_players: Path, tmp_path: Path, references: References) -> None:
    import datasets

    root = fresh_copy(three_players, tmp_path)
    purge.purge_dataset(root, receipts=[RECEIPTS[0]], reason="receipt")
    purge.purge_dataset(root, receipts=[RECEIPTS[2]], reason="receipt")
    log = purge.read_purge_log(root)
    assert [e["receipt_ids"] for e in log] == [[RECEIPTS[0]], [RECEIPTS[2]]]
    assert log[1]["episodes_before"] == log[0]["episodes_after"]
    assert_purged_equals_old_minus(three_players, root, {RECEIPTS[0], RECEIPTS[2]}, references)
    loaded = datasets.load_dataset("parquet", data_files=str(root / "data/*/*.parquet"),
                                   split="train", cache_dir=str(tmp_path / "hf-cache"))
    assert loaded.num_rows == json.loads((root / layout.INFO_PATH).read_text())["total_frames"]
    assert set(loaded["episode_index"]) == {0, 1}


def test_consent_manifest_and_checksums_are_rewritten_when_present(three_players: Path,
                                                                   tmp_path: Path) -> None:
    """meta/consent.json and meta/checksums.json (the LeRobot-conformance export writes them):
    the purged episodes leave the manifest, the rest are renumbered, every digest is new."""
    root = fresh_copy(three_players, tmp_path)
    eps = episodes_table(root)
    data = data_table(root)
    provenance = ("consent_receipt_id", "license", "player", "synthetic_consent")
    consent = {"format": "capture-dataset-consent", "version": 1, "episodes": [
        {"episode_index": int(e["episode_index"]), "session_id": e["session_id"],
         "segment_index": int(e["segment_index"]), "segment_part": int(e["segment_part"]),
         "length": int(e["length"]),
         "first_capture_time_ns": int(data["capture_time_ns"][e["dataset_from_index"]]),
         "last_capture_time_ns": int(data["capture_time_ns"][e["dataset_to_index"] - 1]),
         **{k: e[k].item() if hasattr(e[k], "item") else e[k] for k in provenance}}
        for _, e in eps.iterrows()],
        "sessions": {s: {**{k: g[k].iloc[0].item() if hasattr(g[k].iloc[0], "item")
                            else g[k].iloc[0] for k in provenance},
                         "episodes": g["episode_index"].astype(int).tolist()}
                     for s, g in eps.groupby("session_id")}}
    (root / purge.CONSENT_PATH).write_text(json.dumps(consent))
    sums = {"format": "capture-dataset-checksums", "version": 1, "algorithm": "sha256",
            "files": tree_digest(root)}
    (root / purge.CHECKSUMS_PATH).write_text(json.dumps(sums))
    purge.purge_dataset(root, receipts=[RECEIPTS[0]], reason="receipt")
    new_eps = episodes_table(root)
    rewritten = json.loads((root / purge.CONSENT_PATH).read_text())
    assert [(e["episode_index"], e["session_id"]) for e in rewritten["episodes"]] == list(
        zip(new_eps["episode_index"], new_eps["session_id"], strict=True))
    assert {e["consent_receipt_id"] for e in rewritten["episodes"]} == {RECEIPTS[1], RECEIPTS[2]}
    assert sorted(rewritten["sessions"]) == sorted(set(new_eps["session_id"]))
    assert sorted(i for s in rewritten["sessions"].values() for i in s["episodes"]) == list(
        range(len(new_eps)))
    listed = json.loads((root / purge.CHECKSUMS_PATH).read_text())
    actual = tree_digest(root)
    del actual[purge.CHECKSUMS_PATH]
    assert listed["files"] == actual and purge.PURGE_LOG_PATH in actual
    assert listed["format"] == "capture-dataset-checksums"


def test_purged_dataset_loads_in_the_real_lerobot(three_players: Path, tmp_path: Path) -> None:
    """LeRobot 0.6.1 reads every frame of a purged dataset, its DataLoader runs, and
    lerobot-doctor's format checks pass (runs once the LeRobot conformance tests are merged)."""
    real = pytest.importorskip("tests.export.test_lerobot_real",
                               reason="the real-LeRobot test driver is not in this tree yet")
    root = fresh_copy(three_players, tmp_path)
    purge.purge_dataset(root, receipts=[RECEIPTS[1]], reason="receipt")
    n = len(data_table(root))
    result, _ = real.run_driver(tmp_path, "read", root)
    assert (result["len"], result["num_episodes"]) == (n, 4)
    _, arrays = real.run_driver(tmp_path, "loader", root)
    assert sorted(arrays["index"].tolist()) == list(range(n))
    tags = [t for episode in episode_tags(root) for t in episode]
    assert [read_frame_tag(im) for im in arrays["images"]] == [tags[i] for i in arrays["index"]]
    checks = {c["name"]: c for c in real.run_doctor(root, tmp_path)["checks"]}
    for name in real.DOCTOR_FORMAT_CHECKS:
        assert checks[name]["severity"] == "PASS", checks[name]


def test_purge_by_session_as_the_collector_lists_pending_purges(three_players: Path,
                                                                tmp_path: Path) -> None:
    root = fresh_copy(three_players, tmp_path)
    session = episodes_table(root)["session_id"].iloc[-1]
    plan = purge.plan_purge(root, sessions=[session], reason="collector")
    assert plan.receipt_ids == (RECEIPTS[2],) and plan.sessions == (session,)
    entry = purge.apply_purge(plan).log_entry
    assert entry is not None and entry["receipt_ids"] == [RECEIPTS[2]]
    assert session not in set(episodes_table(root)["session_id"])
    # one session of a receipt that covers two: only that session goes
    two = fresh_copy(three_players, tmp_path / "two")
    eps = episodes_table(two)
    first = eps["session_id"].iloc[0]
    pq.write_table(pq.read_table(two / "meta/episodes/chunk-000/file-000.parquet").set_column(
        eps.columns.get_loc("consent_receipt_id"), "consent_receipt_id",
        pa.array([RECEIPTS[0]] * len(eps))), two / "meta/episodes/chunk-000/file-000.parquet")
    entry = purge.purge_dataset(two, sessions=[first], reason="collector").log_entry
    assert entry is not None and entry["sessions_removed"] == 1
    assert first not in set(episodes_table(two)["session_id"])
    assert len(set(episodes_table(two)["session_id"])) == 2


def test_the_quality_record_follows_the_purge(tmp_path: Path) -> None:
    """meta/quality.json's flagged idle spans point at the renumbered episodes; the purged
    sessions leave its per-session list."""
    from capture.export.quality import QualityFilters, read_quality
    from tests.factories import SessionScript, frame_times, motion

    made = []
    for i in range(2):
        times, _ = frame_times(120, 30, start_ns=(10 + 100 * i) * 1_000_000_000)
        events = [motion(t + 5_000_000, 1, 1) for t in times[:30] + times[90:]]
        made.append(build_session(tmp_path / "s", SessionScript(
            capture_times_ns=times, events=events, receipt_id=RECEIPTS[i],
            session_id=f"20250301T12000{i}Z-factorygame-00000{i}")))
    root = _export(made, tmp_path / "idle", quality=QualityFilters(idle_s=1.5))
    before = read_quality(root)
    assert before is not None and [s["episode_index"] for s in before["idle_flagged"]] == [0, 1]
    purge.purge_dataset(root, receipts=[RECEIPTS[0]], reason="receipt")
    after = read_quality(root)
    assert after is not None
    assert after["idle_flagged"] == [dict(before["idle_flagged"][1], episode_index=0)]
    assert [s["session_id"] for s in after["sessions"]] == [made[1].name]
    check = verify_dataset(root)
    assert check.ok, check.summary()


def test_from_collector_purges_what_the_collector_lists(tmp_path: Path) -> None:
    """On loopback: a player uploads to a real collector, the builder exports from it, the
    player withdraws; `dataset purge --from-collector` removes that session's episodes."""
    from tests.collector.conftest import Collector, create_study, enroll, run_capture

    builder = tmp_path / "builder"
    collector = Collector(builder).start()
    try:
        study = create_study(builder, collector.url)
        players = [enroll(builder, collector.url, study, tmp_path / name, name)
                   for name in ("alice-7", "bert-8")]
        sessions = [p.session(n) for n, p in enumerate(players, start=1)]
        for player in players:
            run_capture(player.home, "upload")
        dataset = tmp_path / "dataset"
        run_capture(builder, "export", f"collector+{collector.url}/{study}", "--out",
                    str(dataset))
        before = episodes_table(dataset)
        assert set(before["session_id"]) == {s.name for s in sessions}
        run_capture(players[0].home, "consent", "revoke", "--player", "alice-7", "--yes")
        done = run_capture(builder, "dataset", "purge", str(dataset), "--from-collector",
                           "--url", collector.url, "--yes")
        assert "purged" in done.stdout, done.stdout
        assert "the collector marked 1 pending purge(s) of this dataset done" in done.stdout
        listed = run_capture(builder, "collector", "purges", "--url", collector.url, "--json")
        assert json.loads(listed.stdout) == []
        after = episodes_table(dataset)
        assert set(after["session_id"]) == {sessions[1].name}
        assert purge.read_purge_log(dataset)[0]["reason"] == "collector"
        assert verify_dataset(dataset).ok
        again = run_capture(builder, "dataset", "purge", str(dataset), "--from-collector",
                            "--url", collector.url, "--yes")
        assert "nothing to purge" in again.stdout
    finally:
        collector.stop()


def test_nothing_matches_nothing_changes(three_players: Path, tmp_path: Path) -> None:
    root = fresh_copy(three_players, tmp_path)
    result = purge.purge_dataset(root, receipts=["r-nobody"], reason="receipt")
    assert result.log_entry is None and tree_digest(root) == tree_digest(three_players)


def test_revocations_file_and_from_collector_apply_only_new_revocations(
        three_players: Path, tmp_path: Path) -> None:
    listing = tmp_path / "revoked.json"
    listing.write_text(json.dumps([
        {"receipt_id": RECEIPTS[0], "revoked_utc": "2026-01-01T00:00:00Z"},
        {"receipt_id": RECEIPTS[1], "revoked_utc": "2026-03-01T00:00:00.5Z"},
        RECEIPTS[1]]))
    assert purge.revoked_receipts_since(listing, None) == [RECEIPTS[0], RECEIPTS[1]]
    assert purge.revoked_receipts_since(listing, "2026-02-01T00:00:00Z") == [RECEIPTS[1]]
    assert purge.revoked_receipts_since(listing, "2026-03-01T00:00:00.6Z") == [RECEIPTS[1]]

    root = fresh_copy(three_players, tmp_path)
    first = purge.apply_purge(purge.purge_from_revocations(root, listing))
    assert first.log_entry is not None and first.log_entry["reason"] == "collector"
    assert first.log_entry["receipt_ids"] == [RECEIPTS[0], RECEIPTS[1]]
    assert purge.last_collector_check_utc(root) == first.log_entry["collector_checked_utc"]
    listing.write_text(json.dumps([
        {"receipt_id": RECEIPTS[0], "revoked_utc": "2026-01-01T00:00:00Z"},
        {"receipt_id": RECEIPTS[2], "revoked_utc": "2999-01-01T00:00:00Z"}]))
    plan = purge.purge_from_revocations(root, listing)
    assert plan.collector_since_utc == first.log_entry["collector_checked_utc"]
    assert plan.receipt_ids == (RECEIPTS[2],)
    second = purge.apply_purge(plan)
    assert second.log_entry is not None and second.log_entry["episodes_after"] == 0
    assert [e["receipt_ids"] for e in purge.read_purge_log(root)] == [
        [RECEIPTS[0], RECEIPTS[1]], [RECEIPTS[2]]]

    for bad, message in (("{}", "JSON list"), ("[1]", "item 0"), ("[", "not valid JSON")):
        listing.write_text(bad)
        with pytest.raises(BadInputError, match=message):
            purge.revoked_receipts_since(listing, None)


def test_purging_every_episode_leaves_an_empty_dataset(three_players: Path,
                                                       tmp_path: Path) -> None:
    root = fresh_copy(three_players, tmp_path)
    purge.purge_dataset(root, receipts=list(RECEIPTS), reason="receipt")
    info = json.loads((root / layout.INFO_PATH).read_text())
    assert info["total_episodes"] == 0 and info["total_frames"] == 0
    assert len(data_table(root)) == 0 and len(events_table(root)) == 0
    assert not list(root.glob("videos/*/*/*.mp4"))
    assert purge.read_purge_log(root)[0]["frames_after"] == 0
    checked = run_cli("dataset", "verify", str(root))  # says what it found, no traceback
    assert "Traceback" not in checked.output, checked.output
    assert checked.exception is None or isinstance(checked.exception, SystemExit), \
        checked.output


# --- the command -----------------------------------------------------------------------------
def run_cli(*args: str, stdin: str | None = None) -> Any:
    return CliRunner().invoke(cli, list(args), input=stdin)


def test_cli_asks_first_and_purges_with_yes(three_players: Path, tmp_path: Path,
                                            references: References) -> None:
    root = fresh_copy(three_players, tmp_path)
    answered_no = run_cli("dataset", "purge", str(root), "--receipt", RECEIPTS[2], stdin="n\n")
    assert answered_no.exit_code == 1 and "remove 2 of 6 episodes" in answered_no.output
    assert "nothing changed" in answered_no.output
    assert tree_digest(root) == tree_digest(three_players)
    done = run_cli("dataset", "purge", str(root), "--receipt", RECEIPTS[2], "--yes")
    assert done.exit_code == 0, done.output
    assert "purged 2 episodes" in done.output
    assert run_cli("dataset", "verify", str(root)).exit_code == 0
    assert_purged_equals_old_minus(three_players, root, {RECEIPTS[2]}, references)


def test_cli_refuses_bad_arguments_in_plain_words(tmp_path: Path, three_players: Path) -> None:
    both = run_cli("dataset", "purge", str(three_players), "--receipt", "x", "--player", "y")
    assert both.exit_code == 2 and "exactly one of" in both.output
    missing = run_cli("dataset", "purge", str(tmp_path / "nope"), "--receipt", "x", "--yes")
    assert missing.exit_code == 1 and "does not exist" in missing.output
    assert "Traceback" not in missing.output
    junk = tmp_path / "revoked.json"
    junk.write_text("not json")
    bad = run_cli("dataset", "purge", str(three_players), "--from-collector", "--revocations",
                  str(junk), "--yes")
    assert bad.exit_code == 4 and "revoked.json" in bad.output and "not valid JSON" in bad.output


# --- crash consistency -------------------------------------------------------------------------
@pytest.fixture
def fast_dir(tmp_path: Path) -> Iterator[Path]:
    """A directory on tmpfs if there is one: the kill test makes ~100 purges, whose fsyncs
    on a shared disk take most of its time (a kill needs no durability, only ordering)."""
    shm = Path("/dev/shm")
    if not (shm.is_dir() and os.access(shm, os.W_OK)):
        yield tmp_path
        return
    path = Path(tempfile.mkdtemp(prefix="capture-purge-", dir=shm))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def test_a_purge_killed_at_any_change_leaves_the_old_or_the_new_dataset(
        rolled_over: Path, fast_dir: Path) -> None:
    tmp_path = fast_dir
    old = tree_digest(rolled_over)
    reference = fresh_copy(rolled_over, tmp_path / "reference")
    purge.purge_dataset(reference, receipts=[RECEIPTS[1]], reason="receipt")
    new_data = data_arrow(reference)
    outcomes = {"old": 0, "new": 0}
    operations: list[str] = []
    n = 1
    while True:
        work = tmp_path / f"kill-{n}"
        root = fresh_copy(rolled_over, work)
        outcome = run_killed_at(n, lambda root=root: purge.purge_dataset(
            root, receipts=[RECEIPTS[1]], reason="receipt"), work)
        assert outcome.error is None, outcome.error
        killed = outcome.killed
        if killed:
            operations.append(str(outcome.operation))
        assert root.is_dir(), f"killed at change {n}: the dataset is gone"
        if tree_digest(root) == old:
            outcomes["old"] += 1
        else:
            outcomes["new"] += 1
            assert set(episodes_table(root)["consent_receipt_id"]) == {RECEIPTS[0], RECEIPTS[2]}
            assert data_arrow(root).equals(new_data), f"killed at change {n}"
            check = verify_dataset(root)
            assert check.ok, f"killed at change {n}: {check.summary()}"
        if not killed:
            break
        # a later run cleans up what the killed one left and finishes the job
        if n % 7 == 0 or outcomes["new"] == 1:
            purge.purge_dataset(root, receipts=[RECEIPTS[1]], reason="receipt")
            assert not list(work.glob(".rolled.purge-*"))
            assert data_arrow(root).equals(new_data)
            assert len(purge.read_purge_log(root)) == 1
        shutil.rmtree(work)
        n += 1
    assert not list(work.glob(".rolled.purge-*")), "a completed purge leaves nothing behind"
    print("kill outcomes", outcomes, "file operations", len(operations))
    assert outcomes["old"] >= 10 and outcomes["new"] >= 2, outcomes
    assert any("fsync" in op for op in operations) and any("unlink" in op for op in operations)
