"""Memorization: is a generated image a near copy of a training patient's image?

For every generated image we find its nearest training image, in pixel space and in feature space.
What counts as "near" is calibrated on real data: real *test* images are, by construction, not copies
of training images, so their nearest-training-image distances show how close two different patients'
images naturally are. The threshold is a low percentile (default 1st) of those test -> train distances;
a generated image closer than that is a near copy. By construction about 1% of real test images fall
below it, so the alarm asks whether the generated set has significantly *more* near copies than real
unseen data (one-sided binomial test, p < 0.01), not whether there are any at all.
"""

from __future__ import annotations

import numpy as np
import torch

PIXEL_SIDE = 64


def pixel_vectors(images: np.ndarray) -> np.ndarray:
    """Grayscale images area-resized to at most 64x64 and flattened: the pixel space distances are taken in.

    Large images are downsampled only to bound the cost of all-pairs distances; near copies stay near.
    """
    tensor = torch.from_numpy(np.ascontiguousarray(images)).float().mean(dim=1, keepdim=True)
    height, width = tensor.shape[-2:]
    if max(height, width) > PIXEL_SIDE:
        tensor = torch.nn.functional.adaptive_avg_pool2d(tensor, (min(height, PIXEL_SIDE), min(width, PIXEL_SIDE)))
    return tensor.flatten(1).numpy()


def nearest_neighbours(queries: np.ndarray, references: np.ndarray, chunk: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """For each query row, the Euclidean distance to and index of its nearest reference row (chunked `torch.cdist`)."""
    if len(references) == 0:
        raise ValueError("memorization needs at least one training image")
    reference_t = torch.from_numpy(np.ascontiguousarray(references)).double()
    distances, indices = [], []
    with torch.inference_mode():
        for start in range(0, len(queries), chunk):
            query_t = torch.from_numpy(np.ascontiguousarray(queries[start : start + chunk])).double()
            values, index = torch.cdist(query_t, reference_t).min(dim=1)
            distances.append(values)
            indices.append(index)
    return torch.cat(distances).numpy(), torch.cat(indices).numpy()


def memorization_in_space(
    generated: np.ndarray, train: np.ndarray, test: np.ndarray, percentile: float = 1.0, alpha: float = 0.01
) -> dict:
    """Near-copy analysis in one space (rows are vectors). Returns the figures for report.json plus indices."""
    from scipy.stats import binomtest

    if not 0 < percentile < 50:
        raise ValueError(f"memorization percentile must be in (0, 50), got {percentile}")
    generated_distances, generated_index = nearest_neighbours(generated, train)
    test_distances, _ = nearest_neighbours(test, train)
    threshold = float(np.percentile(test_distances, percentile))
    reference_rate = float(np.mean(test_distances <= threshold))
    near_copies = int(np.sum(generated_distances <= threshold))
    p_value = float(binomtest(near_copies, len(generated_distances), reference_rate, alternative="greater").pvalue)
    quantiles = (1, 5, 25, 50)
    return {
        "threshold": threshold,
        "threshold_percentile": percentile,
        "near_copy_fraction": near_copies / len(generated_distances),
        "near_copies": near_copies,
        "real_test_near_copy_fraction": reference_rate,
        "p_value": p_value,
        "alarm": bool(p_value < alpha),
        "generated_distance_percentiles": {str(q): float(np.percentile(generated_distances, q)) for q in quantiles},
        "real_test_distance_percentiles": {str(q): float(np.percentile(test_distances, q)) for q in quantiles},
        "_distances": generated_distances,
        "_nearest_train_index": generated_index,
    }


def memorization_report(
    generated_images: np.ndarray,
    train_images: np.ndarray,
    test_images: np.ndarray,
    generated_features: np.ndarray | None = None,
    train_features: np.ndarray | None = None,
    test_features: np.ndarray | None = None,
    percentile: float = 1.0,
    train_feature_index: np.ndarray | None = None,
) -> dict:
    """Pixel-space analysis always; feature-space analysis when the three feature arrays are given.

    `train_feature_index` says which training images the rows of `train_features` are (default: all, in
    order): the feature-space search may use a seeded subset of a large training split, because embedding
    every training image with Inception dominates the cost on a CPU. Generated and test images are
    searched against the same subset, so the threshold stays calibrated. `alarm` is True when either
    space raises it.
    """
    pixel = memorization_in_space(
        pixel_vectors(generated_images), pixel_vectors(train_images), pixel_vectors(test_images), percentile
    )
    spaces = {"pixel": {**pixel, "n_train_searched": len(train_images)}}
    if generated_features is not None and train_features is not None and test_features is not None:
        feature = memorization_in_space(generated_features, train_features, test_features, percentile)
        if train_feature_index is not None:
            feature["_nearest_train_index"] = np.asarray(train_feature_index)[feature["_nearest_train_index"]]
        feature["n_train_searched"] = len(train_features)
        spaces["feature"] = feature
    return {"alarm": any(space["alarm"] for space in spaces.values()), **spaces}
