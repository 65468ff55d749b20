"""Post-processing of generated images: pure array functions and named presets.

Every function takes one float image in ``[0, 1]`` shaped ``(H, W)``, ``(H, W, 1)`` or
``(H, W, 3)`` and returns a ``float32`` image of the same shape, still in ``[0, 1]``.
The heavy lifting is done by scikit-image; this module only chooses parameters, keeps
shapes and ranges stable, and records exactly what was applied so that the record can
be stored beside the images (``params.json``, DICOM comments).

Presets chain functions: ``apply_preset(images, "thesis")`` runs the edge-preserving
bilateral filter and then the contrast-adaptive sharpening that chest X-ray synthesis
work commonly applies before computing FID. The default preset, ``none``, changes nothing.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "PRESETS",
    "Preset",
    "adaptive_sharpen",
    "apply_preset",
    "bilateral_filter",
    "clahe",
    "edge_enhance",
    "gaussian_smooth",
    "list_presets",
    "register_preset",
    "sharpen",
    "vignette",
    "window_image",
]

# Values this far outside [0, 1] are treated as float rounding and clipped; anything
# further out means the caller passed [-1, 1] or [0, 255] data by mistake.
_RANGE_TOLERANCE = 1e-3


def _check_image(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[-1] not in (1, 3)):
        raise ValueError(f"expected an image shaped (H, W), (H, W, 1) or (H, W, 3); got shape {image.shape}")
    return np.clip(check_unit_range(image), 0.0, 1.0).astype(np.float32, copy=False)


def check_unit_range(image: np.ndarray) -> np.ndarray:
    """Rejects non-float, non-finite, or out-of-[0, 1] images (beyond float rounding) with a clear error."""
    image = np.asarray(image)
    if not np.issubdtype(image.dtype, np.floating):
        raise ValueError(f"expected a float image in [0, 1]; got dtype {image.dtype}")
    if not np.all(np.isfinite(image)):
        raise ValueError("image contains NaN or infinite values")
    low, high = float(image.min()), float(image.max())
    if low < -_RANGE_TOLERANCE or high > 1 + _RANGE_TOLERANCE:
        raise ValueError(f"expected image values in [0, 1]; got range [{low:.4g}, {high:.4g}]")
    return image


def _image_function(func: Callable[..., np.ndarray]) -> Callable[..., np.ndarray]:
    """Validate input, hide the ``(H, W, 1)`` case from scikit-image, restore shape and range."""

    @functools.wraps(func)
    def wrapper(image: np.ndarray, *args: Any, **kwargs: Any) -> np.ndarray:
        image = _check_image(image)
        squeeze = image.ndim == 3 and image.shape[-1] == 1
        work = image[..., 0] if squeeze else image
        result = np.asarray(func(work, *args, **kwargs), dtype=np.float32)
        result = np.clip(result, 0.0, 1.0)
        return result[..., None] if squeeze else result

    return wrapper


def _channel_axis(image: np.ndarray) -> int | None:
    return -1 if image.ndim == 3 else None


@_image_function
def bilateral_filter(image: np.ndarray, sigma_color: float = 0.05, sigma_spatial: float = 1.0) -> np.ndarray:
    """Edge-preserving smoothing: removes diffusion speckle without blurring anatomy edges.

    ``sigma_color`` is in intensity units (image range is 1), ``sigma_spatial`` in pixels.
    """
    from skimage.restoration import denoise_bilateral

    if sigma_color <= 0 or sigma_spatial <= 0:
        raise ValueError(f"sigma_color and sigma_spatial must be > 0; got {sigma_color}, {sigma_spatial}")
    return denoise_bilateral(
        image, sigma_color=sigma_color, sigma_spatial=sigma_spatial, channel_axis=_channel_axis(image)
    )


@_image_function
def sharpen(image: np.ndarray, radius: float = 1.0, amount: float = 1.0) -> np.ndarray:
    """Plain unsharp mask (scikit-image), the same strength everywhere."""
    from skimage.filters import unsharp_mask

    if radius <= 0 or amount < 0:
        raise ValueError(f"radius must be > 0 and amount >= 0; got radius={radius}, amount={amount}")
    return unsharp_mask(image, radius=radius, amount=amount, channel_axis=_channel_axis(image))


def _local_contrast(image: np.ndarray, sigma: float) -> np.ndarray:
    """Local standard deviation (gray level of a luminance proxy for colour images)."""
    from skimage.filters import gaussian

    gray = image.mean(axis=-1) if image.ndim == 3 else image
    mean = gaussian(gray, sigma=sigma)
    variance = np.maximum(gaussian(gray * gray, sigma=sigma) - mean * mean, 0.0)
    return np.sqrt(variance)


@_image_function
def adaptive_sharpen(
    image: np.ndarray, radius: float = 1.0, amount: float = 1.0, contrast_sigma: float = 2.0
) -> np.ndarray:
    """Unsharp mask whose strength follows local contrast.

    Structured regions (ribs, vessels, lung borders) get up to ``amount``; flat regions,
    where an unsharp mask would only amplify residual noise, get little. The weight is
    ``c / (c + median(c))`` with ``c`` the local standard deviation, so it is 0.5 at the
    image's typical contrast and adapts to each image instead of a fixed threshold.
    """
    from skimage.filters import unsharp_mask

    if radius <= 0 or amount < 0 or contrast_sigma <= 0:
        raise ValueError(
            f"radius and contrast_sigma must be > 0 and amount >= 0; got radius={radius}, "
            f"amount={amount}, contrast_sigma={contrast_sigma}"
        )
    contrast = _local_contrast(image, contrast_sigma)
    weight = contrast / (contrast + float(np.median(contrast)) + 1e-6)
    if image.ndim == 3:
        weight = weight[..., None]
    sharpened = unsharp_mask(image, radius=radius, amount=amount, channel_axis=_channel_axis(image))
    return image + weight * (sharpened - image)


@_image_function
def clahe(image: np.ndarray, clip_limit: float = 0.01, kernel_size: int | None = None) -> np.ndarray:
    """Contrast-limited adaptive histogram equalisation (scikit-image ``equalize_adapthist``)."""
    from skimage.exposure import equalize_adapthist

    if not 0 < clip_limit <= 1:
        raise ValueError(f"clip_limit must be in (0, 1]; got {clip_limit}")
    return equalize_adapthist(image, kernel_size=kernel_size, clip_limit=clip_limit)


@_image_function
def window_image(image: np.ndarray, center: float, width: float) -> np.ndarray:
    """Linear window on [0, 1] intensities: ``center +- width / 2`` maps to ``[0, 1]``, the rest clips."""
    if width <= 0:
        raise ValueError(f"window width must be > 0; got {width}")
    low = center - width / 2.0
    return (image - low) / width


@_image_function
def edge_enhance(image: np.ndarray, amount: float = 0.5) -> np.ndarray:
    """Laplacian edge enhancement: ``image - amount * laplace(image)``."""
    from skimage.filters import laplace

    if amount < 0:
        raise ValueError(f"amount must be >= 0; got {amount}")
    if image.ndim == 3:
        edges = np.stack([laplace(image[..., c], ksize=3) for c in range(image.shape[-1])], axis=-1)
    else:
        edges = laplace(image, ksize=3)
    return image - amount * edges


@_image_function
def gaussian_smooth(image: np.ndarray, sigma: float = 0.7) -> np.ndarray:
    """Light Gaussian blur (scikit-image ``gaussian``)."""
    from skimage.filters import gaussian

    if sigma <= 0:
        raise ValueError(f"sigma must be > 0; got {sigma}")
    return gaussian(image, sigma=sigma, channel_axis=_channel_axis(image))


@_image_function
def vignette(image: np.ndarray, strength: float = 0.3, power: float = 2.0) -> np.ndarray:
    """Darken towards the corners: multiply by ``1 - strength * r**power`` (r = 1 at the corners)."""
    if not 0 <= strength <= 1 or power <= 0:
        raise ValueError(f"strength must be in [0, 1] and power > 0; got strength={strength}, power={power}")
    height, width = image.shape[:2]
    y = np.linspace(-1.0, 1.0, height)[:, None]
    x = np.linspace(-1.0, 1.0, width)[None, :]
    radius = np.sqrt(x * x + y * y) / np.sqrt(2.0)
    mask = 1.0 - strength * radius**power
    if image.ndim == 3:
        mask = mask[..., None]
    return image * mask


FUNCTIONS: dict[str, Callable[..., np.ndarray]] = {
    func.__name__: func
    for func in (
        bilateral_filter,
        sharpen,
        adaptive_sharpen,
        clahe,
        window_image,
        edge_enhance,
        gaussian_smooth,
        vignette,
    )
}


@dataclass(frozen=True)
class Preset:
    """A named chain of post-processing steps, each ``(function name, keyword arguments)``."""

    name: str
    description: str
    steps: tuple[tuple[str, dict[str, Any]], ...] = field(default_factory=tuple)

    def record(self) -> dict[str, Any]:
        """What this preset applies, in a JSON-friendly form for output metadata."""
        import skimage

        return {
            "preset": self.name,
            "description": self.description,
            "steps": [{"function": name, "params": dict(params)} for name, params in self.steps],
            "library": f"scikit-image {skimage.__version__}" if self.steps else None,
        }


PRESETS: dict[str, Preset] = {}


def register_preset(name: str, steps: Sequence[tuple[str, dict[str, Any]]], description: str = "") -> Preset:
    """Add a preset to the registry (used by the CLI and the app); step names must be known functions."""
    for function_name, params in steps:
        if function_name not in FUNCTIONS:
            raise ValueError(f"unknown post-processing function {function_name!r}; known: {sorted(FUNCTIONS)}")
        if not isinstance(params, dict):
            raise ValueError(f"parameters of step {function_name!r} must be a dict; got {type(params).__name__}")
    preset = Preset(name=name, description=description, steps=tuple((f, dict(p)) for f, p in steps))
    PRESETS[name] = preset
    return preset


register_preset("none", [], "no post-processing (default)")
register_preset(
    "thesis",
    [
        ("bilateral_filter", {"sigma_color": 0.05, "sigma_spatial": 1.0}),
        ("adaptive_sharpen", {"radius": 1.0, "amount": 1.0, "contrast_sigma": 2.0}),
    ],
    "edge-preserving bilateral filter, then contrast-adaptive unsharp mask (applied before FID in chest X-ray synthesis work)",
)
register_preset("clahe", [("clahe", {"clip_limit": 0.01})], "contrast-limited adaptive histogram equalisation")
register_preset("sharpen", [("sharpen", {"radius": 1.0, "amount": 1.0})], "unsharp mask")
register_preset(
    "soft",
    [("bilateral_filter", {"sigma_color": 0.1, "sigma_spatial": 1.5}), ("gaussian_smooth", {"sigma": 0.5})],
    "strong edge-preserving smoothing and a light blur",
)
register_preset("edges", [("edge_enhance", {"amount": 0.5})], "Laplacian edge enhancement")
register_preset("vignette", [("vignette", {"strength": 0.3, "power": 2.0})], "darkened corners, as on film")


def list_presets() -> list[str]:
    return sorted(PRESETS)


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise ValueError(f"unknown post-processing preset {name!r}; valid presets: {', '.join(list_presets())}")
    return PRESETS[name]


def apply_preset(
    images: np.ndarray | Sequence[np.ndarray], name: str = "none"
) -> tuple[np.ndarray | list[np.ndarray], dict[str, Any]]:
    """Apply preset ``name`` to one image, a batch ``(B, H, W[, C])`` or a list of images.

    Returns the processed images in the same container as given (a batch array stays an
    array of the same shape) and a record of exactly what was applied.
    """
    preset = get_preset(name)

    def process(image: np.ndarray) -> np.ndarray:
        image = _check_image(image)
        for function_name, params in preset.steps:
            image = FUNCTIONS[function_name](image, **params)
        return image

    if isinstance(images, np.ndarray):
        # (H, W) and (H, W, 1|3) are single images; (B, H, W) and (B, H, W, C) are batches.
        # A (B, H, W) batch of images 1 or 3 pixels wide would be misread; no generated image is.
        if images.ndim == 2 or (images.ndim == 3 and images.shape[-1] in (1, 3)):
            return process(images), preset.record()
        if images.ndim in (3, 4):
            if len(images) == 0:
                raise ValueError("expected at least one image; got an empty batch")
            return np.stack([process(image) for image in images]), preset.record()
        raise ValueError(f"expected an image or a batch of images; got array shape {images.shape}")
    return [process(np.asarray(image)) for image in images], preset.record()
