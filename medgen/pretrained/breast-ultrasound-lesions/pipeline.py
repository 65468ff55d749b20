# Copyright 2026 The medgen authors. Licensed under the Apache License, Version 2.0.
#
# This file is self-contained on purpose: it is saved as the `pipeline.py` of every
# mask-conditioned medgen pipeline folder, so that stock diffusers can load it with
# `DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)` without medgen
# installed. It may only import torch, numpy, PIL, diffusers and the standard library.
# Structure follows diffusers' DiT and ControlNet pipelines (Apache-2.0): the mask is prepared once
# (`prepare_masks`: read, check, resize, batch), validated in `check_inputs`, and passed to the UNet beside
# the latents. The conditioning itself (mask channels concatenated to the UNet input) is the one of
# segmentation-guided diffusion (Konz et al., MICCAI 2024, mazurowski-lab, MIT licence), here in latent space.
"""Mask-conditioned latent diffusion: a segmentation mask (and optionally a label) in, a matching image out.

With its optional mask generator (a small pixel-space model over masks) it also makes new image + mask pairs
from labels alone.
"""

from __future__ import annotations

import inspect
import logging
import math
import os
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence, Union

import numpy as np
import PIL.Image
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, DiffusionPipeline, UNet2DConditionModel
from diffusers.schedulers import KarrasDiffusionSchedulers
from diffusers.utils import BaseOutput, replace_example_docstring
from diffusers.utils.torch_utils import randn_tensor

logger = logging.getLogger(__name__)

ImageLabels = Union[str, Sequence[str], Mapping[str, float]]
# One image's mask: class indices (0 = background) as a tensor / array `(H, W)` or `(1, H, W)`, a one-hot
# `(K, H, W)` for K > 1 classes, a PIL image, or the path of an image file (PNG). Binary masks may be 0/255.
MaskInput = Union[torch.Tensor, np.ndarray, PIL.Image.Image, str, os.PathLike]

EXAMPLE_DOC_STRING = """
    Examples:
        ```py
        >>> import torch
        >>> from diffusers import DiffusionPipeline

        >>> pipe = DiffusionPipeline.from_pretrained("path/to/pipeline", trust_remote_code=True)
        >>> pipe.labels, pipe.mask_classes
        (['normal', 'tuberculosis'], ['lung'])
        >>> out = pipe(masks=["lungs.png"], labels=["tuberculosis"], generator=torch.manual_seed(0))
        >>> out.images[0].save("tuberculosis.png")
        >>> pairs = pipe(labels=["normal", "tuberculosis"], generator=torch.manual_seed(1))  # masks sampled too
        >>> pairs.masks[0].save("normal_mask.png")
        ```
"""


def _stored_scale(name: str, value: float | None) -> float | None:
    """A guidance scale stored in model_index.json (`name`), checked: None, or a finite number >= 0."""
    if value is None:
        return None
    value = float(value)
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"`{name}` must be a finite number >= 0, got {value}.")
    return value


@dataclass
class MaskConditionedPipelineOutput(BaseOutput):
    """
    Args:
        images (`list[PIL.Image.Image]`, `np.ndarray` or `torch.Tensor`):
            The generated images, as for [`ImagePipelineOutput`].
        masks (`list[PIL.Image.Image]`, `np.ndarray`, `torch.Tensor` or `None`):
            The mask each image was conditioned on, at the image size: class indices `(B, H, W)` (`uint8` array
            for `"np"`, `long` tensor for `"pt"`), or mode-`L` PIL images whose pixel is
            `class * 255 // num_mask_classes` (0/255 for one class). `None` when sampled without masks.
    """

    images: Any
    masks: Any = None


