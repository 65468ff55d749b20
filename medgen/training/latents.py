"""Latents of a training set, encoded once: latent diffusion then costs what the latent size costs.

Encoding every batch through the autoencoder at every step would make a 128 px latent model pay the
encoder's 128 px cost forever. Instead the posterior of each training image (mean and standard deviation
of the autoencoder's diagonal Gaussian) is computed once, stored as safetensors under a key made of the
data's cache key and the autoencoder's weights, and reused by every later run (and by every process of a
multi-process run). Each step still draws a fresh latent `mean + std * noise`, as encoding would.

With `data.hflip` the mirrored images are encoded too (a file of their own): the latent of a mirrored image is
not the mirrored latent of the image (the autoencoder's kernels are not symmetric), so a row drawn mirrored
takes its mirror image's posterior (`DiffusionTask.augment`).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import torch

LATENT_MEAN = "latent_mean"
LATENT_STD = "latent_std"
LATENT_MEAN_MIRRORED = "latent_mean_mirrored"
LATENT_STD_MIRRORED = "latent_std_mirrored"


def autoencoder_digest(vae_folder: str | Path) -> str:
    """SHA-256 over the autoencoder's config and safetensors weights: changes whenever its latents could."""
    folder = Path(vae_folder)
    digest = hashlib.sha256()
    for path in sorted([folder / "config.json", *folder.glob("*.safetensors")]):
        digest.update(path.name.encode())
        with open(path, "rb") as stream:
            for chunk in iter(lambda: stream.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def latent_cache_path(
    data_fingerprint: str, vae_folder: str | Path, cache_dir: str | Path | None = None, mirrored: bool = False
) -> Path:
    if cache_dir is None:
        from datasets import config as datasets_config

        cache_dir = datasets_config.HF_DATASETS_CACHE
    key = hashlib.sha256(f"{data_fingerprint}\0{autoencoder_digest(vae_folder)}".encode()).hexdigest()[:32]
    return Path(cache_dir) / "medgen-latents" / f"{key}{'-mirrored' if mirrored else ''}.safetensors"


@torch.no_grad()
def encode_posteriors(
    vae, dataset: Any, batch_size: int = 64, device: str | torch.device = "cpu", mirrored: bool = False
) -> dict[str, torch.Tensor]:
    """`{latent_mean, latent_std}` of every image of `dataset` (rows with `pixel_values` in [-1, 1]), float32, CPU;
    of each image mirrored left-right where `mirrored`."""
    from tqdm.auto import tqdm

    vae = vae.to(device)
    means, stds = [], []
    for start in tqdm(range(0, len(dataset), batch_size), desc="encoding latents"):
        pixels = torch.as_tensor(dataset[start : start + batch_size]["pixel_values"])
        if mirrored:
            pixels = pixels.flip(-1)
        posterior = vae.encode(pixels.to(device, vae.dtype)).latent_dist
        means.append(posterior.mean.float().cpu())
        stds.append(posterior.std.float().cpu())
    return {LATENT_MEAN: torch.cat(means), LATENT_STD: torch.cat(stds)}


def cached_posteriors(
    vae, vae_folder: str | Path, data: Any, accelerator, batch_size: int = 64, mirrored: bool = False
) -> dict[str, torch.Tensor]:
    """The posteriors of `data` (a `MedicalImageDataset`; of its mirrored images where `mirrored`), from the cache
    when present; the main process encodes and writes them (atomically) while the others wait, then every process
    reads the same file."""
    from safetensors.torch import load_file, save

    from medgen.files import atomic_write

    path = latent_cache_path(data.fingerprint, vae_folder, data.config.cache_dir, mirrored)
    images = f"{len(data.dataset)} {'mirrored ' if mirrored else ''}images"
    with accelerator.main_process_first():
        if not path.is_file():
            posteriors = encode_posteriors(vae, data.dataset, batch_size, accelerator.device, mirrored)
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_write(path, "wb") as stream:
                stream.write(save({name: tensor.contiguous() for name, tensor in posteriors.items()}))
            accelerator.print(f"Latents of {images} cached in {path}")
        else:
            accelerator.print(f"Latents of {images} read from the cache {path}")
        posteriors = load_file(path)
    if len(posteriors[LATENT_MEAN]) != len(data.dataset):
        raise ValueError(f"The latent cache {path} holds {len(posteriors[LATENT_MEAN])} images, the data {len(data.dataset)}: delete it.")
    return posteriors


def training_posteriors(vae, vae_folder: str | Path, data: Any, accelerator, hflip: bool) -> dict[str, torch.Tensor]:
    """What a latent training set reads: each image's posterior, and with `hflip` its mirror image's too."""
    posteriors = cached_posteriors(vae, vae_folder, data, accelerator)
    if hflip:
        mirrored = cached_posteriors(vae, vae_folder, data, accelerator, mirrored=True)
        posteriors[LATENT_MEAN_MIRRORED] = mirrored[LATENT_MEAN]
        posteriors[LATENT_STD_MIRRORED] = mirrored[LATENT_STD]
    return posteriors


class LatentDataset(torch.utils.data.Dataset):
    """The rows of a training set with their cached posterior (and their mirror image's, with `data.hflip`) in
    place of the pixels."""

    def __init__(self, dataset: Any, posteriors: dict[str, torch.Tensor]):
        columns = [column for column in dataset.column_names if column != "pixel_values"]
        self.conditions = dataset.select_columns(columns) if columns else None
        self.posteriors = posteriors
        self.length = len(dataset)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, Any]:
        row = dict(self.conditions[index]) if self.conditions is not None else {}
        for name, posterior in self.posteriors.items():
            row[name] = posterior[index]
        return row
