"""The autoencoder stage: train a diffusers `AutoencoderKL` on the training images, scale its latents, report quality.

Latent diffusion (Rombach et al. 2022) spends the expensive denoising on a small latent grid; the
autoencoder is trained once, separately, with a reconstruction loss and a weak KL pull towards a
unit Gaussian, so that latents stay smooth enough to denoise. Two things make its output usable by
the diffusion stage and by the label/unconditional pipelines (`vae=` argument):

- `scaling_factor` = 1 / std of the latents over training images, stored in the VAE config, so the
  diffusion model sees unit-variance inputs whatever the autoencoder learned;
- a plain `save_pretrained` folder (safetensors), loadable with `AutoencoderKL.from_pretrained`.

Reconstruction quality (PSNR, SSIM) is measured on images held out from autoencoder training and
written with a side-by-side PNG into the autoencoder folder.

With `vae.adversarial_weight` > 0 a small PatchGAN discriminator (MONAI's `PatchDiscriminator` and
`PatchAdversarialLoss`, trained from scratch: no downloaded weights) learns to tell real images from
reconstructions, and after `vae.discriminator_start_step` warm-up steps the autoencoder is also trained to fool
it, which sharpens textures an L1/SSIM loss leaves blurred (as MONAI's 2D LDM and Stable Diffusion train their
autoencoders). The discriminator is checkpointed and resumed with the autoencoder and never saved beside it.

The stage checkpoints (accelerate state: autoencoder, discriminator, optimizers, schedule, RNG) every
`checkpointing_steps` into `<autoencoder folder>/checkpoints`; a run stopped during it continues from the newest
one when started again with the same settings (for `model.kind: vae`, `--resume_from_checkpoint latest`).

    accelerate launch medgen/train.py --config train_configs/vae_pneumoniamnist.yaml --output_dir outputs/vae
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL

from medgen.config import TrainConfig, VAEConfig, config_to_dict, save_config
from medgen.training import checkpoints
from medgen.training.divergence import DivergenceGuard, current_learning_rate

AUTOENCODER_SUBFOLDER = "autoencoder"
METRICS_FILE = "reconstruction_metrics.json"
RECONSTRUCTIONS_FILE = "reconstructions.png"


def build_autoencoder(config: VAEConfig, channels: int = 1, resolution: int = 32) -> AutoencoderKL:
    """A fresh `AutoencoderKL` with `len(block_out_channels) - 1` downsamplings and `config.latent_channels` latents."""
    levels = len(config.block_out_channels)
    return AutoencoderKL(
        in_channels=channels,
        out_channels=channels,
        latent_channels=config.latent_channels,
        block_out_channels=tuple(config.block_out_channels),
        down_block_types=("DownEncoderBlock2D",) * levels,
        up_block_types=("UpDecoderBlock2D",) * levels,
        layers_per_block=config.layers_per_block,
        norm_num_groups=config.norm_num_groups,
        sample_size=resolution,
        mid_block_add_attention=config.mid_block_attention,
    )


def downsampling_factor(vae: AutoencoderKL) -> int:
    return 2 ** (len(vae.config.block_out_channels) - 1)


def to_unit_range(pixels: torch.Tensor) -> torch.Tensor:
    """[-1, 1] (model space) -> [0, 1] (metric and image space)."""
    return (pixels.float() / 2 + 0.5).clamp(0, 1)


def _ssim(prediction: torch.Tensor, target: torch.Tensor, reduction: str = "elementwise_mean") -> torch.Tensor:
    from torchmetrics.functional.image import structural_similarity_index_measure

    # the usual 11-px Gaussian window does not fit tiny images; use the largest odd window that does
    side = min(prediction.shape[-2:])
    kernel = max(3, min(11, side - 1 if side % 2 == 0 else side))
    return structural_similarity_index_measure(
        prediction, target, data_range=1.0, kernel_size=kernel, sigma=1.5 * kernel / 11, reduction=reduction
    )


def build_discriminator(config: VAEConfig, channels: int = 1) -> torch.nn.Module:
    """A fresh PatchGAN discriminator (MONAI `PatchDiscriminator`): one real/fake logit per image patch."""
    from monai.networks.nets import PatchDiscriminator

    return PatchDiscriminator(
        spatial_dims=2,
        num_layers_d=config.discriminator_layers,
        channels=config.discriminator_channels,
        in_channels=channels,
        out_channels=1,
    )


def adversarial_criterion(config: VAEConfig) -> torch.nn.Module:
    from monai.losses import PatchAdversarialLoss

    return PatchAdversarialLoss(criterion=config.adversarial_loss)


def discriminator_loss(
    discriminator: torch.nn.Module, real: torch.Tensor, fake: torch.Tensor, criterion: torch.nn.Module
) -> torch.Tensor:
    """Mean of the discriminator's losses on real images (target real) and reconstructions (target fake).

    One forward pass over both halves: batch norm sees real and fake together (it cannot tell them apart by
    batch statistics), and a wrapped (DDP) discriminator runs one forward per backward."""
    logits = discriminator(torch.cat([real, fake.detach()]).contiguous())[-1].float()
    real_logits, fake_logits = logits.chunk(2)
    real_loss = criterion(real_logits, target_is_real=True, for_discriminator=True)
    fake_loss = criterion(fake_logits, target_is_real=False, for_discriminator=True)
    return (real_loss + fake_loss) / 2


def adversarial_active(config: VAEConfig, step: int) -> bool:
    """Whether update `step` (0-based) uses the adversarial loss: on, after the warm-up, when its weight is > 0."""
    return config.adversarial_weight > 0 and step >= config.discriminator_start_step


def autoencoder_loss(
    vae: AutoencoderKL, pixels: torch.Tensor, config: VAEConfig, perceptual: torch.nn.Module | None = None
) -> tuple[torch.Tensor, dict[str, float]]:
    """Reconstruction (L1 or MSE on [-1, 1] pixels) + `kl_weight` * KL + optional `ssim_weight` * (1 - SSIM)
    + optional `perceptual_weight` * `perceptual(reconstruction, pixels)` (an `InceptionPerceptualLoss`).

    The KL term is summed over latent elements and averaged over images (as in the LDM autoencoders), so
    `kl_weight` around 1e-6 keeps it a gentle regulariser rather than a blur."""
    loss, parts, _ = autoencoder_loss_and_reconstruction(vae, pixels, config, perceptual)
    return loss, parts


def autoencoder_loss_and_reconstruction(
    vae: AutoencoderKL,
    pixels: torch.Tensor,
    config: VAEConfig,
    perceptual: torch.nn.Module | None = None,
    discriminator: torch.nn.Module | None = None,
    criterion: torch.nn.Module | None = None,
) -> tuple[torch.Tensor, dict[str, float], torch.Tensor]:
    """`autoencoder_loss`, plus `adversarial_weight` * the generator's adversarial loss when a `discriminator`
    (and its `criterion`) is given; also returns the reconstruction, which the discriminator then learns from."""
    posterior = vae.encode(pixels).latent_dist
    reconstruction = vae.decode(posterior.sample()).sample
    if config.reconstruction_loss == "l1":
        reconstruction_loss = F.l1_loss(reconstruction.float(), pixels.float())
    else:
        reconstruction_loss = F.mse_loss(reconstruction.float(), pixels.float())
    kl_loss = posterior.kl().mean()
    loss = reconstruction_loss + config.kl_weight * kl_loss
    parts = {"reconstruction": reconstruction_loss.item(), "kl": kl_loss.item()}
    if config.ssim_weight > 0:
        ssim_loss = 1.0 - _ssim(to_unit_range(reconstruction), to_unit_range(pixels))
        loss = loss + config.ssim_weight * ssim_loss
        parts["ssim_loss"] = ssim_loss.item()
    if config.perceptual_weight > 0:
        if perceptual is None:
            raise ValueError("vae.perceptual_weight > 0 but no perceptual network was given (InceptionPerceptualLoss)")
        perceptual_loss = perceptual(reconstruction, pixels)
        loss = loss + config.perceptual_weight * perceptual_loss
        parts["perceptual_loss"] = perceptual_loss.item()
    if discriminator is not None:
        logits = discriminator(reconstruction.contiguous())[-1].float()
        generator_loss = criterion(logits, target_is_real=True, for_discriminator=False)
        loss = loss + config.adversarial_weight * generator_loss
        parts["generator_adversarial"] = generator_loss.item()
    return loss, parts, reconstruction


@torch.no_grad()
def latent_scaling_factor(vae: AutoencoderKL, batches: Iterable[torch.Tensor]) -> float:
    """1 / std of sampled latents over `batches` of pixels: makes the diffusion model's input unit-variance."""
    latents = [vae.encode(pixels.to(vae.device, vae.dtype)).latent_dist.sample().float().cpu() for pixels in batches]
    if not latents:
        raise ValueError("Cannot compute the latent scaling factor from zero images.")
    std = torch.cat(latents).flatten().std().item()
    if not math.isfinite(std) or std <= 0:
        raise ValueError(f"The autoencoder's latents have standard deviation {std}; the autoencoder did not train.")
    return 1.0 / std


