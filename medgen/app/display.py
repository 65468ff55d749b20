"""How a generated image is shown in the gallery: 8-bit, and enlarged so that a 32 px image is not a stamp.

Only the gallery gets enlarged copies; the ZIP download keeps every image at its true size.
"""

from __future__ import annotations

import math

import numpy as np

# Gallery images are enlarged by a whole factor until their longer side is at least this many pixels.
DISPLAY_MIN_SIZE = 256


def display_scale(height: int, width: int, min_size: int = DISPLAY_MIN_SIZE) -> int:
    """The whole factor that brings the longer side of a `height` x `width` image to at least `min_size` (>= 1)."""
    return max(1, math.ceil(min_size / max(height, width, 1)))


def display_image(image: np.ndarray, min_size: int = DISPLAY_MIN_SIZE) -> np.ndarray:
    """8-bit `(H, W)` (grayscale) or `(H, W, 3)` image for the gallery, enlarged by a whole factor with
    nearest-neighbour sampling: each pixel becomes a square block, so nothing is smoothed or invented and
    the true-size image is every `factor`-th pixel of the shown one."""
    from medgen.export import quantize

    image = np.asarray(image)
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    image = quantize(image, 8)
    factor = display_scale(image.shape[0], image.shape[1], min_size)
    if factor > 1:
        image = image.repeat(factor, axis=0).repeat(factor, axis=1)
    return image


# Outline colours of mask classes 1, 2, ... (8-bit RGB), distinct on gray images.
MASK_COLOURS = ((255, 64, 64), (64, 200, 255), (255, 200, 0), (120, 255, 120), (255, 100, 255), (255, 150, 60))


def display_pair(image: np.ndarray, mask: np.ndarray, min_size: int = DISPLAY_MIN_SIZE, gap: int = 4) -> np.ndarray:
    """The gallery view of a mask model's image: the image (enlarged as `display_image`) beside the same image
    with the outline of each mask class drawn over it, one colour per class. Returns `(H, W * 2 + gap, 3)` uint8."""
    from skimage.segmentation import find_boundaries

    shown = display_image(image, min_size)
    if shown.ndim == 2:
        shown = np.repeat(shown[..., None], 3, axis=2)
    mask = np.asarray(mask)
    factor = shown.shape[0] // mask.shape[0]
    if factor < 1 or shown.shape[:2] != (mask.shape[0] * factor, mask.shape[1] * factor):
        raise ValueError(f"mask of shape {mask.shape} does not match the image of shape {np.asarray(image).shape}")
    mask = mask.repeat(factor, axis=0).repeat(factor, axis=1)
    outlined = shown.copy()
    for index in range(1, int(mask.max()) + 1):
        edge = find_boundaries(mask == index, mode="thick")  # 2 px: still visible in a shrunk thumbnail
        outlined[edge] = MASK_COLOURS[(index - 1) % len(MASK_COLOURS)]
    spacer = np.full((shown.shape[0], gap, 3), 255, np.uint8)
    return np.concatenate([shown, spacer, outlined], axis=1)
