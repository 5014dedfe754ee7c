"""OBS script: logs the host-clock time and a content fingerprint of every frame OBS outputs."""

# Runs inside OBS's embedded Python (stdlib, obspython and ctypes only; keep it importable without
# OBS so tests can check the fingerprint). Loaded through the scene collection's
# "modules": {"scripts-tool": [...]} entry.
#
# What it logs, one JSON array per line, into "<recording path>.capture-clock.jsonl" (next to the
# file OBS records; opened when a recording starts, closed when it stops):
#   ["hello", {...}]             script version, clock check (os_gettime_ns vs CLOCK_MONOTONIC)
#   ["t", video_ts, host_ns, total_frames, lagged_frames]
#                                every render tick (script_tick): the slot time OBS renders now
#                                and the host time of the tick, which comes right before the
#                                sources (screen capture) are ticked
#   ["f", video_ts, host_ns, repeated, fingerprint]
#                                every frame the video output delivers (the encoder gets the same
#                                sequence): its slot time, whether OBS repeats the previous picture
#                                (render lag or a full frame cache), and a luma fingerprint
#   ["start" | "pause" | "unpause" | "stop", {...}]   recording state changes, with host time and
#                                the slot time of the last delivered frame
#   ["end", {...}]               the last line of a finished recording's log
# Frames are hooked (obs_add_raw_video_callback through ctypes) only from "recording starting"
# to "recording stopped", so an idle OBS does not copy frames from the GPU for us. Lines from
# "recording starting" on (at most BUFFER_NS old) are kept in memory until "recording started"
# names the file; then they are written. A writer thread flushes at least every FLUSH_S:
# script_unload does not run on SIGTERM.
# The recorder that started the recording writes its host time into "<recording path>
# .capture-alive" every HEARTBEAT_S. Should that time grow older than RECORDER_GONE_NS (the
# recorder was killed or hangs), the script stops the recording and logs
#   ["watchdog", {...}]
# so nothing more is recorded without the recorder's focus and consent checks. A recording with
# no such file (started by hand in OBS) is not watched.
# Nothing is written into a log after its recording stopped: on "recording stopped" the writer
# appends the "end" line and closes the file for good (the backend waits for that before it
# hashes the session). Should that event never reach the script, the writer closes the log
# once OBS's recording output has been inactive for INACTIVE_CLOSE_S.

from __future__ import annotations

import base64
import collections
import ctypes
import ctypes.util
import json
import threading
import time
from typing import Any

try:
    import obspython as obs
except ImportError:  # imported by tests outside OBS
    obs = None

SCRIPT_VERSION = 1
LOG_SUFFIX = ".capture-clock.jsonl"
BUFFER_NS = 3_000_000_000
TICKS_KEPT_NS = 1_000_000_000   # render ticks kept from before a recording starts
FLUSH_S = 0.1
INACTIVE_CLOSE_S = 1.0   # close the log when the recording output is inactive this long
ALIVE_SUFFIX = ".capture-alive"
HEARTBEAT_S = 0.5              # how often the recorder writes its time there
RECORDER_GONE_NS = 5_000_000_000   # a heartbeat this old: the recorder is gone, stop recording
ALIVE_CHECK_NS = 500_000_000
GRID = 8               # fingerprint: GRID x GRID cells of mean luma
LINES_PER_CELL = 4     # sampled rows per cell
COLUMN_STEP = 4        # every 4th pixel of a sampled row
MAX_PLANES = 8
# libobs enum video_format values whose plane 0 is 8-bit luma
LUMA_FORMATS = {1: "I420", 2: "NV12", 9: "Y800", 10: "I444", 12: "I422", 13: "I40A",
                14: "I42A", 15: "YUVA"}


class VideoData(ctypes.Structure):
    """libobs `struct video_data` (media-io/video-io.h)."""

    _fields_ = [("data", ctypes.c_void_p * MAX_PLANES),
                ("linesize", ctypes.c_uint32 * MAX_PLANES),
                ("timestamp", ctypes.c_uint64)]


RAW_VIDEO_CALLBACK = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.POINTER(VideoData))


