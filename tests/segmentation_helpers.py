"""Seeded image + mask pairs of bright discs on noise: a task a tiny segmenter learns in seconds."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medgen.segmentation.pairs import Pairs


def disc_pairs(count: int, seed: int, size: int = 32, labels: tuple[str, ...] = ("small", "large")) -> Pairs:
    """`count` pairs: a disc (label 0 small, label 1 large) brighter than its noisy background, and its mask."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    images = np.empty((count, 1, size, size), np.float32)
    masks = np.zeros((count, 1, size, size), np.uint8)
    targets = np.arange(count) % len(labels)
    for i in range(count):
        radius = size * (0.12 + 0.1 * targets[i]) * rng.uniform(0.8, 1.2)
        cy, cx = rng.uniform(radius + 1, size - radius - 1, 2)
        disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2
        masks[i, 0] = disc
        images[i, 0] = np.clip(0.3 + 0.4 * disc + rng.normal(0, 0.08, (size, size)), 0, 1)
    return Pairs(images, masks, list(labels), targets, [f"disc_{seed}_{i}" for i in range(count)])


def write_pair_folder(pairs: Pairs, folder: Path, split: list[str] | None = None) -> Path:
    """An imagefolder of the pairs: images/*.png, masks/*.png (0/255) and metadata.csv (file_name, mask_file_name,
    label[, split]), the layout of ../shared/data/lung-cxr-masks and of `medgen generate --pairs`."""
    from PIL import Image

    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "masks").mkdir(exist_ok=True)
    rows = []
    for i in range(len(pairs)):
        name = pairs.sources[i]
        Image.fromarray((pairs.images[i, 0] * 255).round().astype(np.uint8)).save(folder / "images" / f"{name}.png")
        Image.fromarray(pairs.masks[i, 0] * 255).save(folder / "masks" / f"{name}.png")
        row = f"images/{name}.png,masks/{name}.png,{pairs.label_names[pairs.targets[i]]}"
        rows.append(row + (f",{split[i]}" if split is not None else ""))
    header = "file_name,mask_file_name,label" + (",split" if split is not None else "")
    (folder / "metadata.csv").write_text("\n".join([header, *rows]) + "\n")
    return folder
