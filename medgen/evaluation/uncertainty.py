"""How far FID, precision and recall move with the draw of generated images: bootstrap standard errors.

One evaluation samples N images once; another N from the same model score a little differently. Two models (or
two settings) whose figures differ by less than that are not told apart by the evaluation. The spread is read
off the images already drawn: the generated set is resampled with replacement, the real reference set is held
fixed (both models are compared against the same one), and each figure is recomputed per resample. Reported is
the bootstrap standard error and the normal interval around the figure itself (figure ± z * se, clipped to the
figure's range: FID >= 0, precision and recall in [0, 1]): the resampled figures are biased (a resample holds about
63% distinct images), their spread is what the interval uses.

FID per resample uses the identity tr sqrt(S_r S_g) = tr sqrt(A S_g A) with A = S_r^(1/2), whose nonzero
eigenvalues are those of the small N x N Gram matrix of the centred generated features times A: the real
statistics and A are computed once, each resample then costs one (N, D) x (D, D) product and an N x N
eigendecomposition, not a D x D one. It equals torchmetrics' FID on the same images (tested).
Recall's generated manifold is built from a resample's distinct images (a repeated image would count as its own
nearest neighbour and shrink the balls).
"""

from __future__ import annotations

from statistics import NormalDist
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # numpy and torch are imported where they are used: the command line reads the defaults cheaply
    import numpy as np
    import torch

DEFAULT_RESAMPLES = 100
DEFAULT_LEVEL = 0.95


class FrechetAgainst:
    """FID of any generated feature set against one fixed real set, with the real statistics computed once."""

    def __init__(self, real: np.ndarray) -> None:
        import numpy as np
        import torch

        features = torch.from_numpy(np.asarray(real)).double()
        if features.ndim != 2 or len(features) < 2:
            raise ValueError(f"real features must be (N >= 2, D), got {tuple(features.shape)}")
        self.mean = features.mean(dim=0)
        centred = features - self.mean
        covariance = centred.T @ centred / (len(features) - 1)
        self.trace = float(covariance.trace())
        values, vectors = torch.linalg.eigh(covariance)
        self.root = (vectors * values.clamp(min=0).sqrt()) @ vectors.T  # S_r^(1/2), symmetric

    def __call__(self, generated: torch.Tensor) -> float:
        import torch

        if len(generated) < 2:
            raise ValueError(f"FID needs at least 2 generated images, got {len(generated)}")
        mean = generated.mean(dim=0)
        centred = generated - mean
        scale = len(generated) - 1
        projected = centred @ self.root
        gram = projected @ projected.T / scale
        cross = torch.linalg.eigvalsh(gram).clamp(min=0).sqrt().sum()
        value = float((self.mean - mean).square().sum()) + self.trace + float(centred.square().sum()) / scale - 2 * float(cross)
        return max(value, 0.0)


def _summary(estimate: float, resampled: list[float], z: float, high: float | None = None) -> dict[str, float]:
    """Standard error and the interval estimate ± z se, clipped to the figure's range: [0, `high`]."""
    import numpy as np

    se = float(np.std(resampled, ddof=1))
    upper = estimate + z * se
    return {"se": se, "low": max(estimate - z * se, 0.0), "high": upper if high is None else min(upper, high)}


def bootstrap_fidelity(
    real: np.ndarray,
    generated: np.ndarray,
    estimates: dict[str, float],
    k: int = 3,
    resamples: int = DEFAULT_RESAMPLES,
    level: float = DEFAULT_LEVEL,
    seed: int = 0,
) -> dict[str, Any]:
    """Bootstrap standard errors and `level` intervals of FID, precision and recall over the generated images.

    Args:
        real, generated: feature arrays `(N, D)`; `real` is held fixed.
        estimates: the figures themselves (`fid`, and `precision` / `recall` where computed), which the intervals
            are centred on.
        k: the precision/recall neighbourhood size the figures used.
        resamples: bootstrap resamples (>= 2).
        level: the intervals' coverage, in (0, 1).

    Returns:
        `{"resamples", "level", "fid": {"se", "low", "high"}, "precision": ..., "recall": ...}` for the figures
        present in `estimates`; a figure the set is too small for is left out.
    """
    import numpy as np
    import torch

    from medgen.evaluation.fidelity import coverage_fraction, inside_balls, knn_radii

    if resamples < 2:
        raise ValueError(f"bootstrap resamples must be >= 2, got {resamples}")
    if not 0 < level < 1:
        raise ValueError(f"interval level must be in (0, 1), got {level}")
    real_t = torch.from_numpy(np.asarray(real)).double()
    generated_t = torch.from_numpy(np.asarray(generated)).double()
    n = len(generated_t)
    rng = np.random.default_rng(seed)
    draws = [np.sort(rng.integers(0, n, size=n)) for _ in range(resamples)]
    z = NormalDist().inv_cdf(0.5 + level / 2)
    result: dict[str, Any] = {"resamples": int(resamples), "level": float(level)}
    if "fid" in estimates and n >= 2 and len(real_t) >= 2:
        fid = FrechetAgainst(real)
        result["fid"] = _summary(estimates["fid"], [fid(generated_t[torch.from_numpy(index)]) for index in draws], z)
    if "precision" in estimates and len(real_t) > k:
        # each generated image is inside the (fixed) real manifold or not: precision resamples those indicators
        inside = inside_balls(generated_t, real_t, knn_radii(real_t, k)).double().numpy()
        result["precision"] = _summary(estimates["precision"], [float(inside[index].mean()) for index in draws], z, 1.0)
    if "recall" in estimates:
        values = []
        for index in draws:
            distinct = generated_t[torch.from_numpy(np.unique(index))]
            if len(distinct) > k:
                values.append(coverage_fraction(real_t, distinct, knn_radii(distinct, k)))
        if len(values) >= 2:
            result["recall"] = _summary(estimates["recall"], values, z, 1.0)
    return result
