"""Autoencoder benchmark: reconstruction quality per modality, and autoencoder variants side by side at one budget.

1. `--autoencoder DIR` (a trained autoencoder folder, or a pipeline folder / built-in name whose `vae/` is used):
   PSNR and SSIM at 128 px of every test image of each set of `train_configs/autoencoder_128.yaml` (the images
   the autoencoder and the diffusion models never trained on), against the goal PSNR >= 30 dB, SSIM >= 0.90.
2. `--compare-steps N --output DIR`: trains each variant of `VARIANTS` (one change each against the shipped
   autoencoder config: the same data, widths, crops, batches and seed) for the same N optimiser steps through
   `medgen.train.main`, and scores each on the held-out test splits: PSNR / SSIM per set, and reconstruction
   FID / precision / recall of `--fid-images` chest X-ray test images (medgen's Inception features) against
   the floor, N real training images vs the same N test images (issue 19's goal: reconstruction FID <= 1.5x
   the floor). The shipped chest-xray autoencoder is scored the same way as a reference row. Also: the latent
   shape and the cost of one diffusion step on it (the shipped UNet shape, batch 32).

    python benchmarks/bench_autoencoder.py --autoencoder chest-xray
    nice -n 19 env OMP_NUM_THREADS=1 python benchmarks/bench_autoencoder.py --compare-steps 300 --output runs/bench_autoencoder
    python benchmarks/bench_autoencoder.py --output runs/bench_autoencoder --report   # the table from what is done

Every variant trains into `--output/<variant>` with checkpoints every 50 steps: rerunning the same command skips
what is finished (`<variant>.json`) and resumes a variant stopped mid-training from its newest checkpoint.
Results: `--output/autoencoder.md` and `autoencoder.json`, each variant's `reconstructions.png`.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

REPO_ROOT = Path(__file__).resolve().parent.parent
CONFIG = REPO_ROOT / "train_configs" / "autoencoder_128.yaml"
SHIPPED = REPO_ROOT / "medgen" / "pretrained" / "chest-xray" / "vae"
GOAL_PSNR, GOAL_SSIM, GOAL_FID_RATIO = 30.0, 0.90, 1.5
# MONAI's 2D latent diffusion tutorial trains its autoencoder with a 0.01-weighted patch-adversarial loss
ADVERSARIAL_WEIGHT = 0.01
CONTINUE = [f"vae.init_from={SHIPPED}", "vae.learning_rate=1e-4"]  # the shipped autoencoder, continued


def variants(steps: int, adversarial_weight: float) -> dict[str, tuple[str, list[str]]]:
    """name -> (what it changes, config overrides) against the shipped config (`l1_ssim_c8`)."""
    adversarial = [f"vae.adversarial_weight={adversarial_weight}", f"vae.discriminator_start_step={steps // 3}"]
    return {
        "l1_ssim_c8": ("none: L1 + 0.2 SSIM + KL, 8 latent channels (the shipped config)", []),
        "adversarial_c8": (f"+ patch-adversarial loss ({adversarial_weight:g}, from step {steps // 3})", adversarial),
        "l1_ssim_c4": ("4 latent channels", ["vae.latent_channels=4"]),
        "adversarial_c4": ("4 latent channels + patch-adversarial loss", ["vae.latent_channels=4", *adversarial]),
        "downsample_8x": ("8x downsampling (4 levels: 8x16x16 latents)", ["vae.block_out_channels=[32,64,128,128]"]),
        # the shipped autoencoder continued (`vae.init_from`) at a tenth of the rate: the adversarial loss is
        # meant for a converged autoencoder's fine detail, which a run from scratch this short never reaches
        "continue_c8": ("the shipped autoencoder continued, L1 + SSIM (rate 1e-4)", CONTINUE),
        "continue_decoder_c8": (
            "the shipped autoencoder's decoder continued, L1 + SSIM (rate 1e-4; encoder and latent space kept)",
            [*CONTINUE, "vae.train_decoder_only=true"],
        ),
        "continue_adversarial_c8": (
            f"the shipped autoencoder continued + patch-adversarial loss ({adversarial_weight:g}, from step {steps // 3}; "
            "rate 1e-4)", [*CONTINUE, *adversarial],
        ),
    }


DEFAULT_VARIANTS = ("l1_ssim_c8", "adversarial_c8", "l1_ssim_c4", "adversarial_c4")


# ---------------------------------------------------------------- held-out images


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


def quality_per_set(vae, held_out: list[tuple[str, torch.Tensor]]) -> dict[str, dict]:
    from medgen.training.vae import reconstruction_metrics

    return {
        name: reconstruction_metrics(vae, [pixels[i : i + 32] for i in range(0, len(pixels), 32)])
        for name, pixels in held_out
    }


def report_quality(vae, max_images: int | None) -> None:
    print(f"{'set (test split)':<22} {'images':>6} {'PSNR dB':>8} {'SSIM':>6}  goal (>= {GOAL_PSNR:.0f} dB, >= {GOAL_SSIM})")
    for name, metrics in quality_per_set(vae, list(test_sets(max_images))).items():
        met = "met" if metrics["psnr"] >= GOAL_PSNR and metrics["ssim"] >= GOAL_SSIM else (
            f"short by {max(0.0, GOAL_PSNR - metrics['psnr']):.1f} dB / {max(0.0, GOAL_SSIM - metrics['ssim']):.3f}")
        print(f"{name:<22} {metrics['num_images']:>6} {metrics['psnr']:>8.2f} {metrics['ssim']:>6.3f}  {met}")


# ---------------------------------------------------------------- FID references (chest X-ray, fixed N)


def to_unit(pixels) -> np.ndarray:
    return ((np.asarray(pixels, dtype=np.float32) + 1.0) / 2.0).clip(0, 1)


def fid_references(out: Path, n: int, extractor) -> dict:
    """N seeded chest X-ray test images (pixels and features) and the floor: N real training images against them.
    Cached in `references.json` / `references.npz`."""
    from medgen.config import load_config
    from medgen.data import build_dataset
    from medgen.evaluation.features import extract_features
    from medgen.evaluation.fidelity import frechet_distance, precision_recall

    path, arrays = out / "references.json", out / "references.npz"
    if path.is_file() and arrays.is_file() and json.loads(path.read_text())["n"] == n:
        data = np.load(arrays)
        return {**json.loads(path.read_text()), "test_pixels": data["test_pixels"], "test_features": data["test_features"]}
    config = load_config(CONFIG)
    splits = {}
    for split in ("test", "train"):
        config.data.split = split
        splits[split] = build_dataset(config.data).dataset
    n = min(n, len(splits["test"]), len(splits["train"]))
    rng = np.random.default_rng(0)
    picks = {split: np.sort(rng.choice(len(rows), n, replace=False)).tolist() for split, rows in splits.items()}
    test_pixels = to_unit(splits["test"].select(picks["test"])[:]["pixel_values"])
    train_pixels = to_unit(splits["train"].select(picks["train"])[:]["pixel_values"])
    test_features = extract_features(extractor, test_pixels)
    train_features = extract_features(extractor, train_pixels)
    result = {
        "n": n, "set": Path(config.data.path).name,
        "floor": {"fid": frechet_distance(test_features, train_features), **precision_recall(test_features, train_features)},
    }
    out.mkdir(parents=True, exist_ok=True)
    np.savez(arrays, test_pixels=test_pixels, test_features=test_features)
    path.write_text(json.dumps(result, indent=2) + "\n")
    return {**result, "test_pixels": test_pixels, "test_features": test_features}


def reconstruction_fidelity(vae, refs: dict, extractor) -> dict:
    """FID / precision / recall of the autoencoder's reconstructions of the N test images against those images."""
    from medgen.evaluation.autoencoder import autoencode
    from medgen.evaluation.features import extract_features
    from medgen.evaluation.fidelity import frechet_distance, precision_recall

    features = extract_features(extractor, autoencode(vae, refs["test_pixels"], batch_size=32))
    fid = frechet_distance(refs["test_features"], features)
    return {"fid": fid, "fid_over_floor": fid / refs["floor"]["fid"], **precision_recall(refs["test_features"], features)}


