"""Runs the real LeRobot 0.6.1 on a dataset for the tests (under .venv-lerobot's Python 3.12).

Usage: python lerobot_driver.py COMMAND OUT ARGS...; writes OUT.json (and OUT.npz) for the test
to check. Imports only LeRobot's environment (never the capture package).

  read ROOT          LeRobotDataset(repo_id="local/x", root=ROOT): every frame, plus LeRobot's own
                     compute_episode_stats of each episode's numeric columns; then every frame
                     again with delta_timestamps (an image and an action window per frame).
  loader ROOT        a DataLoader with 2 forked workers over the whole dataset. Nothing is decoded
                     in this process before the workers start: LeRobot caches video decoders at
                     module level, and a forked worker inheriting a used one fails.
  delete ROOT NEW SPLITS E
                     dataset_tools.delete_episodes(episodes [E, ...]) into NEW; then the stats
                     recomputed from NEW's remaining episodes (numeric: compute_episode_stats on
                     the data; video: LeRobot's sampling and get_feature_stats on decoded frames);
                     then split_dataset of ROOT into "first" (episode 0) and "rest" in SPLITS.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from lerobot.datasets.compute_stats import (
    aggregate_stats,
    auto_downsample_height_width,
    compute_episode_stats,
    get_feature_stats,
    sample_indices,
)
from lerobot.datasets.dataset_tools import delete_episodes, split_dataset
from lerobot.datasets.lerobot_dataset import LeRobotDataset

IMAGE = "observation.image"


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """LeRobot's float CHW image in [0, 1] as HWC uint8, every n-th pixel of wide frames (at
    most ~100 px across: enough to read the test pictures' tags, small enough to pass back)."""
    step = max(1, image.shape[-1] // 96)
    hwc = image.permute(1, 2, 0).numpy()[::step, ::step]
    return (hwc * 255).round().clip(0, 255).astype(np.uint8)


def jsonable(stats: dict[str, dict[str, np.ndarray]]) -> dict[str, dict[str, Any]]:
    return {f: {k: np.asarray(v).tolist() for k, v in s.items()} for f, s in stats.items()}


def numeric_features(dataset: LeRobotDataset) -> dict[str, dict]:
    return {k: v for k, v in dataset.meta.features.items() if v["dtype"] not in ("video", "image")}


def data_frame(root: Path) -> pd.DataFrame:
    files = sorted(root.glob("data/*/*.parquet"))
    return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)


def episode_numeric_stats(root: Path, features: dict[str, dict]) -> list[dict]:
    """LeRobot's compute_episode_stats of each episode's numeric columns, from the data files."""
    frame = data_frame(root)
    out = []
    for episode in sorted(frame["episode_index"].unique()):
        rows = frame[frame["episode_index"] == episode]
        data = {}
        for name, spec in features.items():
            column = rows[name].to_numpy()
            data[name] = (np.stack(column) if spec["shape"] != [1] and column.dtype == object
                          else column).astype(spec["dtype"])
        out.append(compute_episode_stats(data, features))
    return out


def read_frames(root: str) -> tuple[LeRobotDataset, dict[str, np.ndarray], list[str]]:
    dataset = LeRobotDataset(repo_id="local/x", root=root)
    numeric = numeric_features(dataset)
    columns: dict[str, list] = {name: [] for name in numeric}
    images, tasks = [], []
    for i in range(len(dataset)):
        item = dataset[i]
        for name in numeric:
            columns[name].append(item[name].numpy())
        images.append(to_uint8(item[IMAGE]))
        tasks.append(item["task"])
    arrays = {name: np.stack(v) for name, v in columns.items()}
    arrays["images"] = np.stack(images)
    return dataset, arrays, tasks