class MaskConditionedPipeline(DiffusionPipeline):
    r"""
    Generates images that follow a segmentation mask, optionally conditioned on a label, with classifier-free
    guidance on both.

    The mask enters the UNet concatenated to its input at latent resolution: one channel per mask class (the
    fraction of each latent cell covered by the class, so boundaries keep sub-cell precision) plus a "mask
    present" channel. Training dropped the mask (all channels zero) and, independently, the label (the null
    label condition), so one model samples with or without either. The label enters like in
    `LabelConditionedPipeline`: label values plus a null flag, projected into the timestep embedding.

    Concatenation rather than a ControlNet beside a frozen label model: it adds `K + 1` input channels to one
    UNet instead of a trainable copy of its encoder, so it trains at the cost of the label model alone (a
    ControlNet roughly doubles the cost of every step), which is what a CPU budget allows.

    Args:
        unet ([`UNet2DConditionModel`]):
            Denoiser with `in_channels = latent channels + K + 1`, `out_channels = latent channels`,
            `class_embed_type="projection"` and `projection_class_embeddings_input_dim = len(id2label) + 1`.
        scheduler ([`SchedulerMixin`]):
            Any diffusers scheduler, e.g. [`DPMSolverMultistepScheduler`] (the default saved by medgen).
        vae ([`AutoencoderKL`], *optional*):
            When given, the UNet works in the VAE's latent space and images are decoded at the end.
        mask_unet ([`UNet2DConditionModel`], *optional*):
            The mask generator: a pixel-space label-conditioned denoiser over masks (`K` channels, one per class,
            in [-1, 1]) at a small size (e.g. 64 px); `sample_masks` upsamples and thresholds its output.
        mask_scheduler ([`SchedulerMixin`], *optional*):
            The mask generator's scheduler.
        id2label (`dict`, *optional*):
            Label index (as a string) to label name.
        multi_label (`bool`, defaults to `False`):
            Whether one image may carry several labels at once.
        id2mask_class (`dict`, *optional*):
            Mask class index (as a string, from "1"; 0 is the background) to class name, e.g. `{"1": "lung"}`.
        default_mask_guidance_scale (`float`, *optional*):
            The mask guidance scale of a call that gives none (1.0 when `None`): the model's own choice, stored in
            model_index.json, for a model whose images follow their masks better with mask guidance.
        default_mask_generator_guidance_scale (`float`, *optional*):
            The mask generator's label guidance of a call that gives none (1.0 when `None`), stored like
            `default_mask_guidance_scale`, for a generator whose masks tell the labels apart better with guidance.
    """

    model_cpu_offload_seq = "mask_unet->unet->vae"
    _optional_components = ["vae", "mask_unet", "mask_scheduler"]
    _callback_tensor_inputs = ["latents"]

    def __init__(
        self,
        unet: UNet2DConditionModel,
        scheduler: KarrasDiffusionSchedulers,
        vae: AutoencoderKL | None = None,
        mask_unet: UNet2DConditionModel | None = None,
        mask_scheduler: KarrasDiffusionSchedulers | None = None,
        id2label: dict[str, str] | None = None,
        multi_label: bool = False,
        id2mask_class: dict[str, str] | None = None,
        default_mask_guidance_scale: float | None = None,
        default_mask_generator_guidance_scale: float | None = None,
    ):
        super().__init__()
        default_mask_guidance_scale = _stored_scale("default_mask_guidance_scale", default_mask_guidance_scale)
        default_mask_generator_guidance_scale = _stored_scale(
            "default_mask_generator_guidance_scale", default_mask_generator_guidance_scale
        )
        num_labels = unet.config.projection_class_embeddings_input_dim - 1
        if id2label is None:
            id2label = {str(i): f"label_{i}" for i in range(num_labels)}
        id2label = {str(key): str(value) for key, value in id2label.items()}
        if len(id2label) != num_labels:
            raise ValueError(
                f"The UNet expects {num_labels} labels (+1 null flag) but id2label names {len(id2label)}: {id2label}."
            )
        latent_channels = vae.config.latent_channels if vae is not None else unet.config.out_channels
        num_mask_classes = unet.config.in_channels - latent_channels - 1
        if num_mask_classes < 1:
            raise ValueError(
                f"The UNet takes {unet.config.in_channels} input channels; a mask-conditioned UNet takes the "
                f"{latent_channels} latent channels + one per mask class + 1 'mask present' channel."
            )
        if id2mask_class is None:
            id2mask_class = {str(i): f"class_{i}" for i in range(1, num_mask_classes + 1)}
        id2mask_class = {str(key): str(value) for key, value in id2mask_class.items()}
        if sorted(id2mask_class) != sorted(str(i) for i in range(1, num_mask_classes + 1)):
            raise ValueError(
                f"The UNet takes {num_mask_classes} mask class channel(s); id2mask_class must name classes "
                f"1..{num_mask_classes}, got {id2mask_class}."
            )
        if (mask_unet is None) != (mask_scheduler is None):
            raise ValueError("Give both mask_unet and mask_scheduler (the mask generator), or neither.")
        if mask_unet is not None:
            if mask_unet.config.in_channels != num_mask_classes or mask_unet.config.out_channels != num_mask_classes:
                raise ValueError(
                    f"The mask generator's UNet has {mask_unet.config.in_channels} -> {mask_unet.config.out_channels} "
                    f"channels; this pipeline's masks have {num_mask_classes} class(es)."
                )
            if mask_unet.config.projection_class_embeddings_input_dim != num_labels + 1:
                raise ValueError(
                    f"The mask generator is conditioned on {mask_unet.config.projection_class_embeddings_input_dim - 1} "
                    f"labels, the image model on {num_labels}."
                )
        self.register_modules(unet=unet, scheduler=scheduler, vae=vae, mask_unet=mask_unet, mask_scheduler=mask_scheduler)
        self.register_to_config(
            id2label=id2label, multi_label=bool(multi_label), id2mask_class=id2mask_class,
            default_mask_guidance_scale=default_mask_guidance_scale,
            default_mask_generator_guidance_scale=default_mask_generator_guidance_scale,
        )
        self._interrupt = False

    # ----------------------------------------------------------------------------------------------- properties
    @property
    def labels(self) -> list[str]:
        """Label names in the order of the condition vector."""
        return [self.config.id2label[str(i)] for i in range(len(self.config.id2label))]

    @property
    def mask_classes(self) -> list[str]:
        """Mask class names for class indices 1, 2, ... (0 is the background)."""
        return [self.config.id2mask_class[str(i)] for i in range(1, len(self.config.id2mask_class) + 1)]

    @property
    def default_mask_guidance_scale(self) -> float:
        """The mask guidance scale of a call that gives none: the model's stored `default_mask_guidance_scale`, else 1.0."""
        value = self.config.get("default_mask_guidance_scale")
        return 1.0 if value is None else float(value)

    @property
    def default_mask_generator_guidance_scale(self) -> float:
        """The mask generator's label guidance of a call that gives none: the model's stored
        `default_mask_generator_guidance_scale`, else 1.0."""
        value = self.config.get("default_mask_generator_guidance_scale")
        return 1.0 if value is None else float(value)

    @property
    def num_mask_classes(self) -> int:
        return len(self.config.id2mask_class)

    @property
    def has_mask_generator(self) -> bool:
        return getattr(self, "mask_unet", None) is not None

    @property
    def image_size(self) -> tuple[int, int]:
        """(height, width) of the generated images, which masks are resized to."""
        sample_size = self.unet.config.sample_size
        height, width = (sample_size, sample_size) if isinstance(sample_size, int) else sample_size
        factor = 2 ** (len(self.vae.config.block_out_channels) - 1) if self.vae is not None else 1
        return height * factor, width * factor

    @property
    def interrupt(self) -> bool:
        return self._interrupt

    # ------------------------------------------------------------------------------------------------- labels
    @staticmethod
    def condition_from_vectors(label_vectors: torch.Tensor, drop_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Appends the null flag to `(B, num_labels)` label values; rows where `drop_mask` is True become the null condition."""
        flags = torch.zeros_like(label_vectors[:, :1])
        if drop_mask is not None:
            keep = (~drop_mask).to(label_vectors.dtype).unsqueeze(1)
            label_vectors = label_vectors * keep
            flags = 1.0 - keep
        return torch.cat([label_vectors, flags], dim=1)

    def null_condition(self, batch_size: int) -> torch.Tensor:
        """The null label condition (classifier-free guidance) for `batch_size` images."""
        return self.condition_from_vectors(
            torch.zeros(batch_size, len(self.config.id2label)), drop_mask=torch.ones(batch_size, dtype=torch.bool)
        )

    def _label_values(self, image_labels: ImageLabels) -> torch.Tensor:
        lookup = {name.lower(): index for index, name in enumerate(self.labels)}
        if isinstance(image_labels, str):
            image_labels = {image_labels: 1.0}
        elif not isinstance(image_labels, Mapping):
            image_labels = {name: 1.0 for name in image_labels}
        values = torch.zeros(len(lookup))
        for name, value in image_labels.items():
            if not isinstance(name, str) or name.lower() not in lookup:
                raise ValueError(f"Unknown label {name!r}. Valid labels: {', '.join(self.labels)}.")
            value = float(value)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"Label {name!r} has value {value}; label values must lie in [0, 1].")
            values[lookup[name.lower()]] = value
        if not self.config.multi_label and int((values > 0).sum()) > 1:
            raise ValueError(
                f"This pipeline was trained on single-label data: give one label per image, got {dict(image_labels)}."
            )
        return values

    def encode_labels(self, labels: ImageLabels | list[ImageLabels] | None, batch_size: int | None = None) -> torch.Tensor:
        """Condition vectors `(batch_size, num_labels + 1)`; one entry of `labels` is repeated for every image,
        `None` is the null condition. `batch_size` defaults to the number of entries."""
        if labels is None:
            return self.null_condition(batch_size or 1)
        if isinstance(labels, (str, Mapping)):
            labels = [labels] * (batch_size or 1)
        elif not isinstance(labels, (list, tuple)) or len(labels) == 0:
            raise ValueError(f"`labels` must be a name, a dict, or a non-empty list of them, got {labels!r}.")
        batch_size = len(labels) if batch_size is None else batch_size
        if len(labels) != batch_size:
            raise ValueError(f"Got {len(labels)} labels for {batch_size} images: give one label per mask (or one for all).")
        vectors = torch.stack([self._label_values(entry) for entry in labels])
        return self.condition_from_vectors(vectors)

    # -------------------------------------------------------------------------------------------------- masks
    @staticmethod
    def mask_condition(
        masks: torch.Tensor, num_classes: int, size: tuple[int, int], drop_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """
        The UNet's extra input channels for class-index masks `(B, H, W)` or `(B, 1, H, W)`: per class the fraction
        of each cell of the `size` grid that it covers (area averaging, so a boundary inside a latent cell stays
        visible), then a "mask present" channel of ones; rows where `drop_mask` is True are all zeros (no mask).
        Training and sampling both build the condition here. Returns `(B, num_classes + 1, *size)` float32.
        """
        if masks.ndim == 4:
            masks = masks[:, 0]
        masks = masks.long()
        classes = torch.arange(1, num_classes + 1, device=masks.device).view(1, -1, 1, 1)
        one_hot = (masks.unsqueeze(1) == classes).float()
        if tuple(one_hot.shape[-2:]) != tuple(size):
            one_hot = F.adaptive_avg_pool2d(one_hot, size)
        present = torch.ones_like(one_hot[:, :1])
        condition = torch.cat([one_hot, present], dim=1)
        if drop_mask is not None:
            condition = condition * (~drop_mask.to(condition.device)).float().view(-1, 1, 1, 1)
        return condition

    def _read_mask(self, mask: MaskInput, index: int) -> np.ndarray:
        """One mask input -> a 2-D or 3-D array, as given (no value checks yet)."""
        if isinstance(mask, (str, os.PathLike)):
            if not os.path.isfile(mask):
                raise FileNotFoundError(f"Mask {index} ({mask}) not found.")
            try:
                with PIL.Image.open(mask) as image:
                    image.load()
                    mask = image.copy()
            except (OSError, ValueError) as error:
                raise ValueError(f"Mask {index} ({mask}) is not a readable image: {error}") from error
        if isinstance(mask, PIL.Image.Image):
            if mask.mode == "1":
                return np.array(mask, dtype=np.uint8)
            if mask.mode not in ("L", "P", "I", "I;16"):
                mask = mask.convert("L")
            return np.array(mask)
        if isinstance(mask, torch.Tensor):
            return mask.detach().cpu().numpy()
        if isinstance(mask, np.ndarray):
            return mask
        raise ValueError(
            f"Mask {index} is a {type(mask).__name__}; give a torch.Tensor, numpy array, PIL image or file path."
        )

    def _mask_indices(self, array: np.ndarray, index: int) -> np.ndarray:
        """A mask array -> class indices `(H, W)` int64 in 0..K, or a `ValueError` saying what is wrong."""
        num_classes = self.num_mask_classes
        if array.ndim == 3 and array.shape[0] == 1:
            array = array[0]
        elif array.ndim == 3 and array.shape[-1] == 1:
            array = array[..., 0]
        if array.ndim == 3:
            if array.shape[0] != num_classes or num_classes == 1:
                raise ValueError(
                    f"Mask {index} has {array.shape[0]} channels (shape {array.shape}); this pipeline has "
                    f"{num_classes} mask class(es) ({', '.join(self.mask_classes)}): give class indices (H, W)"
                    + (f" or a one-hot ({num_classes}, H, W)." if num_classes > 1 else ".")
                )
            if not np.isin(array, (0, 1)).all() or (array.sum(axis=0) > 1).any():
                raise ValueError(f"Mask {index} is given as {num_classes} channels but is not one-hot (0/1, one class per pixel).")
            return (array * np.arange(1, num_classes + 1).reshape(-1, 1, 1)).sum(axis=0).astype(np.int64)
        if array.ndim != 2:
            raise ValueError(f"Mask {index} has shape {array.shape}; expected (H, W) class indices.")
        if array.dtype == bool:
            array = array.astype(np.uint8)
        if not np.isfinite(array).all():
            raise ValueError(f"Mask {index} holds NaN or infinite values.")
        if np.issubdtype(array.dtype, np.floating) and not np.equal(np.mod(array, 1), 0).all():
            if num_classes == 1 and array.min() >= 0 and array.max() <= 1:
                return (array >= 0.5).astype(np.int64)  # a soft binary mask in [0, 1]
            raise ValueError(
                f"Mask {index} holds fractional values (range {array.min():g}..{array.max():g}); give class indices "
                f"0..{num_classes}" + (" (or a binary mask in [0, 1])." if num_classes == 1 else ".")
            )
        values = np.unique(array)
        if values.min() < 0:
            raise ValueError(f"Mask {index} holds negative values ({values.min():g}); class indices are 0..{num_classes}.")
        if values.max() <= num_classes:
            return array.astype(np.int64)
        # 8-bit PNG convention: class c stored as c * 255 // K (0/255 for one class)
        scaled = {c * 255 // num_classes: c for c in range(num_classes + 1)}
        if set(values.tolist()) <= set(scaled):
            return np.vectorize(scaled.get, otypes=[np.int64])(array) if num_classes > 1 else (array > 0).astype(np.int64)
        raise ValueError(
            f"Mask {index} holds values up to {values.max():g} ({len(values)} distinct); this pipeline has "
            f"{num_classes} mask class(es) ({', '.join(self.mask_classes)}): give class indices 0..{num_classes} "
            f"or, in an 8-bit image, the values {sorted(scaled)}."
        )

    def prepare_masks(self, masks: Sequence[MaskInput] | MaskInput) -> torch.Tensor:
        """Reads, checks and resizes `masks` (one per image) to class indices `(B, H, W)` long at the image size.

        A mask of another size is resized nearest-neighbour (with a warning that names it)."""
        if not isinstance(masks, (list, tuple)):
            masks = [masks]
        if len(masks) == 0:
            raise ValueError("`masks` is an empty list: give one mask per image, or None to sample without masks.")
        height, width = self.image_size
        prepared = []
        for index, mask in enumerate(masks):
            indices = torch.from_numpy(self._mask_indices(self._read_mask(mask, index), index))
            if tuple(indices.shape) != (height, width):
                logger.warning(
                    "Mask %d is %dx%d (height x width); resized nearest-neighbour to the image size %dx%d%s.",
                    index, indices.shape[0], indices.shape[1], height, width,
                    " (its aspect ratio changes)" if indices.shape[0] * width != indices.shape[1] * height else "",
                )
                indices = F.interpolate(indices[None, None].float(), size=(height, width), mode="nearest-exact")[0, 0].long()
            prepared.append(indices)
        return torch.stack(prepared)

    @staticmethod
    def check_step_budget(steps: int, scheduler, name: str) -> None:
        """A ValueError naming `name` where `steps` exceeds the timesteps `scheduler`'s model was trained with."""
        train_steps = scheduler.config.get("num_train_timesteps")
        if train_steps is not None and steps > train_steps:
            raise ValueError(
                f"{name} ({steps}) must be at most the scheduler's `num_train_timesteps` ({train_steps}): "
                "a sampler cannot take more steps than the model was trained with."
            )

    def check_inputs(self, masks, labels, num_images_per_prompt, num_inference_steps, guidance_scale,
                     mask_guidance_scale, mask_generator_guidance_scale, output_type, callback_tensor_inputs):
        if not isinstance(num_images_per_prompt, int) or num_images_per_prompt < 1:
            raise ValueError(f"`num_images_per_prompt` must be a positive integer, got {num_images_per_prompt!r}.")
        if not isinstance(num_inference_steps, int) or num_inference_steps < 1:
            raise ValueError(f"`num_inference_steps` must be a positive integer, got {num_inference_steps!r}.")
        self.check_step_budget(num_inference_steps, self.scheduler, "`num_inference_steps`")
        scales = (guidance_scale, mask_guidance_scale, mask_generator_guidance_scale)
        if not all(math.isfinite(scale) and scale >= 0 for scale in scales):
            raise ValueError(
                "guidance scales must be finite numbers >= 0, got guidance_scale, mask_guidance_scale, "
                f"mask_generator_guidance_scale = {scales}."
            )
        if output_type not in ("pil", "np", "pt", "latent"):
            raise ValueError(f"`output_type` must be 'pil', 'np', 'pt' or 'latent', got {output_type!r}.")
        unknown = [name for name in callback_tensor_inputs if name not in self._callback_tensor_inputs]
        if unknown:
            raise ValueError(f"`callback_on_step_end_tensor_inputs` may only name {self._callback_tensor_inputs}, got {unknown}.")
        if labels is not None and not isinstance(labels, (str, Mapping, list, tuple)):
            raise ValueError(f"`labels` must be a name, a dict, or a list of them, got {labels!r}.")
        if isinstance(labels, (list, tuple)) and len(labels) == 0:
            raise ValueError("`labels` is an empty list.")
        if masks is not None and isinstance(masks, (list, tuple)) and isinstance(labels, (list, tuple)):
            if len(masks) != len(labels):
                raise ValueError(
                    f"Got {len(masks)} masks and {len(labels)} labels: give one label per mask (or a single label for all)."
                )

    # ------------------------------------------------------------------------------------------ mask generator
    @torch.no_grad()
    def sample_masks(
        self,
        labels: ImageLabels | list[ImageLabels] | None = None,
        num_images_per_prompt: int = 1,
        num_inference_steps: int = 15,
        guidance_scale: float | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
        batch_size: int | None = None,
    ) -> torch.Tensor:
        """
        New masks from the mask generator: `(B, H, W)` long class indices at the image size.

        The generator denoises `K` channels in [-1, 1] at its own size (e.g. 64 px); they are upsampled bilinearly
        to the image size and thresholded at 0 (a pixel takes the class with the largest value above 0, else the
        background). `labels` as for `__call__` (one entry per mask); `batch_size` masks without a label when
        `labels` is None. `guidance_scale`: the generator's label guidance (default: the model's
        `default_mask_generator_guidance_scale`, 1.0 when it stores none).
        """
        if not self.has_mask_generator:
            raise ValueError(
                "This pipeline has no mask generator (mask_unet): give `masks`, or attach a trained mask generator."
            )
        if labels is None:
            conditions = self.null_condition(batch_size or 1)
        else:
            entries = [labels] if isinstance(labels, (str, Mapping)) else list(labels)
            conditions = self.encode_labels(entries, len(entries))
        conditions = conditions.repeat_interleave(num_images_per_prompt, dim=0)
        if guidance_scale is None:
            guidance_scale = self.default_mask_generator_guidance_scale
        if not (math.isfinite(guidance_scale) and guidance_scale >= 0):
            raise ValueError(f"the mask generator's guidance scale must be a finite number >= 0, got {guidance_scale}.")
        return self._sample_masks(conditions, num_inference_steps, guidance_scale if labels is not None else 1.0, generator)

    def _sample_masks(self, conditions: torch.Tensor, num_inference_steps: int, guidance_scale: float, generator) -> torch.Tensor:
        """One mask per row of the label `conditions` (see `sample_masks`)."""
        self.check_step_budget(num_inference_steps, self.mask_scheduler, "the mask generator's step count")
        count = conditions.shape[0]
        device, dtype = self._execution_device, self.mask_unet.dtype
        guided = guidance_scale > 1.0
        model_conditions = torch.cat([self.null_condition(count), conditions]) if guided else conditions
        model_conditions = model_conditions.to(device=device, dtype=dtype)
        size = self.mask_unet.config.sample_size
        size = (size, size) if isinstance(size, int) else tuple(size)
        sample = randn_tensor((count, self.num_mask_classes, *size), generator=generator, device=device, dtype=dtype)
        sample = sample * self.mask_scheduler.init_noise_sigma
        self.mask_scheduler.set_timesteps(num_inference_steps, device=device)
        accepts_generator = "generator" in inspect.signature(self.mask_scheduler.step).parameters
        extra_step_kwargs = {"generator": generator} if accepts_generator else {}
        for t in self.mask_scheduler.timesteps:
            model_input = torch.cat([sample] * 2) if guided else sample
            model_input = self.mask_scheduler.scale_model_input(model_input, t)
            output = self.mask_unet(model_input, t, encoder_hidden_states=None, class_labels=model_conditions).sample
            if guided:
                uncond, cond = output.chunk(2)
                output = uncond + guidance_scale * (cond - uncond)
            sample = self.mask_scheduler.step(output, t, sample, **extra_step_kwargs).prev_sample
        sample = F.interpolate(sample.float(), size=self.image_size, mode="bilinear", align_corners=False)
        best_value, best_class = sample.max(dim=1)
        return torch.where(best_value > 0, best_class + 1, torch.zeros_like(best_class)).long().cpu()

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Maps the final sample (pixels in [-1, 1], or VAE latents) to images in [0, 1], `(B, C, H, W)`."""
        if self.vae is not None:
            latents = latents.to(self.vae.dtype) / self.vae.config.scaling_factor
            latents = self.vae.decode(latents).sample
        return (latents.float() / 2 + 0.5).clamp(0, 1)

    def masks_to_output(self, masks: torch.Tensor, output_type: str) -> Any:
        """Class-index masks `(B, H, W)` in the form `output_type` asks for (see `MaskConditionedPipelineOutput`)."""
        if output_type == "pt":
            return masks
        array = masks.cpu().numpy().astype(np.uint8)
        if output_type == "pil":
            return [PIL.Image.fromarray((mask.astype(np.int32) * 255 // self.num_mask_classes).astype(np.uint8), mode="L") for mask in array]
        return array

    # ---------------------------------------------------------------------------------------------- sampling
    @torch.no_grad()
    @replace_example_docstring(EXAMPLE_DOC_STRING)
    def __call__(
        self,
        masks: Sequence[MaskInput] | MaskInput | None = None,
        labels: ImageLabels | list[ImageLabels] | None = None,
        num_images_per_prompt: int = 1,
        num_inference_steps: int = 15,
        guidance_scale: float = 2.0,
        mask_guidance_scale: float | None = None,
        generate_masks: bool = True,
        mask_num_inference_steps: int | None = None,
        mask_generator_guidance_scale: float | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        callback_on_step_end: Callable[[Any, int, torch.Tensor, dict], dict] | None = None,
        callback_on_step_end_tensor_inputs: list[str] = ["latents"],
    ) -> MaskConditionedPipelineOutput | tuple:
        r"""
        Generates one image per mask (and label).

        Args:
            masks (`torch.Tensor`, `np.ndarray`, `PIL.Image.Image`, path, or a list of these, *optional*):
                One mask per image: class indices `(H, W)` (0 = background, 1..K the classes of
                `pipe.mask_classes`), a one-hot `(K, H, W)`, a PIL image or a PNG path (binary masks may be 0/255).
                A mask of another size than the images is resized nearest-neighbour (with a warning). `None`:
                masks are drawn by the mask generator when the pipeline has one and `generate_masks` is True
                (image + mask pairs), otherwise images are sampled without a mask.
            labels (`str`, `list[str]`, `dict[str, float]`, or a list of these, *optional*):
                One entry per mask (or one for all): a label name, several (multi-label models) or name -> value.
                Without masks, one image per entry. `None`: no label (the null label condition).
            num_images_per_prompt (`int`, defaults to 1):
                Images generated for each mask / label.
            num_inference_steps (`int`, defaults to 15):
                Denoising steps of the image model.
            guidance_scale (`float`, defaults to 2.0):
                Label classifier-free guidance; 1.0 disables it (as does `labels=None`).
            mask_guidance_scale (`float`, *optional*):
                Mask guidance: > 1 extrapolates away from the image sampled without the mask (one more UNet
                pass per step); 1.0 follows the mask through the conditioning alone. Defaults to the model's
                `default_mask_guidance_scale` (1.0 when it stores none).
            generate_masks (`bool`, defaults to `True`):
                With `masks=None`, whether to sample masks with the mask generator.
            mask_num_inference_steps (`int`, *optional*):
                Denoising steps of the mask generator (default: `num_inference_steps`).
            mask_generator_guidance_scale (`float`, *optional*):
                Label guidance of the mask generator. Defaults to the model's `default_mask_generator_guidance_scale`
                (1.0 when it stores none).
            generator (`torch.Generator` or `list[torch.Generator]`, *optional*):
                For reproducible sampling (masks are drawn first, then the image noise).
            latents (`torch.Tensor`, *optional*):
                Initial noise `(batch, C, h, w)`; drawn from `generator` when omitted.
            output_type (`str`, defaults to `"pil"`):
                `"pil"`, `"np"` (`(B, H, W, C)` in [0, 1]), `"pt"` (`(B, C, H, W)`) or `"latent"`.
            return_dict (`bool`, defaults to `True`):
                Return a [`MaskConditionedPipelineOutput`] rather than a tuple `(images, masks)`.
            callback_on_step_end (`Callable`, *optional*):
                Called as `callback_on_step_end(pipe, step, timestep, callback_kwargs)` after each step; it may set
                `pipe._interrupt = True` to stop before the next step.
            callback_on_step_end_tensor_inputs (`list[str]`, defaults to `["latents"]`):
                Tensors passed to the callback in `callback_kwargs`.

        Examples:

        Returns:
            [`MaskConditionedPipelineOutput`] or `tuple`: the images and the masks they were conditioned on.
        """
        if mask_guidance_scale is None:
            mask_guidance_scale = self.default_mask_guidance_scale
        if mask_generator_guidance_scale is None:
            mask_generator_guidance_scale = self.default_mask_generator_guidance_scale
        self.check_inputs(
            masks, labels, num_images_per_prompt, num_inference_steps, guidance_scale, mask_guidance_scale,
            mask_generator_guidance_scale, output_type, callback_on_step_end_tensor_inputs,
        )
        self._interrupt = False
        device = self._execution_device
        dtype = self.unet.dtype

        # 1. Labels (one per mask, or per image without masks), then masks: given (read, checked, resized),
        #    drawn by the mask generator for these labels, or none
        if masks is not None:
            mask_indices = self.prepare_masks(masks)
            count = mask_indices.shape[0]
        else:
            mask_indices = None
            count = 1 if labels is None or isinstance(labels, (str, Mapping)) else len(labels)
        label_conditions = self.encode_labels(labels, count).repeat_interleave(num_images_per_prompt, dim=0)
        batch_size = label_conditions.shape[0]
        if mask_indices is not None:
            mask_indices = mask_indices.repeat_interleave(num_images_per_prompt, dim=0)
        elif generate_masks and self.has_mask_generator:
            mask_indices = self._sample_masks(
                label_conditions, mask_num_inference_steps or num_inference_steps,
                mask_generator_guidance_scale if labels is not None else 1.0, generator,
            )

        # 2. Conditions; with guidance one batch holds [no mask + null label, mask + null label, mask + label]
        sample_size = self.unet.config.sample_size
        height, width = (sample_size, sample_size) if isinstance(sample_size, int) else sample_size
        num_classes = self.num_mask_classes
        if mask_indices is None:
            mask_channels = torch.zeros(batch_size, num_classes + 1, height, width)
        else:
            mask_channels = self.mask_condition(mask_indices, num_classes, (height, width))
        no_mask = torch.zeros_like(mask_channels)
        null_labels = self.null_condition(batch_size)
        use_label_guidance = guidance_scale > 1.0 and labels is not None
        use_mask_guidance = mask_guidance_scale > 1.0 and mask_indices is not None
        parts = []  # (mask channels, label condition) per pass
        if use_mask_guidance:
            parts.append((no_mask, null_labels))
        if use_label_guidance:
            parts.append((mask_channels, null_labels))
        parts.append((mask_channels, label_conditions))
        passes = len(parts)
        mask_input = torch.cat([part[0] for part in parts]).to(device=device, dtype=dtype)
        conditions = torch.cat([part[1] for part in parts]).to(device=device, dtype=dtype)

        # 3. Initial noise, shaped after the UNet's config
        latent_channels = self.unet.config.out_channels
        shape = (batch_size, latent_channels, height, width)
        if latents is None:
            latents = randn_tensor(shape, generator=generator, device=device, dtype=dtype)
        elif tuple(latents.shape) != shape:
            raise ValueError(f"`latents` must have shape {shape}, got {tuple(latents.shape)}.")
        latents = latents.to(device=device, dtype=dtype) * self.scheduler.init_noise_sigma

        # 4. Denoising loop
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        accepts_generator = "generator" in inspect.signature(self.scheduler.step).parameters
        extra_step_kwargs = {"generator": generator} if accepts_generator else {}
        for i, t in enumerate(self.progress_bar(self.scheduler.timesteps)):
            if self.interrupt:
                break
            model_input = self.scheduler.scale_model_input(torch.cat([latents] * passes), t)
            # 4a. predict noise (or v) for every condition in one UNet call, the mask concatenated to the input
            model_input = torch.cat([model_input, mask_input], dim=1)
            outputs = self.unet(model_input, t, encoder_hidden_states=None, class_labels=conditions).sample.chunk(passes)
            # 4b. guidance: no mask -> mask (mask_guidance_scale), then mask -> mask + label (guidance_scale)
            if use_mask_guidance and use_label_guidance:
                without_mask, with_mask, with_both = outputs
                model_output = (
                    without_mask + mask_guidance_scale * (with_mask - without_mask) + guidance_scale * (with_both - with_mask)
                )
            elif use_mask_guidance:
                without_mask, with_both = outputs
                model_output = without_mask + mask_guidance_scale * (with_both - without_mask)
            elif use_label_guidance:
                with_mask, with_both = outputs
                model_output = with_mask + guidance_scale * (with_both - with_mask)
            else:
                model_output = outputs[0]

            # 4c. x_t -> x_t-1
            latents = self.scheduler.step(model_output, t, latents, **extra_step_kwargs).prev_sample

            if callback_on_step_end is not None:
                callback_kwargs = {}
                for name in callback_on_step_end_tensor_inputs:
                    callback_kwargs[name] = locals()[name]
                callback_outputs = callback_on_step_end(self, i, t, callback_kwargs) or {}
                latents = callback_outputs.pop("latents", latents)

        # 5. Decode to images
        if output_type == "latent":
            images = latents
        else:
            images = self.decode_latents(latents)
            if output_type != "pt":
                images = images.permute(0, 2, 3, 1).cpu().numpy()
            if output_type == "pil":
                images = self.numpy_to_pil(images)
        output_masks = None
        if mask_indices is not None:
            output_masks = self.masks_to_output(mask_indices, "pt" if output_type == "latent" else output_type)

        self.maybe_free_model_hooks()
        if not return_dict:
            return (images, output_masks)
        return MaskConditionedPipelineOutput(images=images, masks=output_masks)
