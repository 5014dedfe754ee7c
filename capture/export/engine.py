"""Export engines: make episode video segments in worker processes (local) or Ray tasks (ray)."""

# The driver (capture.export.lerobot) plans every episode first (which source frames, which
# frames to sample for image statistics, whether packets can be copied), hands one SessionJob per
# session to an engine, and joins the results in episode order. A job's result depends only on
# the job, so every engine and worker count gives the same segments and the same statistics.

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field, replace
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import av
from av.video.reformatter import VideoReformatter

from capture.errors import CaptureError
from capture.export import layout, storage
from capture.export.stats import ImageCounts
from capture.export.video import (
    Segment,
    SourceFrames,
    copy_segment,
    encode_segment,
    extract_segment,
    idr_positions,
    sampled_pixels,
    scaled,
    stats_keyframes,
)

ENGINES = ("local", "ray")


@dataclass(frozen=True, slots=True)
class EpisodeJob:
    """One episode to make: the session-video file position shown in each output frame."""

    index: int                   # the episode's index in the dataset
    positions: tuple[int, ...]   # file position of the source frame of each output frame
    samples: tuple[int, ...]     # output frames whose pictures go into the image statistics
    #                              (a copied episode samples its keyframes instead)
    copy: bool                   # frames map one to one onto the grid at native size
    reuse: str | None = None     # unchanged since an earlier export: that dataset video file
    reuse_from: int = 0          # and the episode's first frame in it

    @property
    def frames(self) -> int:
        return len(self.positions)


@dataclass(frozen=True, slots=True)
class SessionJob:
    """One session's episodes, in time order, and where their segments go."""

    source: str          # the session's directory: a local path or an object-store URL
    video: str           # the video file's name inside it
    episodes: tuple[EpisodeJob, ...]
    fps: int
    width: int
    height: int
    encoding: layout.VideoEncoding
    segments: str        # a local directory or an object-store URL for the segment files


@dataclass(slots=True)
class EpisodeResult:
    """A made episode: its segment (local path or URL) and the pixel counts of its frames
    sampled for image statistics (stats.ImageCounts; the driver turns them into its stats)."""

    index: int
    segment: str
    frames: int
    bytes: int
    copied: bool
    signature: tuple[object, ...]
    image_stats: ImageCounts = field(default_factory=ImageCounts)
    cpu_s: float = 0.0  # CPU time the worker spent making it (process time, all threads)


def run_session_job(job: SessionJob) -> list[EpisodeResult]:
    """Make every episode segment of one session (what a worker or Ray task runs)."""
    with tempfile.TemporaryDirectory(prefix="capture-export-") as tmp:
        work = Path(tmp)
        video = storage.local_file(f"{job.source.rstrip('/')}/{job.video}", work / job.video)
        out_dir = work / "segments"
        out_dir.mkdir()
        results: list[EpisodeResult] = []
        starts = idr_positions(video) if any(e.copy for e in job.episodes) else frozenset()
        reused: dict[str, Path] = {}
        reformatter = VideoReformatter()
        with SourceFrames(video) as frames:
            for episode in job.episodes:
                began = time.process_time()
                name = f"episode-{episode.index:09d}.mp4"
                stats = ImageCounts()
                samples = set(episode.samples)

                def sink(i: int, frame: av.VideoFrame, stats: ImageCounts = stats,
                         samples: set[int] = samples) -> None:
                    if i in samples:
                        stats.add(sampled_pixels(frame))

                first = episode.positions[0]
                copied = episode.copy and _keyframes_fit(starts, first, episode.frames,
                                                         job.encoding.gop)
                if episode.reuse is not None:
                    if episode.reuse not in reused:
                        reused[episode.reuse] = storage.local_file(
                            episode.reuse, work / "reused" / f"{len(reused):06d}.mp4")
                    segment = extract_segment(out_dir / name, reused[episode.reuse],
                                              episode.reuse_from, episode.frames, fps=job.fps)
                    segment = replace(segment, copied=copied)
                    # the statistics come from the source, as when the episode was made
                    if copied:
                        copy_segment(work / "stats.mp4", video, first, episode.frames,
                                     fps=job.fps, sink=_adder(stats),
                                     decode=stats_keyframes(starts, first, episode.frames))
                    else:
                        pictures = _pictures(frames, [episode.positions[i]
                                                      for i in episode.samples])
                        for picture in pictures:
                            stats.add(sampled_pixels(
                                scaled(picture, (job.width, job.height), reformatter)))
                elif copied:
                    segment = copy_segment(out_dir / name, video, first, episode.frames,
                                           fps=job.fps, sink=_adder(stats),
                                           decode=stats_keyframes(starts, first,
                                                                  episode.frames))
                else:
                    segment = encode_segment(
                        out_dir / name, _pictures(frames, episode.positions), episode.frames,
                        fps=job.fps, width=job.width, height=job.height,
                        encoding=job.encoding, sink=sink)
                dest = storage.put_file(segment.path, f"{job.segments.rstrip('/')}/{name}")
                segment.path.unlink(missing_ok=True)
                results.append(EpisodeResult(index=episode.index, segment=dest,
                                             frames=segment.frames, bytes=segment.bytes,
                                             copied=segment.copied,
                                             signature=segment.signature, image_stats=stats,
                                             cpu_s=time.process_time() - began))
        return results