@torch.no_grad()
def reconstruct(vae: AutoencoderKL, pixels: torch.Tensor) -> torch.Tensor:
    """Deterministic reconstruction (posterior mode) of `[-1, 1]` pixels, returned in `[-1, 1]`."""
    pixels = pixels.to(vae.device, vae.dtype)
    return vae.decode(vae.encode(pixels).latent_dist.mode()).sample.clamp(-1, 1)


@torch.no_grad()
def reconstruction_metrics(vae: AutoencoderKL, batches: Iterable[torch.Tensor]) -> dict[str, float]:
    """Mean PSNR (dB) and SSIM of reconstructions over `batches` of `[-1, 1]` pixels, both on `[0, 1]` images."""
    from torchmetrics.functional.image import peak_signal_noise_ratio

    psnr, ssim, count = [], [], 0
    for pixels in batches:
        original = to_unit_range(pixels).cpu()
        reconstruction = to_unit_range(reconstruct(vae, pixels)).cpu()
        psnr.append(peak_signal_noise_ratio(reconstruction, original, data_range=1.0, reduction="none", dim=(1, 2, 3)))
        ssim.append(_ssim(reconstruction, original, reduction="none"))
        count += len(pixels)
    if count == 0:
        raise ValueError("No held-out images to measure reconstruction quality on.")
    return {"psnr": torch.cat(psnr).mean().item(), "ssim": torch.cat(ssim).mean().item(), "num_images": count}


