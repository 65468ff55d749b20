"""Tiny seeded mask-conditioned pipelines for fast tests (16 px latent images, 8 px mask generator)."""

from __future__ import annotations

import torch
from diffusers import DDPMScheduler, DPMSolverMultistepScheduler, UNet2DConditionModel

from helpers import tiny_vae
from medgen.pipelines import MaskConditionedPipeline


def tiny_conditioned_unet(in_channels: int, out_channels: int, num_labels: int, sample_size: int, seed: int = 0):
    torch.manual_seed(seed)
    return UNet2DConditionModel(
        sample_size=sample_size, in_channels=in_channels, out_channels=out_channels,
        block_out_channels=(8, 16), layers_per_block=1, norm_num_groups=8,
        down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
        mid_block_type="UNetMidBlock2D", attention_head_dim=8,
        class_embed_type="projection", projection_class_embeddings_input_dim=num_labels + 1,
    )


def tiny_scheduler():
    return DPMSolverMultistepScheduler.from_config(DDPMScheduler(num_train_timesteps=100).config)


def tiny_mask_pipeline(
    labels=("normal", "tuberculosis"), mask_classes=("lung",), mask_generator: bool = True, seed: int = 0
) -> MaskConditionedPipeline:
    """A latent pipeline making 16x16 images (4x8x8 latents) from masks of `len(mask_classes)` classes."""
    vae = tiny_vae(seed)
    classes = len(mask_classes)
    unet = tiny_conditioned_unet(4 + classes + 1, 4, len(labels), sample_size=8, seed=seed)
    generator_parts = {}
    if mask_generator:
        generator_parts = {
            "mask_unet": tiny_conditioned_unet(classes, classes, len(labels), sample_size=8, seed=seed + 1),
            "mask_scheduler": tiny_scheduler(),
        }
    return MaskConditionedPipeline(
        unet=unet, scheduler=tiny_scheduler(), vae=vae, **generator_parts,
        id2label={str(i): name for i, name in enumerate(labels)},
        id2mask_class={str(i + 1): name for i, name in enumerate(mask_classes)},
    )


def square_mask(size: int = 16, value: int = 1) -> torch.Tensor:
    mask = torch.zeros(size, size, dtype=torch.long)
    mask[size // 4 : 3 * size // 4, size // 4 : 3 * size // 4] = value
    return mask


def saved_mask_pipeline(folder, **config):
    """`tiny_mask_pipeline()` with `config` entries (e.g. a stored default) registered, saved to `folder`."""
    pipe = tiny_mask_pipeline()
    if config:
        pipe.register_to_config(**config)
    pipe.save_pretrained(folder)
    return folder
