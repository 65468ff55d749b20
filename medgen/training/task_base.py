"""The base of every training task: what the training loop asks of a model kind.

`train.py` runs the same loop for every kind; a task supplies the differences:
`augment(batch)` (`data.hflip`), `model_input(batch)` (pixels, or scaled VAE latents),
`condition_kwargs(batch, drop_mask)` (the UNet's extra arguments; rows in `drop_mask` get the null
condition for classifier-free guidance),
`build_pipeline(unet, scheduler)`, and `sample_requests()` (what the sample grids show).
The kinds themselves live in `tasks.py` (label, unconditional) and `text_task.py`; both import this
module, and `tasks.build_task` picks one, so the imports point one way.
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers import AutoencoderKL

from medgen.config import TrainConfig


def block_types(attention_levels: list[bool], plain: str, attention: str) -> tuple[str, ...]:
    return tuple(attention if use_attention else plain for use_attention in attention_levels)


class DiffusionTask:
    """Base task: pixel or latent space, shared by every kind."""

    def __init__(self, config: TrainConfig, label_names: list[str], multi_label: bool):
        self.config = config
        self.label_names = label_names
        self.multi_label = multi_label
        self.vae: AutoencoderKL | None = None
        if config.model.pretrained_vae:
            self.vae = AutoencoderKL.from_pretrained(config.model.pretrained_vae, use_safetensors=True)
            self.vae.requires_grad_(False).eval()
        self.unet = self.build_unet()
        if config.model.init_from:
            from medgen.training.initial_weights import load_initial_weights

            load_initial_weights(self.unet, config.model.init_from, label_names, config.model.kind)

    @property
    def sample_shape(self) -> tuple[int, int]:
        """(channels, side) of what the UNet denoises."""
        resolution, channels = self.config.data.resolution, self.config.data.channels
        if self.vae is None:
            return channels, resolution
        factor = 2 ** (len(self.vae.config.block_out_channels) - 1)
        if resolution % factor:
            raise ValueError(f"data.resolution {resolution} must be divisible by the VAE's downsampling factor {factor}.")
        return self.vae.config.latent_channels, resolution // factor

    def build_unet(self) -> torch.nn.Module:
        raise NotImplementedError

    def unet_kwargs(self, attention_down: str, attention_up: str) -> dict[str, Any]:
        """The UNet arguments every kind shares: shape, widths, and which levels get `attention_*` blocks."""
        model = self.config.model
        channels, side = self.sample_shape
        return {
            "sample_size": side,
            "in_channels": channels,
            "out_channels": channels,
            "block_out_channels": tuple(model.block_out_channels),
            "layers_per_block": model.layers_per_block,
            "down_block_types": block_types(model.attention_levels, "DownBlock2D", attention_down),
            "up_block_types": block_types(model.attention_levels[::-1], "UpBlock2D", attention_up),
            "norm_num_groups": model.norm_num_groups,
            "attention_head_dim": model.attention_head_dim,
            "dropout": model.dropout,
            "resnet_time_scale_shift": model.resnet_time_scale_shift,
        }

    def to(self, device: torch.device) -> None:
        if self.vae is not None:
            self.vae.to(device)

    def augment(self, batch: dict[str, Any], generator: torch.Generator | None = None) -> dict[str, Any]:
        """`data.hflip`: each row mirrored left-right with probability 1/2, its mask with it. A latent row
        mirrored takes its mirror image's cached posterior (`medgen.training.latents`), not a mirrored latent."""
        if not self.config.data.hflip:
            return batch
        from medgen.training.latents import LATENT_MEAN, LATENT_MEAN_MIRRORED, LATENT_STD, LATENT_STD_MIRRORED

        batch = dict(batch)
        reference = batch[LATENT_MEAN] if LATENT_MEAN in batch else batch["pixel_values"]
        draw_on = generator.device if generator is not None else reference.device
        flip = (torch.rand(reference.shape[0], generator=generator, device=draw_on) < 0.5).to(reference.device)

        def choose(plain: torch.Tensor, mirrored: torch.Tensor) -> torch.Tensor:
            return torch.where(flip.view(-1, *[1] * (plain.ndim - 1)), mirrored, plain)

        if LATENT_MEAN in batch:
            if LATENT_MEAN_MIRRORED not in batch:
                raise ValueError("data.hflip on a latent training set needs its mirrored images' posteriors "
                                 "(medgen.training.latents.training_posteriors with hflip=True)")
            batch[LATENT_MEAN] = choose(batch[LATENT_MEAN], batch.pop(LATENT_MEAN_MIRRORED))
            batch[LATENT_STD] = choose(batch[LATENT_STD], batch.pop(LATENT_STD_MIRRORED))
        else:
            batch["pixel_values"] = choose(batch["pixel_values"], batch["pixel_values"].flip(-1))
        if "mask" in batch:
            masks = batch["mask"].to(flip.device)
            batch["mask"] = choose(masks, masks.flip(-1))
        return batch

    @torch.no_grad()
    def model_input(self, batch: dict[str, torch.Tensor], generator: torch.Generator | None = None) -> torch.Tensor:
        from medgen.training.latents import LATENT_MEAN, LATENT_STD

        if LATENT_MEAN in batch:  # posteriors encoded once (medgen.training.latents): draw a latent from each
            mean, std = batch[LATENT_MEAN], batch[LATENT_STD]
            noise = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
            return (mean + std * noise) * self.vae.config.scaling_factor
        pixels = batch["pixel_values"]
        if self.vae is None:
            return pixels
        latents = self.vae.encode(pixels.to(self.vae.dtype)).latent_dist.sample(generator=generator)
        return latents * self.vae.config.scaling_factor

    def condition_kwargs(self, batch: dict[str, Any], drop_mask: torch.Tensor) -> dict[str, Any]:
        return {}

    def trainable_modules(self) -> list[torch.nn.Module]:
        """Modules besides the UNet that train with it (their `requires_grad` parameters join the optimizer)."""
        return []

    def use_prepared_modules(self, prepared: list[torch.nn.Module]) -> None:
        """Receives `trainable_modules()` as wrapped by `accelerator.prepare` (DDP, autocast), to call in training."""

    def build_pipeline(self, unet: torch.nn.Module, scheduler):
        raise NotImplementedError

    def sample_requests(self) -> list[tuple[str, dict[str, Any]]]:
        """(row title, pipeline kwargs) for each row of the sample grid."""
        return [("samples", {})]
