"""Pure array transforms: reader output -> model input `(C, H, W)` float32 in [-1, 1].

Order used by `preprocess`: channels -> intensity scaling to [0, 1] (at full resolution,
so percentiles see every pixel) -> aspect-preserving resize (crop or pad) -> optional
CLAHE -> [-1, 1]. Each step is a separate function so that it can be tested and reused.

The cache stores the final [0, 1] image quantized to integers (`quantize`: uint8, or
uint16 for sources with more than 8 bits per sample), and `ModelRangeTransform` maps
stored pixels to [-1, 1] when batches are read, so the cache is independent of it.
Augmentation is separate (`random_augment`, on torch batches) for the same reason; the diffusion
training loop applies `data.hflip` in `DiffusionTask.augment`, where a latent row takes its mirror image's
cached latent.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch


def to_channels(image: np.ndarray, channels: int = 1) -> np.ndarray:
    """`(H, W)` or `(H, W, 3)` -> `(C, H, W)`; RGB becomes luminance for C=1, gray is repeated for C=3."""
    if image.ndim == 3 and image.shape[-1] == 4:
        image = image[..., :3]
    if image.ndim == 3 and image.shape[-1] == 3:
        if channels == 1:
            from skimage.color import rgb2gray

            return rgb2gray(image.astype(np.float32))[None].astype(np.float32)
        return np.moveaxis(image, -1, 0).astype(np.float32)
    if image.ndim != 2:
        raise ValueError(f"expected an image (H, W) or (H, W, 3), got shape {image.shape}")
    image = image.astype(np.float32)[None]
    return np.repeat(image, channels, axis=0) if channels == 3 else image


def scale_intensity(
    image: np.ndarray,
    mode: str = "minmax",
    *,
    percentiles: tuple[float, float] = (0.5, 99.5),
    value_range: tuple[float, float] | None = None,
) -> np.ndarray:
    """Map arbitrary intensities (8/16-bit, Hounsfield units, windowed) to [0, 1].

    Args:
        image: any shape.
        mode: `"minmax"` (image min -> 0, max -> 1), `"percentile"` (the given
            percentiles -> 0 and 1, clipped: robust to burned-in text and hot pixels), or
            `"range"` (the nominal `value_range`, e.g. (0, 255) for 8-bit: keeps the
            brightness differences between images; falls back to min-max without one).
        value_range: nominal (low, high) for `"range"`.

    A constant image maps to zeros instead of dividing by zero.
    """
    image = np.asarray(image, dtype=np.float32)
    if mode == "minmax" or (mode == "range" and value_range is None):
        low, high = float(image.min()), float(image.max())
    elif mode == "percentile":
        low, high = (float(v) for v in np.percentile(image, percentiles))
    elif mode == "range":
        low, high = float(value_range[0]), float(value_range[1])
    else:
        raise ValueError(f"unknown intensity scaling mode {mode!r}; expected 'minmax', 'percentile' or 'range'")
    if high <= low:
        return np.zeros_like(image)
    return np.clip((image - low) / (high - low), 0.0, 1.0)


def _resize_geometry(height: int, width: int, size: int, mode: str) -> tuple[int, int, int, int]:
    """(new_h, new_w, top, left) of the aspect-preserving resize and the crop (top/left >= 0) or pad offsets."""
    if mode not in ("crop", "pad"):
        raise ValueError(f"unknown resize mode {mode!r}; expected 'crop' or 'pad'")
    side = min(height, width) if mode == "crop" else max(height, width)
    scale = size / side
    new_h = size if side == height else max(1, round(height * scale))
    new_w = size if side == width else max(1, round(width * scale))
    if mode == "crop":
        return new_h, new_w, (new_h - size) // 2, (new_w - size) // 2
    return new_h, new_w, (size - new_h) // 2, (size - new_w) // 2


def resize_image(image: np.ndarray, size: int, mode: str = "crop") -> np.ndarray:
    """Square `size` x `size` output from `(C, H, W)` without distorting anatomy.

    `"crop"`: scale the short side to `size`, then center crop (edges lost).
    `"pad"`: scale the long side to `size`, then pad with 0 (black after scaling to
    [0, 1]) centered (whole field of view kept).
    Resampling is Pillow's area-aware bilinear filter, which antialiases when shrinking.
    """
    from PIL import Image

    if image.ndim != 3:
        raise ValueError(f"resize_image expects (C, H, W), got shape {image.shape}")
    channels, height, width = image.shape
    new_h, new_w, top, left = _resize_geometry(height, width, size, mode)
    resized = np.stack(
        [
            np.asarray(
                Image.fromarray(np.ascontiguousarray(plane, dtype=np.float32)).resize(
                    (new_w, new_h), Image.Resampling.BILINEAR
                )
            )
            for plane in image
        ]
    )
    if mode == "crop":
        return np.ascontiguousarray(resized[:, top : top + size, left : left + size], dtype=np.float32)
    output = np.zeros((channels, size, size), dtype=np.float32)
    output[:, top : top + new_h, left : left + new_w] = resized
    return output


def resize_mask(mask: np.ndarray, size: int, mode: str = "crop") -> np.ndarray:
    """A class-index mask `(H, W)` through exactly `resize_image`'s geometry (same scale, crop or pad offsets),
    resampled nearest-neighbour so that it keeps class indices; padding is background (0). Returns uint8."""
    from PIL import Image

    if mask.ndim != 2:
        raise ValueError(f"resize_mask expects (H, W) class indices, got shape {mask.shape}")
    height, width = mask.shape
    new_h, new_w, top, left = _resize_geometry(height, width, size, mode)
    resized = np.asarray(
        Image.fromarray(np.ascontiguousarray(mask, dtype=np.uint8)).resize((new_w, new_h), Image.Resampling.NEAREST)
    )
    if mode == "crop":
        return np.ascontiguousarray(resized[top : top + size, left : left + size])
    output = np.zeros((size, size), dtype=np.uint8)
    output[top : top + new_h, left : left + new_w] = resized
    return output


def mask_to_indices(mask: np.ndarray, num_classes: int) -> np.ndarray:
    """Mask file values -> class indices uint8 `(H, W)` in 0..`num_classes`.

    Values 0..K are class indices; an 8-bit file may store class c as `c * 255 // K` (0/255 for one class); with
    one class any value >= 128 (or > 0 in a 0/1 file) is foreground. Anything else is a `ValueError`."""
    mask = np.asarray(mask)
    if mask.ndim == 3:  # an RGB(A) mask: its first channel (masks are drawn in one colour or grey)
        mask = mask[..., 0]
    if mask.ndim != 2:
        raise ValueError(f"a mask is a 2-D image, got shape {mask.shape}")
    values = np.unique(mask)
    if values.size and (values.min() < 0 or not np.equal(np.mod(values, 1), 0).all()):
        raise ValueError(f"mask values must be non-negative integers, got {values[:5].tolist()}...")
    top = int(values.max()) if values.size else 0
    if num_classes == 1:
        return (mask >= 128).astype(np.uint8) if top > 1 else (mask > 0).astype(np.uint8)
    if top <= num_classes:
        return mask.astype(np.uint8)
    scaled = {c * 255 // num_classes: c for c in range(num_classes + 1)}
    if set(values.astype(int).tolist()) <= set(scaled):
        lookup = np.zeros(256, dtype=np.uint8)
        for value, index in scaled.items():
            lookup[value] = index
        return lookup[mask.astype(np.uint8)]
    raise ValueError(
        f"mask values {values[:8].astype(int).tolist()} are neither class indices 0..{num_classes} nor the 8-bit "
        f"values {sorted(scaled)} of {num_classes} classes"
    )


def preprocess_mask(mask: np.ndarray, *, resolution: int, num_classes: int, resize_mode: str = "crop") -> np.ndarray:
    """Mask file values -> class indices uint8 `(1, resolution, resolution)`, the geometry of `preprocess_unit`."""
    return resize_mask(mask_to_indices(mask, num_classes), resolution, resize_mode)[None]


def apply_clahe(image: np.ndarray, clip_limit: float = 0.01) -> np.ndarray:
    """Contrast-limited adaptive histogram equalisation of a `(C, H, W)` image in [0, 1]."""
    from skimage.exposure import equalize_adapthist

    image = np.clip(image, 0.0, 1.0)
    return np.stack([equalize_adapthist(plane, clip_limit=clip_limit) for plane in image]).astype(np.float32)


def to_model_range(image: np.ndarray) -> np.ndarray:
    """[0, 1] -> [-1, 1], the range diffusion models are trained in."""
    return (np.asarray(image, dtype=np.float32) * 2.0 - 1.0).astype(np.float32)


def preprocess_unit(
    image: np.ndarray,
    *,
    resolution: int,
    channels: int = 1,
    resize_mode: str = "crop",
    normalization: str = "minmax",
    clahe: bool = False,
    value_range: tuple[float, float] | None = None,
) -> np.ndarray:
    """Reader output -> `(channels, resolution, resolution)` float32 in [0, 1]: the image the cache stores."""
    planes = to_channels(image, channels)
    planes = scale_intensity(planes, normalization, value_range=value_range)
    planes = resize_image(planes, resolution, resize_mode)
    planes = np.clip(planes, 0.0, 1.0)
    if clahe:
        planes = apply_clahe(planes)
    return planes


def preprocess(image: np.ndarray, **options) -> np.ndarray:
    """Reader output -> `(channels, resolution, resolution)` float32 in [-1, 1] (`preprocess_unit` options)."""
    return to_model_range(preprocess_unit(image, **options))


def quantize(image: np.ndarray, bits: int = 8) -> np.ndarray:
    """A [0, 1] image -> uint8 (`bits=8`) or uint16 (`bits=16`), rounded: what the cache stores.

    Quantizing after the whole intensity pipeline (scaling, resize, CLAHE) keeps the cache
    exact to one grey level; uint16 keeps the precision of 16-bit sources (DICOM, 16-bit PNG).
    """
    if bits not in (8, 16):
        raise ValueError(f"quantize: bits must be 8 or 16, got {bits!r}")
    dtype = np.uint8 if bits == 8 else np.uint16
    return np.rint(np.clip(image, 0.0, 1.0) * float(np.iinfo(dtype).max)).astype(dtype)


def pixels_from_bytes(values: list[bytes], shape: tuple[int, ...]) -> np.ndarray:
    """Stored pixel bytes -> float32 `(N, *shape)` in [-1, 1].

    Each value holds one image in C order, 1 byte per sample (uint8) or 2 (uint16,
    little-endian); its length tells which, so one set may mix 8- and 16-bit sources.
    """
    count = int(np.prod(shape))
    output = np.empty((len(values), *shape), dtype=np.float32)
    for index, value in enumerate(values):
        if len(value) == count:
            array, top = np.frombuffer(value, dtype=np.uint8), 255.0
        elif len(value) == 2 * count:
            array, top = np.frombuffer(value, dtype="<u2"), 65535.0
        else:
            raise ValueError(f"stored image of {len(value)} bytes does not fit shape {shape}: rebuild the cache")
        output[index] = array.reshape(shape) * np.float32(2.0 / top) - np.float32(1.0)
    return output


class ModelRangeTransform:
    """`datasets` read transform: stored pixels -> float32 tensors in [-1, 1], labels -> float32 tensors.

    Applied with `Dataset.with_transform`, so batches are converted when read (also in
    DataLoader worker processes: the object pickles) and the cache holds only integers.
    Other columns (`text`, `source`, ...) pass through unchanged.
    """

    def __init__(self, shape: tuple[int, int, int]) -> None:
        self.shape = tuple(int(side) for side in shape)

    def __call__(self, batch: dict) -> dict:
        import torch

        output = dict(batch)
        if "pixel_values" in batch:
            output["pixel_values"] = torch.from_numpy(pixels_from_bytes(batch["pixel_values"], self.shape))
        if "mask" in batch:  # class indices (1, H, W), stored as uint8 bytes
            mask_shape = (1, *self.shape[1:])
            output["mask"] = torch.stack(
                [torch.frombuffer(bytearray(value), dtype=torch.uint8).view(mask_shape) for value in batch["mask"]]
            ).long()
        if "labels" in batch:
            labels = np.asarray(batch["labels"], dtype=np.float32)
            labels = labels.reshape(len(labels), -1) if len(labels) else labels.reshape(0, 0)
            output["labels"] = torch.from_numpy(labels)
        return output

    # equal transforms let `datasets.concatenate_datasets` keep the format of equal parts
    def __eq__(self, other: object) -> bool:
        return isinstance(other, ModelRangeTransform) and other.shape == self.shape

    def __hash__(self) -> int:
        return hash(self.shape)

    def __repr__(self) -> str:
        return f"ModelRangeTransform(shape={self.shape})"


def random_augment(
    images: torch.Tensor,
    generator: torch.Generator | None = None,
    *,
    hflip: bool = False,
    max_rotation: float = 0.0,
    max_translation: float = 0.0,
    masks: torch.Tensor | None = None,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Random flips / small rotations / translations of a batch `(B, C, H, W)` in [-1, 1].

    Horizontal flips are off by default: on a chest X-ray a flip puts the heart on the
    right (situs inversus / dextrocardia), teaching the model anatomy that is rare and
    would be a finding. Enable them only for data without left-right semantics.

    Args:
        images: batch in [-1, 1].
        generator: torch generator for reproducible draws (on the images' device).
        hflip: flip each image left-right with probability 0.5.
        max_rotation: maximum absolute rotation in degrees (e.g. 5).
        max_translation: maximum shift as a fraction of the side (e.g. 0.05).
            Pixels moved in from outside are black (-1).
        masks: class-index masks `(B, 1, H, W)` of the images: they get the same flip, rotation and shift
            (nearest-neighbour, background coming in from outside) and `(images, masks)` is returned.
    """
    import torch
    import torch.nn.functional as F

    if images.ndim != 4:
        raise ValueError(f"random_augment expects (B, C, H, W), got shape {tuple(images.shape)}")
    if max_rotation < 0 or not 0 <= max_translation < 1:
        raise ValueError(
            f"max_rotation must be >= 0 and max_translation in [0, 1), got {max_rotation}, {max_translation}"
        )
    batch = images.shape[0]
    device = images.device

    def uniform(low: float, high: float) -> torch.Tensor:
        values = torch.rand(batch, generator=generator, device=generator.device if generator else device)
        return (low + (high - low) * values).to(device)

    output = images
    if masks is not None and (masks.ndim != 4 or masks.shape[0] != batch or masks.shape[-2:] != images.shape[-2:]):
        raise ValueError(f"masks {tuple(masks.shape)} must be (B, 1, H, W) beside images {tuple(images.shape)}")
    if hflip:
        flip = uniform(0.0, 1.0) < 0.5
        output = torch.where(flip[:, None, None, None], output.flip(-1), output)
        if masks is not None:
            masks = torch.where(flip[:, None, None, None], masks.flip(-1), masks)
    if max_rotation > 0 or max_translation > 0:
        angle = torch.deg2rad(uniform(-max_rotation, max_rotation))
        shift_x = uniform(-max_translation, max_translation) * 2.0
        shift_y = uniform(-max_translation, max_translation) * 2.0
        cos, sin = torch.cos(angle), torch.sin(angle)
        theta = torch.stack(
            [torch.stack([cos, -sin, shift_x], dim=1), torch.stack([sin, cos, shift_y], dim=1)], dim=1
        ).to(output.dtype)
        grid = F.affine_grid(theta, list(output.shape), align_corners=False)
        # Sample (x + 1) with zero padding so that outside pixels come in black (-1).
        output = F.grid_sample(output + 1.0, grid, mode="bilinear", padding_mode="zeros", align_corners=False) - 1.0
        if masks is not None:
            moved = F.grid_sample(masks.float(), grid.to(torch.float32), mode="nearest", padding_mode="zeros", align_corners=False)
            masks = moved.round().to(masks.dtype)
    return output if masks is None else (output, masks)

