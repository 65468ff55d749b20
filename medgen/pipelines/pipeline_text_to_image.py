# Copyright 2026 The medgen authors. Licensed under the Apache License, Version 2.0.
#
# This file is self-contained on purpose: it is saved as the `pipeline.py` of every
# text-to-image medgen pipeline folder, so that stock diffusers can load it with
# `DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)` without medgen
# installed. It may only import torch, diffusers, transformers and the standard library.
# Structure follows diffusers' latent diffusion (LDMTextToImagePipeline) and Stable Diffusion
# pipelines (Apache-2.0): prompt encoding, classifier-free guidance as one concatenated batch.
"""Text-to-image latent diffusion pipeline for medical images: a finding in words in, matching images out."""

from __future__ import annotations

import inspect
import logging
from typing import Any, Callable, Union

import torch
from diffusers import AutoencoderKL, DiffusionPipeline, ImagePipelineOutput, UNet2DConditionModel
from diffusers.schedulers import KarrasDiffusionSchedulers
from diffusers.utils import replace_example_docstring
from diffusers.utils.torch_utils import randn_tensor
from transformers import PreTrainedModel, PreTrainedTokenizerBase

logger = logging.getLogger(__name__)

Prompt = Union[str, list[str]]

EXAMPLE_DOC_STRING = """
    Examples:
        ```py
        >>> import torch
        >>> from diffusers import DiffusionPipeline

        >>> pipe = DiffusionPipeline.from_pretrained("path/to/pipeline", trust_remote_code=True)
        >>> images = pipe(
        ...     prompt="right lower lobe pneumonia with consolidation",
        ...     negative_prompt="no finding",
        ...     num_images_per_prompt=4,
        ...     generator=torch.manual_seed(0),
        ... ).images
        >>> images[0].save("pneumonia.png")
        ```
"""


