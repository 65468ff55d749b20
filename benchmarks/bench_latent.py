"""Latent-space benchmark: sampling time in latent vs pixel space, and autoencoder reconstruction quality.

Two questions, answered in one run:

1. At the same output resolution, how much faster is text-to-image sampling when the UNet denoises the
   autoencoder's latent grid (plus one decoder pass) than when it denoises pixels? Both pipelines use the
   same UNet architecture, the same text encoder, the same sampler, steps, batch and guidance; they are timed
   alternately, side by side, and the median of `--repeats` calls is reported. Random UNet weights are fine:
   timing does not depend on them.
2. How faithful is a trained autoencoder (`--vae DIR`, e.g. the output of `train_configs/vae_pneumoniamnist.yaml`)?
   PSNR and SSIM of its reconstructions of the real PneumoniaMNIST test split (624 images), at the
   autoencoder's resolution.

    python benchmarks/bench_latent.py --vae outputs/vae_pneumoniamnist
    python benchmarks/bench_latent.py --resolution 64 --steps 10        # timing only, with an untrained autoencoder
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from diffusers import DDPMScheduler, DPMSolverMultistepScheduler, UNet2DConditionModel

from medgen.config import VAEConfig
from medgen.pipelines import TextToImagePipeline
from medgen.text_encoders import OFFLINE_TEXT_ENCODER, load_text_encoder
from medgen.training.vae import build_autoencoder, downsampling_factor, load_autoencoder, reconstruction_metrics

DEFAULT_NPZ = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "pneumoniamnist" / "pneumoniamnist.npz"
PROMPT = "right lower lobe pneumonia with consolidation"


def text_unet(channels: int, side: int, cross_attention_dim: int, block_out_channels: list[int]) -> UNet2DConditionModel:
    """The text task's UNet layout (cross-attention on the lower-resolution levels)."""
    levels = len(block_out_channels)
    attention = [level > 0 for level in range(levels)]
    return UNet2DConditionModel(
        sample_size=side, in_channels=channels, out_channels=channels, block_out_channels=tuple(block_out_channels),
        layers_per_block=1, norm_num_groups=8, attention_head_dim=8, cross_attention_dim=cross_attention_dim,
        down_block_types=tuple("CrossAttnDownBlock2D" if a else "DownBlock2D" for a in attention),
        up_block_types=tuple("CrossAttnUpBlock2D" if a else "UpBlock2D" for a in attention[::-1]),
    )


def time_sampling(args: argparse.Namespace, vae, device: torch.device) -> list[tuple[str, str, float]]:
    tokenizer, text_encoder = load_text_encoder(args.text_encoder)
    scheduler = DPMSolverMultistepScheduler.from_config(DDPMScheduler(num_train_timesteps=1000).config)
    factor = downsampling_factor(vae)
    hidden = text_encoder.config.hidden_size
    pipes = {
        "pixel": TextToImagePipeline(
            vae=None, text_encoder=text_encoder, tokenizer=tokenizer, scheduler=scheduler,
            unet=text_unet(1, args.resolution, hidden, args.unet_channels),
        ),
        "latent": TextToImagePipeline(
            vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, scheduler=scheduler,
            unet=text_unet(vae.config.latent_channels, args.resolution // factor, hidden, args.unet_channels),
        ),
    }
    times: dict[str, list[float]] = {name: [] for name in pipes}
    for pipe in pipes.values():
        pipe.to(device).set_progress_bar_config(disable=True)

    def call(pipe) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        pipe(PROMPT, num_images_per_prompt=args.batch_size, num_inference_steps=args.steps,
             guidance_scale=3.0, generator=torch.manual_seed(0), output_type="np")
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    for pipe in pipes.values():
        call(pipe)  # warm-up
    for _ in range(args.repeats):
        for name, pipe in pipes.items():  # alternate, so background load hits both alike
            times[name].append(call(pipe))
    pixel, latent = statistics.median(times["pixel"]), statistics.median(times["latent"])
    grid = args.resolution // factor
    return [
        ("pixel-space sampling", f"UNet on 1x{args.resolution}x{args.resolution}", pixel),
        ("latent-space sampling", f"UNet on {vae.config.latent_channels}x{grid}x{grid} + decode", latent),
        ("speed-up (pixel / latent)", "", pixel / latent),
    ]


def measure_reconstruction(vae_dir: Path, npz: Path, max_images: int | None) -> tuple[dict, int]:
    from medgen.data import DataConfig, build_dataset

    vae = load_autoencoder(vae_dir).eval()
    resolution = int(vae.config.sample_size)
    data = build_dataset(DataConfig(source="medmnist", path=str(npz), split="test", resolution=resolution, max_samples=max_images))
    pixels = data.dataset  # rows read as float tensors in [-1, 1]
    batches = (pixels[i : i + 64]["pixel_values"] for i in range(0, len(pixels), 64))
    return reconstruction_metrics(vae, batches), resolution


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--vae", type=Path, help="Trained autoencoder folder (config.json + safetensors) to evaluate and time.")
    parser.add_argument("--npz", type=Path, default=DEFAULT_NPZ, help="PneumoniaMNIST .npz (test split is used).")
    parser.add_argument("--resolution", type=int, help="Output side in px (default: the autoencoder's, else 64).")
    parser.add_argument("--unet-channels", type=int, nargs="+", default=[32, 64, 64])
    parser.add_argument("--text-encoder", default=OFFLINE_TEXT_ENCODER)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-test-images", type=int, default=None)
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")

    if args.vae is not None:
        vae = load_autoencoder(args.vae)
        args.resolution = args.resolution or int(vae.config.sample_size)
    else:
        args.resolution = args.resolution or 64
        torch.manual_seed(0)
        vae = build_autoencoder(VAEConfig(block_out_channels=[32, 64, 64]), channels=1, resolution=args.resolution)
    if args.resolution % (downsampling_factor(vae) * 2 ** (len(args.unet_channels) - 1)):
        raise SystemExit(f"--resolution {args.resolution} must be divisible by the autoencoder and UNet downsampling.")

    rows = time_sampling(args, vae.eval(), device)
    print(f"\nSampling on {device} ({torch.get_num_threads()} threads): batch {args.batch_size}, {args.steps} DPM-Solver++ "
          f"steps, guidance 3.0, {args.resolution} px output, median of {args.repeats}")
    print(f"| {'measure':<27} | {'what is denoised':<32} | {'value':>9} |")
    print(f"|{'-' * 29}|{'-' * 34}|{'-' * 11}|")
    for name, detail, value in rows:
        shown = f"{value:.2f}x" if name.startswith("speed") else f"{value:.2f} s"
        print(f"| {name:<27} | {detail:<32} | {shown:>9} |")

    if args.vae is not None:
        if not args.npz.is_file():
            raise SystemExit(f"PneumoniaMNIST not found at {args.npz}; pass --npz.")
        metrics, resolution = measure_reconstruction(args.vae, args.npz, args.max_test_images)
        print(f"\nAutoencoder {args.vae} on the PneumoniaMNIST test split ({metrics['num_images']} real images, {resolution} px)")
        print(f"| {'PSNR (dB)':>10} | {'SSIM':>6} |")
        print(f"|{'-' * 12}|{'-' * 8}|")
        print(f"| {metrics['psnr']:>10.2f} | {metrics['ssim']:>6.3f} |")


if __name__ == "__main__":
    main()