def _adder(stats: ImageCounts) -> Callable[[int, av.VideoFrame], None]:
    """A frame sink that adds every frame it gets to `stats`."""
    def add(_number: int, picture: av.VideoFrame) -> None:
        stats.add(sampled_pixels(picture))
    return add


def _keyframes_fit(starts: frozenset[int], first: int, count: int, gop: int) -> bool:
    """True if positions [first, first + count) start on an IDR frame and keep at most `gop`
    frames between IDR frames: a copy then keeps the keyframe interval info.json promises."""
    inside = sorted(p for p in starts if first <= p < first + count)
    if not inside or inside[0] != first:
        return False
    edges = [*inside, first + count]
    return max(b - a for a, b in itertools.pairwise(edges)) <= gop


def _pictures(frames: SourceFrames, positions: Sequence[int]) -> Iterator[av.VideoFrame]:
    """Decoded frames at these file positions (a repeated position repeats the picture)."""
    last, picture = -1, None
    for position in positions:
        if position != last:
            picture = frames.at(position)
            last = position
        assert picture is not None
        yield picture


def fetch_segment(result: EpisodeResult, work: Path) -> Segment:
    """The result's segment as a local file (downloaded into `work` if it is remote)."""
    path = storage.local_file(result.segment, work / Path(result.segment).name)
    return Segment(path=path, frames=result.frames, bytes=result.bytes, copied=result.copied,
                   signature=result.signature)


# --- engines --------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class EngineOptions:
    """Which engine runs the jobs and with how many workers."""

    engine: str = "local"
    workers: int | None = None       # None: one per CPU
    ray_address: str | None = None   # None: start a local Ray instance (or use one running)

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise CaptureError(f"unknown export engine {self.engine!r}; use one of "
                               f"{', '.join(ENGINES)}")
        if self.workers is not None and self.workers < 1:
            raise CaptureError(f"--workers must be at least 1, not {self.workers}")

    @property
    def worker_count(self) -> int:
        return self.workers or os.cpu_count() or 1


ResultSink = Callable[[int, list[EpisodeResult]], None]  # (job position, its results)


def run_jobs(jobs: Sequence[SessionJob], options: EngineOptions, on_result: ResultSink) -> None:
    """Run every job; on_result gets each job's results as it finishes (any order)."""
    if not jobs:
        return
    if options.engine == "ray":
        _run_ray(jobs, options, on_result)
    elif options.worker_count == 1 or len(jobs) == 1:
        for position, job in enumerate(jobs):
            on_result(position, run_session_job(job))
    else:
        _run_processes(jobs, options, on_result)


def _run_processes(jobs: Sequence[SessionJob], options: EngineOptions,
                   on_result: ResultSink) -> None:
    # forkserver: workers start clean (no inherited decoder state, threads or open files)
    workers = min(options.worker_count, len(jobs))
    with ProcessPoolExecutor(max_workers=workers,
                             mp_context=get_context("forkserver")) as pool:
        pending: dict[Future[list[EpisodeResult]], int] = {
            pool.submit(run_session_job, job): position for position, job in enumerate(jobs)}
        try:
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    position = pending.pop(future)
                    on_result(position, future.result())
        except BaseException:
            for future in pending:
                future.cancel()
            raise


def _run_ray(jobs: Sequence[SessionJob], options: EngineOptions, on_result: ResultSink) -> None:
    try:
        import ray
    except ImportError:
        raise CaptureError("--engine ray needs the ray package (pip install 'capture[ray]')"
                           ) from None
    if not ray.is_initialized():
        if options.ray_address:
            ray.init(address=options.ray_address, include_dashboard=False,
                     log_to_driver=False)
        else:
            ray.init(num_cpus=options.worker_count, include_dashboard=False,
                     log_to_driver=False)
    task = ray.remote(num_cpus=1, max_retries=1)(run_session_job)
    pending = {task.remote(job): position for position, job in enumerate(jobs)}
    while pending:
        done, _ = ray.wait(list(pending), num_returns=1)
        for ref in done:
            position = pending.pop(ref)
            on_result(position, ray.get(ref))


def clear_segments(location: str) -> None:
    """Remove a job's segment directory (local path or URL) when the export is done."""
    if storage.is_url(location):
        storage.delete_dir(location)
    else:
        shutil.rmtree(location, ignore_errors=True)


def describe(options: EngineOptions) -> dict[str, Any]:
    return {"engine": options.engine, "workers": options.worker_count,
            "ray_address": options.ray_address}
