"""Noise schedules, samplers and the training objective.

The loss is kept apart from the network and the sampler (as in EDM / k-diffusion), so a
recipe change (prediction type, min-SNR weighting, rectified flow) is a config change.
Two objectives (`diffusion.objective`):

- `diffusion`: the DDPM forward process (`beta_schedule`), target by `prediction_type`, optional
  min-SNR-gamma weighting;
- `rectified_flow`: straight paths x_t = (1 - t) x_0 + t noise with the velocity noise - x_0 as target
  (SiT, SD3), t drawn logit-normal (SD3); the forward process is diffusers' `FlowMatchEulerDiscreteScheduler`
  and the saved sampler a stock DPM-Solver++ (or UniPC) in its flow-sigma form, which every medgen pipeline
  loop runs unchanged (it has `scale_model_input` and `init_noise_sigma`);
- `edm`: Karras et al. (2022) preconditioning: x = x_0 + sigma noise with ln(sigma) ~ N(P_mean, P_std), the UNet
  sees c_in(sigma) x at timestep c_noise(sigma) = ln(sigma) / 4, its output F gives the denoised
  D = c_skip(sigma) x + c_out(sigma) F, and the loss is EDM's (sigma^2 + sigma_data^2) / (sigma sigma_data)^2
  weighted MSE of D against x_0. The formulas are those of diffusers' EDM schedulers (their
  `precondition_inputs` / `precondition_noise` / `precondition_outputs`, `prediction_type: epsilon` being EDM's
  plain F), and the saved sampler is a stock `EDMDPMSolverMultistepScheduler`, whose `scale_model_input`,
  timesteps and `step` apply exactly these, so every medgen pipeline loop runs it unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    EDMDPMSolverMultistepScheduler,
    EDMEulerScheduler,
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
EDM_SAMPLERS = {"dpm": EDMDPMSolverMultistepScheduler}


def build_noise_scheduler(config: DiffusionConfig) -> DDPMScheduler | FlowMatchEulerDiscreteScheduler | EDMEulerScheduler:
    """The training-time forward process (for `edm`, the scheduler whose preconditioning the objective uses)."""
    if config.objective == "rectified_flow":
        return FlowMatchEulerDiscreteScheduler(num_train_timesteps=config.num_train_timesteps, shift=config.flow_shift)
    if config.objective == "edm":
        # EDM's sigma_min / sigma_max / rho = 7 Karras schedule (diffusers' defaults); "epsilon" is EDM's F
        return EDMEulerScheduler(
            sigma_data=config.edm_sigma_data, num_train_timesteps=config.num_train_timesteps, prediction_type="epsilon"
        )
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
    if isinstance(noise_scheduler, EDMEulerScheduler):
        if name not in EDM_SAMPLERS:
            raise ValueError(f"Sampler {name!r} has no EDM form; choose one of {', '.join(EDM_SAMPLERS)}.")
        config = noise_scheduler.config
        return EDM_SAMPLERS[name](
            sigma_min=config.sigma_min,
            sigma_max=config.sigma_max,
            sigma_data=config.sigma_data,
            sigma_schedule=config.sigma_schedule,
            num_train_timesteps=config.num_train_timesteps,
            prediction_type=config.prediction_type,
            rho=config.rho,
        )
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


class EDMObjective(DiffusionObjective):
    """`diffusion.objective: edm` (Karras et al. 2022). `sample_timesteps` returns the UNet's timesteps, c_noise =
    ln(sigma) / 4 as the EDM samplers pass them, `add_noise` the UNet's input c_in (x_0 + sigma noise), and `loss`
    EDM's weighted denoiser loss. Every coefficient comes from the scheduler (`EDMEulerScheduler`), the same
    code the saved `EDMDPMSolverMultistepScheduler` samples with."""

    def sigmas(self, timesteps: torch.Tensor) -> torch.Tensor:
        """sigma from the UNet timestep c_noise = ln(sigma) / 4 (the inverse of `precondition_noise`)."""
        return torch.exp(4 * timesteps.float()).view(-1, 1, 1, 1)

    def sample_timesteps(self, batch_size: int, device, generator: torch.Generator | None = None) -> torch.Tensor:
        log_sigma = self.config.edm_p_mean + self.config.edm_p_std * torch.randn(batch_size, device=device, generator=generator)
        return self.scheduler.precondition_noise(torch.exp(log_sigma))

    def noisy(self, clean: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """x = x_0 + sigma noise, the sample the sampler holds (before `scale_model_input`)."""
        return clean + self.sigmas(timesteps).to(clean.dtype) * noise

    def add_noise(self, clean: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        sigma = self.sigmas(timesteps).to(clean.dtype)
        return self.scheduler.precondition_inputs(clean + sigma * noise, sigma)

    def denoised(self, prediction: torch.Tensor, clean: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """D = c_skip x + c_out F: the x_0 estimate the sampler's `step` forms from the same UNet output."""
        sigma = self.sigmas(timesteps)
        return self.scheduler.precondition_outputs(self.noisy(clean, noise, timesteps).float(), prediction.float(), sigma)

    def loss(self, prediction: torch.Tensor, clean: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        sigma, sigma_data = self.sigmas(timesteps), self.config.edm_sigma_data
        weight = (sigma**2 + sigma_data**2) / (sigma * sigma_data) ** 2
        error = self.denoised(prediction, clean, noise, timesteps) - clean.float()
        return (weight * error**2).mean()


def build_objective(config: DiffusionConfig) -> DiffusionObjective:
    if config.objective == "rectified_flow":
        return RectifiedFlowObjective(config)
    if config.objective == "edm":
        return EDMObjective(config)
    return DiffusionObjective(config)
