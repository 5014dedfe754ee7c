"""The built-in recorder: a grabber and an encoder process joined by a shared-memory ring."""

from __future__ import annotations

import ctypes
import multiprocessing
import os
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

from capture.errors import CaptureError
from capture.video._base import (
    Capabilities,
    CaptureTarget,
    VideoBackend,
    VideoOutput,
    VideoResult,
    VideoSettings,
)
from capture.video._encode import EncodePlan, run_encoder
from capture.video._grab import GrabPlan, RingSpec, Signals, run_grabber

RING_SLOTS = 8          # pictures in flight between grabber and encoder before the grabber drops
RING_BYTES_LIMIT = 128 << 20  # fewer slots for big pictures (4K: 4 slots), never fewer than 3
START_TIMEOUT_S = 30.0  # two spawned interpreters importing numpy, av, cv2 on a busy machine
STOP_TIMEOUT_S = 10.0


def resolve_target(target: CaptureTarget) -> tuple[str, tuple[int, int], tuple[int, int, int, int]]:
    """The display name, the screen size and the target's x, y, width, height on the root."""
    from Xlib import display as xdisplay
    from Xlib.error import XError

    name = target.display or os.environ.get("DISPLAY")
    if not name:
        raise CaptureError("no X display given and $DISPLAY is not set")
    try:
        connection = xdisplay.Display(name)
    except Exception as exc:  # DisplayConnectionError, DisplayNameError, OSError
        reason = getattr(exc, "msg", None) or exc
        raise CaptureError(f"cannot connect to X display {name} ({reason}): is the X server "
                           "running, and is it the right display?") from None
    try:
        root = connection.screen().root
        screen = root.get_geometry()
        screen_size = (int(screen.width), int(screen.height))
        if target.window_id is not None:
            window = connection.create_resource_object("window", target.window_id)
            try:
                geometry = window.get_geometry()
                origin = root.translate_coords(window, 0, 0)
            except XError:
                raise CaptureError(f"X window {target.window_id:#x} does not exist") from None
            box = (int(origin.x), int(origin.y), int(geometry.width), int(geometry.height))
        elif target.region is not None:
            box = tuple(int(v) for v in target.region)  # type: ignore[assignment]
            x, y, width, height = box
            if width <= 0 or height <= 0 or x < 0 or y < 0 or x + width > screen_size[0] \
                    or y + height > screen_size[1]:
                raise CaptureError(f"region {box} is not inside the {screen_size} screen")
        else:
            raise CaptureError("the capture target needs a window id or a region")
    finally:
        connection.close()
    if box[2] < 2 or box[3] < 2:
        raise CaptureError(f"the capture target is too small ({box[2]}x{box[3]})")
    return name, screen_size, box


