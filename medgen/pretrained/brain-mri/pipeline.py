# Copyright 2026 The medgen authors. Licensed under the Apache License, Version 2.0.
#
# This file is self-contained on purpose: it is saved as the `pipeline.py` of every
# label-conditioned medgen pipeline folder, so that stock diffusers can load it with
# `DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)` without medgen
# installed. It may only import torch, diffusers and the standard library.
# Structure follows diffusers' DiT and DDPM pipelines (Apache-2.0).
"""Label-conditioned diffusion pipeline for medical images (single-label or multi-label findings)."""

from __future__ import annotations

import inspect
import math
from typing import Any, Callable, Mapping, Sequence, Union

import torch
from diffusers import AutoencoderKL, DiffusionPipeline, ImagePipelineOutput, UNet2DConditionModel
from diffusers.schedulers import KarrasDiffusionSchedulers
from diffusers.utils import replace_example_docstring
from diffusers.utils.torch_utils import randn_tensor

# One image's condition: a finding name, several names (multi-label models), or name -> value
# (values in [0, 1]; e.g. 0.5 for an uncertain finding, as CheXpert's "-1" under a value policy).
ImageLabels = Union[str, Sequence[str], Mapping[str, float]]

DEFAULT_GUIDANCE_SCALE = 2.0  # a call without guidance_scale, on a model that stores no default
DEFAULT_INFERENCE_STEPS = 15  # a call without num_inference_steps, on a model that stores no default

EXAMPLE_DOC_STRING = """
    Examples:
        ```py
        >>> import torch
        >>> from diffusers import DiffusionPipeline

        >>> pipe = DiffusionPipeline.from_pretrained("path/to/pipeline", trust_remote_code=True)
        >>> pipe.labels
        ['normal', 'pneumonia']
        >>> images = pipe(labels=["pneumonia", "normal"], generator=torch.manual_seed(0)).images
        >>> images[0].save("pneumonia.png")
        ```
"""


