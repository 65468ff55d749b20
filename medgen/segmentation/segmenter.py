"""The segmenter: a MONAI 2-D U-Net trained with MONAI's Dice + cross-entropy loss for a fixed number of steps.

Fixed steps (not epochs) and a fixed seed: the same pairs and recipe give the same weights, and every training
set (real, real+synthetic, ...) gets the same number of updates. Images and masks are resized to
`recipe.image_size` (area for images, area-then-threshold for masks) so that a CPU trains one in about a
minute; predictions are scaled back to the images' own size before they are thresholded, so Dice is always
measured against the masks as given. The same random shift moves an image and its mask (reflect padding on
both); contrast jitter touches the image only; no flips (a mirrored chest X-ray is another anatomy).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from medgen.segmentation.pairs import Pairs


@dataclass(frozen=True)
class SegmenterRecipe:
    """How the segmenter is built and trained; all of it is part of a cached model's key."""

    channels: tuple[int, ...] = (16, 32, 64, 128)  # U-Net widths, one resolution level each
    residual_units: int = 1
    steps: int = 1200  # measured (benchmarks/bench_segmenter.py): lesions need it (BUSI Dice 0.41 at 300, 0.68 at 1200)
    batch_size: int = 16
    learning_rate: float = 3e-3
    weight_decay: float = 1e-4
    image_size: int | None = 64  # side the images and masks are resized to; None keeps their size
    max_shift: int = 4  # pixels at image_size
    contrast_jitter: float = 0.1
    # predicted connected components smaller than this fraction of the image are dropped (specks: on an image
    # whose reference mask is empty, one speck turns Dice from 1 into 0)
    min_object_fraction: float = 0.0
    version: int = 1

    def describe(self) -> dict:
        return {
            **asdict(self),
            "model": f"MONAI UNet (2-D), widths {list(self.channels)}, stride 2 between levels, "
            f"{self.residual_units} residual unit(s) per level, one sigmoid output per mask class",
            "loss": "MONAI DiceCELoss (sigmoid, Dice over the batch)",
            "optimizer": "AdamW with a one-cycle learning-rate schedule",
            "sampling": "uniform over the training pairs, with replacement, fixed number of steps",
            "augmentation": f"the same random shift up to {self.max_shift} px of image and mask (reflect padding), "
            f"image contrast x U(1 +/- {self.contrast_jitter})",
            "input": "pairs as given" if self.image_size is None else f"images (area) and masks (area, >= 0.5) resized to {self.image_size} px",
            "post-processing": f"predicted components under {self.min_object_fraction:g} of the image area dropped"
            if self.min_object_fraction else "none",
        }


STANDARD = SegmenterRecipe()
QUICK = SegmenterRecipe(channels=(8, 16), steps=40, batch_size=8, image_size=32)


@dataclass
class Segmenter:
    """A trained network with the recipe it was trained with (predictions prepare images the same way)."""

    network: nn.Module
    recipe: SegmenterRecipe
    in_channels: int
    num_classes: int


@contextlib.contextmanager
def _one_thread_on_cpu(device: str) -> Iterator[None]:
    # A step of a network this small is a few milliseconds of work: on a busy CPU, thread hand-offs cost more
    # than they save, and one thread also keeps the result independent of the machine's core count.
    if device != "cpu":
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def build_network(recipe: SegmenterRecipe, in_channels: int, num_classes: int) -> nn.Module:
    from monai.networks.nets import UNet

    if len(recipe.channels) < 2:
        raise ValueError(f"the segmenter needs at least two U-Net levels, got channels {recipe.channels}")
    return UNet(
        spatial_dims=2,
        in_channels=in_channels,
        out_channels=num_classes,
        channels=tuple(recipe.channels),
        strides=(2,) * (len(recipe.channels) - 1),
        num_res_units=recipe.residual_units,
    )


def _working_size(recipe: SegmenterRecipe, height: int, width: int) -> tuple[int, int]:
    size = (recipe.image_size, recipe.image_size) if recipe.image_size is not None else (height, width)
    multiple = 2 ** (len(recipe.channels) - 1)
    if size[0] % multiple or size[1] % multiple:
        raise ValueError(
            f"the segmenter works at {size[0]}x{size[1]} px, which a U-Net of {len(recipe.channels)} levels cannot "
            f"halve {len(recipe.channels) - 1} times; use an image_size divisible by {multiple}"
        )
    return size


def _resize(tensor: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(tensor.shape[-2:]) == tuple(size):
        return tensor
    mode = "area" if tensor.shape[-2] >= size[0] and tensor.shape[-1] >= size[1] else "bilinear"
    return nn.functional.interpolate(tensor, size=size, mode=mode, **({"align_corners": False} if mode == "bilinear" else {}))


def _prepare_images(images: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
    """Images in [0, 1] -> network input in [-1, 1] at the working size."""
    return _resize(torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32)), size) * 2 - 1


