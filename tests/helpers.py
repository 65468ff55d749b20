"""Tiny seeded pipelines for fast tests (a few thousand parameters, 16 px)."""

from __future__ import annotations

import torch
from diffusers import AutoencoderKL, DDPMScheduler, DPMSolverMultistepScheduler, UNet2DConditionModel, UNet2DModel

from medgen.pipelines import LabelConditionedPipeline, UnconditionalPipeline


def tiny_vae(seed: int = 0) -> AutoencoderKL:
    torch.manual_seed(seed)
    return AutoencoderKL(
        in_channels=1, out_channels=1, latent_channels=4, block_out_channels=(8, 16),
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
        layers_per_block=1, norm_num_groups=8, sample_size=16,
    )


def tiny_label_unet(num_labels: int, sample_size: int = 16, in_channels: int = 1, seed: int = 0) -> UNet2DConditionModel:
    torch.manual_seed(seed)
    return UNet2DConditionModel(
        sample_size=sample_size, in_channels=in_channels, out_channels=in_channels,
        block_out_channels=(8, 16), layers_per_block=1, norm_num_groups=8,
        down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
        mid_block_type="UNetMidBlock2D", attention_head_dim=8,
        class_embed_type="projection", projection_class_embeddings_input_dim=num_labels + 1,
    )


def tiny_label_pipeline(
    labels=("normal", "pneumonia"), multi_label: bool = False, latent: bool = False, seed: int = 0,
    default_guidance_scale: float | None = None, default_guidance_interval=None, default_num_inference_steps=None,
):
    vae = tiny_vae(seed) if latent else None
    unet = tiny_label_unet(len(labels), sample_size=8 if latent else 16, in_channels=4 if latent else 1, seed=seed)
    scheduler = DPMSolverMultistepScheduler.from_config(DDPMScheduler(num_train_timesteps=100).config)
    return LabelConditionedPipeline(
        unet=unet, scheduler=scheduler, vae=vae,
        id2label={str(i): name for i, name in enumerate(labels)}, multi_label=multi_label,
        default_guidance_scale=default_guidance_scale, default_guidance_interval=default_guidance_interval,
        default_num_inference_steps=default_num_inference_steps,
    )


def tiny_unconditional_pipeline(seed: int = 0) -> UnconditionalPipeline:
    torch.manual_seed(seed)
    unet = UNet2DModel(
        sample_size=16, in_channels=1, out_channels=1, block_out_channels=(8, 16), layers_per_block=1,
        norm_num_groups=8, down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
    )
    scheduler = DPMSolverMultistepScheduler.from_config(DDPMScheduler(num_train_timesteps=100).config)
    return UnconditionalPipeline(unet=unet, scheduler=scheduler)


def tiny_text_pipeline(seed: int = 0):
    """A latent text-to-image pipeline around the real offline MiniLM encoder (8x8 latents, 16 px images)."""
    from medgen.pipelines import TextToImagePipeline
    from medgen.text_encoders import OFFLINE_TEXT_ENCODER, load_text_encoder

    tokenizer, encoder = load_text_encoder(OFFLINE_TEXT_ENCODER)
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, block_out_channels=(8, 16), layers_per_block=1,
        norm_num_groups=8, attention_head_dim=8, cross_attention_dim=encoder.config.hidden_size,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
    )
    return TextToImagePipeline(
        vae=tiny_vae(seed), text_encoder=encoder, tokenizer=tokenizer, unet=unet,
        scheduler=DDPMScheduler(num_train_timesteps=100), max_length=16,
    )
