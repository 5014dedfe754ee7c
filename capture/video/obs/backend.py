"""The OBS video backend: OBS records over its websocket; its clock script times every frame."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import threading
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from capture.clock import now_ns
from capture.errors import CaptureError
from capture.video import (
    Capabilities,
    CaptureTarget,
    VideoBackend,
    VideoOutput,
    VideoResult,
    VideoSettings,
)
from capture.video.obs.client import ObsClient, ObsError
from capture.video.obs.obs_clock_script import ALIVE_SUFFIX, HEARTBEAT_S, LOG_SUFFIX
from capture.video.obs.recording import RecordingFile
from capture.video.obs.settings import ObsSettings, resolve
from capture.video.obs.timeline import (
    Timeline,
    build_timeline,
    naive_timeline,
    parse_clock_log,
)

CLOCK_LOG = "obs-clock.jsonl"         # the script's log, kept in the session next to video.mkv
STARTED = "OBS_WEBSOCKET_OUTPUT_STARTED"
STOPPED = "OBS_WEBSOCKET_OUTPUT_STOPPED"
START_TIMEOUT_S = 25.0              # all of start(); OBS stalled ~10 s once, starting under load
ABANDON_TIMEOUT_S = 10.0            # after a failed start: stopping what OBS may still start
IDLE_CONFIRM_S = 2.0                # OBS answering "not recording" this long: it stays idle
STOP_TIMEOUT_S = 20.0
CLOCK_LOG_TIMEOUT_S = 3.0             # the script opens its log within ~0.1 s of the start
CLOCK_END_TIMEOUT_S = 10.0            # after STOPPED: until the script has closed its log
MAX_CLOCK_SKEW_NS = 1_000_000         # os_gettime_ns must be CLOCK_MONOTONIC
LOW_DISK_BYTES = 200 << 20
PAUSE_RETRIES = 5
IDLE_WAIT_S = 8.0
MIN_PAUSE_S = 0.5
SETUP_HINT = "run `capture obs setup`, then restart OBS"


@dataclass(frozen=True, slots=True)
class _RecordingPath:
    """The profile parameters that decide where OBS writes a recording."""

    directory: tuple[str, str]
    name_format: tuple[str, str] = ("Output", "FilenameFormatting")


class ObsVideoBackend(VideoBackend):
    """Records through a running OBS Studio: OBS captures and encodes, we control and time it.

    OBS writes `<session_dir>/video.mkv` itself (its record directory and file name are set for
    the session and restored right after the start). The clock script loaded by OBS logs every
    output frame; on stop the log and the file's frames give frames.jsonl (see timeline.py).
    `set_capturing` pauses and resumes the recording from a worker thread.
    """

    name = "obs"
    capabilities = Capabilities(overlapping_segments=False)  # OBS records one file at a time

    @classmethod
    def create(cls, options: Any | None = None) -> ObsVideoBackend:
        """From ObsSettings (None: OBS_WEBSOCKET_* environment, then the [obs] config table)."""
        return cls(settings=options if isinstance(options, ObsSettings) else None)

    @classmethod
    def recover(cls, output: VideoOutput) -> list[str]:
        """OBS sessions get their frame timeline at stop: rebuild it from OBS's clock log."""
        Path(str(output.video) + ALIVE_SUFFIX).unlink(missing_ok=True)   # a dead recorder's
        if output.timeline.exists():
            return []
        frames, notes = _rebuild_timeline(output)
        return [f"frame timeline rebuilt from OBS's clock log ({frames} frames)", *notes]

    def __init__(self, settings: ObsSettings | None = None, *, host: str | None = None,
                 port: int | None = None, password: str | None = None,
                 request_timeout_s: float = 5.0,
                 start_timeout_s: float = START_TIMEOUT_S) -> None:
        self.settings = settings or resolve(host, port, password)
        self.request_timeout_s = request_timeout_s
        self.start_timeout_s = start_timeout_s
        self._client: ObsClient | None = None
        self._output: VideoOutput | None = None
        self._output_path: Path | None = None
        self._start_request_ns = 0        # host time StartRecord was sent (for benchmarks)
        self._started_ns = 0              # host time the STARTED event arrived (naive fallback)
        self.placement: dict[str, Any] = {}   # how the timeline was placed (for QA and benches)
        self._stats_before: dict[str, Any] = {}
        self._pid: int | None = None
        self._cpu_before = 0.0
        self._notes: list[str] = []
        self._states: list[tuple[str, int]] = []
        self._changed = threading.Condition()
        self._stop_requested = False
        self._want_capturing = True
        self._capturing = True
        self._threads: list[threading.Thread] = []
        self._result: VideoResult | None = None

    # --- VideoBackend ----------------------------------------------------------------------------
    def start(self, target: CaptureTarget, output: VideoOutput, settings: VideoSettings) -> None:
        if self._client is not None:
            raise CaptureError("this recorder was already started")
        output.workdir.mkdir(parents=True, exist_ok=True)
        self._output = output
        # Every step below is bounded: the whole start fails within start_timeout_s (plus one
        # request's timeout, and ABANDON_TIMEOUT_S to stop a recording OBS may start late).
        deadline = time.monotonic() + self.start_timeout_s
        client = ObsClient(self.settings.host, self.settings.port, self.settings.password,
                           timeout_s=self.request_timeout_s).connect()
        try:
            where = self._preflight(client, target, settings)
            self._stats_before = client.stats()
            self._pid, self._cpu_before = _obs_process(self.settings.port)
            self._check_time(deadline)
            self._start_recording(client, output, where, deadline)
        except BaseException:
            client.close()
            raise
        self._client = client
        for target_fn, name in ((self._pump_events, "obs-events"),
                                (self._apply_capturing, "obs-pause")):
            thread = threading.Thread(target=target_fn, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def set_capturing(self, on: bool) -> None:
        with self._changed:
            self._want_capturing = on
            self._changed.notify_all()

    def alive(self) -> bool:
        if self._result is not None or self._client is None or not self._client.alive():
            return False
        with self._changed:
            return not any(state == STOPPED for state, _ in self._states)

    def stop(self) -> VideoResult:
        if self._result is not None:
            return self._result
        if self._client is None or self._output is None:
            raise CaptureError("the recorder was never started")
        client, output = self._client, self._output
        errors: list[str] = []
        with self._changed:
            self._stop_requested = True
            self._changed.notify_all()
        for thread in self._threads[1:]:
            thread.join(self.request_timeout_s + 1)
        stats_after: dict[str, Any] = {}
        stopped_by_obs = not self.alive() and client.alive()
        if client.alive() and not stopped_by_obs:
            try:
                stats_after = client.stats()
                client.stop_record()
                self._wait_state(STOPPED, STOP_TIMEOUT_S)
            except ObsError as exc:
                errors.append(f"OBS did not stop the recording cleanly: {exc}")
        elif stopped_by_obs:
            errors.append(self._stopped_by_obs_message(output.workdir))
            with contextlib.suppress(ObsError):
                stats_after = client.stats()
        else:
            errors.append("OBS went away during the recording (it quit or crashed); the video "
                          "and frame times written until then are kept")
        cpu_seconds = _cpu_seconds(self._pid) - self._cpu_before if self._pid else 0.0
        client.close()
        self._threads[0].join(2.0)
        self._result = self._finish(output, errors, stats_after, cpu_seconds,
                                    obs_alive=not errors or stopped_by_obs)
        return self._result

    @property
    def start_moments(self) -> tuple[int, int]:
        """Host ns when StartRecord was sent and when OBS's STARTED event arrived."""
        return self._start_request_ns, self._started_ns

    # --- start ---------------------------------------------------------------------------------
    def _preflight(self, client: ObsClient, target: CaptureTarget,
                   settings: VideoSettings) -> _RecordingPath:
        version = client.version()
        self._notes.append(f"OBS {version.get('obsVersion')} with obs-websocket "
                           f"{version.get('obsWebSocketVersion')} at {self.settings.host}:"
                           f"{self.settings.port}")
        deadline = time.monotonic() + IDLE_WAIT_S   # a recording just stopped says active a bit
        while client.record_status().get("outputActive"):
            if time.monotonic() > deadline:
                raise CaptureError("OBS is already recording: stop that recording in OBS first")
            time.sleep(0.1)
        video = client.video_settings()
        fps = Fraction(int(video.get("fpsNumerator") or 0), int(video.get("fpsDenominator") or 1))
        if fps != settings.fps:
            raise CaptureError(f"OBS records at {float(fps):g} fps but {settings.fps} fps was "
                               f"asked: run `capture obs setup --fps {settings.fps}` and restart "
                               f"OBS, or record with --fps {float(fps):g}")
        self._notes.append(f"OBS output {video.get('outputWidth')}x{video.get('outputHeight')} "
                           f"at {float(fps):g} fps (base {video.get('baseWidth')}x"
                           f"{video.get('baseHeight')})")
        advanced = self._get_parameter(client, ("Output", "Mode")) == "Advanced"
        category = "AdvOut" if advanced else "SimpleOutput"
        container = (self._get_parameter(client, (category, "RecFormat2"))
                     or self._get_parameter(client, (category, "RecFormat")))
        if container != "mkv":
            raise CaptureError(f"OBS records {container or 'an unknown format'}, capture needs "
                               f"MKV (it survives a crash): {SETUP_HINT}")
        self._check_source(client)
        if target.window_id is not None:
            self._notes.append(f"OBS records its own scene; the game window is "
                               f"{target.window_id:#x} on {target.display or '$DISPLAY'}")
        return _RecordingPath(directory=(category, "RecFilePath" if advanced else "FilePath"))

    def _check_source(self, client: ObsClient) -> None:
        scene = str(client.call("GetCurrentProgramScene").get("currentProgramSceneName", ""))
        items = client.call("GetSceneItemList", sceneName=scene).get("sceneItems", [])
        shown = [str(item.get("sourceName")) for item in items if item.get("sceneItemEnabled")]
        if not shown:
            raise CaptureError(f"OBS's scene '{scene}' shows no source: {SETUP_HINT} (or add "
                               "the game's window to the scene)")
        shot = client.call("GetSourceScreenshot", sourceName=scene, imageFormat="png",
                           imageWidth=160)
        if _is_black(str(shot.get("imageData", ""))):
            self._notes.append(f"warning: OBS's scene '{scene}' ({', '.join(shown)}) was all "
                               "black when the recording started")

    def _check_time(self, deadline: float) -> None:
        if time.monotonic() > deadline:
            raise CaptureError(f"OBS did not get ready to record within "
                               f"{self.start_timeout_s:g} s (it is overloaded or stuck); "
                               "nothing was recorded")

    def _start_recording(self, client: ObsClient, output: VideoOutput,
                         where: _RecordingPath, deadline: float) -> None:
        saved = {key: self._get_parameter(client, key)
                 for key in (where.directory, where.name_format)}
        try:
            self._set_parameter(client, where.directory, str(output.video.parent))
            self._set_parameter(client, where.name_format, output.video.stem)
            self._check_time(deadline)
            client.drain_events()
            try:
                self._start_request_ns = client.start_record()
                data, arrived = client.wait_event(
                    "RecordStateChanged", lambda d: d.get("outputState") in (STARTED, STOPPED),
                    timeout_s=max(0.1, deadline - time.monotonic()))
            except ObsError as exc:
                if not client.alive():
                    raise CaptureError(f"OBS went away while starting the recording: {exc}") \
                        from None
                left_idle = _abandon_start(client)
                raise CaptureError(
                    f"OBS did not start recording within {self.start_timeout_s:g} s (it is "
                    "overloaded or stuck); the session has no video. "
                    + ("OBS is not recording now" if left_idle else
                       "OBS did not answer: if it starts recording later, stop it in OBS")
                    ) from None
        finally:
            for key, value in saved.items():
                with contextlib.suppress(ObsError):
                    self._set_parameter(client, key, value)
        if data.get("outputState") != STARTED:
            raise CaptureError(self._failed_start_message(output.workdir))
        self._started_ns = arrived
        self._output_path = Path(str(data.get("outputPath") or output.video))
        self._beat()
        clock_log = Path(str(self._output_path) + LOG_SUFFIX)
        wait_until = time.monotonic() + CLOCK_LOG_TIMEOUT_S
        while (problem := _clock_problem(clock_log)) is not None \
                and time.monotonic() < wait_until:
            time.sleep(0.05)
        if problem is not None:
            with contextlib.suppress(ObsError):
                client.stop_record()
                client.wait_event("RecordStateChanged", lambda d: d.get("outputState") == STOPPED,
                                  timeout_s=STOP_TIMEOUT_S)
            raise CaptureError(problem)

    def _failed_start_message(self, session_dir: Path) -> str:
        if shutil.disk_usage(session_dir).free < LOW_DISK_BYTES:
            return f"OBS could not start recording: the disk holding {session_dir} is full"
        return (f"OBS could not start recording into {session_dir} (see OBS's log: "
                "Help > Log Files)")

    def _stopped_by_obs_message(self, session_dir: Path) -> str:
        if shutil.disk_usage(session_dir).free < LOW_DISK_BYTES:
            return f"OBS stopped the recording by itself: the disk holding {session_dir} is full"
        return ("OBS stopped the recording by itself (someone stopped it in OBS, or writing the "
                "file failed: see OBS's log)")

    @staticmethod
    def _get_parameter(client: ObsClient, key: tuple[str, str]) -> str:
        answer = client.call("GetProfileParameter", parameterCategory=key[0],
                             parameterName=key[1])
        return str(answer.get("parameterValue") or answer.get("defaultParameterValue") or "")

    @staticmethod
    def _set_parameter(client: ObsClient, key: tuple[str, str], value: str) -> None:
        client.call("SetProfileParameter", parameterCategory=key[0], parameterName=key[1],
                    parameterValue=value)

    # --- while recording -----------------------------------------------------------------------
    def _pump_events(self) -> None:
        """Moves RecordStateChanged events into self._states until the connection ends."""
        client = self._client
        assert client is not None
        while True:
            self._beat()
            try:
                data, arrived = client.wait_event("RecordStateChanged", timeout_s=HEARTBEAT_S)
            except ObsError:
                if not client.alive():
                    break
                continue
            with self._changed:
                self._states.append((str(data.get("outputState")), arrived))
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def _apply_capturing(self) -> None:
        """Pauses or resumes the recording whenever set_capturing changed what is wanted."""
        client = self._client
        assert client is not None
        failures = 0
        last_pause = 0.0
        while True:
            with self._changed:
                while True:
                    if self._stop_requested:
                        return
                    want = self._want_capturing
                    if want == self._capturing:
                        self._changed.wait()
                        continue
                    # Pause at once (fail closed), but resume only once the pause has stood
                    # MIN_PAUSE_S: a pause and resume milliseconds apart, early in a
                    # recording, left OBS 29's output hung (no "Recording Stop" ever).
                    hold = MIN_PAUSE_S - (time.monotonic() - last_pause) if want else 0.0
                    if hold <= 0:
                        break
                    self._changed.wait(hold)
            try:
                client.call("ResumeRecord" if want else "PauseRecord")
                self._capturing, failures = want, 0
                if not want:
                    last_pause = time.monotonic()
            except ObsError as exc:
                failures += 1
                if not client.alive() or failures >= PAUSE_RETRIES:
                    self._notes.append(f"could not {'resume' if want else 'pause'} the "
                                       f"recording: {exc}")
                    self._capturing = want    # give up on this change
                    failures = 0
                else:
                    time.sleep(0.05)          # OBS refuses a pause right after a resume

    def _beat(self) -> None:
        """Tell OBS's clock script the recorder lives (it stops the recording when this goes
        stale, see obs_clock_script.py); nothing once the recording is over."""
        if self._output_path is None or self._result is not None or self._stop_requested:
            return
        alive = Path(str(self._output_path) + ALIVE_SUFFIX)
        tmp = alive.with_name(alive.name + ".tmp")
        try:
            tmp.write_text(str(now_ns()), encoding="ascii")
            os.replace(tmp, alive)
        except OSError:
            pass   # a full disk: OBS's own write fails first, and stop() says so

    def _wait_state(self, state: str, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while not any(s == state for s, _ in self._states):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise ObsError(f"OBS did not report {state} within {timeout_s:g} s")
                if self._client is not None and not self._client.alive():
                    raise ObsError("the connection to OBS ended before the recording stopped")
                self._changed.wait(min(left, 0.25))

    # --- stop ----------------------------------------------------------------------------------
    def _finish(self, out: VideoOutput, errors: list[str], stats_after: dict[str, Any],
                cpu_seconds: float, *, obs_alive: bool) -> VideoResult:
        result = VideoResult(backend=self.name, container="matroska", codec="h264",
                             cpu_seconds=max(0.0, cpu_seconds), notes=list(self._notes))
        video = out.video
        output = self._output_path or video
        Path(str(output) + ALIVE_SUFFIX).unlink(missing_ok=True)
        if output != video and output.exists():
            shutil.move(str(output), str(video))
            result.notes.append(f"moved OBS's recording {output} into the session")
        clock_log = Path(str(output) + LOG_SUFFIX)
        kept_log = out.workdir / CLOCK_LOG
        if clock_log.exists():
            closed = not obs_alive or _wait_closed(clock_log, self._pid, CLOCK_END_TIMEOUT_S)
            note = _take_clock_log(clock_log, kept_log, closed=closed)
            if note:
                result.notes.append(note)
        skipped = _delta(stats_after, self._stats_before, "outputSkippedFrames")
        lagged = _delta(stats_after, self._stats_before, "renderSkippedFrames")
        rendered = _delta(stats_after, self._stats_before, "renderTotalFrames")
        if stats_after:
            result.notes.append(f"OBS skipped {skipped} frames (encoding lag, "
                                f"outputSkippedFrames) and lagged {lagged} of {rendered} "
                                "(rendering lag, renderSkippedFrames)")
        if not self._pid:
            result.notes.append("OBS's CPU time is unknown (its process was not found)")
        records: list[dict[str, Any]] = []
        try:
            timeline, recording, notes = session_timeline(video, kept_log, self._started_ns)
        except Exception as exc:   # whatever is wrong with the files, the session is kept
            errors.append(f"the frame timeline could not be built: {exc}")
        else:
            records = timeline.records
            result.width, result.height = recording.width, recording.height
            result.codec = recording.codec or result.codec
            result.notes += notes
            self.placement = {"start_cost": timeline.start_cost,
                              "start_margin": timeline.start_margin,
                              "tail_cost": timeline.tail_cost, "pauses_cut": len(timeline.cuts)}
        out.timeline.rewrite(records)
        result.frames = len(records)
        result.repeated_frames = sum(bool(r["repeated"]) for r in records)
        # From the frames kept (OBS's counters, in the notes, also count while not recording).
        result.dropped_slots = sum(int(r["dropped_before"]) for r in records)
        result.error = "; ".join(errors) or None
        return result


def session_timeline(video: Path, clock_log: Path,
                     started_ns: int = 0) -> tuple[Timeline, RecordingFile, list[str]]:
    """The frame timeline of an OBS recording, the file it describes, and notes on both.

    Without a clock log the times are `started_ns` + i/fps (the naive model), and a note says so.
    """
    if not video.exists():
        raise CaptureError("OBS left no video file", video)
    recording = RecordingFile(video)
    notes = []
    if recording.damaged:
        notes.append("the video file ends in a damaged part (OBS did not finish it); the frames "
                      "before it are kept")
    if not clock_log.exists():
        notes.append("OBS's clock log is missing: frame times are the STARTED event time + "
                     "i/fps (tens of ms off)")
        return naive_timeline(recording.pts, recording.time_base, started_ns), recording, notes
    with clock_log.open("rb") as lines:
        log = parse_clock_log(lines, str(clock_log))
    if log.truncated or not log.ended:
        notes.append("OBS's clock log was cut off (OBS did not stop normally)")
    if log.watchdog is not None:
        gone_s = (int(log.watchdog["host_ns"]) - int(log.watchdog["last_alive_ns"])) / 1e9
        notes.append(f"the recorder stopped answering; OBS's clock script stopped the recording "
                     f"{gone_s:.1f} s after its last sign of life")
    timeline = build_timeline(log, recording.pts, recording.time_base, recording.fingerprints)
    notes += timeline.notes
    if timeline.start_cost is not None:
        notes.append(f"frame 0 placed by content: distance {timeline.start_cost:.2f}, next best "
                     f"+{timeline.start_margin or 0:.2f}; {len(timeline.cuts)} pauses cut")
    return timeline, recording, notes


def recover_frames_journal(output: VideoOutput) -> int:
    """Rebuild the frame timeline of an OBS session whose recorder died (for `capture sessions
    recover`); returns the number of frames, 0 if there is no OBS clock log to rebuild from."""
    return _rebuild_timeline(output)[0]


def _rebuild_timeline(output: VideoOutput) -> tuple[int, list[str]]:
    video = output.video
    for clock_log in (output.workdir / CLOCK_LOG, Path(str(video) + LOG_SUFFIX)):
        if clock_log.exists() and video.exists():
            timeline, _recording, notes = session_timeline(video, clock_log)
            return output.timeline.rewrite(timeline.records), notes
    return 0, []


def _abandon_start(client: ObsClient) -> bool:
    """After a start that failed or hung: stop whatever recording OBS starts late, until OBS has
    answered "not recording" for IDLE_CONFIRM_S (True) or ABANDON_TIMEOUT_S ran out (False)."""
    give_up = time.monotonic() + ABANDON_TIMEOUT_S
    idle_since: float | None = None
    while time.monotonic() < give_up and client.alive():
        try:
            active = bool(client.record_status().get("outputActive"))
        except ObsError:
            idle_since = None
            time.sleep(0.2)
            continue
        now = time.monotonic()
        if active:
            idle_since = None
            with contextlib.suppress(ObsError):
                client.call("StopRecord")
        elif idle_since is None:
            idle_since = now
        elif now - idle_since >= IDLE_CONFIRM_S:
            return True
        time.sleep(0.2)
    return False


def _wait_closed(clock_log: Path, pid: int | None, timeout_s: float) -> bool:
    """Wait until the clock script has written its "end" line and (where /proc shows it) OBS
    holds the log open no more; False if that did not happen within `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if _has_line(clock_log, "end", tail=True) and not _held_open(clock_log, pid):
            return True
        time.sleep(0.05)
    return False


def _held_open(path: Path, pid: int | None) -> bool:
    """Whether process `pid` has `path` open (Linux /proc; False where that cannot be seen)."""
    if pid is None:
        return False
    fd_dir = Path(f"/proc/{pid}/fd")
    try:
        target = path.resolve()
        for fd in fd_dir.iterdir():
            with contextlib.suppress(OSError):
                if Path(os.readlink(fd)) == target:
                    return True
    except OSError:
        return False
    return False


def _take_clock_log(clock_log: Path, kept_log: Path, *, closed: bool) -> str | None:
    """Move the script's log into the session as `kept_log`; returns a note if it was not closed.

    A log the script has closed is renamed. One it may still write to is copied up to its last
    complete line into a new file, and the original unlinked: whatever the script writes later
    goes to that unlinked file, never into the session (whose files are hashed at finalise).
    """
    if closed:
        clock_log.replace(kept_log)
        return None
    data = clock_log.read_bytes()
    data = data[:data.rfind(b"\n") + 1]
    partial = kept_log.with_name(kept_log.name + ".tmp")
    with partial.open("wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())
    partial.replace(kept_log)
    clock_log.unlink()
    return (f"OBS's clock script had not closed its log {CLOCK_END_TIMEOUT_S:g} s after the "
            f"recording stopped: kept its first {len(data)} bytes (complete lines)")


def _has_line(path: Path, kind: str, *, tail: bool = False) -> bool:
    """Whether the clock log has a line of `kind` (in its last 64 KiB with `tail`)."""
    try:
        with path.open("rb") as log:
            if tail:
                log.seek(max(0, path.stat().st_size - (64 << 10)))
            return f'["{kind}"'.encode() in log.read()
    except OSError:
        return False


def _clock_problem(clock_log: Path) -> str | None:
    """Why the clock script cannot time this recording (yet), or None once frames flow."""
    if not _has_line(clock_log, "hello"):
        return (f"OBS's clock script is not running: no {clock_log.name} appeared next to the "
                f"recording ({SETUP_HINT}; OBS must run on this machine and record where "
                "capture can read)")
    started = False
    for line in clock_log.read_text(encoding="utf-8", errors="replace").splitlines():
        if line.startswith('["hello"'):
            skew = abs(int(json.loads(line)[1].get("os_gettime_minus_monotonic_ns", 0)))
            if skew > MAX_CLOCK_SKEW_NS:
                return (f"OBS's clock differs from the host monotonic clock by {skew / 1e6:.1f} "
                        "ms: OBS must run on this machine")
        elif line.startswith('["start"'):
            start = json.loads(line)[1]
            if start.get("format_name") == "unsupported":
                return (f"OBS's color format {start.get('format')} is not supported by the "
                        f"clock script (use NV12 or I420): {SETUP_HINT}")
            started = True
        elif started and line.startswith('["f"'):
            return None
    return ("OBS's clock script receives no frames (its raw video hook failed: see OBS's log, "
            "Help > Log Files)")


def _delta(after: dict[str, Any], before: dict[str, Any], key: str) -> int:
    if key not in after or key not in before:
        return 0
    return max(0, int(after[key]) - int(before[key]))


def _obs_process(port: int) -> tuple[int | None, float]:
    """The local process listening on OBS's websocket port and its CPU seconds so far."""
    import psutil

    try:
        for connection in psutil.net_connections(kind="tcp"):
            if connection.laddr and connection.laddr.port == port \
                    and connection.status == psutil.CONN_LISTEN and connection.pid:
                return connection.pid, _cpu_seconds(connection.pid)
    except (psutil.Error, OSError):
        pass
    return None, 0.0


def _cpu_seconds(pid: int | None) -> float:
    import psutil

    try:
        times = psutil.Process(pid).cpu_times()
    except (psutil.Error, ValueError):
        return 0.0
    return float(times.user + times.system)


def _is_black(data_url: str) -> bool:
    import base64

    import cv2

    encoded = data_url.partition(",")[2] or data_url
    try:
        image = cv2.imdecode(np.frombuffer(base64.b64decode(encoded), np.uint8),
                             cv2.IMREAD_GRAYSCALE)
    except (ValueError, cv2.error):
        return False
    return image is not None and int(image.max()) <= 16
