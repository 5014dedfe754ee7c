"""Feature statistics as LeRobot 0.6.1 computes them: per episode, aggregated for stats.json."""

# A port of `lerobot/datasets/compute_stats.py` (0.6.1), kept numerically identical so that
# LeRobot's own tools (`dataset_tools.delete_episodes`, `split_dataset`, `aggregate_stats`) rebuild
# the same `meta/stats.json` from our per-episode columns as from theirs:
#
# - Per episode and feature: min, max, mean, std (population), count and the quantiles q01, q10,
#   q50, q90, q99. Values are promoted to `np.result_type(dtype, float32)` first (uint8 and float32
#   stay float32, int64 becomes float64). Quantiles come from a 5,000-bin histogram per dimension
#   over [min - 1e-10, max + 1e-10], read by linear interpolation inside the bin that reaches q *
#   count (`RunningQuantileStats` with one update). An episode of fewer than 2 frames gets its mean
#   as every quantile (`_compute_basic_stats`).
# - Video: per episode, `sample_indices` picks round(linspace(0, n - 1, k)) frames with k =
#   max(min(n, 100), min(int(n ** 0.75), 10_000)); frames at least 300 px on a side are subsampled
#   to ~150 px by taking every int(side / 150)-th pixel; stats are per channel over all sampled
#   pixels in 0..255, then divided by 255 and shaped [3, 1, 1]; count is the number of sampled
#   frames. The exporter counts pixel values (ImageCounts) instead of holding the frames: the same
#   min, max and quantiles, and mean/std summed exactly where LeRobot sums float32.
# - Dataset (`stats.json`): `aggregate_stats` over the episodes: min of mins, max of maxes, count-
#   weighted mean, pooled variance, and each quantile as the count-weighted mean of the episodes'
#   quantiles (LeRobot's approximation, not a quantile of the pooled values).

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

QUANTILES = (0.01, 0.10, 0.50, 0.90, 0.99)
QUANTILE_KEYS = tuple(f"q{int(q * 100):02d}" for q in QUANTILES)
STAT_KEYS = ("min", "max", "mean", "std", "count", *QUANTILE_KEYS)
HISTOGRAM_BINS = 5000
IMAGE_STATS_TARGET_PX = 150
IMAGE_STATS_DOWNSAMPLE_FROM_PX = 300

Stats = dict[str, np.ndarray]


def sample_count(n: int, low: int = 100, high: int = 10_000, power: float = 0.75) -> int:
    """How many of an episode's n frames LeRobot samples for image statistics."""
    return max(min(n, low), min(int(n ** power), high))


def sample_indices(n: int) -> list[int]:
    """Which of an episode's n frames (0-based) LeRobot samples for image statistics."""
    if n <= 0:
        return []
    return [int(i) for i in np.round(np.linspace(0, n - 1, sample_count(n))).astype(int)]


def downsample_hwc(image: np.ndarray) -> np.ndarray:
    """LeRobot's auto_downsample_height_width, on a height x width x channels image."""
    height, width = image.shape[:2]
    if max(width, height) < IMAGE_STATS_DOWNSAMPLE_FROM_PX:
        return image
    step = int(width / IMAGE_STATS_TARGET_PX) if width > height \
        else int(height / IMAGE_STATS_TARGET_PX)
    return image[::step, ::step]


def _quantile(hist: np.ndarray, edges: np.ndarray, target: float) -> Any:
    """A numpy scalar on purpose: LeRobot's dtype (float32 at a bin edge, else float64) follows."""
    cumsum = np.cumsum(hist)
    idx = int(np.searchsorted(cumsum, target))
    if idx == 0:
        return edges[0]
    if idx >= len(cumsum):
        return edges[-1]
    before = cumsum[idx - 1]
    in_bin = cumsum[idx] - before
    if in_bin == 0:
        return edges[idx]
    return edges[idx] + (target - before) / in_bin * (edges[idx + 1] - edges[idx])


def _vector_stats(batch: np.ndarray, count: int) -> Stats:
    """Stats of rows x dims `batch` (LeRobot's get_feature_stats core)."""
    batch = batch.astype(np.result_type(batch.dtype, np.float32), copy=False)
    if batch.shape[0] < 2:
        stats: Stats = {"min": np.min(batch, axis=0), "max": np.max(batch, axis=0),
                        "mean": np.mean(batch, axis=0), "std": np.std(batch, axis=0),
                        "count": np.array([count])}
        for key in QUANTILE_KEYS:
            stats[key] = stats["mean"].copy()
        return stats
    low, high = np.min(batch, axis=0), np.max(batch, axis=0)
    mean = np.mean(batch, axis=0)
    mean_sq = np.mean(batch ** 2, axis=0)
    stats = {"min": low.copy(), "max": high.copy(), "mean": mean.copy(),
             "std": np.sqrt(np.maximum(0, mean_sq - mean ** 2)), "count": np.array([count])}
    quantiles: list[list[Any]] = [[] for _ in QUANTILES]
    n = batch.shape[0]
    for d in range(batch.shape[1]):
        edges = np.linspace(low[d] - 1e-10, high[d] + 1e-10, HISTOGRAM_BINS + 1)
        hist, _ = np.histogram(batch[:, d], bins=edges)
        hist = np.zeros(HISTOGRAM_BINS) + hist
        for i, q in enumerate(QUANTILES):
            quantiles[i].append(_quantile(hist, edges, q * n))
    for key, values in zip(QUANTILE_KEYS, quantiles, strict=True):
        stats[key] = np.array(values)
    return stats


