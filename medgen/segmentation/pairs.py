"""`Pairs`: images with their segmentation masks, as plain arrays, checked once when built."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

import numpy as np


@dataclass
class Pairs:
    """Images `(N, C, H, W)` float32 in [0, 1] and masks `(N, K, H, W)` uint8 in {0, 1}, one channel per mask class.

    `targets` (one label index per pair, into `label_names`) and `sources` (where each pair came from) are
    optional; the downstream arms use the labels to keep the label mix of the control equal to the synthetic one.
    """

    images: np.ndarray
    masks: np.ndarray
    label_names: list[str] = field(default_factory=list)
    targets: np.ndarray | None = None
    sources: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.images = np.asarray(self.images, dtype=np.float32)
        masks = np.asarray(self.masks)
        if self.images.ndim != 4:
            raise ValueError(f"images must be (N, C, H, W), got shape {self.images.shape}")
        if masks.ndim != 4:
            raise ValueError(f"masks must be (N, K, H, W) with one channel per mask class, got shape {masks.shape}")
        if len(masks) != len(self.images):
            raise ValueError(f"{len(self.images)} images but {len(masks)} masks: one mask per image")
        if masks.shape[2:] != self.images.shape[2:]:
            raise ValueError(f"masks are {masks.shape[2]}x{masks.shape[3]} but images are {self.images.shape[2]}x{self.images.shape[3]}")
        if masks.size and not np.isin(np.unique(masks), (0, 1)).all():
            raise ValueError(f"masks must hold only 0 and 1, got values {np.unique(masks)[:8].tolist()}")
        if self.images.size and (self.images.min() < 0 or self.images.max() > 1):
            raise ValueError(f"images must lie in [0, 1], got [{self.images.min():.3f}, {self.images.max():.3f}]")
        self.masks = masks.astype(np.uint8)
        if self.targets is not None:
            self.targets = np.asarray(self.targets, dtype=np.int64)
            if self.targets.shape != (len(self.images),):
                raise ValueError(f"targets must hold one label index per image, got shape {self.targets.shape}")

    def __len__(self) -> int:
        return len(self.images)

    @property
    def num_classes(self) -> int:
        return int(self.masks.shape[1])

    def subset(self, index: np.ndarray) -> Pairs:
        index = np.asarray(index, dtype=np.int64)
        return Pairs(
            self.images[index],
            self.masks[index],
            list(self.label_names),
            self.targets[index] if self.targets is not None else None,
            [self.sources[i] for i in index] if self.sources else [],
        )

    def counts(self) -> dict[str, int]:
        if self.targets is None:
            return {}
        counts = np.bincount(self.targets, minlength=len(self.label_names))
        return {name: int(count) for name, count in zip(self.label_names, counts)}

    def fingerprint(self) -> str:
        """Content hash of images and masks: the cache key of a segmenter trained on them."""
        digest = hashlib.sha256()
        digest.update(str(self.images.shape).encode() + str(self.masks.shape).encode())
        digest.update(np.ascontiguousarray((self.images * 255).round().astype(np.uint8)).tobytes())
        digest.update(np.ascontiguousarray(self.masks).tobytes())
        digest.update(json.dumps(self.label_names).encode())
        return digest.hexdigest()[:16]


def concatenate_pairs(parts: list[Pairs]) -> Pairs:
    """One `Pairs` from several with the same geometry and labels (sources kept when every part has them)."""
    first = parts[0]
    for part in parts[1:]:
        if part.images.shape[1:] != first.images.shape[1:] or part.masks.shape[1:] != first.masks.shape[1:]:
            raise ValueError(
                f"cannot join pairs of shapes {first.images.shape[1:]} / {first.masks.shape[1:]} and "
                f"{part.images.shape[1:]} / {part.masks.shape[1:]}"
            )
    with_targets = all(part.targets is not None for part in parts)
    return Pairs(
        np.concatenate([part.images for part in parts]),
        np.concatenate([part.masks for part in parts]),
        list(first.label_names),
        np.concatenate([part.targets for part in parts]) if with_targets else None,
        [s for part in parts for s in part.sources] if all(part.sources or not len(part) for part in parts) else [],
    )


def masks_from_indices(indices: np.ndarray, num_classes: int) -> np.ndarray:
    """Class-index masks `(N, H, W)` (0 = background, 1..K) -> one-hot `(N, K, H, W)` uint8."""
    indices = np.asarray(indices)
    if indices.ndim == 4 and indices.shape[1] == 1:
        indices = indices[:, 0]
    if indices.ndim != 3:
        raise ValueError(f"class-index masks must be (N, H, W), got shape {indices.shape}")
    if indices.size and (indices.min() < 0 or indices.max() > num_classes):
        raise ValueError(f"class indices must lie in 0..{num_classes}, got {indices.min()}..{indices.max()}")
    classes = np.arange(1, num_classes + 1).reshape(1, -1, 1, 1)
    return (indices[:, None] == classes).astype(np.uint8)


def indices_from_masks(masks: np.ndarray) -> np.ndarray:
    """One-hot masks `(N, K, H, W)` -> class indices `(N, H, W)` uint8; where classes overlap the first one wins."""
    masks = np.asarray(masks).astype(bool)
    if masks.ndim != 4:
        raise ValueError(f"masks must be (N, K, H, W), got shape {masks.shape}")
    first = masks.argmax(axis=1) + 1
    return np.where(masks.any(axis=1), first, 0).astype(np.uint8)
