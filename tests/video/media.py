"""Helpers for video tests: a window of known colours, decoding video.mkv, reading frames.jsonl."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import av
import numpy as np
from Xlib import X
from Xlib.display import Display

from capture import formats
from capture.journal import read_journal

# top-left, top-right, bottom-left, bottom-right quadrants
QUADRANT_COLOURS = ((255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255))


class ColourWindow:
    """A top-level window split into four quadrants of QUADRANT_COLOURS, painted by the server."""

    def __init__(self, display_name: str, x: int, y: int, width: int, height: int) -> None:
        self.display = Display(display_name)
        root = self.display.screen().root
        self.window = root.create_window(x, y, width, height, 0, X.CopyFromParent, X.InputOutput,
                                         X.CopyFromParent, background_pixel=0)
        for index, (red, green, blue) in enumerate(QUADRANT_COLOURS):
            column, row = index % 2, index // 2
            quadrant = self.window.create_window(
                column * width // 2, row * height // 2, width // 2, height // 2, 0,
                X.CopyFromParent, X.InputOutput, X.CopyFromParent,
                background_pixel=(red << 16) | (green << 8) | blue)
            quadrant.map()
        self.window.map()
        self.display.sync()
        self.id: int = self.window.id

    def move(self, x: int, y: int) -> None:
        self.window.configure(x=x, y=y)
        self.display.sync()

    def resize(self, width: int, height: int) -> None:
        self.window.configure(width=width, height=height)
        self.display.sync()

    def close(self) -> None:
        self.window.destroy()
        self.display.close()


def quadrant_colours(rgb: np.ndarray) -> list[tuple[int, int, int]]:
    """Mean colour of a 9x9 patch at the centre of each quadrant of an RGB frame."""
    height, width = rgb.shape[:2]
    colours = []
    for index in range(4):
        cx = (index % 2) * width // 2 + width // 4
        cy = (index // 2) * height // 2 + height // 4
        patch = rgb[cy - 4:cy + 5, cx - 4:cx + 5].reshape(-1, 3).mean(axis=0)
        red, green, blue = (round(float(v)) for v in patch)
        colours.append((red, green, blue))
    return colours


def matches_quadrants(rgb: np.ndarray, tolerance: int = 16) -> bool:
    return all(
        max(abs(a - b) for a, b in zip(seen, want, strict=True)) <= tolerance
        for seen, want in zip(quadrant_colours(rgb), QUADRANT_COLOURS, strict=True)
    )


def decode_video(path: Path) -> list[tuple[int, np.ndarray]]:
    """(pts, RGB picture) of every decodable frame of a video file, in file order."""
    frames = []
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            assert frame.pts is not None
            frames.append((frame.pts, frame.to_ndarray(format="rgb24")))
    return frames


def decoded_pts(path: Path) -> list[int]:
    """pts of every decodable frame, without converting pictures (salvages cut-off files)."""
    pts = []
    with av.open(str(path)) as container:
        try:
            for frame in container.decode(video=0):
                assert frame.pts is not None
                pts.append(frame.pts)
        except av.error.InvalidDataError:
            pass
    return pts


def read_frames(session_dir: Path) -> list[dict[str, Any]]:
    return list(read_journal(session_dir / formats.FRAMES_JOURNAL, salvage=True))
