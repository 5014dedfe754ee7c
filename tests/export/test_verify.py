"""verify_dataset on tampered copies of an exported dataset: each problem is found and named."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from capture.errors import BadInputError
from capture.export.lerobot import ExportReport
from capture.export.verify import trace_consent, verify_dataset

DATA = "data/chunk-000/file-000.parquet"
EPISODES = "meta/episodes/chunk-000/file-000.parquet"
EVENTS = "meta/events/chunk-000/file-000.parquet"
VIDEO = "videos/observation.image/chunk-000/file-000.mp4"
STATS = "meta/stats.json"
INFO = "meta/info.json"
CONSENT = "meta/consent.json"


def rewrite(path: Path, change: Callable[[pa.Table], pa.Table]) -> None:
    pq.write_table(change(pq.read_table(path)), path)


def replace_column(table: pa.Table, name: str, values: pa.Array) -> pa.Table:
    return table.set_column(table.schema.get_field_index(name), name, values)


def shift_timestamp(root: Path) -> None:
    def change(t: pa.Table) -> pa.Table:
        ts = t.column("timestamp").to_numpy().copy()
        ts[5] += 0.01
        return replace_column(t, "timestamp", pa.array(ts, pa.float32()))
    rewrite(root / DATA, change)


def drop_row(root: Path) -> None:
    rewrite(root / DATA, lambda t: pa.concat_tables([t.slice(0, 10), t.slice(11)]))


def drop_column(root: Path) -> None:
    rewrite(root / DATA, lambda t: t.drop_columns(["action.mouse_wheel"]))


def widen_column(root: Path) -> None:
    rewrite(root / DATA, lambda t: replace_column(
        t, "action.mouse_delta", pc.cast(t.column("action.mouse_delta"),
                                         pa.list_(pa.float64(), 2))))


def raw_player_name(root: Path) -> None:
    rewrite(root / EPISODES, lambda t: replace_column(
        t, "player", pa.array(["Alice Example"] * t.num_rows)))


def event_out_of_range(root: Path) -> None:
    def change(t: pa.Table) -> pa.Table:
        frames = t.column("frame_index").to_pylist()
        first = next(i for i, f in enumerate(frames) if f is not None)
        frames[first] = 100_000
        return replace_column(t, "frame_index", pa.array(frames, pa.int64()))
    rewrite(root / EVENTS, change)


def bad_info_version(root: Path) -> None:
    info = json.loads((root / "meta/info.json").read_text())
    info["codebase_version"] = "v2.1"
    (root / "meta/info.json").write_text(json.dumps(info))


def video_off_grid(root: Path) -> None:
    """Re-encode the video with frames 37 ms apart: off the 1/30 s grid."""
    path = root / VIDEO
    with av.open(str(path)) as source:
        pictures = [f.to_ndarray(format="rgb24") for f in source.decode(video=0)]
    with av.open(str(path), "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.codec_context.time_base = Fraction(1, 1000)
        for i, picture in enumerate(pictures):
            frame = av.VideoFrame.from_ndarray(picture, format="rgb24")
            frame.pts, frame.time_base = i * 37, Fraction(1, 1000)
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def video_missing_frames(root: Path) -> None:
    path = root / VIDEO
    with av.open(str(path)) as source:
        pictures = [f.to_ndarray(format="rgb24") for f in source.decode(video=0)][:-5]
    with av.open(str(path), "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i, picture in enumerate(pictures):
            frame = av.VideoFrame.from_ndarray(picture, format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, 30)
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def non_finite_mouse_delta(value: float) -> Callable[[Path], None]:
    def tamper(root: Path) -> None:
        def change(t: pa.Table) -> pa.Table:
            delta = np.stack(t.column("action.mouse_delta").to_numpy(zero_copy_only=False))
            delta[7, 1] = value
            flat = pa.array(delta.reshape(-1).astype(np.float32), pa.float32())
            return replace_column(t, "action.mouse_delta", pa.FixedSizeListArray.from_arrays(
                flat, 2))
        rewrite(root / DATA, change)
    tamper.__name__ = f"mouse_delta_{value}"
    return tamper


def edit_json(rel: str, change: Callable[[dict], None]) -> Callable[[Path], None]:
    def tamper(root: Path) -> None:
        obj = json.loads((root / rel).read_text())
        change(obj)
        (root / rel).write_text(json.dumps(obj))  # json.dumps writes NaN as NaN
    return tamper


def set_in(path: list[str | int], value: object) -> Callable[[dict], None]:
    def change(obj: dict) -> None:
        for key in path[:-1]:
            obj = obj[key]
        obj[path[-1]] = value
    return change


def drop_stat(obj: dict) -> None:
    del obj["action.mouse_delta"]["q01"]


def old_depth_key(info: dict) -> None:
    video = info["features"]["observation.image"]["info"]
    video["video.is_depth_map"] = video.pop("is_depth_map")


def delete_events(root: Path) -> None:
    shutil.rmtree(root / "meta/events")


def delete_consent(root: Path) -> None:
    (root / CONSENT).unlink()


def drop_consent_columns(root: Path) -> None:
    rewrite(root / EPISODES, lambda t: t.drop_columns(["consent_receipt_id", "license"]))


def append_to_card(root: Path) -> None:
    with open(root / "README.md", "a") as f:
        f.write("edited\n")


def add_file(root: Path) -> None:
    (root / "meta/extra.txt").write_text("x")


def remove_tasks(root: Path) -> None:
    (root / "meta/tasks.parquet").unlink()


@pytest.mark.parametrize("tamper, file, words", [
    (non_finite_mouse_delta(float("nan")), DATA, "'action.mouse_delta' has non-finite values"),
    (non_finite_mouse_delta(float("inf")), DATA, "'action.mouse_delta' has non-finite values"),
    (non_finite_mouse_delta(float("nan")), DATA, "SHA-256 differs"),
    (edit_json(STATS, set_in(["action.mouse_delta", "mean", 0], float("nan"))), STATS,
     "non-finite numbers (NaN or infinity): action.mouse_delta/mean"),
    (edit_json(STATS, set_in(["action.mouse_delta", "q50", 1], 12.5)), STATS,
     "action.mouse_delta/q50 differs from the aggregate of the per-episode stats"),
    (edit_json(STATS, drop_stat), STATS, "'q01' is a required property"),
    (edit_json(INFO, old_depth_key), INFO, "is_depth_map"),
    (delete_events, "meta/events", "is missing: the raw input events were deleted"),
    (delete_consent, CONSENT, "is missing"),
    (drop_consent_columns, EPISODES, "episodes have lost their consent receipts: column(s) "
                                     "consent_receipt_id, license are missing"),
    (edit_json(CONSENT, set_in(["episodes", 1, "license"], "CC0-1.0")), CONSENT,
     "episode 1: license disagree(s) with meta/episodes/chunk-000/file-000.parquet"),
    (edit_json(CONSENT, set_in(["episodes", 0, "first_capture_time_ns"], 5)), CONSENT,
     "episode 0: capture times disagree(s)"),
    (edit_json(CONSENT, set_in(["episodes", 1, "episode_index"], 7)), CONSENT,
     "has no consent for episode(s) 1 of meta/episodes: their receipts are lost"),
    (append_to_card, "README.md", "SHA-256 differs from meta/checksums.json"),
    (add_file, "meta/extra.txt", "is not listed in meta/checksums.json"),
    (remove_tasks, "meta/tasks.parquet", "is missing (listed in meta/checksums.json)"),
    (shift_timestamp, DATA, "timestamps are not frame_index / fps"),
    (drop_row, DATA, "index is not contiguous"),
    (drop_row, "meta/info.json", "total_frames"),
    (drop_row, EPISODES, "do not cover"),
    (drop_column, DATA, "'action.mouse_wheel' of info.json features is missing"),
    (widen_column, DATA, "info.json says float32 [2]"),
    (raw_player_name, EPISODES, "not keyed pseudonyms"),
    (event_out_of_range, EVENTS, "frame outside their episode"),
    (bad_info_version, "meta/info.json", "codebase_version"),
    (video_off_grid, VIDEO, "off the 1/30 s grid"),
    (video_missing_frames, VIDEO, "rows have no video frame"),
    (video_missing_frames, VIDEO, "its episodes have"),
])
def test_verify_names_the_file_and_problem(exported: tuple[Path, ExportReport], tmp_path: Path,
                                           tamper: Callable[[Path], None], file: str,
                                           words: str) -> None:
    root = Path(shutil.copytree(exported[0], tmp_path / "copy"))
    assert verify_dataset(root).ok
    tamper(root)
    report = verify_dataset(root)
    assert not report.ok
    assert any(p.file == file and words in p.message for p in report.problems), report.summary()


def test_verify_reports_instead_of_raising_on_garbage(tmp_path: Path) -> None:
    assert verify_dataset(tmp_path / "missing").problems[0].message == "is not a directory"
    (tmp_path / "meta").mkdir()
    (tmp_path / "meta/info.json").write_text("{not json")
    report = verify_dataset(tmp_path)
    assert [str(p) for p in report.problems] == ["meta/info.json: is not valid JSON "
                                                 "(Expecting property name enclosed in "
                                                 "double quotes)"]


def test_verify_survives_unreadable_parquet(exported: tuple[Path, ExportReport],
                                            tmp_path: Path) -> None:
    root = Path(shutil.copytree(exported[0], tmp_path / "copy"))
    (root / DATA).write_bytes(b"garbage")
    (root / EPISODES).write_bytes(b"garbage")
    report = verify_dataset(root)
    files = {p.file for p in report.problems}
    assert {DATA, EPISODES} <= files, report.summary()
    assert "problem" in report.summary()
    assert np.all([p.message for p in report.problems])


def test_trace_consent_matches_episodes_by_capture_times(exported: tuple[Path, ExportReport],
                                                        tmp_path: Path) -> None:
    root = exported[0]
    consent = json.loads((root / CONSENT).read_text())
    traced = trace_consent(root, root / CONSENT)
    assert [(m.episode_index, m.source_episode_index) for m in traced] == [(0, 0), (1, 1)]
    assert {m.consent_receipt_id for m in traced} == {consent["episodes"][0]["consent_receipt_id"]}
    consent["episodes"][1]["last_capture_time_ns"] += 1  # no longer this dataset's episode 1
    other = tmp_path / "consent.json"
    other.write_text(json.dumps(consent))
    with pytest.raises(BadInputError, match=r"episode\(s\) 1 match no episode"):
        trace_consent(root, other)


def test_verify_checks_every_episodes_consent_in_a_ledger(tmp_path: Path, capture_home: Path,
                                                         monkeypatch) -> None:
    from click.testing import CliRunner

    from capture import consent, paths
    from capture.cli import cli
    from capture.export import export_dataset
    from tests.factories import build_session, gameplay_script

    receipt = consent.grant("carol", ["factorygame"], ["video", "keyboard", "mouse", "gamepad"])
    session = build_session(tmp_path / "sessions", gameplay_script(
        seconds=1, player="carol", receipt_id=receipt.receipt_id))
    export_dataset([session], tmp_path / "dataset")
    ledger = str(paths.ledger_path())
    runner = CliRunner()
    ok = runner.invoke(cli, ["dataset", "verify", str(tmp_path / "dataset"), "--ledger", ledger])
    assert ok.exit_code == 0, ok.output
    consent.revoke("carol")
    refused = runner.invoke(cli, ["dataset", "verify", str(tmp_path / "dataset"),
                                  "--ledger", ledger])
    assert refused.exit_code == 1
    assert f"consent receipt {receipt.receipt_id} for factorygame was withdrawn" in refused.output
    elsewhere = tmp_path / "other-ledger.jsonl"
    consent.grant("dave", ["factorygame"], ["video"], ledger_path=elsewhere)
    unknown = runner.invoke(cli, ["dataset", "verify", str(tmp_path / "dataset"),
                                  "--ledger", str(elsewhere)])
    assert unknown.exit_code == 1 and "is not known there" in unknown.output
