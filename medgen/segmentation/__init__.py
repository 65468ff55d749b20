"""A small seeded segmenter (MONAI U-Net) and Dice: the ruler for image + mask pairs.

Used by `medgen evaluate` (mask faithfulness: does a generated image follow the mask it was drawn from?) and
`medgen downstream --task segmentation` (do synthetic pairs help a segmenter trained on scarce real pairs?).
Works on plain arrays: images `(N, C, H, W)` float32 in [0, 1], masks `(N, K, H, W)` in {0, 1}, one channel per
mask class (classes may overlap; each is predicted with its own sigmoid).
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "QUICK",
    "STANDARD",
    "Pairs",
    "Segmenter",
    "SegmenterRecipe",
    "concatenate_pairs",
    "dice_scores",
    "dice_summary",
    "load_pairs",
    "predict_masks",
    "train_segmenter",
    "trained_segmenter",
]

_HOMES = {
    "Pairs": "medgen.segmentation.pairs",
    "concatenate_pairs": "medgen.segmentation.pairs",
    "load_pairs": "medgen.segmentation.data",
    "Segmenter": "medgen.segmentation.segmenter",
    "SegmenterRecipe": "medgen.segmentation.segmenter",
    "trained_segmenter": "medgen.segmentation.segmenter",
    "STANDARD": "medgen.segmentation.segmenter",
    "QUICK": "medgen.segmentation.segmenter",
    "train_segmenter": "medgen.segmentation.segmenter",
    "predict_masks": "medgen.segmentation.segmenter",
    "dice_scores": "medgen.segmentation.dice",
    "dice_summary": "medgen.segmentation.dice",
}


def __getattr__(name: str) -> Any:
    # Lazy, so that importing the package (e.g. from a CLI module) does not import torch or MONAI.
    if name in _HOMES:
        import importlib

        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'medgen.segmentation' has no attribute {name!r}")