def unet_step_ms(vae) -> tuple[str, float]:
    """The latent shape of a 128 px image and one forward pass (ms) of the shipped UNet shape on 32 such latents."""
    from diffusers import UNet2DConditionModel

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
    return "x".join(str(v) for v in latent), (time.perf_counter() - start) / 3 * 1000


# ---------------------------------------------------------------- variants


def train_variant(out: Path, name: str, overrides: list[str], steps: int, args) -> dict:
    """Trains (or resumes, or reuses) one variant through the real training entry point; returns its stage report."""
    from medgen.config import load_config
    from medgen.train import main

    folder = out / name
    config = load_config(CONFIG, [
        *overrides,
        f"output_dir={folder}",
        f"vae.max_train_steps={steps}",
        f"vae.lr_warmup_steps={min(100, steps // 10)}",
        f"vae.train_batch_size={args.batch_size}",
        "checkpointing_steps=50",
        "checkpoints_total_limit=1",
        "log_every_steps=25",
        "report_to=none",
    ])
    start = time.perf_counter()
    main(config, resume_from_checkpoint="latest" if folder.exists() else None)
    metrics = json.loads((folder / "reconstruction_metrics.json").read_text())
    return {"steps": metrics["train_steps"], "images_seen": metrics["train_steps"] * args.batch_size,
            "train_seconds_last_call": round(time.perf_counter() - start, 1), "scaling_factor": metrics["scaling_factor"]}


def score_autoencoder(vae, held_out, refs, extractor) -> dict:
    vae = vae.eval()
    latent, ms = unet_step_ms(vae)
    return {"latent": latent, "unet_step_ms": ms, "per_set": quality_per_set(vae, held_out),
            **reconstruction_fidelity(vae, refs, extractor)}


