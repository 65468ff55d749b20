"""Seeded image + mask pairs of bright discs on noise: a task a tiny segmenter learns in seconds."""

from __future__ import annotations

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
