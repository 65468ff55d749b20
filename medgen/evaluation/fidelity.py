"""Fidelity metrics in feature space: FID, KID (torchmetrics) and improved precision/recall.

Features are computed once (and cached for real data, see `features.cached_features`), then handed to
torchmetrics through an identity "feature extractor", so torchmetrics does the FID/KID arithmetic while
the expensive network runs only where needed.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from torch import nn


class PrecomputedFeatures(nn.Module):
    """Identity module: lets torchmetrics' FID/KID accept features that were already extracted."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = int(num_features)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features


def _check_pair(real: np.ndarray, generated: np.ndarray, minimum: int = 2) -> None:
    if real.ndim != 2 or generated.ndim != 2 or real.shape[1] != generated.shape[1]:
        raise ValueError(f"feature arrays must be (N, D) with one D, got {real.shape} and {generated.shape}")
    if len(real) < minimum or len(generated) < minimum:
        raise ValueError(
            f"need at least {minimum} real and {minimum} generated images, got {len(real)} and {len(generated)}"
        )


def frechet_distance(real: np.ndarray, generated: np.ndarray) -> float:
    """FID between two feature sets `(N, D)` (torchmetrics `FrechetInceptionDistance`)."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    _check_pair(real, generated)
    metric = FrechetInceptionDistance(feature=PrecomputedFeatures(real.shape[1]))
    metric.update(torch.from_numpy(real).double(), real=True)
    metric.update(torch.from_numpy(generated).double(), real=False)
    # Clamp tiny negative values that come from floating-point error on identical sets.
    return max(float(metric.compute()), 0.0)


def kernel_distance(real: np.ndarray, generated: np.ndarray, subsets: int = 100, subset_size: int = 1000, seed: int = 0) -> dict[str, float]:
    """KID mean and std over random subsets (torchmetrics `KernelInceptionDistance`); subset size capped at the set sizes."""
    from torchmetrics.image.kid import KernelInceptionDistance

    _check_pair(real, generated)
    size = min(subset_size, len(real), len(generated))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*will save all extracted features.*")
        metric = KernelInceptionDistance(feature=PrecomputedFeatures(real.shape[1]), subsets=subsets, subset_size=size)
    # float32 is plenty for KID's polynomial kernel and halves the cost of its 100 subset kernels.
    metric.update(torch.from_numpy(real).float(), real=True)
    metric.update(torch.from_numpy(generated).float(), real=False)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        mean, std = metric.compute()
    return {"mean": float(mean), "std": float(std), "subset_size": size}


def knn_radii(features: torch.Tensor, k: int) -> torch.Tensor:
    """Distance from each point to its k-th nearest other point: the radius of its ball in precision/recall."""
    distances = torch.cdist(features, features)
    # Column 0 of the sorted distances is the point itself.
    return distances.kthvalue(k + 1, dim=1).values


def inside_balls(queries: torch.Tensor, support: torch.Tensor, radii: torch.Tensor, chunk: int = 1024) -> torch.Tensor:
    """For each query, whether it lies inside at least one support point's k-NN ball (queries in chunks)."""
    inside = []
    for start in range(0, len(queries), chunk):
        distances = torch.cdist(queries[start : start + chunk], support)
        inside.append((distances <= radii[None, :]).any(dim=1))
    return torch.cat(inside)


def coverage_fraction(queries: torch.Tensor, support: torch.Tensor, radii: torch.Tensor, chunk: int = 1024) -> float:
    """Fraction of queries inside at least one support point's k-NN ball."""
    return float(inside_balls(queries, support, radii, chunk).float().mean())


def precision_recall(real: np.ndarray, generated: np.ndarray, k: int = 3) -> dict[str, float]:
    """Improved precision and recall (Kynkäänniemi et al., NeurIPS 2019), written from the paper.

    Each set's manifold is the union of balls around its points with radius = distance to the k-th
    nearest neighbour. Precision: fraction of generated points inside the real manifold (realism).
    Recall: fraction of real points inside the generated manifold (coverage of the real variety).
    """
    _check_pair(real, generated, minimum=k + 1)
    if k < 1:
        raise ValueError(f"k for precision/recall must be >= 1, got {k}")
    real_t = torch.from_numpy(real).double()
    generated_t = torch.from_numpy(generated).double()
    precision = coverage_fraction(generated_t, real_t, knn_radii(real_t, k))
    recall = coverage_fraction(real_t, generated_t, knn_radii(generated_t, k))
    return {"precision": precision, "recall": recall}


def real_baseline_fid(features: np.ndarray, size: int, seed: int = 0) -> dict[str, float] | None:
    """FID between two disjoint random halves of real data, each of `size` images (capped by the data).

    FID is biased upwards at small N, so a raw number means little; this floor says what two sets of
    *real* images of the same size score, i.e. what "as good as real" looks like at this N.
    """
    size = min(size, len(features) // 2)
    if size < 2:
        return None
    order = np.random.default_rng(seed).permutation(len(features))
    first, second = features[order[:size]], features[order[size : 2 * size]]
    return {"fid": frechet_distance(first, second), "n_per_subset": int(size)}


def fidelity_figures(real: np.ndarray, other: np.ndarray, k: int = 3, seed: int = 0) -> dict[str, float | dict | None]:
    """FID, KID (mean, std) and precision/recall of feature set `other` against `real`: the figures a model is
    scored with, for any image set (a second real set for a floor, reconstructions for a ceiling)."""
    figures: dict[str, float | dict | None] = {
        "fid": frechet_distance(real, other),
        "kid": kernel_distance(real, other, seed=seed),
    }
    if min(len(real), len(other)) > k:
        figures.update(precision_recall(real, other, k=k))
    return figures


def real_halves_floor(features: np.ndarray, size: int, k: int = 3, seed: int = 0) -> dict[str, float | dict | None] | None:
    """Every fidelity figure between two disjoint random subsets of the real reference images, each of `size`
    images (capped at half the set), as `real_baseline_fid` draws them: what two real samples score at this N."""
    size = min(size, len(features) // 2)
    if size < 2:
        return None
    order = np.random.default_rng(seed).permutation(len(features))
    first, second = features[order[:size]], features[order[size : 2 * size]]
    return {**fidelity_figures(first, second, k, seed), "n_per_set": int(size)}