class BuiltinVideoBackend(VideoBackend):
    """Records with python-mss (XShmGetImage) and libx264 through PyAV, in two child processes.

    The grabber takes the host-clock time right before each grab and keeps an absolute schedule;
    the encoder converts, encodes, muxes and journals. Neither ever waits for the other.
    """

    name = "builtin"
    capabilities = Capabilities(overlapping_segments=True)

    def __init__(self) -> None:
        self._grabber: BaseProcess | None = None
        self._encoder: BaseProcess | None = None
        self._signals: Signals | None = None
        self._grab_status: Connection | None = None
        self._encode_status: Connection | None = None
        self._output: VideoOutput | None = None
        self._spec: RingSpec | None = None
        self._result: VideoResult | None = None

    @property
    def pids(self) -> dict[str, int | None]:
        """Process ids of the grabber and the encoder (for monitoring and tests)."""
        return {"grabber": self._grabber.pid if self._grabber else None,
                "encoder": self._encoder.pid if self._encoder else None}

    def start(self, target: CaptureTarget, output: VideoOutput, settings: VideoSettings) -> None:
        if self._grabber is not None:
            raise CaptureError("this recorder was already started")
        display, screen_size, (x, y, width, height) = resolve_target(target)
        output.workdir.mkdir(parents=True, exist_ok=True)
        context = multiprocessing.get_context("spawn")
        slot_bytes = width * height * 4
        slots = max(3, min(RING_SLOTS, RING_BYTES_LIMIT // slot_bytes))
        spec = RingSpec(slots=slots, width=width, height=height)
        ring = context.RawArray(ctypes.c_uint8, spec.slots * spec.slot_bytes)
        signals = Signals(go=context.RawValue(ctypes.c_bool, False),
                          capturing=context.RawValue(ctypes.c_bool, True),
                          stop=context.RawValue(ctypes.c_bool, False),
                          consumed=context.RawValue(ctypes.c_int64, 0))
        frames_in, frames_out = context.Pipe(duplex=False)
        grab_status_in, grab_status_out = context.Pipe(duplex=False)
        encode_status_in, encode_status_out = context.Pipe(duplex=False)
        plan = GrabPlan(display=display, fps=settings.fps, origin=(x, y),
                        window_id=target.window_id, screen_size=screen_size,
                        owner_pid=os.getpid())
        self._grabber = context.Process(
            target=run_grabber, name="capture-grabber", daemon=True,
            args=(plan, spec, ring, signals, frames_out, grab_status_out))
        self._encoder = context.Process(
            target=run_encoder, name="capture-encoder", daemon=True,
            args=(EncodePlan(output, settings), spec, ring, signals, frames_in,
                  encode_status_out))
        self._encoder.start()
        self._grabber.start()
        # Only the children may hold these ends, so a dead child shows up as EOF on the other side.
        for end in (frames_in, frames_out, grab_status_out, encode_status_out):
            end.close()
        self._signals, self._spec, self._output = signals, spec, output
        self._grab_status, self._encode_status = grab_status_in, encode_status_in
        for status, process in ((grab_status_in, self._grabber), (encode_status_in, self._encoder)):
            kind, detail = self._receive(status, START_TIMEOUT_S, process)
            if kind != "ready":
                self._abort()
                grab_status_in.close()
                encode_status_in.close()
                raise CaptureError(str(detail))
        signals.go.value = True

    def set_capturing(self, on: bool) -> None:
        if self._signals is not None:
            self._signals.capturing.value = on

    def alive(self) -> bool:
        return (self._result is None and self._grabber is not None and self._encoder is not None
                and self._grabber.is_alive() and self._encoder.is_alive())

    def stop(self) -> VideoResult:
        if self._result is not None:
            return self._result
        if self._grabber is None or self._encoder is None or self._signals is None:
            raise CaptureError("the recorder was never started")
        assert self._grab_status is not None and self._encode_status is not None
        self._signals.stop.value = True
        grab_end = self._receive(self._grab_status, STOP_TIMEOUT_S, self._grabber)
        encode_end = self._receive(self._encode_status, STOP_TIMEOUT_S, self._encoder)
        self._abort()  # both should have exited already; this only reaps them
        self._grab_status.close()
        self._encode_status.close()
        self._result = self._merge(grab_end, encode_end)
        return self._result

    def _receive(self, status: Connection, timeout_s: float,
                 process: BaseProcess) -> tuple[str, Any]:
        """The next status message of a child, or ("died", why) if it exits or times out."""
        try:
            if status.poll(timeout_s):
                kind, detail = status.recv()
                return kind, detail
        except (EOFError, OSError):
            pass
        process.join(1.0)
        if process.exitcode is None:
            return "died", f"the {process.name} process did not answer within {timeout_s:.0f} s"
        return "died", f"the {process.name} process died (exit code {process.exitcode})"

    def _abort(self) -> None:
        assert self._signals is not None
        self._signals.stop.value = True
        for process in (self._grabber, self._encoder):
            if process is None:
                continue
            process.join(STOP_TIMEOUT_S)
            if process.is_alive():
                process.kill()
                process.join()

    def _merge(self, grab_end: tuple[str, Any], encode_end: tuple[str, Any]) -> VideoResult:
        assert self._spec is not None and self._output is not None
        result = VideoResult(backend=self.name, container="matroska")
        errors: list[str] = []
        if grab_end[0] == "end":
            result.cpu_seconds += grab_end[1]["cpu_seconds"]
            result.dropped_slots += grab_end[1]["trailing_drops"]
            result.notes += grab_end[1]["notes"]
            if grab_end[1]["error"]:
                errors.append(grab_end[1]["error"])
        else:
            errors.append(str(grab_end[1]))
            result.notes.append("grabber CPU time unknown (it died)")
        if encode_end[0] == "result":
            summary = encode_end[1]
            result.frames, result.repeated_frames = summary["frames"], summary["repeated_frames"]
            result.dropped_slots += summary["dropped_slots"]
            result.width, result.height = summary["width"], summary["height"]
            result.codec = summary["codec"]
            result.cpu_seconds += summary["cpu_seconds"]
            result.notes += summary["notes"]
            if summary["error"]:
                errors.append(summary["error"])
            if summary["stream_cut"] and grab_end[0] == "end":
                errors.append("the frame stream from the grabber was cut off")
        else:
            errors.append(str(encode_end[1]))
            self._count_journal(result)
        result.error = "; ".join(errors) or None
        return result

    def _count_journal(self, result: VideoResult) -> None:
        """Fill the frame counts from frames.jsonl when the encoder could not report them."""
        assert self._spec is not None and self._output is not None
        for record in self._output.timeline.records(salvage=True):
            result.frames += 1
            result.dropped_slots += int(record["dropped_before"])
            result.repeated_frames += bool(record["repeated"])
        result.width = self._spec.width - self._spec.width % 2
        result.height = self._spec.height - self._spec.height % 2
        result.codec = "h264"
        result.notes.append("encoder CPU time unknown (it died); counts read from frames.jsonl")
