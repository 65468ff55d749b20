"""Noise schedules, samplers and the diffusion loss.

The loss is kept apart from the network and the sampler (as in EDM / k-diffusion), so a
recipe change (prediction type, min-SNR weighting) is a config change.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler, UniPCMultistepScheduler
from diffusers.training_utils import compute_snr

from medgen.config import DiffusionConfig

SAMPLERS = {
    "dpm": DPMSolverMultistepScheduler,
    "unipc": UniPCMultistepScheduler,
    "ddim": DDIMScheduler,
    "ddpm": DDPMScheduler,
}


def build_noise_scheduler(config: DiffusionConfig) -> DDPMScheduler:
    """The training-time forward process."""
    return DDPMScheduler(
        num_train_timesteps=config.num_train_timesteps,
        beta_schedule=config.beta_schedule,
        beta_start=config.beta_start,
        beta_end=config.beta_end,
        prediction_type=config.prediction_type,
        clip_sample=False,
    )


def build_sampler(noise_scheduler: DDPMScheduler, name: str = "dpm"):
    """A sampler for the same forward process (DPM-Solver++ by default: good images in 15 steps, see medgen.sampling)."""
    if name not in SAMPLERS:
        raise ValueError(f"Unknown sampler {name!r}; choose one of {', '.join(SAMPLERS)}.")
    return SAMPLERS[name].from_config(noise_scheduler.config)


def diffusion_loss(
    model_output: torch.Tensor,
    clean: torch.Tensor,
    noise: torch.Tensor,
    timesteps: torch.Tensor,
    noise_scheduler: DDPMScheduler,
    snr_gamma: float | None = None,
) -> torch.Tensor:
    """MSE against the target of the scheduler's prediction type, optionally min-SNR-gamma weighted per sample."""
    prediction_type = noise_scheduler.config.prediction_type
    if prediction_type == "epsilon":
        target = noise
    elif prediction_type == "v_prediction":
        target = noise_scheduler.get_velocity(clean, noise, timesteps)
    else:
        target = clean
    per_sample = F.mse_loss(model_output.float(), target.float(), reduction="none").mean(dim=(1, 2, 3))
    if snr_gamma is None:
        return per_sample.mean()
    # Min-SNR weighting (Hang et al., 2023): cap the weight of low-noise steps, expressed for each target.
    snr = compute_snr(noise_scheduler, timesteps)
    clipped = torch.clamp(snr, max=snr_gamma)
    if prediction_type == "epsilon":
        weights = clipped / snr
    elif prediction_type == "v_prediction":
        weights = clipped / (snr + 1)
    else:
        weights = clipped
    return (per_sample * weights).mean()