def save_reconstruction_grid(originals: torch.Tensor, reconstructions: torch.Tensor, path: str | Path) -> Path:
    """Two rows (originals above reconstructions) of `[-1, 1]` images as a grayscale PNG."""
    from PIL import Image

    rows = []
    for images in (originals, reconstructions):
        tiles = (to_unit_range(images).mean(dim=1).cpu().numpy() * 255).round().astype(np.uint8)
        padded = [np.pad(tile, 1) for tile in tiles]
        rows.append(np.concatenate(padded, axis=1))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.concatenate(rows, axis=0), mode="L").save(path)
    return path


def split_holdout(num_images: int, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Seeded (train, held-out) index lists; at least one image each side when there are two or more."""
    if num_images < 2:
        raise ValueError(f"The autoencoder stage needs at least 2 images (one held out), the dataset has {num_images}.")
    order = torch.randperm(num_images, generator=torch.Generator().manual_seed(seed)).tolist()
    num_holdout = min(num_images - 1, max(1, round(num_images * fraction)))
    return sorted(order[num_holdout:]), sorted(order[:num_holdout])


def random_crop(pixels: torch.Tensor, size: int | None, generator: torch.Generator) -> torch.Tensor:
    """One random `size` x `size` window of a batch (the whole batch when `size` is None or not smaller)."""
    height, width = pixels.shape[-2:]
    if size is None or (size >= height and size >= width):
        return pixels
    top = int(torch.randint(0, height - size + 1, (1,), generator=generator))
    left = int(torch.randint(0, width - size + 1, (1,), generator=generator))
    return pixels[..., top : top + size, left : left + size]


SOURCE_COLUMN = "source"


def combine_sources(data: Any, extra_data: list[Any]) -> tuple[Any, list[str]]:
    """The pixels of `data` and each of `extra_data` in one `datasets.Dataset` with a `source` index column,
    and the source names (each set's folder or file name), so reconstruction quality is reported per set."""
    from datasets import concatenate_datasets

    sources = [data, *extra_data]
    names = [Path(source.config.path).name or str(source.config.path) for source in sources]
    parts = []
    for index, source in enumerate(sources):
        pixels = source.dataset.select_columns(["pixel_values"])
        parts.append(pixels.add_column(SOURCE_COLUMN, [index] * len(pixels)))
    return (parts[0] if len(parts) == 1 else concatenate_datasets(parts)), names


def _pixel_batches(dataset, batch_size: int, limit: int | None = None):
    total = len(dataset) if limit is None else min(limit, len(dataset))
    for start in range(0, total, batch_size):
        yield dataset[start : min(start + batch_size, total)]["pixel_values"]


def train_autoencoder(config: TrainConfig, data: Any, accelerator, extra_data: list[Any] | None = None) -> Path:
    """
    Trains the autoencoder on `data` (a `MedicalImageDataset`) and any `extra_data` sets, sets its latent
    scaling factor, saves it and its reconstruction report (overall and per set), and returns the folder:
    `output_dir` itself for `model.kind: vae`, else `output_dir/autoencoder` (the first stage of a text run).
    """
    from tqdm.auto import tqdm

    vae_config = config.vae
    output_dir = Path(config.output_dir)
    vae_dir = output_dir if config.model.kind == "vae" else output_dir / AUTOENCODER_SUBFOLDER
    factor = 2 ** (len(vae_config.block_out_channels) - 1)
    if config.data.resolution % factor:
        raise ValueError(
            f"data.resolution {config.data.resolution} must be divisible by the autoencoder's downsampling factor "
            f"{factor} (vae.block_out_channels has {len(vae_config.block_out_channels)} levels)."
        )
    if _finished_stage(vae_dir, config):
        accelerator.print(f"Autoencoder: reusing the one already trained with this config in {vae_dir.resolve()}")
        return vae_dir
    pixels, source_names = combine_sources(data, extra_data or [])
    train_indices, holdout_indices = split_holdout(len(pixels), vae_config.holdout_fraction, config.seed)
    train_set, holdout_set = pixels.select(train_indices), pixels.select(holdout_indices)

    train_side = min(vae_config.crop_size or config.data.resolution, config.data.resolution)
    if vae_config.adversarial_weight > 0 and train_side < vae_config.discriminator_min_side():
        raise ValueError(
            f"The autoencoder trains on {train_side} px images (vae.crop_size / data.resolution), too small for a "
            f"discriminator with vae.discriminator_layers {vae_config.discriminator_layers}: it needs at least "
            f"{vae_config.discriminator_min_side()} px (fewer layers or larger images)."
        )
    checkpoint = resumable_checkpoint(vae_dir, config)
    run_id = checkpoints.read_state(checkpoint).get("run_id") if checkpoint else None
    if run_id is None:
        from medgen.training.run_folder import new_run_id

        run_id = new_run_id()

    vae = build_autoencoder(vae_config, config.data.channels, config.data.resolution)
    if vae_config.init_from and checkpoint is None:  # a resumed run restores its own weights
        load_initial_autoencoder(vae, vae_config.init_from)
        accelerator.print(f"Autoencoder: starting from the weights of {vae_config.init_from}")
    elif checkpoint is not None:  # the weights come back with the state; the scaling factor is config, not state
        vae.register_to_config(scaling_factor=checkpoint_scaling_factor(checkpoint, vae_config, vae.config.scaling_factor))
    if vae_config.train_decoder_only:  # the latent space stays the trained one's
        for part in (vae.encoder, vae.quant_conv):
            if part is not None:
                part.requires_grad_(False)
    trainable = [parameter for parameter in vae.parameters() if parameter.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=vae_config.learning_rate, weight_decay=0.0)
    from diffusers.optimization import get_scheduler

    # accelerate steps a prepared scheduler once per process per update, hence the scaling by num_processes
    lr_scheduler = get_scheduler(
        vae_config.lr_scheduler,
        optimizer,
        num_warmup_steps=vae_config.lr_warmup_steps * accelerator.num_processes,
        num_training_steps=vae_config.max_train_steps * accelerator.num_processes,
    )
    dataloader = torch.utils.data.DataLoader(
        train_set.select_columns(["pixel_values"]),  # rows read as float tensors (the data's read transform)
        batch_size=vae_config.train_batch_size,
        shuffle=True,
        drop_last=len(train_set) >= vae_config.train_batch_size,
        num_workers=config.dataloader_num_workers,
    )
    adversarial_parts = []
    discriminator = discriminator_optimizer = criterion = None
    if vae_config.adversarial_weight > 0:
        discriminator = build_discriminator(vae_config, config.data.channels)
        discriminator_optimizer = torch.optim.AdamW(
            discriminator.parameters(), lr=vae_config.discriminator_learning_rate, betas=(0.5, 0.999), weight_decay=0.0
        )
        criterion = adversarial_criterion(vae_config)
        adversarial_parts = [discriminator, discriminator_optimizer]
    # one prepare call in a fixed order: a checkpoint restores models and optimizers in the order they were prepared
    vae, optimizer, dataloader, lr_scheduler, *adversarial_parts = accelerator.prepare(
        vae, optimizer, dataloader, lr_scheduler, *adversarial_parts
    )
    if discriminator is not None:
        discriminator, discriminator_optimizer = adversarial_parts
    perceptual = None
    if vae_config.perceptual_weight > 0:
        from medgen.training.perceptual import InceptionPerceptualLoss

        perceptual = InceptionPerceptualLoss().to(accelerator.device)

    step, start = 0, time.perf_counter()
    guard = DivergenceGuard(
        accelerator, "vae.learning_rate", stage="autoencoder training", remedies=("a smaller optim.max_grad_norm",)
    )
    if checkpoint is not None:
        from medgen.training.optim import restart_schedule

        accelerator.load_state(str(checkpoint))
        step, guard.last_checkpoint = checkpoints.read_state(checkpoint)["step"], checkpoint
        # the schedule of this config at the restored step (a longer vae.max_train_steps extends the run)
        learning_rate = restart_schedule(lr_scheduler, optimizer, vae_config.learning_rate)
        accelerator.print(
            f"Autoencoder: resuming from {checkpoint} at step {step} of {vae_config.max_train_steps}, "
            f"learning rate {learning_rate:.3g}."
        )
    resumed_step = step

    # 1. Train: reconstruction + KL (+ SSIM) (+ adversarial after the warm-up, alternating with the discriminator)
    progress = tqdm(
        total=vae_config.max_train_steps, initial=step, desc="autoencoder", disable=not accelerator.is_local_main_process
    )
    steps_per_epoch = len(dataloader)
    epoch, resume_batches = divmod(step, steps_per_epoch)
    vae.train()
    if discriminator is not None:
        discriminator.train()
    try:
        while step < vae_config.max_train_steps:
            dataloader.set_epoch(epoch)  # with accelerate's seedable sampler the order is a function of (seed, epoch)
            batches = accelerator.skip_first_batches(dataloader, resume_batches) if resume_batches else dataloader
            resume_batches = 0
            for batch in batches:
                # randomness drawn from (seed, step, process) alone, so a resumed run replays it exactly
                step_seed = config.seed * 2**40 + step * 1024 + accelerator.process_index
                torch.manual_seed(step_seed)  # the posterior sample draws from the global RNG
                crops = torch.Generator().manual_seed(step_seed)
                batch_pixels = random_crop(batch["pixel_values"], vae_config.crop_size, crops)
                adversarial_now = discriminator is not None and adversarial_active(vae_config, step)
                loss, parts, reconstruction = autoencoder_loss_and_reconstruction(
                    vae, batch_pixels, vae_config, perceptual,
                    discriminator if adversarial_now else None, criterion,
                )
                guard.observe_loss(loss)
                accelerator.backward(loss)
                grad_norm = accelerator.clip_grad_norm_(trainable, config.optim.max_grad_norm)
                # before the update: a diverged autoencoder is never saved or handed to the diffusion stage
                guard.check(step + 1, current_learning_rate(optimizer), grad_norm)
                optimizer.step()
                lr_scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                if adversarial_now:
                    # 2. the discriminator learns from this batch's reconstructions (the autoencoder's
                    # adversarial term also left gradients on it: cleared first)
                    discriminator_optimizer.zero_grad(set_to_none=True)
                    d_loss = discriminator_loss(discriminator, batch_pixels, reconstruction, criterion)
                    guard.observe_loss(d_loss)
                    accelerator.backward(d_loss)
                    d_norm = accelerator.clip_grad_norm_(discriminator.parameters(), config.optim.max_grad_norm)
                    guard.check(step + 1, vae_config.discriminator_learning_rate, d_norm)
                    discriminator_optimizer.step()
                    discriminator_optimizer.zero_grad(set_to_none=True)
                    parts["discriminator"] = d_loss.item()
                step += 1
                progress.update(1)
                if step % config.log_every_steps == 0 or step == vae_config.max_train_steps:
                    parts["lr"] = current_learning_rate(optimizer)
                    progress.set_postfix({name: f"{value:.4g}" for name, value in parts.items()})
                    accelerator.log({f"autoencoder/{name}": value for name, value in parts.items()}, step=step)
                if step % config.checkpointing_steps == 0 or step == vae_config.max_train_steps:
                    guard.last_checkpoint = save_stage_checkpoint(
                        accelerator, config, vae_dir, step, run_id, accelerator.unwrap_model(vae).config.scaling_factor
                    )
                if step >= vae_config.max_train_steps:
                    break
            epoch += 1
    finally:
        progress.close()
    accelerator.wait_for_everyone()

    # 2. Scale latents to unit variance, measure held-out reconstructions, save (main process only)
    vae = accelerator.unwrap_model(vae).eval()
    # forget the autoencoder's model/optimizer/dataloader: the diffusion stage's checkpoints must hold only its own
    accelerator.free_memory()
    if accelerator.is_main_process:
        train_pixels = _pixel_batches(train_set, vae_config.train_batch_size, vae_config.scaling_images)
        if not vae_config.train_decoder_only:  # a frozen encoder keeps the scaling factor its latents were trained at
            vae.register_to_config(scaling_factor=latent_scaling_factor(vae, train_pixels))
        holdout = holdout_set
        metrics = reconstruction_metrics(vae, _pixel_batches(holdout, vae_config.train_batch_size))
        if len(source_names) > 1:
            sources = np.asarray(holdout_set[SOURCE_COLUMN])
            metrics["per_source"] = {
                name: reconstruction_metrics(
                    vae,
                    _pixel_batches(holdout.select(np.flatnonzero(sources == index).tolist()), vae_config.train_batch_size),
                )
                for index, name in enumerate(source_names)
                if (sources == index).any()
            }
        metrics.update(
            scaling_factor=vae.config.scaling_factor,
            train_steps=step,
            resumed_from_step=resumed_step,
            adversarial_weight=vae_config.adversarial_weight,
            train_images=len(train_set),
            downsampling_factor=factor,
            latent_channels=vae_config.latent_channels,
            train_seconds=round(time.perf_counter() - start, 1),
        )
        shown = holdout[: min(8, len(holdout))]["pixel_values"]
        vae.save_pretrained(vae_dir, safe_serialization=True)
        save_reconstruction_grid(shown, reconstruct(vae, shown), vae_dir / RECONSTRUCTIONS_FILE)
        (vae_dir / METRICS_FILE).write_text(json.dumps(metrics, indent=2) + "\n")
        save_config(config, vae_dir / "training_config.yaml")
        accelerator.print(
            f"Autoencoder: held-out PSNR {metrics['psnr']:.2f} dB, SSIM {metrics['ssim']:.3f} on {metrics['num_images']} "
            f"images; scaling factor {metrics['scaling_factor']:.4f}. Saved to {vae_dir.resolve()}"
        )
        for name, values in metrics.get("per_source", {}).items():
            accelerator.print(f"  {name}: PSNR {values['psnr']:.2f} dB, SSIM {values['ssim']:.3f} on {values['num_images']} images")
    accelerator.wait_for_everyone()
    return vae_dir


STAGE_KEYS = ("data", "extra_data", "vae", "seed")


def save_stage_checkpoint(
    accelerator, config: TrainConfig, vae_dir: Path, step: int, run_id: str, scaling_factor: float
) -> Path:
    """The autoencoder stage's accelerate state (autoencoder, discriminator, their optimizers, the schedule, data
    order and RNG) in `vae_dir/checkpoints/checkpoint-<step>`, written to a temporary folder and renamed when
    complete; older ones beyond `checkpoints_total_limit` are removed. Returns the folder on every process.
    `scaling_factor` goes into the state file: a decoder-only run keeps its starting autoencoder's, which the
    accelerate state (weights only) does not hold."""
    temporary = checkpoints.temporary_path(vae_dir, step)
    if accelerator.is_main_process:
        checkpoints.clear(temporary)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(temporary), safe_serialization=True)
    if accelerator.is_main_process:
        save_config(config, temporary / "training_config.yaml")
        checkpoints.finalize(
            temporary, step, run_id, stage="autoencoder", max_train_steps=config.vae.max_train_steps,
            scaling_factor=scaling_factor,
        )
        checkpoints.prune(vae_dir, config.checkpoints_total_limit, run_id)
    accelerator.wait_for_everyone()
    return checkpoints.checkpoint_dir(vae_dir) / f"checkpoint-{step}"


def resumable_checkpoint(vae_dir: Path, config: TrainConfig) -> Path | None:
    """The newest autoencoder checkpoint in `vae_dir` (None when there is none). Refuses one written with other
    data, autoencoder settings or seed (a longer `vae.max_train_steps` extends the run and is allowed)."""
    import yaml

    saved = checkpoints.list_checkpoints(vae_dir)
    if not saved:
        return None
    newest = saved[-1]
    state = checkpoints.read_state(newest)
    if state.get("stage") != "autoencoder":
        raise ValueError(
            f"{newest} is not an autoencoder checkpoint (stage {state.get('stage')!r}); the autoencoder stage cannot "
            f"resume from it. Use another output_dir or start again with --overwrite_output_dir."
        )
    earlier = yaml.safe_load((newest / "training_config.yaml").read_text()) or {}
    current = config_to_dict(config)
    changed = sorted(
        name
        for key in STAGE_KEYS
        for name in _changed_settings(key, earlier.get(key), current[key])
        if name not in RESUMABLE_CHANGES and not name.endswith(".cache_dir")
    )
    if changed:
        raise ValueError(
            f"{newest} was written by an autoencoder run with other settings ({', '.join(changed[:5])}); resuming "
            f"would mix two runs. Resume with the settings it was trained with (its training_config.yaml), or start "
            f"again with --overwrite_output_dir (removes the earlier run) or another output_dir."
        )
    return newest


# a longer run extends the schedule; where the data cache lives changes nothing that was learned
RESUMABLE_CHANGES = ("vae.max_train_steps",)


def _changed_settings(name: str, earlier: Any, current: Any) -> list[str]:
    """Dotted names of the settings that differ between two plain config values."""
    if isinstance(earlier, dict) and isinstance(current, dict):
        return [
            changed
            for key in sorted(set(earlier) | set(current), key=str)
            for changed in _changed_settings(f"{name}.{key}", earlier.get(key), current.get(key))
        ]
    if isinstance(earlier, list) and isinstance(current, list) and len(earlier) == len(current):
        if all(isinstance(item, dict) for item in (*earlier, *current)):
            return [
                changed
                for index, (a, b) in enumerate(zip(earlier, current))
                for changed in _changed_settings(f"{name}[{index}]", a, b)
            ]
    return [] if earlier == current else [name]


def _finished_stage(vae_dir: Path, config: TrainConfig) -> bool:
    """True when `vae_dir` holds an autoencoder finished with the same data, autoencoder settings and seed, e.g.
    when a text run is resumed: retraining would change the latent space the saved UNet checkpoints learned."""
    import yaml

    saved_config = vae_dir / "training_config.yaml"
    if not ((vae_dir / METRICS_FILE).is_file() and (vae_dir / "config.json").is_file() and saved_config.is_file()):
        return False
    try:
        saved = yaml.safe_load(saved_config.read_text()) or {}
    except yaml.YAMLError:
        return False
    current = config_to_dict(config)
    return all(saved.get(key) == current[key] for key in ("data", "extra_data", "vae", "seed"))


def checkpoint_scaling_factor(checkpoint: Path, vae_config: VAEConfig, default: float) -> float:
    """The scaling factor a resumed autoencoder run carries on with: the one its checkpoint recorded; for a
    checkpoint written before the state file held it, the starting autoencoder's (`vae.init_from`: a decoder-only
    run must keep it) or, without one, `default` (a full run measures its own at the end)."""
    recorded = checkpoints.read_state(checkpoint).get("scaling_factor")
    if recorded is not None:
        return float(recorded)
    return initial_autoencoder(vae_config.init_from).config.scaling_factor if vae_config.init_from else default


def initial_autoencoder(init_from: str) -> AutoencoderKL:
    """The trained autoencoder `vae.init_from` names: a folder, a pipeline folder with `vae/`, or a built-in
    pipeline's name; a ValueError naming it when there is none."""
    from medgen.pipelines.locate import BUILTIN_PIPELINES, builtin_pipeline_path

    source = Path(init_from).expanduser()
    if not source.exists() and init_from.lower() in BUILTIN_PIPELINES:
        source = builtin_pipeline_path(init_from)
    try:
        return load_autoencoder(source)
    except (FileNotFoundError, OSError, ValueError) as error:
        raise ValueError(f"vae.init_from {init_from!r}: {error}") from error


def load_initial_autoencoder(vae: AutoencoderKL, init_from: str) -> None:
    """Copies the weights of the trained autoencoder `init_from` (see `initial_autoencoder`) into `vae`; a
    ValueError names the settings that differ when they do not fit."""
    trained = initial_autoencoder(init_from)
    keys = ("latent_channels", "block_out_channels", "layers_per_block", "norm_num_groups", "in_channels", "mid_block_add_attention")
    pairs = {key: (_list_or_value(trained.config.get(key)), _list_or_value(vae.config.get(key))) for key in keys}
    differ = [f"{key} {theirs!r} (config: {ours!r})" for key, (theirs, ours) in pairs.items() if theirs != ours]
    if differ:
        raise ValueError(
            f"vae.init_from {init_from!r} is another architecture than the vae.* settings describe: "
            f"{', '.join(differ)}; set them to the trained autoencoder's"
        )
    vae.load_state_dict(trained.state_dict())
    vae.register_to_config(scaling_factor=trained.config.scaling_factor)  # kept by a decoder-only run


def _list_or_value(value: Any) -> Any:
    return list(value) if isinstance(value, (list, tuple)) else value


def load_autoencoder(path: str | Path) -> AutoencoderKL:
    """A saved autoencoder folder (`config.json` + safetensors), or the `vae/` subfolder of a saved pipeline."""
    path = Path(path).expanduser()
    if (path / "vae" / "config.json").is_file() and not (path / "config.json").is_file():
        path = path / "vae"
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"No autoencoder at {path}: expected a folder with config.json and safetensors weights.")
    return AutoencoderKL.from_pretrained(path, use_safetensors=True)


__all__ = [
    "adversarial_active",
    "autoencoder_loss",
    "autoencoder_loss_and_reconstruction",
    "build_autoencoder",
    "build_discriminator",
    "discriminator_loss",
    "downsampling_factor",
    "latent_scaling_factor",
    "load_autoencoder",
    "reconstruct",
    "reconstruction_metrics",
    "save_reconstruction_grid",
    "split_holdout",
    "train_autoencoder",
]