def read_windows(root: str, fps: int) -> dict[str, np.ndarray]:
    deltas = {IMAGE: [-1 / fps, 0.0], "action.mouse_delta": [-1 / fps, 0.0, 1 / fps]}
    dataset = LeRobotDataset(repo_id="local/x", root=root, delta_timestamps=deltas)
    images, actions, action_pad, image_pad = [], [], [], []
    for i in range(len(dataset)):
        item = dataset[i]
        images.append(np.stack([to_uint8(im) for im in item[IMAGE]]))
        actions.append(item["action.mouse_delta"].numpy())
        action_pad.append(item["action.mouse_delta_is_pad"].numpy())
        image_pad.append(item[f"{IMAGE}_is_pad"].numpy())
    return {"window_images": np.stack(images), "window_actions": np.stack(actions),
            "window_action_pad": np.stack(action_pad), "window_image_pad": np.stack(image_pad)}


def cmd_read(out: Path, root: str) -> None:
    dataset, arrays, tasks = read_frames(root)
    arrays.update(read_windows(root, dataset.fps))
    np.savez(out.with_suffix(".npz"), **arrays)
    numeric = numeric_features(dataset)
    result = {"len": len(dataset), "num_episodes": dataset.num_episodes, "fps": dataset.fps,
              "tasks": tasks, "features": sorted(dataset.meta.features),
              "episode_stats": [jsonable(s) for s in episode_numeric_stats(Path(root), numeric)],
              "stats_keys": {k: sorted(v) for k, v in (dataset.meta.stats or {}).items()}}
    out.with_suffix(".json").write_text(json.dumps(result))


def cmd_loader(out: Path, root: str) -> None:
    dataset = LeRobotDataset(repo_id="local/x", root=root)
    loader = torch.utils.data.DataLoader(dataset, batch_size=16, shuffle=True, num_workers=2,
                                         generator=torch.Generator().manual_seed(0))
    index, images = [], []
    for batch in loader:
        index.append(batch["index"].numpy())
        images += [to_uint8(image) for image in batch[IMAGE]]
    np.savez(out.with_suffix(".npz"), index=np.concatenate(index), images=np.stack(images))
    out.with_suffix(".json").write_text(json.dumps({"batches": len(index)}))


def video_episode_stats(dataset: LeRobotDataset) -> list[dict]:
    """Per episode: LeRobot's sampling and image stats over the decoded frames."""
    out = []
    for episode in range(dataset.num_episodes):
        lo = dataset.meta.episodes[episode]["dataset_from_index"]
        hi = dataset.meta.episodes[episode]["dataset_to_index"]
        frames = [(dataset[lo + k][IMAGE].numpy() * 255).round().astype(np.uint8)
                  for k in sample_indices(hi - lo)]
        batch = np.stack([auto_downsample_height_width(f) for f in frames])
        stats = get_feature_stats(batch, axis=(0, 2, 3), keepdims=True)
        out.append({IMAGE: {k: v if k == "count" else np.squeeze(v / 255.0, axis=0)
                            for k, v in stats.items()}})
    return out


def cmd_delete(out: Path, root: str, new_root: str, split_root: str, *episodes: str) -> None:
    dataset = LeRobotDataset(repo_id="local/x", root=root)
    edited = delete_episodes(dataset, [int(e) for e in episodes], output_dir=new_root,
                             repo_id="local/edited")
    numeric = numeric_features(edited)
    per_episode = episode_numeric_stats(Path(new_root), numeric)
    for stats, video in zip(per_episode, video_episode_stats(edited), strict=True):
        stats.update(video)
    recomputed = aggregate_stats(per_episode)
    written = json.loads((Path(new_root) / "meta/stats.json").read_text())
    rest = list(range(1, dataset.num_episodes))
    parts = split_dataset(dataset, {"first": [0], "rest": rest}, output_dir=split_root)
    splits = {name: {"len": len(part), "num_episodes": part.num_episodes,
                     "stats": json.loads((Path(part.root) / "meta/stats.json").read_text())}
              for name, part in parts.items()}
    out.with_suffix(".json").write_text(json.dumps({
        "num_episodes": edited.num_episodes, "len": len(edited), "stats": written,
        "recomputed": jsonable(recomputed), "splits": splits}))


def main(argv: list[str]) -> None:
    command, out, *args = argv
    commands = {"read": cmd_read, "loader": cmd_loader, "delete": cmd_delete}
    commands[command](Path(out), *args)


if __name__ == "__main__":
    main(sys.argv[1:])