def _augment(
    images: torch.Tensor, masks: torch.Tensor, recipe: SegmenterRecipe, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    if recipe.max_shift:
        shift, height, width = recipe.max_shift, images.shape[-2], images.shape[-1]
        padded_images = nn.functional.pad(images, (shift,) * 4, mode="reflect")
        padded_masks = nn.functional.pad(masks, (shift,) * 4, mode="reflect")
        offsets = torch.randint(0, 2 * shift + 1, (len(images), 2), generator=generator).tolist()
        images = torch.stack([padded_images[i, :, y : y + height, x : x + width] for i, (y, x) in enumerate(offsets)])
        masks = torch.stack([padded_masks[i, :, y : y + height, x : x + width] for i, (y, x) in enumerate(offsets)])
    if recipe.contrast_jitter:
        images = images * (1 + (torch.rand(len(images), 1, 1, 1, generator=generator) * 2 - 1) * recipe.contrast_jitter)
    return images, masks


def train_segmenter(
    pairs: Pairs, recipe: SegmenterRecipe = STANDARD, seed: int = 0, device: str = "cpu", progress: bool = False,
    desc: str = "segmenter",
) -> Segmenter:
    """Trains a fresh segmenter on `pairs`; the same pairs, recipe and seed give the same weights."""
    from monai.losses import DiceCELoss
    from tqdm.auto import tqdm

    if len(pairs) == 0:
        raise ValueError("the segmenter needs at least one image + mask pair to train on, got none")
    size = _working_size(recipe, *pairs.images.shape[2:])
    with _one_thread_on_cpu(device):
        torch.manual_seed(seed)
        generator = torch.Generator().manual_seed(seed)  # batches and augmentation drawn on the CPU: same on every device
        inputs = _prepare_images(pairs.images, size)
        targets = (_resize(torch.from_numpy(pairs.masks.astype(np.float32)), size) >= 0.5).float()
        network = build_network(recipe, inputs.shape[1], pairs.num_classes).to(device)
        optimizer = torch.optim.AdamW(network.parameters(), lr=recipe.learning_rate, weight_decay=recipe.weight_decay)
        schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=recipe.learning_rate, total_steps=recipe.steps)
        loss_fn = DiceCELoss(sigmoid=True, batch=True)
        batch = min(recipe.batch_size, len(inputs))
        network.train()
        for _ in tqdm(range(recipe.steps), desc=desc, disable=not progress, unit="step"):
            index = torch.randint(0, len(inputs), (batch,), generator=generator)
            images, masks = _augment(inputs[index], targets[index], recipe, generator)
            loss = loss_fn(network(images.to(device)), masks.to(device))
            if not torch.isfinite(loss):
                raise FloatingPointError(f"the segmenter's loss became {loss.item()} while training {desc}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
    return Segmenter(network.eval(), recipe, int(inputs.shape[1]), pairs.num_classes)


def predict_masks(segmenter: Segmenter, images: np.ndarray, device: str = "cpu", batch_size: int = 64) -> np.ndarray:
    """Binary masks `(N, K, H, W)` uint8 for images `(N, C, H, W)` in [0, 1], at the images' own size."""
    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 4 or images.shape[1] != segmenter.in_channels:
        raise ValueError(f"the segmenter takes images (N, {segmenter.in_channels}, H, W), got shape {images.shape}")
    height, width = images.shape[2:]
    size = _working_size(segmenter.recipe, height, width)
    network = segmenter.network.to(device).eval()
    outputs = []
    with torch.inference_mode(), _one_thread_on_cpu(device):
        for start in range(0, len(images), batch_size):
            logits = network(_prepare_images(images[start : start + batch_size], size).to(device)).float().cpu()
            outputs.append((_resize(logits, (height, width)) > 0).to(torch.uint8))
    if not outputs:
        return np.zeros((0, segmenter.num_classes, height, width), dtype=np.uint8)
    return remove_small_objects(torch.cat(outputs).numpy(), segmenter.recipe.min_object_fraction)


def remove_small_objects(masks: np.ndarray, min_fraction: float) -> np.ndarray:
    """Binary masks `(N, K, H, W)` without the connected components (8-connected) smaller than `min_fraction` of
    the image area."""
    from skimage.measure import label

    if not min_fraction:
        return masks
    masks = masks.copy()
    min_pixels = min_fraction * masks.shape[2] * masks.shape[3]
    for image in masks:
        for channel in image:
            components = label(channel, connectivity=2)
            small = np.bincount(components.ravel()) < min_pixels
            small[0] = False
            channel[small[components]] = 0
    return masks


def _cache_path(cache_dir: Path, pairs: Pairs, recipe: SegmenterRecipe, seed: int) -> Path:
    key = json.dumps({"data": pairs.fingerprint(), "seed": seed, **asdict(recipe)}, sort_keys=True)
    return cache_dir / "segmenters" / f"{hashlib.sha256(key.encode()).hexdigest()[:16]}.safetensors"


def trained_segmenter(
    pairs: Pairs,
    recipe: SegmenterRecipe = STANDARD,
    seed: int = 0,
    cache_dir: str | Path | None = None,
    device: str = "cpu",
    progress: bool = False,
    desc: str = "segmenter: real training pairs",
) -> tuple[Segmenter, bool]:
    """`train_segmenter`, or the safetensors weights cached for these pairs, recipe and seed; and whether it was cached."""
    from safetensors.torch import load_file

    path = _cache_path(Path(cache_dir), pairs, recipe, seed) if cache_dir is not None else None
    if path is not None and path.is_file():
        network = build_network(recipe, pairs.images.shape[1], pairs.num_classes)
        network.load_state_dict(load_file(str(path)))
        return Segmenter(network.eval(), recipe, int(pairs.images.shape[1]), pairs.num_classes), True
    segmenter = train_segmenter(pairs, recipe, seed, device, progress, desc)
    if path is not None:
        from medgen.files import atomic_write

        path.parent.mkdir(parents=True, exist_ok=True)
        state = {name: tensor.detach().cpu().contiguous() for name, tensor in segmenter.network.state_dict().items()}
        with atomic_write(path, "wb") as file:
            file.write(_safetensors_bytes(state, {"recipe": json.dumps(asdict(recipe)), "seed": str(seed)}))
    return segmenter, False


def _safetensors_bytes(state: dict[str, torch.Tensor], metadata: dict[str, str]) -> bytes:
    from safetensors.torch import save

    return save(state, metadata=metadata)