def run_comparison(out: Path, steps: int, names: list[str], args) -> None:
    from medgen.evaluation.features import get_feature_extractor
    from medgen.training.vae import load_autoencoder

    table = variants(steps, args.adversarial_weight)
    unknown = [name for name in names if name not in table]
    if unknown:
        raise SystemExit(f"unknown variant(s) {unknown}; choose from {sorted(table)}")
    out.mkdir(parents=True, exist_ok=True)
    extractor = get_feature_extractor("inception")
    refs = fid_references(out, args.fid_images, extractor)
    print(f"[bench_autoencoder] floor: FID {refs['floor']['fid']:.1f} at N = {refs['n']}", flush=True)
    held_out = list(test_sets(args.max_test_images))
    if not (out / "shipped.json").is_file():
        result = {"change": "the shipped chest-xray autoencoder (1,800 steps)", "steps": 1800,
                  **score_autoencoder(load_autoencoder(SHIPPED), held_out, refs, extractor)}
        (out / "shipped.json").write_text(json.dumps(result, indent=2) + "\n")
    for name in names:
        path = out / f"{name}.json"
        if path.is_file() and json.loads(path.read_text()).get("steps") == steps:
            continue
        change, overrides = table[name]
        print(f"[bench_autoencoder] {name}: {change}; {steps} steps", flush=True)
        trained = train_variant(out, name, overrides, steps, args)
        result = {"change": change, "overrides": overrides, **trained,
                  **score_autoencoder(load_autoencoder(out / name), held_out, refs, extractor)}
        path.write_text(json.dumps(result, indent=2) + "\n")
        write_report(out)
    write_report(out)


def write_report(out: Path) -> None:
    refs = json.loads((out / "references.json").read_text())
    floor = refs["floor"]
    rows = {path.stem: json.loads(path.read_text()) for path in sorted(out.glob("*.json"))
            if path.stem not in ("references", "autoencoder")}
    order = ["shipped", *(name for name in variants(1, ADVERSARIAL_WEIGHT) if name in rows)]
    sets = sorted({name for row in rows.values() for name in row.get("per_set", {})})
    lines = [
        f"Reconstruction fidelity on {refs['n']} {refs['set']} test images (medgen Inception features); "
        f"goal FID <= {GOAL_FID_RATIO}x the floor. PSNR dB / SSIM on the test split of each set.",
        "",
        "| variant | change | steps | latent | UNet step ms | FID | FID / floor | precision | recall | "
        + " | ".join(sets) + " |",
        "|---|---|---|---|---|---|---|---|---|" + "---|" * len(sets),
        f"| floor | {refs['n']} real training images | | | | {floor['fid']:.1f} | 1.00 | {floor['precision']:.2f} | "
        f"{floor['recall']:.2f} |" + " |" * len(sets),
    ]
    for name in (n for n in order if n in rows):
        row = rows[name]
        per_set = " | ".join(
            f"{row['per_set'][s]['psnr']:.2f} / {row['per_set'][s]['ssim']:.3f}" if s in row["per_set"] else "" for s in sets
        )
        lines.append(
            f"| {name} | {row['change']} | {row['steps']} | {row['latent']} | {row['unet_step_ms']:.0f} | {row['fid']:.1f} | "
            f"{row['fid_over_floor']:.2f} | {row['precision']:.2f} | {row['recall']:.2f} | {per_set} |"
        )
    (out / "autoencoder.md").write_text("\n".join(lines) + "\n")
    (out / "autoencoder.json").write_text(json.dumps({"references": refs, "variants": rows}, indent=2) + "\n")
    print("\n".join(lines), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--autoencoder", help="autoencoder folder, pipeline folder or built-in pipeline name")
    parser.add_argument("--compare-steps", type=int, default=0, help="train each variant for this many steps")
    parser.add_argument("--variants", nargs="*", default=list(DEFAULT_VARIANTS),
                        help=f"variants to compare, in order (default {' '.join(DEFAULT_VARIANTS)}; also downsample_8x, continue_c8, continue_decoder_c8, continue_adversarial_c8)")
    parser.add_argument("--output", default="runs/bench_autoencoder", help="folder of the comparison's runs and results")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--adversarial-weight", type=float, default=ADVERSARIAL_WEIGHT)
    parser.add_argument("--fid-images", type=int, default=512, help="N chest X-ray test images for FID / precision / recall")
    parser.add_argument("--max-test-images", type=int, default=None, help="at most this many test images per set (PSNR/SSIM)")
    parser.add_argument("--report", action="store_true", help="only write the comparison table from what is done")
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    if args.autoencoder:
        report_quality(load_any_autoencoder(args.autoencoder).eval(), args.max_test_images)
    if args.report:
        write_report(Path(args.output))
    elif args.compare_steps:
        run_comparison(Path(args.output), args.compare_steps, args.variants, args)
    if not (args.autoencoder or args.compare_steps or args.report):
        parser.error("give --autoencoder, --compare-steps and/or --report")


if __name__ == "__main__":
    main()
