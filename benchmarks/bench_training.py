"""Training throughput of `medgen/train.py` against a bare PyTorch loop on the same model, batch and data.

    python benchmarks/bench_training.py --config train_configs/pneumoniamnist_label.yaml --steps 40

Both loops do the same work per step (forward, min-SNR v-prediction loss, backward, gradient clipping,
AdamW, LR schedule, EMA update) on the same cached dataset; they run alternately, `--repeats` times
each, in one process, and the best images/s of each is compared (target ratio >= 0.9).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from medgen.config import load_config
from medgen.data import build_dataset
from medgen.train import main as train_main
from medgen.training.diffusion import build_noise_scheduler, diffusion_loss
from medgen.training.tasks import build_task


def bare_loop(config, data, steps: int) -> float:
    """Plain PyTorch: no accelerate, no checkpoints, no logging. Returns images/s."""
    torch.manual_seed(config.seed)
    task = build_task(config, data.label_names, data.multi_label)
    unet = task.unet.train()
    scheduler = build_noise_scheduler(config.diffusion)
    optimizer = torch.optim.AdamW(unet.parameters(), lr=config.optim.learning_rate, weight_decay=config.optim.weight_decay)
    lr_schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / 100))
    ema = [p.detach().clone() for p in unet.parameters()]
    loader = torch.utils.data.DataLoader(data.dataset, batch_size=config.train_batch_size, shuffle=True, drop_last=True)
    done, start = 0, time.perf_counter()
    while done < steps:
        for batch in loader:
            clean = batch["pixel_values"]
            noise = torch.randn_like(clean)
            t = torch.randint(0, scheduler.config.num_train_timesteps, (clean.shape[0],))
            drop = torch.rand(clean.shape[0]) < config.diffusion.condition_dropout
            prediction = unet(scheduler.add_noise(clean, noise, t), t, **task.condition_kwargs(batch, drop)).sample
            loss = diffusion_loss(prediction, clean, noise, t, scheduler, config.diffusion.snr_gamma)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(unet.parameters(), config.optim.max_grad_norm)
            optimizer.step()
            lr_schedule.step()
            optimizer.zero_grad(set_to_none=True)
            with torch.no_grad():
                for shadow, param in zip(ema, unet.parameters()):
                    shadow.lerp_(param, 1 - config.ema.decay)
            done += 1
            if done == steps:
                break
    return steps * config.train_batch_size / (time.perf_counter() - start)


def medgen_loop(config, steps: int) -> float:
    """`medgen/train.py`'s main() with saving and sampling off; its own loop timing (training_summary.json)."""
    import json

    with tempfile.TemporaryDirectory() as output_dir:
        config.output_dir = output_dir
        config.max_train_steps = steps
        train_main(config)
        return json.loads((Path(output_dir) / "training_summary.json").read_text())["images_per_second"]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="train_configs/pneumoniamnist_label.yaml")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("overrides", nargs="*")
    return parser.parse_args()


if __name__ == "__main__":
    args = parse_args()
    overrides = ["report_to=none", "sample_every_steps=0", "checkpointing_steps=1000000", *args.overrides]
    config = load_config(args.config, overrides)
    data = build_dataset(config.data)
    params = sum(p.numel() for p in build_task(config, data.label_names, data.multi_label).unet.parameters())
    bare, medgen = [], []
    for _ in range(args.repeats):
        bare.append(bare_loop(config, data, args.steps))
        medgen.append(medgen_loop(load_config(args.config, overrides), args.steps))
    print(f"\nmodel {params / 1e6:.2f} M parameters, {config.data.resolution} px, batch {config.train_batch_size}, "
          f"{args.steps} steps x {args.repeats} repeats, {torch.get_num_threads()} threads")
    print(f"{'loop':<22}{'best images/s':>15}{'all runs':>30}")
    print(f"{'bare PyTorch':<22}{max(bare):>15.1f}{str([round(v, 1) for v in bare]):>30}")
    print(f"{'medgen train.py':<22}{max(medgen):>15.1f}{str([round(v, 1) for v in medgen]):>30}")
    print(f"ratio medgen / bare: {max(medgen) / max(bare):.3f} (target >= 0.9)")
