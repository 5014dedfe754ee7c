"""A recorder to kill: starts an OBS recording with ObsVideoBackend, says so, then waits.

Usage: python -m tests.obs.recorder_driver HOST PORT PASSWORD DISPLAY WINDOW SESSION_DIR FPS
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from capture.session.writer import video_output
from capture.video import CaptureTarget, VideoSettings
from capture.video.obs.backend import ObsVideoBackend
from capture.video.obs.settings import ObsSettings


def main() -> None:
    host, port, password, display, window, session_dir, fps = sys.argv[1:8]
    recorder = ObsVideoBackend(ObsSettings(host, int(port), password))
    recorder.start(CaptureTarget(display=display, window_id=int(window)),
                   video_output(Path(session_dir)), VideoSettings(fps=int(fps)))
    print("recording", flush=True)
    time.sleep(600)


if __name__ == "__main__":
    main()
