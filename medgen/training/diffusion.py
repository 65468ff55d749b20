"""Noise schedules, samplers and the training objective.

The loss is kept apart from the network and the sampler (as in EDM / k-diffusion), so a
recipe change (prediction type, min-SNR weighting, rectified flow) is a config change.
Two objectives (`diffusion.objective`):

- `diffusion`: the DDPM forward process (`beta_schedule`), target by `prediction_type`, optional
  min-SNR-gamma weighting;
- `rectified_flow`: straight paths x_t = (1 - t) x_0 + t noise with the velocity noise - x_0 as target
  (SiT, SD3), t drawn logit-normal (SD3); the forward process is diffusers' `FlowMatchEulerDiscreteScheduler`
  and the saved sampler a stock DPM-Solver++ (or UniPC) in its flow-sigma form, which every medgen pipeline
  loop runs unchanged (it has `scale_model_input` and `init_noise_sigma`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    FlowMatchEulerDiscreteScheduler,
    UniPCMultistepScheduler,
)
from diffusers.training_utils import compute_snr

from medgen.config import DiffusionConfig

SAMPLERS = {
    "dpm": DPMSolverMultistepScheduler,
    "unipc": UniPCMultistepScheduler,
    "ddim": DDIMScheduler,
    "ddpm": DDPMScheduler,
}
FLOW_SAMPLERS = ("dpm", "unipc")


def build_noise_scheduler(config: DiffusionConfig) -> DDPMScheduler | FlowMatchEulerDiscreteScheduler:
    """The training-time forward process."""
    if config.objective == "rectified_flow":
        return FlowMatchEulerDiscreteScheduler(num_train_timesteps=config.num_train_timesteps, shift=config.flow_shift)
    return DDPMScheduler(
        num_train_timesteps=config.num_train_timesteps,
        beta_schedule=config.beta_schedule,
        beta_start=config.beta_start,
        beta_end=config.beta_end,
        prediction_type=config.prediction_type,
        clip_sample=False,
    )


def build_sampler(noise_scheduler, name: str = "dpm"):
    """A sampler for the same forward process (DPM-Solver++ by default: good images in 15 steps, see medgen.sampling)."""
    if name not in SAMPLERS:
        raise ValueError(f"Unknown sampler {name!r}; choose one of {', '.join(SAMPLERS)}.")
    if isinstance(noise_scheduler, FlowMatchEulerDiscreteScheduler):
        if name not in FLOW_SAMPLERS:
            raise ValueError(f"Sampler {name!r} has no flow-matching form; choose one of {', '.join(FLOW_SAMPLERS)}.")
        config = noise_scheduler.config
        return SAMPLERS[name](
            num_train_timesteps=config.num_train_timesteps,
            use_flow_sigmas=True,
            prediction_type="flow_prediction",
            flow_shift=config.shift,
        )
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


class DiffusionObjective:
    """`diffusion.objective: diffusion`: uniform integer timesteps, DDPM noising, `diffusion_loss`."""

    def __init__(self, config: DiffusionConfig):
        self.config = config
        self.scheduler = build_noise_scheduler(config)

    def sample_timesteps(self, batch_size: int, device, generator: torch.Generator | None = None) -> torch.Tensor:
        return torch.randint(0, self.config.num_train_timesteps, (batch_size,), device=device, generator=generator)

    def add_noise(self, clean: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        return self.scheduler.add_noise(clean, noise, timesteps)

    def loss(self, prediction: torch.Tensor, clean: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        return diffusion_loss(prediction, clean, noise, timesteps, self.scheduler, self.config.snr_gamma)


class RectifiedFlowObjective(DiffusionObjective):
    """`diffusion.objective: rectified_flow`: t ~ logit-normal(0, 1), shifted by `flow_shift`, the UNet sees
    t * num_train_timesteps (the timesteps of the flow samplers), target noise - x_0, plain MSE (min-SNR is a
    weighting of the DDPM objective and does not apply)."""

    def sigmas(self, timesteps: torch.Tensor) -> torch.Tensor:
        return (timesteps.float() / self.config.num_train_timesteps).view(-1, 1, 1, 1)

    def sample_timesteps(self, batch_size: int, device, generator: torch.Generator | None = None) -> torch.Tensor:
        sigma = torch.sigmoid(torch.randn(batch_size, device=device, generator=generator))
        shift = self.config.flow_shift
        sigma = shift * sigma / (1 + (shift - 1) * sigma)
        return sigma * self.config.num_train_timesteps

    def add_noise(self, clean: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        sigma = self.sigmas(timesteps).to(clean.dtype)
        return (1 - sigma) * clean + sigma * noise

    def loss(self, prediction: torch.Tensor, clean: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(prediction.float(), (noise - clean).float())


def build_objective(config: DiffusionConfig) -> DiffusionObjective:
    if config.objective == "rectified_flow":
        return RectifiedFlowObjective(config)
    return DiffusionObjective(config)
