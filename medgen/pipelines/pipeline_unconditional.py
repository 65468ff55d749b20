# Copyright 2026 The medgen authors. Licensed under the Apache License, Version 2.0.
#
# This file is self-contained on purpose: it is saved as the `pipeline.py` of every
# unconditional medgen pipeline folder, so that stock diffusers can load it with
# `DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)` without medgen
# installed. It may only import torch, diffusers and the standard library.
# Structure follows diffusers' DDPM pipeline (Apache-2.0).
"""Unconditional diffusion pipeline for medical images (any modality: X-ray, MRI, CT, ultrasound)."""

from __future__ import annotations

import inspect
from typing import Any, Callable

import torch
from diffusers import AutoencoderKL, DiffusionPipeline, ImagePipelineOutput, UNet2DModel
from diffusers.schedulers import KarrasDiffusionSchedulers
from diffusers.utils import replace_example_docstring
from diffusers.utils.torch_utils import randn_tensor

EXAMPLE_DOC_STRING = """
    Examples:
        ```py
        >>> import torch
        >>> from diffusers import DiffusionPipeline

        >>> pipe = DiffusionPipeline.from_pretrained("path/to/pipeline", trust_remote_code=True)
        >>> images = pipe(batch_size=4, generator=torch.manual_seed(0)).images
        >>> images[0].save("sample.png")
        ```
"""


class UnconditionalPipeline(DiffusionPipeline):
    r"""
    Generates images of one domain (e.g. brain MRI slices, ultrasound frames) without a condition.

    Args:
        unet ([`UNet2DModel`]): Denoiser.
        scheduler ([`SchedulerMixin`]):
            Any diffusers scheduler, e.g. [`DPMSolverMultistepScheduler`] (the default saved by medgen) or [`DDPMScheduler`].
        vae ([`AutoencoderKL`], *optional*):
            When given, the UNet works in the VAE's latent space and images are decoded at the end.
    """

    model_cpu_offload_seq = "unet->vae"
    _optional_components = ["vae"]
    _callback_tensor_inputs = ["latents"]

    def __init__(self, unet: UNet2DModel, scheduler: KarrasDiffusionSchedulers, vae: AutoencoderKL | None = None):
        super().__init__()
        self.register_modules(unet=unet, scheduler=scheduler, vae=vae)
        self._interrupt = False

    @property
    def labels(self) -> list[str]:
        """An unconditional model has no labels."""
        return []

    @property
    def interrupt(self) -> bool:
        return self._interrupt

    @staticmethod
    def check_step_budget(steps: int, scheduler, name: str) -> None:
        """A ValueError naming `name` where `steps` exceeds the timesteps `scheduler`'s model was trained with."""
        train_steps = scheduler.config.get("num_train_timesteps")
        if train_steps is not None and steps > train_steps:
            raise ValueError(
                f"{name} ({steps}) must be at most the scheduler's `num_train_timesteps` ({train_steps}): "
                "a sampler cannot take more steps than the model was trained with."
            )

    def check_inputs(self, batch_size, num_inference_steps, output_type, callback_tensor_inputs):
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"`batch_size` must be a positive integer, got {batch_size!r}.")
        if not isinstance(num_inference_steps, int) or num_inference_steps < 1:
            raise ValueError(f"`num_inference_steps` must be a positive integer, got {num_inference_steps!r}.")
        self.check_step_budget(num_inference_steps, self.scheduler, "`num_inference_steps`")
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
        batch_size: int = 1,
        num_inference_steps: int = 15,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        callback_on_step_end: Callable[[Any, int, torch.Tensor, dict], dict] | None = None,
        callback_on_step_end_tensor_inputs: list[str] = ["latents"],
        num_images_per_prompt: int | None = None,
    ) -> ImagePipelineOutput | tuple:
        r"""
        Generates `batch_size` images.

        Args:
            batch_size (`int`, defaults to 1):
                Number of images.
            num_inference_steps (`int`, defaults to 15):
                Denoising steps; 15-25 suit the default multistep solver, DDPM wants its full schedule.
            generator (`torch.Generator` or `list[torch.Generator]`, *optional*):
                For reproducible sampling; a list gives each image its own generator.
            latents (`torch.Tensor`, *optional*):
                Initial noise of shape `(batch_size, C, H, W)`; drawn from `generator` when omitted.
            output_type (`str`, defaults to `"pil"`):
                `"pil"`, `"np"` (`(B, H, W, C)` float in [0, 1]), `"pt"` (`(B, C, H, W)`) or `"latent"`.
            return_dict (`bool`, defaults to `True`):
                Return an [`ImagePipelineOutput`] rather than a tuple.
            callback_on_step_end (`Callable`, *optional*):
                Called as `callback_on_step_end(pipe, step, timestep, callback_kwargs)` after each step; it may
                return replaced tensors, and may set `pipe._interrupt = True` to stop before the next step.
            callback_on_step_end_tensor_inputs (`list[str]`, defaults to `["latents"]`):
                Tensors passed to the callback in `callback_kwargs`.
            num_images_per_prompt (`int`, *optional*):
                Alias of `batch_size`, so that callers can drive every medgen pipeline with the same arguments.

        Examples:

        Returns:
            [`ImagePipelineOutput`] or `tuple`: the generated images. After an interruption `pipe.interrupt`
            is `True` and the images are the partially denoised samples.
        """
        if num_images_per_prompt is not None:
            batch_size = num_images_per_prompt
        self.check_inputs(batch_size, num_inference_steps, output_type, callback_on_step_end_tensor_inputs)
        self._interrupt = False
        device = self._execution_device
        dtype = self.unet.dtype

        # 1. Initial noise, shaped after the UNet's config
        sample_size = self.unet.config.sample_size
        height, width = (sample_size, sample_size) if isinstance(sample_size, int) else sample_size
        shape = (batch_size, self.unet.config.in_channels, height, width)
        if latents is None:
            latents = randn_tensor(shape, generator=generator, device=device, dtype=dtype)
        elif tuple(latents.shape) != shape:
            raise ValueError(f"`latents` must have shape {shape}, got {tuple(latents.shape)}.")
        latents = latents.to(device=device, dtype=dtype) * self.scheduler.init_noise_sigma

        # 2. Denoising loop
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        # only some schedulers draw noise in step() (DDPM, SDE solvers); UniPC, for one, takes no generator
        accepts_generator = "generator" in inspect.signature(self.scheduler.step).parameters
        extra_step_kwargs = {"generator": generator} if accepts_generator else {}
        for i, t in enumerate(self.progress_bar(self.scheduler.timesteps)):
            if self.interrupt:
                break
            # 2a. predict noise (or v)
            model_output = self.unet(self.scheduler.scale_model_input(latents, t), t).sample

            # 2b. x_t -> x_t-1
            latents = self.scheduler.step(model_output, t, latents, **extra_step_kwargs).prev_sample

            if callback_on_step_end is not None:
                callback_kwargs = {}
                for name in callback_on_step_end_tensor_inputs:
                    callback_kwargs[name] = locals()[name]
                callback_outputs = callback_on_step_end(self, i, t, callback_kwargs) or {}
                latents = callback_outputs.pop("latents", latents)

        # 3. Decode to images
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
