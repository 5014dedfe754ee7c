"""Export engines: worker processes and Ray give the same dataset; object storage; re-runs."""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import jsonschema
import pytest

from capture.errors import CaptureError
from capture.export import engine as engine_module
from capture.export import layout, storage
from capture.export.engine import EngineOptions
from capture.export.lerobot import export_dataset
from capture.export.verify import verify_dataset
from capture.formats import schemas_dir
from tests.collector.conftest import free_port
from tests.export.conftest import PSEUDONYM_KEY
from tests.factories import SessionScript, build_session, frame_times, gameplay_script

FPS = 30


def test_every_json_schema_is_a_valid_schema() -> None:
    """formats.py skips the meta-schema check at run time (it costs ~0.25 s per schema)."""
    names = sorted(schemas_dir().glob("*.schema.json"))
    assert names
    for path in names:
        schema = json.loads(path.read_text())
        jsonschema.validators.validator_for(schema).check_schema(schema)


WIDTH, HEIGHT = 160, 96  # small, but not the 32-64 px where libx264's bytes varied run to run


def _one_to_one(root: Path, session_id: str, n: int) -> Path:
    times, dropped = frame_times(n, FPS, start_ns=50_000_000_000)
    return build_session(root, SessionScript(
        capture_times_ns=times, dropped_before=dropped, fps=FPS, session_id=session_id,
        width=WIDTH, height=HEIGHT, gop=FPS, preset="veryfast",
        encoder_options={"tune": "zerolatency", "x264-params": "scenecut=0"}))