def feature_stats(values: np.ndarray) -> Stats:
    """One episode's stats of a numeric feature: rows x dims, or rows for a scalar feature.

    Shapes follow LeRobot: (dims,) for vectors, (1,) for scalars, count (1,).
    """
    if values.ndim == 1:
        return _vector_stats(values.reshape(-1, 1), len(values))
    return _vector_stats(values.reshape(len(values), -1), len(values))


def image_stats(images: np.ndarray) -> Stats:
    """One episode's stats of sampled frames: frames x height x width x channels uint8 (already
    downsampled with downsample_hwc); per channel in [0, 1], shaped (channels, 1, 1). This is
    LeRobot's computation verbatim (float32 sums); the exporter uses ImageCounts instead."""
    frames, _, _, channels = images.shape
    stats = _vector_stats(images.reshape(-1, channels), frames)
    return _image_shaped(stats)


def _image_shaped(stats: Stats) -> Stats:
    return {key: value if key == "count" else (value.reshape(1, -1, 1, 1) / 255.0).squeeze(axis=0)
            for key, value in stats.items()}


class ImageCounts:
    """One episode's sampled frames, kept as per-channel counts of the 256 pixel values.

    Gives LeRobot's image stats without holding the frames: min, max and the histogram quantiles
    are the same as LeRobot's (the histogram is over the same 5,000 bins, each distinct value
    counted with its multiplicity); mean and std are exact sums in float64 where LeRobot sums
    float32 values (theirs drift by ~1e-4 from the exact values).
    """

    def __init__(self, channels: int = 3) -> None:
        self.frames = 0
        self.counts = np.zeros((channels, 256), dtype=np.int64)

    def add(self, image: np.ndarray) -> None:
        """Count one sampled frame: height x width x channels uint8, already downsampled."""
        self.frames += 1
        for c in range(self.counts.shape[0]):
            self.counts[c] += np.bincount(image[..., c].reshape(-1), minlength=256)

    def stats(self) -> Stats:
        values = np.arange(256, dtype=np.float32)
        pixels = int(self.counts[0].sum())
        per_channel = []
        for counts in self.counts:
            present = np.flatnonzero(counts)
            low, high = values[present[0]], values[present[-1]]
            mean = float((values.astype(np.float64) * counts).sum() / pixels)
            mean_sq = float((values.astype(np.float64) ** 2 * counts).sum() / pixels)
            row = {"min": low, "max": high, "mean": mean,
                   "std": float(np.sqrt(max(0.0, mean_sq - mean ** 2))) if pixels >= 2 else 0.0}
            if pixels < 2:
                row.update({key: mean for key in QUANTILE_KEYS})
            else:
                edges = np.linspace(low - 1e-10, high + 1e-10, HISTOGRAM_BINS + 1)
                hist = np.zeros(HISTOGRAM_BINS) + np.histogram(values, bins=edges,
                                                               weights=counts)[0]
                for q, key in zip(QUANTILES, QUANTILE_KEYS, strict=True):
                    row[key] = _quantile(hist, edges, q * pixels)
            per_channel.append(row)
        stats: Stats = {key: np.array([row[key] for row in per_channel])
                        for key in STAT_KEYS if key != "count"}
        stats["count"] = np.array([self.frames])
        return _image_shaped(stats)


def aggregate(per_episode: list[Stats]) -> Stats:
    """LeRobot's aggregate_feature_stats over one feature's per-episode stats."""
    means = np.stack([s["mean"] for s in per_episode])
    variances = np.stack([s["std"] ** 2 for s in per_episode])
    counts = np.stack([s["count"] for s in per_episode])
    total = counts.sum(axis=0)
    while counts.ndim < means.ndim:
        counts = np.expand_dims(counts, axis=-1)
    mean = (means * counts).sum(axis=0) / total
    variance = ((variances + (means - mean) ** 2) * counts).sum(axis=0) / total
    out: Stats = {"min": np.min(np.stack([s["min"] for s in per_episode]), axis=0),
                  "max": np.max(np.stack([s["max"] for s in per_episode]), axis=0),
                  "mean": mean, "std": np.sqrt(variance), "count": total}
    for key in QUANTILE_KEYS:
        out[key] = (np.stack([s[key] for s in per_episode]) * counts).sum(axis=0) / total
    return out


def aggregate_all(episodes: Iterable[Mapping[str, Stats]]) -> dict[str, Stats]:
    """stats.json's content (as arrays) from every episode's {feature: stats}."""
    by_feature: dict[str, list[Stats]] = {}
    for episode in episodes:
        for feature, stats in episode.items():
            by_feature.setdefault(feature, []).append(stats)
    return {feature: aggregate(stats) for feature, stats in by_feature.items()}


def to_lists(stats: Mapping[str, Stats]) -> dict[str, dict[str, Any]]:
    """JSON-ready nested lists (stats.json), in STAT_KEYS order."""
    return {feature: {key: np.asarray(s[key]).tolist() for key in STAT_KEYS}
            for feature, s in stats.items()}


def all_finite(obj: Any) -> bool:
    """True if every number in a nested list/dict structure is finite."""
    if isinstance(obj, dict):
        return all(all_finite(v) for v in obj.values())
    if isinstance(obj, list | tuple):
        return all(all_finite(v) for v in obj)
    if isinstance(obj, bool) or obj is None or isinstance(obj, str):
        return True
    if isinstance(obj, int | float):
        return bool(np.isfinite(obj))
    return False
