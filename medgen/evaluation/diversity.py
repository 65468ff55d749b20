"""Diversity: mean pairwise MS-SSIM within a label (torchmetrics).

High MS-SSIM between random pairs of images of one label means the images look alike (low diversity,
possible mode collapse); compare the generated value with the real one computed the same way.

Small images: standard MS-SSIM uses 5 scales and an 11-px Gaussian window, which needs images of at
least ~160 px. For smaller images (28-px MedMNIST) we keep the largest window (11, 7, 5, then 3 px)
that still allows 3 scales, or fewer scales for tiny images, and renormalise the first betas of the
standard weights (0.0448, 0.2856, 0.3001, 0.2363, 0.1333) to sum to one. The settings used are
recorded in the report, and real and generated images always share them.
"""

from __future__ import annotations

import numpy as np
import torch

STANDARD_BETAS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
# Gaussian sigma per window size; 1.5 px for the standard 11-px window.
KERNEL_SIGMA = {11: 1.5, 7: 0.85, 5: 0.5, 3: 0.3}


def ms_ssim_settings(height: int, width: int) -> dict[str, object]:
    """Window size and per-scale weights that torchmetrics accepts for images of this size."""
    side = min(height, width)

    def fits(kernel: int, scales: int) -> bool:
        # torchmetrics' own checks, plus: the coarsest scale must still hold one window.
        return (
            side >= 2**scales
            and side >= (kernel - 1) * max(1, scales - 1) ** 2
            and side // 2 ** (scales - 1) >= kernel
        )

    for minimum_scales in (3, 1):
        for kernel in (11, 7, 5, 3):
            for scales in (5, 4, 3, 2, 1):
                if scales >= minimum_scales and fits(kernel, scales):
                    betas = np.asarray(STANDARD_BETAS[:scales])
                    return {
                        "kernel_size": kernel,
                        # torchmetrics sizes a Gaussian window from sigma (int(3.5 sigma + 0.5) * 2 + 1 px).
                        "sigma": KERNEL_SIGMA[kernel],
                        "betas": tuple(float(b) for b in betas / betas.sum()),
                    }
    raise ValueError(f"images of {height}x{width} px are too small for MS-SSIM (need at least 3x3)")


def mean_pairwise_ms_ssim(images: np.ndarray, max_pairs: int = 500, seed: int = 0, batch_size: int = 64) -> float | None:
    """Mean MS-SSIM over up to `max_pairs` random distinct pairs of `(N, C, H, W)` [0, 1] images; None if N < 2."""
    from torchmetrics.functional.image import multiscale_structural_similarity_index_measure

    count = len(images)
    if count < 2:
        return None
    rng = np.random.default_rng(seed)
    all_pairs = count * (count - 1) // 2
    if all_pairs <= max_pairs:
        first, second = np.triu_indices(count, k=1)
    else:
        first = rng.integers(0, count, size=max_pairs)
        second = (first + rng.integers(1, count, size=max_pairs)) % count
    settings = ms_ssim_settings(images.shape[2], images.shape[3])
    values = []
    tensor = torch.from_numpy(np.ascontiguousarray(images)).float()
    with torch.inference_mode():
        for start in range(0, len(first), batch_size):
            a = tensor[first[start : start + batch_size]]
            b = tensor[second[start : start + batch_size]]
            values.append(
                multiscale_structural_similarity_index_measure(
                    a, b, data_range=1.0, reduction="none", normalize="relu", **settings
                )
            )
    return float(torch.cat(values).mean())