@pytest.fixture(scope="module")
def sessions(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Three sessions: two with jitter, drops and a pause (re-encoded), one that maps one to
    one onto the grid (packets copied)."""
    root = tmp_path_factory.mktemp("sessions")
    return [
        build_session(root, gameplay_script(seconds=3, seed=1, width=WIDTH, height=HEIGHT,
                                            session_id="20250301T120000Z-factorygame-000001")),
        _one_to_one(root, "20250301T120500Z-factorygame-000002", 2 * FPS),
        build_session(root, gameplay_script(seconds=2, seed=3, width=WIDTH, height=HEIGHT,
                                            session_id="20250301T121000Z-factorygame-000003")),
    ]


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """An S3-compatible server (moto) on loopback; credentials and endpoint in the environment
    (set before Ray starts, so its workers inherit them). Yields the endpoint."""
    from moto.server import ThreadedMotoServer

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    saved = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                                            "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL")}
    os.environ.update(AWS_ACCESS_KEY_ID="test-key", AWS_SECRET_ACCESS_KEY="test-secret",
                      AWS_DEFAULT_REGION="us-east-1", AWS_ENDPOINT_URL=endpoint)
    try:
        yield endpoint
    finally:
        server.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture(scope="module")
def ray_cluster(s3_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real local Ray cluster (`ray start --head`) for this module; yields its address.

    Ray runs in processes of its own, never in the test process: its gRPC threads outlive
    `ray.shutdown()`, and a later fork in a process holding them can hang it (the likeliest
    cause of a CI run that stalled)."""
    pytest.importorskip("ray")
    port = free_port()
    address = f"127.0.0.1:{port}"
    ray = str(Path(sys.executable).with_name("ray"))
    log_path = tmp_path_factory.mktemp("ray") / "ray-start.log"
    with pytest.MonkeyPatch.context() as monkeypatch:
        # Ray 2.5x clusters require a token (kept in ~/.ray/auth_token); clients send it in this
        # mode. Set here, it reaches the cluster, `ray status` and the export's driver process.
        monkeypatch.setenv("RAY_AUTH_MODE", "token")
        with log_path.open("wb") as log:   # a pipe nobody reads would fill and stop Ray
            head = subprocess.Popen([ray, "start", "--head", "--block", f"--port={port}",
                                     "--node-ip-address=127.0.0.1", "--num-cpus=2",
                                     "--include-dashboard=false", "--disable-usage-stats"],
                                    stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 90
            while subprocess.run([ray, "status", f"--address={address}"], capture_output=True,
                                 timeout=60).returncode != 0:
                if head.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"Ray did not start:\n{log_path.read_text()[-3000:]}")
                time.sleep(1)
            yield address
        finally:
            head.terminate()    # `ray start --block` stops the cluster's processes on SIGTERM
            try:
                head.wait(60)
            except subprocess.TimeoutExpired:
                head.kill()
                head.wait()


def _export_in_process_of_its_own(inputs: list[Path] | list[str], out: Path | str,
                                  options: EngineOptions) -> dict[str, Any]:
    """What _export does, in a child process (see tests/export/engine_driver.py)."""
    args = {"inputs": [str(i) for i in inputs], "out": str(out),
            "engine": dataclasses.asdict(options)}
    done = subprocess.run([sys.executable, "-m", "tests.export.engine_driver", json.dumps(args)],
                          capture_output=True, text=True, timeout=600,
                          cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 0, done.stderr[-3000:]
    summary: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return summary


def _bucket(name: str) -> str:
    import boto3

    boto3.client("s3").create_bucket(Bucket=name)
    return f"s3://{name}"


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _export(sessions: list[Path] | list[str], out: Path | str, options: EngineOptions,
            **kwargs: object):  # type: ignore[no-untyped-def]
    return export_dataset(sessions, out, pseudonym_key=PSEUDONYM_KEY, engine=options,
                          **kwargs)  # type: ignore[arg-type]


def _decoded(path: Path) -> list[bytes]:
    with av.open(str(path)) as container:
        return [f.to_ndarray(format="yuv420p").tobytes() for f in container.decode(video=0)]


def _assert_same(a: Path, b: Path) -> None:
    """What the issue asks of two engines: byte-identical Parquet and metadata, and identical
    decoded frames. (The H.264 bytes may differ where libx264 writes its own settings into the
    stream: seen under Ray, with the very same pictures decoded; checksums.json hashes them.)"""
    files_a, files_b = _files(a), _files(b)
    assert sorted(files_a) == sorted(files_b)
    different = [name for name in files_a if files_a[name] != files_b[name]]
    videos = [n for n in different if n.endswith(".mp4")]
    # The card names the dataset's own folder in its loading snippets, and checksums.json
    # hashes the card and the videos.
    assert set(different) - {*videos, layout.CHECKSUMS_PATH, layout.CARD_PATH} == set(), \
        f"files differ: {different}"
    if layout.CARD_PATH in different:
        assert files_a[layout.CARD_PATH].replace(str(a).encode(), b"") == \
            files_b[layout.CARD_PATH].replace(str(b).encode(), b"")
    for name in videos:
        assert _decoded(a / name) == _decoded(b / name), f"{name}: decoded frames differ"


@pytest.mark.usefixtures("consent_active")
def test_worker_processes_and_ray_write_the_same_dataset(
        tmp_path: Path, sessions: list[Path], ray_cluster: str) -> None:
    made = {}
    for label, options in [("one", EngineOptions(workers=1)),
                           ("two", EngineOptions(workers=2))]:
        out = tmp_path / label / "dataset"
        report = _export(sessions, out, options, size=None)
        assert report.engine == options.engine
        assert [e.copied for e in report.episode_reports].count(True) == 1
        made[label] = out
    made["ray"] = tmp_path / "ray" / "dataset"
    summary = _export_in_process_of_its_own(
        sessions, made["ray"], EngineOptions(engine="ray", workers=2, ray_address=ray_cluster))
    assert summary["engine"] == "ray" and summary["copied"].count(True) == 1
    check = verify_dataset(made["one"])
    assert check.ok, check.problems
    _assert_same(made["one"], made["two"])
    _assert_same(made["one"], made["ray"])


@pytest.mark.usefixtures("consent_active")
def test_a_rerun_encodes_only_new_sessions_and_equals_a_fresh_export(
        tmp_path: Path, sessions: list[Path], monkeypatch: pytest.MonkeyPatch) -> None:
    options = EngineOptions(workers=1)  # in-process, so the spy below sees every encode
    # (not narrower than 48 px: libx264's output for 32-px-wide frames varies run to run)
    fresh = tmp_path / "fresh" / "dataset"
    _export(sessions, fresh, options, size=(128, 72))
    out = tmp_path / "rerun" / "dataset"
    _export(sessions[:2], out, options, size=(128, 72))

    encoded: list[str] = []
    real_encode = engine_module.encode_segment

    def spy(path: Path, *args: object, **kwargs: object):  # type: ignore[no-untyped-def]
        encoded.append(path.name)
        return real_encode(path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(engine_module, "encode_segment", spy)
    report = _export(sessions, out, options)  # size and codec come from the dataset
    assert report.sessions_unchanged == 2
    third_first = report.episodes - len([e for e in report.episode_reports
                                         if e.session_id == "20250301T121000Z-factorygame-000003"])
    assert encoded == [f"episode-{i:09d}.mp4" for i in range(third_first, report.episodes)]
    _assert_same(fresh, out)  # consent, stats (per episode and stats.json) and checksums too
    assert {layout.CONSENT_PATH, layout.CHECKSUMS_PATH, layout.STATS_PATH} <= set(_files(out))
    assert verify_dataset(out).ok

    before = _files(out)
    again = _export(list(reversed(sessions)), out, options)
    assert again.sessions_unchanged == 3 and again.episode_reports == ()
    assert _files(out) == before


@pytest.mark.usefixtures("consent_active")
def test_a_rerun_refuses_changed_settings_and_missing_sessions(
        tmp_path: Path, sessions: list[Path]) -> None:
    options = EngineOptions(workers=1)
    out = tmp_path / "dataset"
    _export(sessions[:2], out, options)
    before = _files(out)
    with pytest.raises(CaptureError, match="other settings: fps 30"):
        _export(sessions, out, options, fps=15)
    with pytest.raises(CaptureError, match="000001"):
        _export(sessions[1:], out, options)
    assert _files(out) == before
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(CaptureError, match="not a dataset capture export made"):
        _export(sessions, tmp_path / "other", options)


def _upload(session: Path, url: str) -> str:
    for path in sorted(session.iterdir()):
        copy = path.parent.parent / ".upload" / path.name
        copy.parent.mkdir(exist_ok=True)
        copy.write_bytes(path.read_bytes())
        storage.put_file(copy, storage.join(url, path.name))
    return url


@pytest.mark.usefixtures("consent_active")
def test_sessions_and_dataset_in_object_storage_with_both_engines(
        tmp_path: Path, sessions: list[Path], s3_server: str, ray_cluster: str) -> None:
    bucket = _bucket("capture-export-test")
    urls = [_upload(s, f"{bucket}/sessions/{s.name}") for s in sessions]
    local = tmp_path / "local" / "dataset"
    _export(sessions, local, EngineOptions(workers=1))
    for engine_name in ("local", "ray"):
        url = f"{bucket}/{engine_name}/dataset"
        if engine_name == "ray":
            summary = _export_in_process_of_its_own(
                urls, url, EngineOptions(engine="ray", workers=2, ray_address=ray_cluster))
            assert summary["sessions"] == 3
        else:
            assert _export(urls, url, EngineOptions(workers=2)).sessions == 3
        copy = storage.local_dir(url, tmp_path / engine_name / "dataset")
        _assert_same(local, copy)
        # segments staged in the bucket (Ray) are gone: only the dataset's files are there
        assert sorted(_files(copy)) == sorted(_files(local))
    with pytest.raises(CaptureError, match="not given"):
        _export(urls[1:], f"{bucket}/local/dataset", EngineOptions(workers=1))
