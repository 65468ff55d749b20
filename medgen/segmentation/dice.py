"""Dice per image and class (MONAI's `compute_dice`), and its summary.

An empty reference mask (e.g. a BUSI normal image: no lesion) scores 1 when the prediction is empty too and 0
otherwise (MONAI `ignore_empty=False`), so a segmenter that draws lesions on normal images is penalised; the
summary also gives the mean over the non-empty reference masks alone, the usual lesion Dice.
"""

from __future__ import annotations

import numpy as np


def dice_scores(predicted: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """`(N, K)` Dice of binary masks `(N, K, H, W)` against reference masks of the same shape."""
    import torch
    from monai.metrics import compute_dice

    predicted, reference = np.asarray(predicted), np.asarray(reference)
    if predicted.shape != reference.shape:
        raise ValueError(f"predicted masks {predicted.shape} and reference masks {reference.shape} differ in shape")
    if predicted.ndim != 4:
        raise ValueError(f"masks must be (N, K, H, W), got shape {predicted.shape}")
    if not len(predicted):
        return np.zeros((0, predicted.shape[1]), dtype=np.float64)
    scores = compute_dice(
        torch.from_numpy((predicted > 0).astype(np.float32)),
        torch.from_numpy((reference > 0).astype(np.float32)),
        include_background=True,
        ignore_empty=False,
    )
    return scores.double().numpy()


def dice_summary(scores: np.ndarray, reference: np.ndarray, class_names: list[str] | None = None) -> dict:
    """Mean Dice over images and classes, per class, and over the non-empty reference masks only."""
    scores = np.asarray(scores, dtype=np.float64)
    nonempty = np.asarray(reference).reshape(*np.asarray(reference).shape[:2], -1).any(axis=2)
    names = class_names or [f"class {k}" for k in range(scores.shape[1])]
    summary: dict = {
        "dice": float(scores.mean()) if scores.size else None,
        "dice_per_class": {name: float(scores[:, k].mean()) if len(scores) else None for k, name in enumerate(names)},
        "dice_nonempty": float(scores[nonempty].mean()) if nonempty.any() else None,
        "n_images": int(len(scores)),
        "n_empty_reference_masks": int((~nonempty).sum()),
    }
    return summary
