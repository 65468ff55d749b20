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
