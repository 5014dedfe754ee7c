"""What export refuses: withdrawn or unknown consent, used outputs, corrupt session files."""

from __future__ import annotations

import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from capture import formats
from capture.errors import BadInputError, CaptureError, ConsentError
from capture.export.lerobot import export_dataset
from capture.session import writer
from capture.session.manifest import read_manifest, write_manifest
from tests.factories import build_session, gameplay_script

from .conftest import PSEUDONYM_KEY, stub_consent


def copy_session(session: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(session, tmp_path / "sessions" / session.name))


def fix_hashes(session: Path) -> None:
    """Re-hash the files so damage is found by decoding, not by the manifest's checksums."""
    manifest = read_manifest(session)
    write_manifest(session, manifest.updated(files=writer.hash_files(session)))


def assert_nothing_written(out: Path) -> None:
    assert not out.exists()
    assert [p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}")] == []


@pytest.mark.parametrize("status, words", [("revoked", "withdrawn"),
                                           ("unknown", "not in the consent ledger")])
def test_withdrawn_or_unknown_consent_refuses_the_whole_export(
        gameplay_session: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, status: str,
        words: str) -> None:
    other = build_session(tmp_path, gameplay_script(
        receipt_id="00000000-0000-4000-8000-00000000bad0",
        session_id="20250301T160000Z-factorygame-000005"))
    stub_consent(monkeypatch, lambda rid: status if rid.endswith("bad0") else "active")
    out = tmp_path / "ds"
    with pytest.raises(ConsentError) as caught:
        export_dataset([gameplay_session, other], out, pseudonym_key=PSEUDONYM_KEY)
    message = str(caught.value)
    assert words in message and "00000000-0000-4000-8000-00000000bad0" in message
    assert "20250301T160000Z-factorygame-000005" in message
    assert gameplay_script().session_id not in message
    assert_nothing_written(out)


def test_real_consent_ledger_is_consulted(tmp_path: Path, capture_home: Path) -> None:
    consent = pytest.importorskip("capture.consent")
    if not hasattr(consent, "grant"):
        pytest.skip("capture.consent.grant is not available yet")
    receipt = consent.grant("Alice Example", ["factorygame"], ["video", "keyboard", "mouse"],
                            synthetic=True)
    session = build_session(tmp_path, gameplay_script(receipt_id=receipt.receipt_id))
    report = export_dataset([session], tmp_path / "ok")
    assert report.episodes == 2
    consent.revoke("Alice Example", receipt_id=receipt.receipt_id)
    with pytest.raises(ConsentError, match="withdrawn"):
        export_dataset([session], tmp_path / "refused")
    assert_nothing_written(tmp_path / "refused")


def test_existing_non_empty_output_is_refused(gameplay_session: Path, tmp_path: Path,
                                              consent_active: None) -> None:
    out = tmp_path / "ds"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(CaptureError, match="not empty"):
        export_dataset([gameplay_session], out, pseudonym_key=PSEUDONYM_KEY)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert export_dataset([gameplay_session], empty, pseudonym_key=PSEUDONYM_KEY).frames > 0


def truncate_video(session: Path) -> None:
    video = session / formats.VIDEO
    video.write_bytes(video.read_bytes()[: video.stat().st_size // 2])


def garble_video(session: Path) -> None:
    video = session / formats.VIDEO
    data = bytearray(video.read_bytes())
    data[200:] = bytes((i * 37 + 11) % 256 for i in range(len(data) - 200))
    video.write_bytes(bytes(data))


def garble_manifest(session: Path) -> None:
    (session / formats.MANIFEST).write_text('{"schema_version": 1, "session_id": ')


def garble_events(session: Path) -> None:
    (session / formats.EVENTS_TABLE).write_bytes(b"PAR1 this is not parquet at all" * 10)


@pytest.mark.parametrize("damage, fixed_hashes, culprit, words", [
    (truncate_video, False, formats.VIDEO, "truncated"),
    (truncate_video, True, formats.VIDEO, "video"),
    (garble_video, False, formats.VIDEO, "SHA-256"),
    (garble_video, True, formats.VIDEO, "decod"),
    (garble_manifest, False, formats.MANIFEST, "not valid JSON"),
    (garble_events, False, formats.EVENTS_TABLE, "bytes"),
    (garble_events, True, formats.EVENTS_TABLE, "Parquet"),
])
def test_corrupt_session_files_are_named_in_the_error(
        gameplay_session: Path, tmp_path: Path, consent_active: None, damage, fixed_hashes: bool,
        culprit: str, words: str) -> None:
    session = copy_session(gameplay_session, tmp_path)
    damage(session)
    if fixed_hashes:
        fix_hashes(session)
    out = tmp_path / "ds"
    with pytest.raises(BadInputError) as caught:
        export_dataset([session], out, pseudonym_key=PSEUDONYM_KEY)
    assert caught.value.path is not None and caught.value.path.name == culprit, str(caught.value)
    assert words in str(caught.value)
    assert_nothing_written(out)


def test_a_missing_session_directory_is_named(tmp_path: Path, consent_active: None) -> None:
    with pytest.raises(BadInputError, match="not a session directory"):
        export_dataset([tmp_path / "nope"], tmp_path / "ds")


def test_episodes_too_long_for_float32_timestamps_are_refused(gameplay_session: Path,
                                                              tmp_path: Path,
                                                              consent_active: None) -> None:
    with pytest.raises(CaptureError, match="float32"):
        export_dataset([gameplay_session], tmp_path / "ds", max_episode_s=3600)
    assert not (tmp_path / "ds").exists()


def poison_events(session: Path, column: str, value: float) -> int:
    """Put `value` into `column` of the first event that has one; returns that row."""
    table = pq.read_table(session / formats.EVENTS_TABLE)
    values = table.column(column).to_pylist()
    row = next(i for i, v in enumerate(values) if v is not None)
    values[row] = value
    table = table.set_column(table.schema.get_field_index(column), column,
                             pa.array(values, table.schema.field(column).type))
    pq.write_table(table, session / formats.EVENTS_TABLE)
    fix_hashes(session)
    return row


@pytest.mark.parametrize("column, value", [("dx", float("nan")), ("dy", float("inf")),
                                           ("value", float("-inf"))])
def test_non_finite_input_values_are_refused_naming_file_and_row(
        gameplay_session: Path, tmp_path: Path, consent_active: None, column: str,
        value: float) -> None:
    session = copy_session(gameplay_session, tmp_path)
    row = poison_events(session, column, value)
    out = tmp_path / "ds"
    with pytest.raises(BadInputError) as caught:
        export_dataset([session], out, pseudonym_key=PSEUDONYM_KEY)
    assert caught.value.path == session / formats.EVENTS_TABLE
    assert f"row {row} " in str(caught.value) and f"{column} is {value}" in str(caught.value)
    assert "non-finite" in str(caught.value)
    assert_nothing_written(out)