class LabelConditionedPipeline(DiffusionPipeline):
    r"""
    Generates images conditioned on finding labels, with classifier-free guidance.

    The condition is a vector of the label values (one-hot for single-label models, multi-hot with
    uncertainty values for multi-label models) followed by a "null" flag; the null condition (flag 1,
    values 0) is what the UNet learned through condition dropout, and guidance extrapolates away from it.
    The vector enters the UNet through its class-embedding projection (`class_embed_type="projection"`).

    Args:
        unet ([`UNet2DConditionModel`]):
            Denoiser with `class_embed_type="projection"` and
            `projection_class_embeddings_input_dim = len(id2label) + 1`.
        scheduler ([`SchedulerMixin`]):
            Any diffusers scheduler, e.g. [`DPMSolverMultistepScheduler`] (the default saved by medgen) or [`DDPMScheduler`].
        vae ([`AutoencoderKL`], *optional*):
            When given, the UNet works in the VAE's latent space and images are decoded at the end.
        id2label (`dict`, *optional*):
            Label index (as a string) to finding name, stored in `model_index.json`.
        multi_label (`bool`, defaults to `False`):
            Whether one image may carry several findings at once (CheXpert / NIH style).
        default_guidance_scale (`float`, *optional*):
            The classifier-free guidance scale a call uses when it gives none, stored in `model_index.json`: the
            scale measured best for this model (2.0 when not set).
        default_guidance_interval (`tuple[float, float]`, *optional*):
            The guidance interval a call uses when it gives none, stored in `model_index.json` as `{"start": ...,
            "stop": ...}` (a list there would read as a component); every step when not set. See `__call__`.
        default_num_inference_steps (`int`, *optional*):
            The step count a call uses when it gives none, stored in `model_index.json`: what the model's saved
            sampler was measured with (15 when not set; a stochastic sampler such as DDPM wants more).
    """

    model_cpu_offload_seq = "unet->vae"
    _optional_components = ["vae"]
    _callback_tensor_inputs = ["latents"]

    def __init__(
        self,
        unet: UNet2DConditionModel,
        scheduler: KarrasDiffusionSchedulers,
        vae: AutoencoderKL | None = None,
        id2label: dict[str, str] | None = None,
        multi_label: bool = False,
        default_guidance_scale: float | None = None,
        default_guidance_interval: Sequence[float] | Mapping[str, float] | None = None,
        default_num_inference_steps: int | None = None,
    ):
        super().__init__()
        if default_num_inference_steps is not None:
            default_num_inference_steps = self.check_num_inference_steps(
                default_num_inference_steps, "`default_num_inference_steps`"
            )
        if default_guidance_interval is not None:
            start, stop = self.check_guidance_interval(default_guidance_interval, "`default_guidance_interval`")
            default_guidance_interval = {"start": start, "stop": stop}
        if default_guidance_scale is not None:
            default_guidance_scale = float(default_guidance_scale)
            if not (math.isfinite(default_guidance_scale) and default_guidance_scale >= 0):
                raise ValueError(f"`default_guidance_scale` must be a finite number >= 0, got {default_guidance_scale}.")
        num_labels = unet.config.projection_class_embeddings_input_dim - 1
        if id2label is None:
            id2label = {str(i): f"label_{i}" for i in range(num_labels)}
        id2label = {str(key): str(value) for key, value in id2label.items()}
        if len(id2label) != num_labels:
            raise ValueError(
                f"The UNet expects {num_labels} labels (+1 null flag) but id2label names {len(id2label)}: {id2label}."
            )
        self.register_modules(unet=unet, scheduler=scheduler, vae=vae)
        self.register_to_config(
            id2label=id2label, multi_label=bool(multi_label), default_guidance_scale=default_guidance_scale,
            default_guidance_interval=default_guidance_interval, default_num_inference_steps=default_num_inference_steps,
        )
        self._interrupt = False

    @property
    def default_guidance_scale(self) -> float:
        """The guidance scale of a call that gives none: the model's stored `default_guidance_scale`, else 2.0."""
        value = self.config.get("default_guidance_scale")
        return DEFAULT_GUIDANCE_SCALE if value is None else float(value)

    @property
    def default_guidance_interval(self) -> list[float]:
        """The guidance interval of a call that gives none: the model's stored `default_guidance_interval`, else every step."""
        value = self.config.get("default_guidance_interval")
        return [0.0, 1.0] if value is None else self.check_guidance_interval(value, "`default_guidance_interval`")

    @property
    def default_num_inference_steps(self) -> int:
        """The step count of a call that gives none: the model's stored `default_num_inference_steps`, else 15."""
        value = self.config.get("default_num_inference_steps")
        return DEFAULT_INFERENCE_STEPS if value is None else self.check_num_inference_steps(value, "`default_num_inference_steps`")

    @staticmethod
    def check_num_inference_steps(steps: int, name: str = "`num_inference_steps`") -> int:
        """`steps` as an int, or a ValueError naming `name` unless it is a whole number >= 1."""
        if isinstance(steps, float) and steps.is_integer():
            steps = int(steps)  # JSON may hold 100.0
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ValueError(f"{name} must be a positive integer, got {steps!r}.")
        return int(steps)

    @staticmethod
    def check_guidance_interval(interval: Sequence[float] | Mapping[str, float], name: str = "`guidance_interval`") -> list[float]:
        """`[start, stop]` as floats (from a pair or a `{"start", "stop"}` dict), or a ValueError naming `name` unless
        0 <= start < stop <= 1."""
        if isinstance(interval, Mapping):
            interval = (interval.get("start"), interval.get("stop"))
        try:
            start, stop = (float(bound) for bound in interval)
        except (TypeError, ValueError):
            raise ValueError(f"{name} must be two numbers (start, stop), got {interval!r}.") from None
        if not 0.0 <= start < stop <= 1.0:
            raise ValueError(f"{name} must satisfy 0 <= start < stop <= 1 (fractions of the sampling steps), got {interval!r}.")
        return [start, stop]

    @property
    def labels(self) -> list[str]:
        """Finding names in the order of the condition vector."""
        id2label = self.config.id2label
        return [id2label[str(i)] for i in range(len(id2label))]

    @property
    def interrupt(self) -> bool:
        return self._interrupt

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
        """The unconditional (classifier-free guidance) condition for `batch_size` images."""
        num_labels = len(self.config.id2label)
        return self.condition_from_vectors(
            torch.zeros(batch_size, num_labels), drop_mask=torch.ones(batch_size, dtype=torch.bool)
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

    def encode_labels(self, labels: ImageLabels | list[ImageLabels] | None, num_images_per_prompt: int = 1) -> torch.Tensor:
        """
        Turns `labels` into condition vectors of shape `(num_images * num_images_per_prompt, num_labels + 1)`.

        `labels` is one image's labels (a name, a list of names, or a dict name -> value) or a list with one
        such entry per image; `None` means unconditional. Names match case-insensitively.
        """
        if labels is None:
            return self.null_condition(num_images_per_prompt)
        if isinstance(labels, (str, Mapping)):
            labels = [labels]
        elif not isinstance(labels, (list, tuple)) or len(labels) == 0:
            raise ValueError(f"`labels` must be a name, a dict, or a non-empty list of them, got {labels!r}.")
        vectors = torch.stack([self._label_values(entry) for entry in labels])
        return self.condition_from_vectors(vectors).repeat_interleave(num_images_per_prompt, dim=0)

    @staticmethod
    def check_step_budget(steps: int, scheduler, name: str) -> None:
        """A ValueError naming `name` where `steps` exceeds the timesteps `scheduler`'s model was trained with."""
        train_steps = scheduler.config.get("num_train_timesteps")
        if train_steps is not None and steps > train_steps:
            raise ValueError(
                f"{name} ({steps}) must be at most the scheduler's `num_train_timesteps` ({train_steps}): "
                "a sampler cannot take more steps than the model was trained with."
            )

    def check_inputs(self, num_images_per_prompt, num_inference_steps, guidance_scale, output_type, callback_tensor_inputs):
        if not isinstance(num_images_per_prompt, int) or num_images_per_prompt < 1:
            raise ValueError(f"`num_images_per_prompt` must be a positive integer, got {num_images_per_prompt!r}.")
        if not isinstance(num_inference_steps, int) or num_inference_steps < 1:
            raise ValueError(f"`num_inference_steps` must be a positive integer, got {num_inference_steps!r}.")
        self.check_step_budget(num_inference_steps, self.scheduler, "`num_inference_steps`")
        if guidance_scale < 0:
            raise ValueError(f"`guidance_scale` must be >= 0, got {guidance_scale}.")
        if output_type not in ("pil", "np", "pt", "latent"):
            raise ValueError(f"`output_type` must be 'pil', 'np', 'pt' or 'latent', got {output_type!r}.")
        unknown = [name for name in callback_tensor_inputs if name not in self._callback_tensor_inputs]
        if unknown:
            raise ValueError(f"`callback_on_step_end_tensor_inputs` may only name {self._callback_tensor_inputs}, got {unknown}.")

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Maps the final sample (pixels in [-1, 1], or VAE latents) to images in [0, 1], `(B, C, H, W)`."""
        if self.vae is not None:
            latents = latents.to(self.vae.dtype) / self.vae.config.scaling_factor
            latents = self.vae.decode(latents).sample
        return (latents.float() / 2 + 0.5).clamp(0, 1)

    @torch.no_grad()
    @replace_example_docstring(EXAMPLE_DOC_STRING)
    def __call__(
        self,
        labels: ImageLabels | list[ImageLabels] | None = None,
        num_images_per_prompt: int = 1,
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        guidance_interval: Sequence[float] | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        callback_on_step_end: Callable[[Any, int, torch.Tensor, dict], dict] | None = None,
        callback_on_step_end_tensor_inputs: list[str] = ["latents"],
    ) -> ImagePipelineOutput | tuple:
        r"""
        Generates images for the given finding labels.

        Args:
            labels (`str`, `list[str]`, `dict[str, float]`, or a list of these, *optional*):
                One entry per image: a finding name (`"pneumonia"`), several findings at once (`["effusion",
                "pneumonia"]`, multi-label models), or name -> value (`{"pneumonia": 1.0, "edema": 0.5}`).
                A single entry means one image. `None` samples unconditionally. See `pipe.labels`.
            num_images_per_prompt (`int`, defaults to 1):
                Images generated for each entry of `labels`.
            num_inference_steps (`int`, *optional*):
                Denoising steps; 15-25 suit the multistep solver, DDPM wants more. Defaults to the model's
                `default_num_inference_steps` (15 when the model stores none).
            guidance_scale (`float`, *optional*):
                Classifier-free guidance weight; 1.0 disables guidance, larger values follow the labels more
                closely at the cost of diversity. Defaults to the model's `default_guidance_scale` (2.0 when the
                model stores none).
            guidance_interval (`tuple[float, float]`, *optional*):
                `(start, stop)`, fractions of the sampling steps from the noisiest (0) to the last (1): guidance
                applies to step `i` of `n` when `start <= i / n < stop`; the other steps use the conditional
                prediction alone, at half the UNet cost. On ImageNet models guidance at the noisiest steps costs
                variety and at the last ones adds little (Kynkäänniemi et al., 2024, "Applying guidance in a limited
                interval"); whether a model gains is measured per model. Defaults to the model's
                `default_guidance_interval` (every step when the model stores none).
            generator (`torch.Generator` or `list[torch.Generator]`, *optional*):
                For reproducible sampling; a list gives each image its own generator.
            latents (`torch.Tensor`, *optional*):
                Initial noise of shape `(batch, C, H, W)`; drawn from `generator` when omitted.
            output_type (`str`, defaults to `"pil"`):
                `"pil"` (list of PIL images), `"np"` (`(B, H, W, C)` float in [0, 1]), `"pt"` (`(B, C, H, W)`),
                or `"latent"` (the final sample before decoding).
            return_dict (`bool`, defaults to `True`):
                Return an [`ImagePipelineOutput`] rather than a tuple.
            callback_on_step_end (`Callable`, *optional*):
                Called as `callback_on_step_end(pipe, step, timestep, callback_kwargs)` after each step; it may
                return replaced tensors, and may set `pipe._interrupt = True` to stop before the next step.
            callback_on_step_end_tensor_inputs (`list[str]`, defaults to `["latents"]`):
                Tensors passed to the callback in `callback_kwargs`.

        Examples:

        Returns:
            [`ImagePipelineOutput`] or `tuple`: the generated images. After an interruption `pipe.interrupt`
            is `True` and the images are the partially denoised samples.
        """
        if guidance_scale is None:
            guidance_scale = self.default_guidance_scale
        if num_inference_steps is None:
            num_inference_steps = self.default_num_inference_steps
        if guidance_interval is None:
            guidance_interval = self.default_guidance_interval
        guide_from, guide_until = self.check_guidance_interval(guidance_interval)
        self.check_inputs(
            num_images_per_prompt, num_inference_steps, guidance_scale, output_type, callback_on_step_end_tensor_inputs
        )
        self._interrupt = False
        device = self._execution_device
        dtype = self.unet.dtype

        # 1. Condition vectors; with guidance, one batch holds [null conditions, label conditions]
        conditions = self.encode_labels(labels, num_images_per_prompt)
        batch_size = conditions.shape[0]
        do_classifier_free_guidance = guidance_scale > 1.0
        if do_classifier_free_guidance:
            conditions = torch.cat([self.null_condition(batch_size), conditions])
        conditions = conditions.to(device=device, dtype=dtype)

        # 2. Initial noise, shaped after the UNet's config
        sample_size = self.unet.config.sample_size
        height, width = (sample_size, sample_size) if isinstance(sample_size, int) else sample_size
        shape = (batch_size, self.unet.config.in_channels, height, width)
        if latents is None:
            latents = randn_tensor(shape, generator=generator, device=device, dtype=dtype)
        elif tuple(latents.shape) != shape:
            raise ValueError(f"`latents` must have shape {shape}, got {tuple(latents.shape)}.")
        latents = latents.to(device=device, dtype=dtype) * self.scheduler.init_noise_sigma

        # 3. Denoising loop
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        # only some schedulers draw noise in step() (DDPM, SDE solvers); UniPC, for one, takes no generator
        accepts_generator = "generator" in inspect.signature(self.scheduler.step).parameters
        extra_step_kwargs = {"generator": generator} if accepts_generator else {}
        num_steps = len(self.scheduler.timesteps)
        for i, t in enumerate(self.progress_bar(self.scheduler.timesteps)):
            if self.interrupt:
                break
            guide = do_classifier_free_guidance and guide_from <= i / num_steps < guide_until
            model_input = torch.cat([latents] * 2) if guide else latents
            model_input = self.scheduler.scale_model_input(model_input, t)
            step_conditions = conditions if guide or not do_classifier_free_guidance else conditions[batch_size:]

            # 3a. predict noise (or v) for every condition in one UNet call
            model_output = self.unet(model_input, t, encoder_hidden_states=None, class_labels=step_conditions).sample
            if guide:
                output_uncond, output_cond = model_output.chunk(2)
                model_output = output_uncond + guidance_scale * (output_cond - output_uncond)

            # 3b. x_t -> x_t-1
            latents = self.scheduler.step(model_output, t, latents, **extra_step_kwargs).prev_sample

            if callback_on_step_end is not None:
                callback_kwargs = {}
                for name in callback_on_step_end_tensor_inputs:
                    callback_kwargs[name] = locals()[name]
                callback_outputs = callback_on_step_end(self, i, t, callback_kwargs) or {}
                latents = callback_outputs.pop("latents", latents)

        # 4. Decode to images
        if output_type == "latent":
            images = latents
        else:
            images = self.decode_latents(latents)
            if output_type != "pt":
                images = images.permute(0, 2, 3, 1).cpu().numpy()
            if output_type == "pil":
                images = self.numpy_to_pil(images)

        self.maybe_free_model_hooks()
        if not return_dict:
            return (images,)
        return ImagePipelineOutput(images=images)

