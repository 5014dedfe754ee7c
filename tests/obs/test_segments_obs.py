"""Segments with OBS: one file at a time, so a play session stays one segment; finalised stays."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from capture import consent
from capture.demo.game import WINDOW_CLASS
from capture.inputs.xtest import XTestInjector
from capture.session import writer
from capture.session.manifest import read_manifest
from capture.session.reader import open_session
from capture.session.recorder import RecordOptions, record
from capture.video.obs.settings import ObsSettings
from tests.obs.harness import obs_available

pytestmark = [pytest.mark.x11, pytest.mark.slow,
              pytest.mark.skipif(not obs_available(), reason="needs OBS Studio and Xvfb")]
FPS = 30




def test_an_obs_recording_stays_one_segment(xvfb, demo_game, obs, capture_home,
                                                       tmp_path: Path) -> None:
    consent.grant("p1", [WINDOW_CLASS], ["video", "keyboard", "mouse"])
    out = tmp_path / "out"
    opts = RecordOptions(game=WINDOW_CLASS, backend="obs", fps=FPS, out=out,
                         display=xvfb.display, player="p1", max_segment_s=3.0,
                         video_options=ObsSettings(obs.host, obs.port, obs.password))
    started, stop = threading.Event(), threading.Event()
    said: list[str] = []
    thread = threading.Thread(target=record, args=(opts,), kwargs={
        "stop": stop, "say": said.append, "on_started": lambda _p: started.set()})
    thread.start()
    sent = 0
    try:
        assert started.wait(40), said
        with XTestInjector(xvfb.display) as inject:
            inject.focus(demo_game)
            time.sleep(0.5)
            deadline = time.monotonic() + 8.0
            while time.monotonic() < deadline:
                inject.move_relative(1, 0)
                sent += 1
                time.sleep(0.02)
        time.sleep(0.5)
    finally:
        stop.set()
        thread.join(90)
    assert not thread.is_alive()
    segments = list(out.iterdir())
    assert len(segments) == 1, said
    manifest = read_manifest(segments[0])
    assert manifest.status == "complete", (manifest.error, said)
    assert manifest.qa is not None and manifest.qa.frames > 5 * FPS
    assert any("one file at a time" in line for line in said)
    # OBS keeps running (and its clock script ticking): nothing may change the finalised files.
    time.sleep(3.0)
    assert writer.hash_files(segments[0]) == manifest.files
    motion = [e for e in open_session(segments[0]).events().to_pylist()
              if e["kind"] == "motion"]
    assert sum(e["dx"] for e in motion) == sent
