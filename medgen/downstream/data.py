"""Real images for the downstream experiment: loading a split through the data layer, drawing subsets."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


@dataclass
class LabelledImages:
    """Single-label images `(N, C, H, W)` float32 in [0, 1], their class indices and where each came from.

    `groups` holds one group id per image (e.g. a patient id) when a group column was given.
    """

    images: np.ndarray
    targets: np.ndarray
    label_names: list[str]
    sources: list[str] = field(default_factory=list)
    groups: list[str] | None = None

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, index: np.ndarray) -> LabelledImages:
        index = np.asarray(index, dtype=np.int64)
        return LabelledImages(
            self.images[index],
            self.targets[index],
            list(self.label_names),
            [self.sources[i] for i in index] if self.sources else [],
            [self.groups[i] for i in index] if self.groups is not None else None,
        )

    def counts(self) -> dict[str, int]:
        counts = np.bincount(self.targets, minlength=len(self.label_names))
        return {name: int(count) for name, count in zip(self.label_names, counts)}


def concatenate(parts: list[LabelledImages]) -> LabelledImages:
    return LabelledImages(
        np.concatenate([part.images for part in parts]),
        np.concatenate([part.targets for part in parts]),
        list(parts[0].label_names),
        [source for part in parts for source in part.sources],
    )


def data_config_values(data: str | None, config: str | None, label_column: str | None) -> dict[str, Any]:
    """`DataConfig` fields from `--data PATH` (npz, folder with metadata.csv, CSV file) or `--config train.yaml`."""
    if (data is None) == (config is None):
        raise ValueError("give exactly one of --data (a .npz, an image folder with metadata.csv, or a CSV) or --config")
    if config is not None:
        from medgen.config import load_config

        values = load_config(config).data.to_dict()
        if label_column is not None:
            values["findings_column"] = label_column
        return values
    path = Path(data)
    if not path.exists():
        raise FileNotFoundError(f"--data {data}: not found (expected a .npz file, an image folder with metadata.csv, or a CSV)")
    if path.suffix.lower() == ".npz":
        values: dict[str, Any] = {"source": "medmnist", "path": str(path)}
    elif path.suffix.lower() == ".csv" or (path.is_dir() and (path / "metadata.csv").is_file()):
        values = {"source": "csv", "path": str(path)}
        if path.suffix.lower() == ".csv":
            values.update(path=str(path.parent), csv_path=str(path))
    else:
        raise ValueError(f"--data {data}: expected a .npz file, an image folder with metadata.csv, or a CSV file")
    if label_column is not None:
        if values["source"] != "csv":
            raise ValueError(f"--label-column applies to CSV data, not to {data}")
        values["findings_column"] = label_column
    elif values["source"] == "csv":
        raise ValueError(f"--data {data} is CSV data: give --label-column, the column holding each image's label")
    return values


def load_split(values: dict[str, Any], split: str, resolution: int, channels: int, max_samples: int | None = None) -> LabelledImages:
    """One split of single-label real data at the synthetic images' resolution, through `build_dataset`."""
    from medgen.data import DataConfig, build_dataset

    values = {**values, "split": split, "resolution": int(resolution), "channels": int(channels), "streaming": False}
    if max_samples is not None:
        values["max_samples"] = int(max_samples)
    built = build_dataset(DataConfig.from_dict(values))
    if not built.label_names:
        raise ValueError(f"real data {values['path']} (split {split!r}) has no labels; a classifier needs labelled images")
    if built.multi_label:
        raise ValueError(
            f"real data {values['path']} is multi-label; medgen downstream compares single-label classifiers "
            "(one finding per image)"
        )
    dataset = built.dataset  # rows read as float tensors in [-1, 1] (the cache holds integers)
    pixels = np.asarray(dataset["pixel_values"][:], dtype=np.float32)
    vectors = np.asarray(dataset["labels"][:], dtype=np.float32).reshape(len(dataset), len(built.label_names))
    return LabelledImages(
        (np.clip(pixels, -1.0, 1.0) + 1.0) / 2.0,
        vectors.argmax(axis=1).astype(np.int64),
        list(built.label_names),
        [str(source) for source in dataset["source"]],
    )


def attach_groups(images: LabelledImages, values: dict[str, Any], column: str) -> None:
    """Reads `column` of the data's CSV and gives every image its group (e.g. its patient id)."""
    import pandas as pd

    if values.get("source") != "csv":
        raise ValueError(f"--group-column {column!r} needs CSV data (a folder with metadata.csv or a CSV file)")
    root = Path(values["path"])
    csv_path = Path(values["csv_path"]) if values.get("csv_path") else root / "metadata.csv"
    frame = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    if column not in frame.columns:
        raise ValueError(f"--group-column {column!r} is not a column of {csv_path}; its columns are {list(frame.columns)}")
    path_column = values.get("path_column") or ("file_name" if "file_name" in frame.columns else "Path")
    lookup = {}
    for relative, group in zip(frame[path_column], frame[column]):
        path = Path(str(relative).strip())
        lookup[str((path if path.is_absolute() else root / path).resolve())] = str(group)
    groups = []
    for source in images.sources:
        key = str(Path(source.split("#")[0]).resolve())
        if key not in lookup:
            raise ValueError(f"--group-column {column!r}: image {source} is not listed in {csv_path}")
        groups.append(lookup[key] or source)  # an empty cell: the image is its own group
    images.groups = groups


def check_disjoint(train: LabelledImages, test: LabelledImages, split: str, test_split: str) -> None:
    """The test split must never be trained on: refuse splits that share an image file."""
    shared = set(train.sources) & set(test.sources)
    if shared:
        raise ValueError(
            f"--split {split!r} and --test-split {test_split!r} share {len(shared)} image(s) (e.g. {sorted(shared)[0]}); "
            "give data whose splits are disjoint (a CSV 'split' column, or MedMNIST train/test)"
        )
    if train.groups is not None and test.groups is not None:
        overlap = set(train.groups) & set(test.groups)
        if overlap:
            raise ValueError(
                f"{len(overlap)} group(s) appear in both --split {split!r} and --test-split {test_split!r} "
                f"(e.g. {sorted(overlap)[0]!r}): the test split would not be held out"
            )


def draw_subset(images: LabelledImages, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Indices of a `fraction` of `images`.

    Without groups the draw is stratified by label (each label keeps its share, at least one image), so that
    small fractions still hold every label. With groups, whole groups are drawn until the fraction is reached,
    so that one patient's images are all in the subset or all out of it.
    """
    total = len(images)
    if fraction >= 1.0:
        return np.arange(total)
    if images.groups is not None:
        names = sorted(set(images.groups))
        order = rng.permutation(len(names))
        members: dict[str, list[int]] = {}
        for index, group in enumerate(images.groups):
            members.setdefault(group, []).append(index)
        chosen: list[int] = []
        target = max(1, round(fraction * total))
        for position in order:
            if len(chosen) >= target:
                break
            chosen.extend(members[names[position]])
        return np.sort(np.asarray(chosen, dtype=np.int64))
    chosen_parts = []
    for label in range(len(images.label_names)):
        candidates = np.flatnonzero(images.targets == label)
        if len(candidates):
            count = min(len(candidates), max(1, round(fraction * len(candidates))))
            chosen_parts.append(rng.choice(candidates, size=count, replace=False))
    return np.sort(np.concatenate(chosen_parts))
