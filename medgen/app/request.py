"""One click on Generate, checked: every input the UI or the API sends is validated here against the model."""

from __future__ import annotations

import secrets
from collections.abc import Sequence
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medgen.app.models import PipelineInfo

MAX_IMAGES = 16
MAX_STEPS = 250
MAX_GUIDANCE = 20.0
MAX_SEED = 2**32 - 1
RANDOM_SEED = -1
# Display name -> diffusers scheduler class. The first is the default: the model's own saved scheduler (None:
# a fresh copy of it), at the model's own step count unless the user moves the slider. DPM-Solver++ gives good
# samples in 15-30 steps; DDPM wants many more.
SAMPLERS: dict[str, str | None] = {
    "The model's own": None,
    "DPM-Solver++ (fast)": "DPMSolverMultistepScheduler",
    "DDIM": "DDIMScheduler",
    "DDPM": "DDPMScheduler",
}
DEFAULT_SAMPLER = next(iter(SAMPLERS))
EXAMPLE_PROMPTS = (
    "frontal chest x-ray, no acute cardiopulmonary abnormality",
    "right lower lobe pneumonia with consolidation",
    "small left pleural effusion",
    "cardiomegaly with mild pulmonary edema",
)


@dataclass(frozen=True)
class GenerationRequest:
    """One validated click on Generate. `seed` is the resolved first seed; image i uses `seed + i`."""

    condition: str | list[str] | None
    prompt: str | None
    negative_prompt: str | None
    count: int
    num_inference_steps: int
    guidance_scale: float
    seed: int
    sampler: str
    postprocess: str
    model: str = ""
    # Mask models: the mask every image of the run follows, class indices (H, W); None: each image gets a mask
    # sampled by the model's mask generator.
    mask: np.ndarray | None = field(default=None, compare=False, repr=False)

    @property
    def seeds(self) -> list[int]:
        return [(self.seed + index) % (MAX_SEED + 1) for index in range(self.count)]


def _as_int(value: Any, name: str, low: int, high: int) -> int:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a whole number from {low} to {high}; got {value!r}") from None
    if not number.is_integer() or not low <= number <= high:
        raise ValueError(f"{name} must be a whole number from {low} to {high}; got {value!r}")
    return int(number)


def make_request(
    info: PipelineInfo,
    condition: str | Sequence[str] | None = None,
    prompt: str | None = None,
    negative_prompt: str | None = None,
    count: int = 4,
    num_inference_steps: int | None = None,
    guidance_scale: float | None = None,
    seed: int = RANDOM_SEED,
    sampler: str = DEFAULT_SAMPLER,
    postprocess: str = "none",
    model: str = "",
    mask: Any = None,
) -> GenerationRequest:
    """Checks every user input against the pipeline and ranges; raises `ValueError` naming the bad one."""
    from medgen.postprocess import list_presets

    count = _as_int(count, "count", 1, MAX_IMAGES)
    steps = _as_int(info.default_steps if num_inference_steps is None else num_inference_steps, "num_inference_steps", 1, MAX_STEPS)
    guidance = info.default_guidance if guidance_scale is None else guidance_scale
    try:
        guidance = float(guidance)
    except (TypeError, ValueError):
        raise ValueError(f"guidance_scale must be a number from 0 to {MAX_GUIDANCE}; got {guidance_scale!r}") from None
    if not 0.0 <= guidance <= MAX_GUIDANCE:
        raise ValueError(f"guidance_scale must be a number from 0 to {MAX_GUIDANCE}; got {guidance_scale!r}")
    seed = _as_int(RANDOM_SEED if seed is None else seed, "seed", RANDOM_SEED, MAX_SEED)
    if seed == RANDOM_SEED:
        seed = secrets.randbelow(2**31)
    if not isinstance(sampler, str) or sampler not in SAMPLERS:
        raise ValueError(f"Unknown sampler {sampler!r}; choose one of: {', '.join(SAMPLERS)}")
    if not isinstance(postprocess, str) or postprocess not in list_presets():
        raise ValueError(f"Unknown post-processing preset {postprocess!r}; choose one of: {', '.join(list_presets())}")

    resolved_condition: str | list[str] | None = None
    if info.kind == "label" or (info.kind == "mask" and info.labels):
        resolved_condition = _check_condition(info, condition)
    mask_array = read_mask(mask, info) if info.kind == "mask" else None
    prompt_text = negative_text = None
    if info.kind == "text":
        for name, text in (("prompt", prompt), ("negative_prompt", negative_prompt)):
            if text is not None and not isinstance(text, str):
                raise ValueError(f"{name} must be text; got {text!r}")
        prompt_text = (prompt or "").strip()
        negative_text = (negative_prompt or "").strip() or None
    return GenerationRequest(
        condition=resolved_condition,
        prompt=prompt_text,
        negative_prompt=negative_text,
        count=count,
        num_inference_steps=steps,
        guidance_scale=guidance,
        seed=seed,
        sampler=sampler,
        postprocess=postprocess,
        model=model,
        mask=mask_array,
    )


