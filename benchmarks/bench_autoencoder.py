"""Autoencoder benchmark: reconstruction quality per modality on each set's TEST split, and 4x vs 8x downsampling.

1. `--autoencoder DIR` (a trained autoencoder folder, or a pipeline folder / built-in name whose `vae/` is used):
   PSNR and SSIM at 128 px of every test image of each set of `train_configs/autoencoder_128.yaml` (the images
   the autoencoder and the diffusion models never trained on), against the goal PSNR >= 30 dB, SSIM >= 0.90.
2. `--compare-steps N`: trains a 4x and an 8x autoencoder (same widths, channels, loss, crops and data) for N
   steps each, alternately on the same batches, and reports held-out quality, latent shape and the cost of
   one diffusion step on that latent grid (relative): the trade-off behind the shipped choice.

    python benchmarks/bench_autoencoder.py --autoencoder chest-xray
    python benchmarks/bench_autoencoder.py --compare-steps 300
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

REPO_ROOT = Path(__file__).resolve().parent.parent
CONFIG = REPO_ROOT / "train_configs" / "autoencoder_128.yaml"
GOAL_PSNR, GOAL_SSIM = 30.0, 0.90


def test_sets(max_images: int | None):
    """(name, pixels in [-1, 1]) of the test split of each set the autoencoder config trains on."""
    from medgen.config import load_config
    from medgen.data import build_dataset

    config = load_config(CONFIG)
    for data_config in [config.data, *config.extra_data]:
        data_config.split = "test"
        data_config.max_samples = max_images
        data = build_dataset(data_config)
        yield Path(data_config.path).name, torch.as_tensor(np.asarray(data.dataset[:]["pixel_values"]))


def load_any_autoencoder(source: str):
    from medgen.training.vae import load_autoencoder

    if Path(source).expanduser().exists():
        return load_autoencoder(source)
    import medgen

    return medgen.load_pipeline(source).vae


def report_quality(vae, max_images: int | None) -> None:
    from medgen.training.vae import reconstruction_metrics

    print(f"{'set (test split)':<22} {'images':>6} {'PSNR dB':>8} {'SSIM':>6}  goal (>= {GOAL_PSNR:.0f} dB, >= {GOAL_SSIM})")
    for name, pixels in test_sets(max_images):
        batches = [pixels[i : i + 32] for i in range(0, len(pixels), 32)]
        metrics = reconstruction_metrics(vae, batches)
        met = "met" if metrics["psnr"] >= GOAL_PSNR and metrics["ssim"] >= GOAL_SSIM else (
            f"short by {max(0.0, GOAL_PSNR - metrics['psnr']):.1f} dB / {max(0.0, GOAL_SSIM - metrics['ssim']):.3f}")
        print(f"{name:<22} {metrics['num_images']:>6} {metrics['psnr']:>8.2f} {metrics['ssim']:>6.3f}  {met}")


def compare_downsampling(steps: int, batch_size: int, max_images: int | None) -> None:
    from diffusers import UNet2DConditionModel

    from medgen.config import load_config
    from medgen.data import build_dataset
    from medgen.training.vae import autoencoder_loss, build_autoencoder, random_crop, reconstruction_metrics

    config = load_config(CONFIG)
    sets = [build_dataset(c) for c in [config.data, *config.extra_data]]
    train = torch.cat([torch.as_tensor(np.asarray(s.dataset[:]["pixel_values"])) for s in sets])
    held_out = [pixels for _, pixels in test_sets(max_images)]
    variants = {"4x": [32, 64, 128], "8x": [32, 64, 128, 128]}
    models, optimizers, seconds = {}, {}, {}
    for name, widths in variants.items():
        torch.manual_seed(0)
        vae_config = type(config.vae)(**{**config.vae.__dict__, "block_out_channels": widths})
        models[name] = build_autoencoder(vae_config, 1, 128)
        optimizers[name] = torch.optim.AdamW(models[name].parameters(), lr=vae_config.learning_rate, weight_decay=0.0)
        seconds[name] = 0.0
    generator = torch.Generator().manual_seed(0)
    for _ in range(steps):
        batch = train[torch.randint(0, len(train), (batch_size,), generator=generator)]
        batch = random_crop(batch, config.vae.crop_size, generator)
        for name, vae in models.items():
            start = time.perf_counter()
            loss, _ = autoencoder_loss(vae, batch, config.vae)
            loss.backward()
            optimizers[name].step()
            optimizers[name].zero_grad(set_to_none=True)
            seconds[name] += time.perf_counter() - start
    print(f"{steps} steps of {batch_size} x {config.vae.crop_size} px crops each, same batches; quality on all test splits")
    print(f"{'variant':<8} {'latent':>10} {'PSNR dB':>8} {'SSIM':>6} {'train s':>8} {'UNet step ms':>13}")
    for name, vae in models.items():
        vae.eval()
        metrics = reconstruction_metrics(vae, [p[i : i + 32] for p in held_out for i in range(0, len(p), 32)])
        with torch.no_grad():
            latent = vae.encode(torch.zeros(1, 1, 128, 128)).latent_dist.mode().shape[1:]
        unet = UNet2DConditionModel(
            sample_size=latent[-1], in_channels=latent[0], out_channels=latent[0], block_out_channels=(32, 64, 128),
            layers_per_block=1, norm_num_groups=8, attention_head_dim=32,
            down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
            mid_block_type="UNetMidBlock2D", class_embed_type="projection", projection_class_embeddings_input_dim=3,
        )
        x = torch.randn(32, *latent)
        with torch.no_grad():
            unet(x, 10, encoder_hidden_states=None, class_labels=torch.zeros(32, 3))
            start = time.perf_counter()
            for _ in range(3):
                unet(x, 10, encoder_hidden_states=None, class_labels=torch.zeros(32, 3))
        unet_ms = (time.perf_counter() - start) / 3 * 1000
        shape = "x".join(str(v) for v in latent)
        print(f"{name:<8} {shape:>10} {metrics['psnr']:>8.2f} {metrics['ssim']:>6.3f} {seconds[name]:>8.1f} {unet_ms:>13.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--autoencoder", help="autoencoder folder, pipeline folder or built-in pipeline name")
    parser.add_argument("--compare-steps", type=int, default=0, help="train 4x and 8x autoencoders for this many steps")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-test-images", type=int, default=None, help="at most this many test images per set")
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    if args.autoencoder:
        report_quality(load_any_autoencoder(args.autoencoder).eval(), args.max_test_images)
    if args.compare_steps:
        compare_downsampling(args.compare_steps, args.batch_size, args.max_test_images)
    if not args.autoencoder and not args.compare_steps:
        parser.error("give --autoencoder and/or --compare-steps")


if __name__ == "__main__":
    main()
