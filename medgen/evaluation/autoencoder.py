"""The autoencoder ceiling of a latent pipeline: real images passed through its own VAE.

A latent diffusion model generates latents that the pipeline's VAE decodes, so its images can be no closer to
the real data than the VAE's reconstructions of real images are. Scoring those reconstructions with the same
metrics says how much of a model's FID the autoencoder alone accounts for.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def autoencode(vae: Any, images: np.ndarray, batch_size: int = 16, progress: bool = False) -> np.ndarray:
    """`(N, C, H, W)` images in [0, 1] encoded (posterior mode) and decoded by `vae` on its device; returns
    the reconstructions as float32 `(N, C, H, W)` in [0, 1], with the images' channel count."""
    import torch
    from tqdm.auto import tqdm

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    in_channels = int(vae.config.in_channels)
    outputs = []
    with torch.inference_mode():
        for start in tqdm(range(0, len(images), batch_size), desc="autoencoder ceiling: reference images",
                          disable=not progress, unit="batch"):
            batch = torch.from_numpy(np.ascontiguousarray(images[start : start + batch_size])).float()
            if batch.shape[1] != in_channels:
                batch = batch.mean(dim=1, keepdim=True).expand(-1, in_channels, -1, -1)
            pixels = (batch * 2 - 1).to(vae.device, vae.dtype)
            decoded = vae.decode(vae.encode(pixels).latent_dist.mode()).sample.float().clamp(-1, 1).cpu()
            decoded = (decoded + 1) / 2
            if decoded.shape[1] != images.shape[1]:
                decoded = decoded.mean(dim=1, keepdim=True).expand(-1, images.shape[1], -1, -1)
            outputs.append(decoded.numpy())
    return np.concatenate(outputs).astype(np.float32)
