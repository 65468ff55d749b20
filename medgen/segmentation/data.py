"""Real (or generated) image + mask pairs read through the data layer (`DataConfig.mask_column`)."""

from __future__ import annotations

from typing import Any

import numpy as np

from medgen.segmentation.pairs import Pairs, masks_from_indices


def load_pairs(values: dict[str, Any], split: str | None, resolution: int, channels: int, max_samples: int | None = None) -> tuple[Pairs, list[str]]:
    """One split of image + mask data at `resolution`, through `build_dataset`; and the mask class names.

    `values` are `DataConfig` fields (e.g. a training config's `data` section, or `source: csv` with `path` and
    `mask_column`); `split` None keeps the config's own split. Images come back in [0, 1], masks one-hot.
    """
    from medgen.data import DataConfig, build_dataset

    if not values.get("mask_column"):
        raise ValueError(
            f"the data {values.get('path')} names no mask column: give the CSV column holding each image's mask "
            "(e.g. --mask-column mask_file_name, or data.mask_column in the training config)"
        )
    values = {**values, "resolution": int(resolution), "channels": int(channels), "streaming": False}
    if split is not None:
        values["split"] = split
    if max_samples is not None:
        values["max_samples"] = int(max_samples)
    built = build_dataset(DataConfig.from_dict(values))
    dataset = built.dataset
    if len(dataset) == 0:
        raise ValueError(f"no image + mask pairs in {values.get('path')} (split {values.get('split')!r})")
    pixels = np.asarray(dataset["pixel_values"][:], dtype=np.float32)
    indices = np.asarray(dataset["mask"][:])
    mask_names = list(built.mask_names)
    targets = None
    if built.label_names and not built.multi_label:
        vectors = np.asarray(dataset["labels"][:], dtype=np.float32).reshape(len(dataset), len(built.label_names))
        targets = vectors.argmax(axis=1)
    pairs = Pairs(
        (np.clip(pixels, -1.0, 1.0) + 1.0) / 2.0,
        masks_from_indices(indices, len(mask_names)),
        list(built.label_names) if targets is not None else [],
        targets,
        [str(source) for source in dataset["source"]],
    )
    return pairs, mask_names


def relabel(pairs: Pairs, label_names: list[str], where: str) -> Pairs:
    """`pairs` with label indices into `label_names` (names matched case-insensitively)."""
    if pairs.targets is None:
        raise ValueError(f"{where}: the pairs carry no labels; give a label column")
    lookup = {name.lower(): index for index, name in enumerate(label_names)}
    unknown = sorted({name for name in pairs.label_names if name.lower() not in lookup})
    if unknown:
        raise ValueError(f"{where}: label(s) {unknown} are not labels of the real data {label_names}")
    mapping = np.array([lookup[name.lower()] for name in pairs.label_names], dtype=np.int64)
    return Pairs(pairs.images, pairs.masks, list(label_names), mapping[pairs.targets], list(pairs.sources))