def read_mask(mask: Any, info: PipelineInfo) -> np.ndarray | None:
    """
    The mask a mask model's images should follow, as class indices `(H, W)` (0 = background, 1..K the model's
    `mask_classes`), from a PNG path (what the upload box and the API send), a `{"path": ...}` file payload, a
    PIL image or an array. A one-class model also takes a 0/255 binary mask. `None` (or an empty value) asks
    for a sampled mask, which needs the model's mask generator. A `ValueError` names the mask and what is wrong.
    """
    from PIL import Image, UnidentifiedImageError

    if isinstance(mask, dict):
        mask = mask.get("path")
    if mask is None or (isinstance(mask, str) and not mask.strip()):
        if not info.mask_generator:
            raise ValueError(
                "This model has no mask generator: upload a mask (a PNG of class indices, 0 = background, "
                f"1..{len(info.mask_classes)} = {', '.join(info.mask_classes)})"
                + (" or pick an example mask" if info.example_masks else "")
            )
        return None
    name = "the mask"
    if isinstance(mask, (str, os.PathLike)):
        name = f"mask {Path(mask).name}"
        try:
            with Image.open(mask) as image:
                image.load()
                mask = image.copy()
        except FileNotFoundError:
            raise ValueError(f"{name} not found: {mask}") from None
        except (UnidentifiedImageError, OSError) as error:
            raise ValueError(f"{name} is not a readable image: {error}") from None
    if isinstance(mask, Image.Image):
        mask = mask.convert("L") if mask.mode not in ("1", "L", "P", "I", "I;16") else mask
        mask = np.array(mask)
    array = np.asarray(mask)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim != 2 or min(array.shape) < 1:
        raise ValueError(f"{name} has shape {array.shape}; expected one channel of class indices (H, W)")
    if array.dtype == bool:
        array = array.astype(np.uint8)
    num_classes = len(info.mask_classes)
    values = np.unique(array)
    if num_classes == 1 and set(values.tolist()) <= {0, 255}:
        array = (array == 255).astype(np.uint8)  # a black-and-white binary mask
    elif not set(values.tolist()) <= set(range(num_classes + 1)):
        shown = ", ".join(f"{value:g}" for value in values[:8]) + (" ..." if len(values) > 8 else "")
        classes = ", ".join(f"{index} = {name}" for index, name in enumerate(info.mask_classes, start=1))
        raise ValueError(
            f"{name} holds the values {shown}; this model's masks hold 0 (background) and {classes}"
            + (" (or 0/255 black and white)" if num_classes == 1 else "")
        )
    return array.astype(np.int64)


def _check_condition(info: PipelineInfo, condition: str | Sequence[str] | None) -> str | list[str]:
    lookup = {name.lower(): name for name in info.labels}
    names = [condition] if isinstance(condition, str) or condition is None else list(condition)
    if not info.multi_label and len(names) != 1:
        raise ValueError(f"Choose exactly one condition from: {', '.join(info.labels)}; got {condition!r}")
    resolved = []
    for name in names:
        if not isinstance(name, str) or name.strip().lower() not in lookup:
            raise ValueError(f"Unknown condition {name!r}; choose from: {', '.join(info.labels)}")
        resolved.append(lookup[name.strip().lower()])
    # A multi-label model takes a set of findings (possibly none: "no finding"); a single-label one a name.
    return resolved if info.multi_label else resolved[0]


def describe_condition(request: GenerationRequest) -> str:
    if request.prompt is not None:
        return request.prompt or "(empty prompt)"
    if isinstance(request.condition, list):
        return " + ".join(request.condition) or "no finding"
    if request.condition is None and request.mask is not None:
        return "given mask"
    return request.condition or "unconditional"