def sample_rows(height: int) -> list[int]:
    """The luma rows the fingerprint reads, GRID * LINES_PER_CELL of them, top to bottom."""
    lines = GRID * LINES_PER_CELL
    return [((2 * i + 1) * height) // (2 * lines) for i in range(lines)]


def cell_columns(width: int) -> list[tuple[int, int]]:
    """[x0, x1) of each fingerprint column."""
    return [(c * width // GRID, (c + 1) * width // GRID) for c in range(GRID)]


def fingerprint_rows(rows: list[bytes], width: int) -> bytes:
    """GRID*GRID mean luma bytes from the sampled rows (as returned for sample_rows)."""
    columns = cell_columns(width)
    out = bytearray(GRID * GRID)
    for r in range(GRID):
        for c, (x0, x1) in enumerate(columns):
            total = count = 0
            for q in range(LINES_PER_CELL):
                part = rows[r * LINES_PER_CELL + q][x0:x1:COLUMN_STEP]
                total += sum(part)
                count += len(part)
            out[r * GRID + c] = (2 * total + count) // (2 * count) if count else 0
    return bytes(out)


class _Recorder:
    """The script's state: buffered log lines, the open log file and the raw frame hook."""

    def __init__(self) -> None:
        self.lines: collections.deque[tuple[int, str]] = collections.deque()
        self.lock = threading.Lock()
        self.path: str | None = None        # log file to open (set when a recording starts)
        self.file: Any = None
        self.closing = False                # write the "end" line and close
        self.stop_thread = threading.Event()
        self.thread: threading.Thread | None = None
        self.libobs: Any = None
        self.callback: Any = None
        self.hooked = False
        self.width = self.height = 0
        self.format = 0
        self.fps = (0, 1)
        self.last_pointer = 0
        self.last_fingerprint = ""
        self.last_ts = 0
        self.frames_delivered = 0
        self.hello: dict[str, Any] = {}
        self.output: Any = None             # the recording output of the open log (a reference)
        self.inactive_since: float | None = None
        self.alive_checked_ns = 0
        self.watchdog_fired = False

    # --- log lines ---------------------------------------------------------------------------
    def add(self, host_ns: int, item: list[Any]) -> None:
        self.lines.append((host_ns, json.dumps(item, separators=(",", ":"))))

    def writer_loop(self) -> None:
        while not self.stop_thread.wait(FLUSH_S):
            self.write_pending()
        self.write_pending()

    def write_pending(self) -> None:
        with self.lock:
            self.stop_if_recorder_gone()
            self.close_if_inactive()
            if self.path is not None and self.file is None:
                try:
                    self.file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115
                except OSError as exc:
                    _log(f"cannot open {self.path}: {exc}")
                    self.path = None
            if self.file is None:
                horizon = _now() - BUFFER_NS
                while self.lines and self.lines[0][0] < horizon:
                    self.lines.popleft()
                return
            chunk = []
            while self.lines:
                chunk.append(self.lines.popleft()[1])
            if self.closing:
                chunk.append(json.dumps(["end", {"host_ns": _now(),
                                                 "frames_delivered": self.frames_delivered}]))
            try:
                if chunk:
                    self.file.write("\n".join(chunk) + "\n")
                self.file.flush()
            except OSError as exc:
                _log(f"cannot write the clock log: {exc}")
            if self.closing:
                self.file.close()
                self.file = None
                self.path = None
                self.closing = False
                self.release_output()

    def stop_if_recorder_gone(self) -> None:
        """Stop the recording when its recorder's heartbeat went stale (called with the lock
        held, on the writer thread; OBS queues the stop onto its UI thread)."""
        if self.file is None or self.path is None or self.closing or self.watchdog_fired \
                or obs is None:
            return
        now = _now()
        if now - self.alive_checked_ns < ALIVE_CHECK_NS:
            return
        self.alive_checked_ns = now
        try:
            with open(self.path[:-len(LOG_SUFFIX)] + ALIVE_SUFFIX, encoding="ascii") as beat:
                last_alive = int(beat.read().strip())
        except FileNotFoundError:
            return                  # not started by capture: not watched
        except (OSError, ValueError):
            return                  # being replaced right now: next time
        if now - last_alive > RECORDER_GONE_NS:
            self.watchdog_fired = True
            self.add(now, ["watchdog", {"host_ns": now, "last_alive_ns": last_alive}])
            _log("the capture recorder stopped answering: stopping the recording")
            obs.obs_frontend_recording_stop()

    def close_if_inactive(self) -> None:
        """Ask for the log to be closed if its recording output stopped without our hearing of
        it (called with the lock held, on the writer thread: obs_output_active is atomic)."""
        if self.file is None or self.output is None or self.closing or obs is None:
            self.inactive_since = None
            return
        if obs.obs_output_active(self.output):
            self.inactive_since = None
            return
        now = time.monotonic()
        if self.inactive_since is None:
            self.inactive_since = now
        elif now - self.inactive_since >= INACTIVE_CLOSE_S:
            self.lines.append((_now(), json.dumps(["stop", {"host_ns": _now(),
                                                            "last_ts": self.last_ts,
                                                            "reason": "output inactive"}])))
            self.closing = True

    def release_output(self) -> None:
        if self.output is not None and obs is not None:
            obs.obs_output_release(self.output)
        self.output = None
        self.inactive_since = None

    # --- OBS hooks -----------------------------------------------------------------------------
    def read_video_info(self) -> None:
        info = obs.obs_video_info()
        if obs.obs_get_video_info(info):
            self.width, self.height = int(info.output_width), int(info.output_height)
            self.format = int(info.output_format)
            self.fps = (int(info.fps_num), int(info.fps_den))

    def on_raw_frame(self, _param: Any, frame_pointer: Any) -> None:
        host = _now()
        frame = frame_pointer.contents
        timestamp = int(frame.timestamp)
        pointer = int(frame.data[0] or 0)
        repeated = pointer == self.last_pointer and pointer != 0
        if repeated:
            fingerprint = self.last_fingerprint
        else:
            fingerprint = self.fingerprint(pointer, int(frame.linesize[0]))
        self.last_pointer, self.last_fingerprint = pointer, fingerprint
        self.last_ts = timestamp
        self.frames_delivered += 1
        self.add(host, ["f", timestamp, host, int(repeated), fingerprint])

    def fingerprint(self, pointer: int, linesize: int) -> str:
        if not pointer or self.format not in LUMA_FORMATS or not self.width:
            return ""
        rows = [ctypes.string_at(pointer + y * linesize, self.width)
                for y in sample_rows(self.height)]
        return base64.b64encode(fingerprint_rows(rows, self.width)).decode("ascii")

    def tick(self) -> None:
        host = int(obs.os_gettime_ns())
        self.add(host, ["t", int(obs.obs_get_video_frame_time()), host,
                        int(obs.obs_get_total_frames()), int(obs.obs_get_lagged_frames())])

    def state_change(self, kind: str) -> None:
        host = _now()
        info: dict[str, Any] = {"host_ns": host, "last_ts": self.last_ts,
                                "frames_delivered": self.frames_delivered,
                                "total_frames": int(obs.obs_get_total_frames()),
                                "lagged_frames": int(obs.obs_get_lagged_frames())}
        if kind == "start":
            self.read_video_info()
            path = _recording_path()
            info.update(path=path, width=self.width, height=self.height, format=self.format,
                        format_name=LUMA_FORMATS.get(self.format, "unsupported"),
                        fps_num=self.fps[0], fps_den=self.fps[1],
                        interval_ns=int(obs.obs_get_frame_interval_ns()))
            self.add(host, ["hello", self.hello])
            self.add(host, ["start", info])
            if path:
                with self.lock:
                    if self.file is not None:  # a previous log was never closed
                        self.file.close()
                        self.file = None
                    self.release_output()
                    self.output = obs.obs_frontend_get_recording_output()
                    self.closing = False
                    self.watchdog_fired = False
                    self.path = path + LOG_SUFFIX
            return
        self.add(host, [kind, info])
        if kind == "stop":
            with self.lock:     # before unhooking, which may wait for the video thread
                self.closing = self.path is not None
            self.unhook_raw_video()

    def load_libobs(self) -> None:
        name = ctypes.util.find_library("obs") or "libobs.so.0"
        try:
            self.libobs = ctypes.CDLL(name)
        except OSError:
            self.libobs = ctypes.CDLL("libobs.so.0")
        self.libobs.obs_add_raw_video_callback.argtypes = [ctypes.c_void_p, RAW_VIDEO_CALLBACK,
                                                           ctypes.c_void_p]
        self.libobs.obs_add_raw_video_callback.restype = None
        self.libobs.obs_remove_raw_video_callback.argtypes = [RAW_VIDEO_CALLBACK, ctypes.c_void_p]
        self.libobs.obs_remove_raw_video_callback.restype = None
        self.callback = RAW_VIDEO_CALLBACK(self.on_raw_frame)

    def hook_raw_video(self) -> None:
        """Receive every output frame: from the moment a recording starts starting, so that an
        idle OBS does not copy frames from the GPU for us. A ctypes call releases the GIL, so
        OBS's video thread, waiting for the GIL inside our callback, cannot deadlock it."""
        if self.libobs is None or self.hooked:
            return
        with self.lock:
            if self.file is None:       # nothing of an earlier recording may reach this log,
                recent = _now() - TICKS_KEPT_NS   # but the first frames' ticks came before
                kept = [line for line in self.lines
                        if line[0] >= recent and line[1].startswith('["t"')]
                self.lines.clear()
                self.lines.extend(kept)
        self.last_pointer = self.last_ts = self.frames_delivered = 0
        self.libobs.obs_add_raw_video_callback(None, self.callback, None)
        self.hooked = True

    def unhook_raw_video(self) -> None:
        if self.libobs is None or not self.hooked:
            return
        self.libobs.obs_remove_raw_video_callback(self.callback, None)
        self.hooked = False


def _now() -> int:
    return time.monotonic_ns()


def _log(message: str) -> None:
    if obs is not None:
        obs.script_log(obs.LOG_WARNING, f"[capture clock] {message}")


def _recording_path() -> str:
    output = obs.obs_frontend_get_recording_output()
    if not output:
        return ""
    try:
        settings = obs.obs_output_get_settings(output)
        try:
            return str(obs.obs_data_get_string(settings, "path") or "")
        finally:
            obs.obs_data_release(settings)
    finally:
        obs.obs_output_release(output)


def _clock_check() -> dict[str, Any]:
    """How far os_gettime_ns (OBS's clock) is from CLOCK_MONOTONIC: median of 9 tries."""
    differences = []
    for _ in range(9):
        before = time.monotonic_ns()
        obs_ns = int(obs.os_gettime_ns())
        after = time.monotonic_ns()
        differences.append(obs_ns - (before + after) // 2)
    differences.sort()
    return {"os_gettime_minus_monotonic_ns": differences[len(differences) // 2],
            "spread_ns": differences[-1] - differences[0]}


_recorder = _Recorder()
_EVENTS: dict[int, str] = {}


def _on_frontend_event(event: int) -> None:
    kind = _EVENTS.get(event)
    try:
        if kind == "starting":
            _recorder.hook_raw_video()
        elif kind is not None:
            _recorder.state_change(kind)
    except Exception as exc:  # never let an exception out into OBS
        _log(f"{kind}: {exc!r}")


# --- the OBS script interface ---------------------------------------------------------------------
def script_description() -> str:
    return ("capture: logs the host-clock time and a fingerprint of every output frame next to "
            "each recording, so recordings can be aligned with player input.")


def script_load(_settings: Any) -> None:
    _recorder.read_video_info()
    _recorder.hello = {"script_version": SCRIPT_VERSION,
                       "obs_version": obs.obs_get_version_string(),
                       "clock": "CLOCK_MONOTONIC", **_clock_check()}
    _EVENTS.update({obs.OBS_FRONTEND_EVENT_RECORDING_STARTING: "starting",
                    obs.OBS_FRONTEND_EVENT_RECORDING_STARTED: "start",
                    obs.OBS_FRONTEND_EVENT_RECORDING_PAUSED: "pause",
                    obs.OBS_FRONTEND_EVENT_RECORDING_UNPAUSED: "unpause",
                    obs.OBS_FRONTEND_EVENT_RECORDING_STOPPED: "stop"})
    _recorder.thread = threading.Thread(target=_recorder.writer_loop, name="capture-clock-log",
                                        daemon=True)
    _recorder.thread.start()
    try:
        _recorder.load_libobs()
    except Exception as exc:  # the log then has ticks only; the backend reports it
        _log(f"raw video callback unavailable: {exc!r}")
    obs.obs_frontend_add_event_callback(_on_frontend_event)
    _log(f"loaded: {json.dumps(_recorder.hello)}")


def script_tick(_seconds: float) -> None:
    _recorder.tick()


def script_unload() -> None:
    _recorder.unhook_raw_video()
    _recorder.stop_thread.set()
    if _recorder.thread is not None:
        _recorder.thread.join(1.0)
    with _recorder.lock:
        if _recorder.file is not None:
            _recorder.file.close()
            _recorder.file = None
