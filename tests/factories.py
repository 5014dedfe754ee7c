"""Factories: finalised session bundles built from a script, with frames that carry their index."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

from capture import formats
from capture.clock import ClockPair
from capture.journal import JournalWriter
from capture.session import writer
from capture.session.manifest import ComponentInfo, ConsentRef, GameInfo, InputInfo
from capture.video import VideoResult

START_UTC = "2025-03-01T12:00:00.000000Z"
TAG_COLUMNS, TAG_ROWS = 4, 3  # frames carry their index as a 12-bit black/white block pattern
TAG_BITS = TAG_COLUMNS * TAG_ROWS


# --- frames that say which frame they are --------------------------------------------------------
def tagged_frame(index: int, width: int, height: int) -> np.ndarray:
    """An RGB picture whose blocks spell `index` in binary (white = 1); survives H.264 and resizing.

    Bit k (least significant first) is the block in row k // 4, column k % 4. The blocks' white
    is tinted by the index so consecutive frames also differ in colour.
    """
    if not 0 <= index < 2 ** TAG_BITS:
        raise ValueError(f"frame index {index} does not fit in {TAG_BITS} bits")
    image = np.zeros((height, width, 3), dtype=np.uint8)
    image[...] = (index * 7 % 64, 32, 64 - index * 5 % 64)
    for bit in range(TAG_BITS):
        if index >> bit & 1:
            row, col = divmod(bit, TAG_COLUMNS)
            y0, y1 = row * height // TAG_ROWS, (row + 1) * height // TAG_ROWS
            x0, x1 = col * width // TAG_COLUMNS, (col + 1) * width // TAG_COLUMNS
            image[y0:y1, x0:x1] = (255, 255 - index % 32, 224)
    return image


def read_frame_tag(image: np.ndarray) -> int:
    """The index tagged_frame drew into an RGB picture (read from each block's centre)."""
    height, width = image.shape[:2]
    index = 0
    for bit in range(TAG_BITS):
        row, col = divmod(bit, TAG_COLUMNS)
        y0, y1 = row * height // TAG_ROWS, (row + 1) * height // TAG_ROWS
        x0, x1 = col * width // TAG_COLUMNS, (col + 1) * width // TAG_COLUMNS
        dy, dx = (y1 - y0) // 4, (x1 - x0) // 4
        centre = image[y0 + dy:y1 - dy, x0 + dx:x1 - dx, 0]
        if centre.mean() > 150:
            index |= 1 << bit
    return index


# --- the frame timeline ---------------------------------------------------------------------------
def frame_times(n_frames: int, fps: float, *, start_ns: int = 10_000_000_000,
                jitter_ns: int = 0, pauses: dict[int, int] | None = None,
                dropped_slots: frozenset[int] | set[int] = frozenset(),
                seed: int = 0) -> tuple[list[int], list[int]]:
    """Capture times of n_frames frames on nominal 1/fps slots, and dropped slots before each.

    `pauses` maps a frame number to extra ns of pause before it (recording paused, e.g. focus
    lost); `dropped_slots` are slot numbers the recorder missed. Jitter is uniform +-jitter_ns.
    """
    rng = random.Random(seed)
    interval = 1e9 / fps
    pauses = pauses or {}
    times: list[int] = []
    dropped_before: list[int] = []
    slot, extra = 0, 0
    for frame in range(n_frames):
        extra += pauses.get(frame, 0)
        skipped = 0
        while slot in dropped_slots:
            slot += 1
            skipped += 1
        t = start_ns + extra + round(slot * interval) + rng.randint(-jitter_ns, jitter_ns)
        if times and t <= times[-1]:
            t = times[-1] + 1
        times.append(t)
        dropped_before.append(skipped)
        slot += 1
    return times, dropped_before


# --- input events ---------------------------------------------------------------------------------
def event(t_ns: int, kind: str, **fields: Any) -> dict[str, Any]:
    return {"t_ns": int(t_ns), "kind": kind, "time_source": "x_server", "synthetic": False,
            **fields}


def motion(t_ns: int, dx: float, dy: float) -> dict[str, Any]:
    return event(t_ns, "motion", dx=float(dx), dy=float(dy), device="factory-mouse")


def wheel(t_ns: int, vertical: float = 0.0, horizontal: float = 0.0) -> dict[str, Any]:
    return event(t_ns, "wheel", dx=float(horizontal), dy=float(vertical))


def key(t_ns: int, name: str, *, down: bool, synthetic: bool = False) -> dict[str, Any]:
    return event(t_ns, "key_press" if down else "key_release", key=name, synthetic=synthetic,
                 time_source="derived" if synthetic else "x_server")


def button(t_ns: int, name: str, *, down: bool, synthetic: bool = False) -> dict[str, Any]:
    return event(t_ns, "button_press" if down else "button_release", button=name,
                 synthetic=synthetic, time_source="derived" if synthetic else "x_server")


def focus(t_ns: int, *, inside: bool) -> dict[str, Any]:
    return event(t_ns, "focus_in" if inside else "focus_out", window="factorygame")


def gamepad_axis(t_ns: int, axis: str, value: float) -> dict[str, Any]:
    return event(t_ns, "gamepad_axis", axis=axis, value=float(value), device="pad0")


def gamepad_button(t_ns: int, name: str, *, down: bool) -> dict[str, Any]:
    return event(t_ns, "gamepad_button_press" if down else "gamepad_button_release", axis=name,
                 device="pad0")


# --- sessions -------------------------------------------------------------------------------------
@dataclass
class SessionScript:
    """Everything a factory session contains."""

    capture_times_ns: list[int]
    events: list[dict[str, Any]] = field(default_factory=list)
    dropped_before: list[int] | None = None
    fps: int = 30
    width: int = 64
    height: int = 48
    game: str = "factorygame"
    player: str = "Alice Example"
    receipt_id: str = "6f1c2a3e-0b4d-4e5f-8a7b-9c0d1e2f3a4b"
    license: str = "CC-BY-4.0"
    synthetic: bool = True
    session_id: str = "20250301T120000Z-factorygame-000001"
    frame_tags: list[int] | None = None  # what each video frame shows; default: its number
    preset: str = "ultrafast"
    gop: int | None = None  # frames between keyframes (None: FFmpeg's default, 12)
    encoder_options: dict[str, str] | None = None  # e.g. {"tune": "zerolatency"} as recorded
    painter: Callable[[int, int, int], np.ndarray] = tagged_frame  # (tag, width, height) -> RGB

    @property
    def start_ns(self) -> int:
        return min([*self.capture_times_ns[:1], *(e["t_ns"] for e in self.events[:1])]) - 1000


def write_video(path: Path, script: SessionScript) -> list[int]:
    """Encode the script's frames like the recorder does (H.264 in Matroska, pts in ms)."""
    tags = script.frame_tags or list(range(len(script.capture_times_ns)))
    pts_list: list[int] = []
    with av.open(str(path), "w", format="matroska") as container:
        stream = container.add_stream("libx264", rate=script.fps)
        stream.width, stream.height, stream.pix_fmt = script.width, script.height, "yuv420p"
        stream.codec_context.time_base = Fraction(1, 1000)
        stream.codec_context.options = {"preset": script.preset, "crf": "18",
                                        **(script.encoder_options or {})}
        if script.gop is not None:
            stream.codec_context.gop_size = script.gop
        for tag, t in zip(tags, script.capture_times_ns, strict=True):
            frame = av.VideoFrame.from_ndarray(script.painter(tag, script.width, script.height),
                                               format="rgb24")
            pts = max((t - script.capture_times_ns[0]) // 1_000_000,
                      pts_list[-1] + 1 if pts_list else 0)
            frame.pts, frame.time_base = pts, Fraction(1, 1000)
            pts_list.append(pts)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return pts_list


def build_recording(root: Path, script: SessionScript, *, extra_logged_frames: int = 0,
                    torn_event: bool = False, recorder_pid: int | None = None) -> Path:
    """A session as a recorder leaves it before finalise: manifest 'recording', the video,
    the frames and events journals. `extra_logged_frames` logs frames the video does not hold
    (a recorder killed between logging and writing); `torn_event` cuts off the last journal
    line as a crash would; `recorder_pid` goes into the lock file."""
    session_dir = root / script.session_id
    consent = ConsentRef(receipt_id=script.receipt_id, license=script.license,
                         scope=("gamepad", "keyboard", "mouse", "video"),
                         synthetic=script.synthetic)
    start = ClockPair(monotonic_ns=script.start_ns, utc=START_UTC)
    manifest = writer.initial_manifest(
        session_id=script.session_id, player=script.player, consent=consent,
        game=GameInfo(name=script.game), video_backend="builtin",
        input_info=InputInfo(backend=ComponentInfo(name="factory")), fps=script.fps,
        start=start)
    writer.create_session(session_dir, manifest, recorder_pid=recorder_pid)

    pts_list = write_video(session_dir / formats.VIDEO, script)
    times = script.capture_times_ns
    dropped = script.dropped_before or [0] * len(times)
    frames = JournalWriter(session_dir / formats.FRAMES_JOURNAL)
    for i in range(len(times) + extra_logged_frames):
        last = min(i, len(times) - 1)
        t = times[last] + max(0, i - len(times) + 1) * 33_000_000
        frames.append({"frame_index": i, "capture_time_ns": t, "grab_duration_ns": 2_000_000,
                       "dropped_before": dropped[last] if i < len(times) else 0,
                       "repeated": False, "pts": pts_list[last] + max(0, i - last) * 33})
    frames.close()
    events = JournalWriter(session_dir / formats.EVENTS_JOURNAL)
    for record in script.events:
        events.append(record)
    events.close()
    if torn_event:
        with open(session_dir / formats.EVENTS_JOURNAL, "a") as f:
            f.write('{"t_ns": 99, "kind": "mot')  # the write the crash cut off
    return session_dir


def factory_video_result(script: SessionScript) -> VideoResult:
    dropped = script.dropped_before or [0] * len(script.capture_times_ns)
    return VideoResult(backend="builtin", frames=len(script.capture_times_ns),
                       dropped_slots=sum(dropped), width=script.width, height=script.height,
                       codec="h264")


def build_session(root: Path, script: SessionScript) -> Path:
    """Write a finalised session bundle for `script` under root/<session_id>; returns its path."""
    session_dir = build_recording(root, script)
    writer.finalise(session_dir, video_result=factory_video_result(script))
    return session_dir


def gameplay_script(*, seconds: float = 4.0, fps: int = 30, seed: int = 1,
                    **overrides: Any) -> SessionScript:
    """A realistic few seconds of play: jittered frames, a dropped slot, a focus pause with
    synthetic releases, W held across frames and the pause, mouse motion at 125 Hz, wheel clicks,
    mouse buttons, a gamepad stick and button."""
    rng = random.Random(seed)
    n = int(seconds * fps)
    pause_at = n // 2
    times, dropped = frame_times(n, fps, jitter_ns=3_000_000, pauses={pause_at: 1_000_000_000},
                                 dropped_slots={n // 4}, seed=seed)
    t0, t_pause, t_resume, t_end = times[0], times[pause_at - 1], times[pause_at], times[-1]
    events = [focus(t0 - 500_000, inside=True), key(t0 + 40_000_000, "W", down=True)]
    t = t0
    while t < t_end:
        if not t_pause < t < t_resume:
            events.append(motion(t, rng.randint(-5, 5), rng.randint(-3, 3)))
        t += 8_000_000
    events += [
        button(t0 + 100_000_000, "left", down=True), button(t0 + 180_000_000, "left", down=False),
        wheel(t0 + 300_000_000, vertical=1), wheel(t0 + 310_000_000, vertical=1),
        wheel(t0 + 500_000_000, horizontal=-1),
        key(t0 + 200_000_000, "space", down=True), key(t0 + 210_000_000, "space", down=False),
        gamepad_axis(t0 + 250_000_000, "leftx", 0.5),
        gamepad_axis(t0 + 600_000_000, "leftx", -0.25),
        gamepad_button(t0 + 260_000_000, "a", down=True),
        gamepad_button(t0 + 400_000_000, "a", down=False),
        # focus lost while W is held: the backend closes the hold with a synthetic release
        focus(t_pause + 20_000_000, inside=False),
        key(t_pause + 20_000_000, "w", down=False, synthetic=True),
        focus(t_resume - 10_000_000, inside=True),
        key(t_resume + 50_000_000, "w", down=True), key(t_end - 100_000_000, "W", down=False),
        key(t_resume + 70_000_000, "F13", down=True), key(t_resume + 90_000_000, "F13", down=False),
    ]
    events.sort(key=lambda e: e["t_ns"])
    script = SessionScript(capture_times_ns=times, events=events, dropped_before=dropped, fps=fps)
    return replace(script, **overrides)