class TextToImagePipeline(DiffusionPipeline):
    r"""
    Generates images from free-text findings ("bilateral lower lobe infiltrates") with classifier-free guidance.

    The prompt is encoded by a BERT-family text encoder (its last hidden state, padding masked out) and enters a
    [`UNet2DConditionModel`] through cross-attention. The UNet learned the empty prompt as the unconditional
    condition through prompt dropout, so `prompt=""` samples unconditionally and guidance extrapolates away
    from the empty (or the negative) prompt. The UNet normally works in the latent space of `vae`.

    Args:
        vae ([`AutoencoderKL`], *optional*):
            Autoencoder whose latents the UNet denoises; its `scaling_factor` maps latents to unit variance.
            Without it the UNet works on pixels.
        text_encoder ([`~transformers.PreTrainedModel`]):
            BERT-family encoder (e.g. BioBERT, MiniLM); its hidden size equals the UNet's `cross_attention_dim`.
        tokenizer ([`~transformers.PreTrainedTokenizerBase`]):
            The encoder's tokenizer.
        unet ([`UNet2DConditionModel`]):
            Denoiser with cross-attention blocks.
        scheduler ([`SchedulerMixin`]):
            Any diffusers scheduler, e.g. [`DPMSolverMultistepScheduler`] (the default saved by medgen).
        max_length (`int`, defaults to 77):
            Prompt length in tokens (the length used in training); longer prompts are truncated with a warning.
        example_prompts (`list[str]`, *optional*):
            Prompts the model was trained to follow (for a model trained on described sets: the canonical prompt of
            each modality + finding), saved with the pipeline so that apps can offer them.
    """

    model_cpu_offload_seq = "text_encoder->unet->vae"
    _optional_components = ["vae"]
    _callback_tensor_inputs = ["latents"]

    def __init__(
        self,
        vae: AutoencoderKL | None,
        text_encoder: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        unet: UNet2DConditionModel,
        scheduler: KarrasDiffusionSchedulers,
        max_length: int = 77,
        example_prompts: list[str] | None = None,
    ):
        super().__init__()
        if text_encoder is None:
            raise ValueError(
                "`text_encoder` is None: this pipeline was saved without its text encoder's weights (its "
                "model_index.json names them under `_text_encoder_reference`). Load it with medgen, which fills them "
                "in, or pass `text_encoder=transformers.AutoModel.from_pretrained(<those weights>)`."
            )
        hidden_size = text_encoder.config.hidden_size
        if unet.config.cross_attention_dim != hidden_size:
            raise ValueError(
                f"The UNet's cross_attention_dim ({unet.config.cross_attention_dim}) must equal the text encoder's "
                f"hidden size ({hidden_size})."
            )
        if vae is not None and vae.config.latent_channels != unet.config.in_channels:
            raise ValueError(
                f"The UNet takes {unet.config.in_channels} channels but the VAE makes {vae.config.latent_channels}-channel latents."
            )
        if not isinstance(max_length, int) or max_length < 2:
            raise ValueError(f"`max_length` must be an integer >= 2, got {max_length!r}.")
        example_prompts = list(example_prompts or [])
        if not all(isinstance(text, str) and text.strip() for text in example_prompts):
            raise ValueError(f"`example_prompts` must be non-empty strings, got {example_prompts!r}.")
        self.register_modules(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler)
        self.register_to_config(max_length=max_length, example_prompts=example_prompts)
        self._interrupt = False

    @property
    def interrupt(self) -> bool:
        return self._interrupt

    @property
    def labels(self) -> list[str]:
        """A text-conditioned model has no fixed labels: any prompt is allowed."""
        return []

    def _tokenize(self, prompts: list[str]) -> dict[str, torch.Tensor]:
        max_length = self.config.max_length
        tokens = self.tokenizer(prompts, padding="max_length", max_length=max_length, truncation=True, return_tensors="pt")
        lengths = [len(ids) for ids in self.tokenizer(prompts, truncation=False)["input_ids"]]
        too_long = [prompt for prompt, length in zip(prompts, lengths) if length > max_length]
        if too_long:
            logger.warning(
                "%d prompt(s) are longer than %d tokens and were truncated, e.g. %r.", len(too_long), max_length, too_long[0][:80]
            )
        return tokens

    def encode_prompt(self, prompts: list[str], num_images_per_prompt: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """
        Encodes prompts to `(hidden_states (B, L, D), attention_mask (B, L))`, each row repeated
        `num_images_per_prompt` times. An empty string gives the unconditional condition.
        """
        device = self._execution_device
        tokens = self._tokenize(list(prompts))
        input_ids = tokens["input_ids"].to(device)
        attention_mask = tokens["attention_mask"].to(device)
        hidden_states = self.text_encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        hidden_states = hidden_states.to(dtype=self.unet.dtype)
        return (
            hidden_states.repeat_interleave(num_images_per_prompt, dim=0),
            attention_mask.repeat_interleave(num_images_per_prompt, dim=0),
        )

    @staticmethod
    def check_step_budget(steps: int, scheduler, name: str) -> None:
        """A ValueError naming `name` where `steps` exceeds the timesteps `scheduler`'s model was trained with."""
        train_steps = scheduler.config.get("num_train_timesteps")
        if train_steps is not None and steps > train_steps:
            raise ValueError(
                f"{name} ({steps}) must be at most the scheduler's `num_train_timesteps` ({train_steps}): "
                "a sampler cannot take more steps than the model was trained with."
            )

    def check_inputs(
        self, prompt, negative_prompt, num_images_per_prompt, num_inference_steps, guidance_scale, output_type, callback_tensor_inputs
    ):
        if isinstance(prompt, str):
            prompt = [prompt]
        if not isinstance(prompt, (list, tuple)) or len(prompt) == 0 or not all(isinstance(p, str) for p in prompt):
            raise ValueError(f"`prompt` must be a string or a non-empty list of strings, got {prompt!r}.")
        if negative_prompt is not None:
            negatives = [negative_prompt] if isinstance(negative_prompt, str) else negative_prompt
            if not isinstance(negatives, (list, tuple)) or not all(isinstance(p, str) for p in negatives):
                raise ValueError(f"`negative_prompt` must be a string or a list of strings, got {negative_prompt!r}.")
            if len(negatives) not in (1, len(prompt)):
                raise ValueError(
                    f"`negative_prompt` has {len(negatives)} entries but `prompt` has {len(prompt)}; give one negative "
                    "prompt for all, or one per prompt."
                )
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
        """Maps the final sample (VAE latents, or pixels in [-1, 1]) to images in [0, 1], `(B, C, H, W)`."""
        if self.vae is not None:
            latents = latents.to(self.vae.dtype) / self.vae.config.scaling_factor
            latents = self.vae.decode(latents).sample
        return (latents.float() / 2 + 0.5).clamp(0, 1)

    @torch.no_grad()
    @replace_example_docstring(EXAMPLE_DOC_STRING)
    def __call__(
        self,
        prompt: Prompt = "",
        negative_prompt: Prompt | None = None,
        num_images_per_prompt: int = 1,
        num_inference_steps: int = 15,
        guidance_scale: float = 3.0,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        callback_on_step_end: Callable[[Any, int, torch.Tensor, dict], dict] | None = None,
        callback_on_step_end_tensor_inputs: list[str] = ["latents"],
    ) -> ImagePipelineOutput | tuple:
        r"""
        Generates images for the given text prompts.

        Args:
            prompt (`str` or `list[str]`, defaults to `""`):
                Finding(s) in words, one per image (e.g. `"right lower lobe pneumonia with consolidation"`). The
                empty string samples unconditionally. Prompts longer than `pipe.config.max_length` tokens are
                truncated with a warning.
            negative_prompt (`str` or `list[str]`, *optional*):
                What guidance steers away from (e.g. `"no finding"`): one for all prompts or one per prompt.
                Defaults to the empty prompt. Used only when `guidance_scale > 1`.
            num_images_per_prompt (`int`, defaults to 1):
                Images generated for each prompt.
            num_inference_steps (`int`, defaults to 15):
                Denoising steps; 15-25 suit the default multistep solver, DDPM wants its full schedule.
            guidance_scale (`float`, defaults to 3.0):
                Classifier-free guidance weight; 1.0 disables guidance, larger values follow the prompt more
                closely at the cost of diversity.
            generator (`torch.Generator` or `list[torch.Generator]`, *optional*):
                For reproducible sampling; a list gives each image its own generator.
            latents (`torch.Tensor`, *optional*):
                Initial noise of shape `(batch, C, H, W)` in the UNet's space; drawn from `generator` when omitted.
            output_type (`str`, defaults to `"pil"`):
                `"pil"` (list of PIL images), `"np"` (`(B, H, W, C)` float in [0, 1]), `"pt"` (`(B, C, H, W)`),
                or `"latent"` (the final latents before decoding).
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
        self.check_inputs(
            prompt, negative_prompt, num_images_per_prompt, num_inference_steps, guidance_scale, output_type,
            callback_on_step_end_tensor_inputs,
        )
        self._interrupt = False
        device = self._execution_device
        dtype = self.unet.dtype
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)

        # 1. Encode prompts; with guidance, one batch holds [negative (or empty) prompts, prompts]
        hidden_states, attention_mask = self.encode_prompt(prompts, num_images_per_prompt)
        batch_size = hidden_states.shape[0]
        do_classifier_free_guidance = guidance_scale > 1.0
        if do_classifier_free_guidance:
            if negative_prompt is None:
                negatives = [""] * len(prompts)
            else:
                negatives = [negative_prompt] if isinstance(negative_prompt, str) else list(negative_prompt)
                negatives = negatives * len(prompts) if len(negatives) == 1 else negatives
            negative_states, negative_mask = self.encode_prompt(negatives, num_images_per_prompt)
            hidden_states = torch.cat([negative_states, hidden_states])
            attention_mask = torch.cat([negative_mask, attention_mask])

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
        for i, t in enumerate(self.progress_bar(self.scheduler.timesteps)):
            if self.interrupt:
                break
            model_input = torch.cat([latents] * 2) if do_classifier_free_guidance else latents
            model_input = self.scheduler.scale_model_input(model_input, t)

            # 3a. predict noise (or v) for prompts and negatives in one UNet call; padding tokens are masked out
            model_output = self.unet(
                model_input, t, encoder_hidden_states=hidden_states, encoder_attention_mask=attention_mask
            ).sample
            if do_classifier_free_guidance:
                output_uncond, output_cond = model_output.chunk(2)
                model_output = output_uncond + guidance_scale * (output_cond - output_uncond)

            # 3b. x_t -> x_t-1
            latents = self.scheduler.step(model_output, t, latents, **extra_step_kwargs).prev_sample

            if callback_on_step_end is not None:
                # a plain loop, not a comprehension: before Python 3.12 a comprehension's locals() is its own scope
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
