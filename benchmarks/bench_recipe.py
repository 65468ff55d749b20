"""Quality per CPU-hour of training recipes for the 128 px latent built-ins, side by side in one run.

Each variant changes one thing against today's recipe (train_configs/chest_xray_128.yaml) and trains
through `medgen.train.main` on the chest-xray 128 px data (Kermany train split, latents encoded once with
the shipped chest-xray autoencoder and cached), for the same number of images seen. Each is then scored on
the held-out test split at one fixed N with medgen's Inception features (medgen.evaluation.features) and
FID / precision / recall (medgen.evaluation.fidelity), against two references at the same N:
the floor (N real training images) and the ceiling (the N test images through the autoencoder).
One constant-learning-rate run is then extended (resuming its checkpoint is exact for a constant schedule)
and scored at each length: the quality-vs-compute curve.

    nice -n 15 env OMP_NUM_THREADS=1 python benchmarks/bench_recipe.py --output runs/bench_recipe
    python benchmarks/bench_recipe.py --output runs/bench_recipe --report   # table + curve from what is done

Budget: --steps x --batch-size images seen for every variant; `batch_64` trains at twice the batch for half
the steps (and half the warm-up steps), so its images seen are the same.

Every stage writes its own JSON under --output and is skipped when rerun; a variant stopped mid-training
resumes from its newest checkpoint. Two processes may share the list (`--variants` in different orders): a
stage in progress is locked (`<stage>.lock`, the pid) and skipped by the other. Results: --output/recipe.md,
recipe.json, curve.svg / curve.png, and each variant's `bench_grid.png` (its scored samples, one row per label).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
BASE_CONFIG = REPO / "train_configs" / "chest_xray_128.yaml"
AUTOENCODER = REPO / "medgen" / "pretrained" / "chest-xray" / "vae"

# One change each against today's recipe (`baseline`); `guidance_*` only resample the baseline.
VARIANTS: dict[str, list[str]] = {
    "baseline": [],
    "rectified_flow": ["diffusion.objective=rectified_flow"],
    "constant_lr_ema": ["optim.lr_scheduler=constant_with_warmup"],
    "scale_shift": ["model.resnet_time_scale_shift=scale_shift"],
    "unet_m": [  # wider, attention at 16 and 8
        "model.block_out_channels=[64,128,256]", "model.attention_levels=[false,true,true]", "model.norm_num_groups=32",
    ],
    "unet_l": [  # wider and deeper, attention at 16 and 8 (32.9 M parameters)
        "model.block_out_channels=[96,192,384]", "model.attention_levels=[false,true,true]",
        "model.layers_per_block=2", "model.norm_num_groups=32",
    ],
    "edm": ["diffusion.objective=edm"],  # EDM preconditioning + loss weight, sigma_data 1 (unit-std latents)
    # a longer EMA: the decay 1 - (1 + step)^-power grows faster, half-life 44 steps at step 100 (today 22),
    # 590 at step 1,800 (today 191); the 0.999 cap is reached at step 2,150 (today 10,000)
    "ema_long": ["ema.power=0.9"],
    "batch_64": [],  # twice the batch for half the steps (BATCH_FACTOR): the same images seen
}
# variant -> factor on --batch-size; its steps (and LR warm-up steps) are divided by it, so images seen stay equal
BATCH_FACTOR = {"batch_64": 2}
GUIDANCE = {"guidance_1": 1.0, "guidance_4": 4.0}  # baseline weights, other guidance scales (baseline: the config's)
CURVE_VARIANT = "constant_lr_ema"
CURVE_FACTORS = (2, 4)  # default: the curve run continues the curve variant to 2x and 4x the budget


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--output", default="runs/bench_recipe")
    parser.add_argument("--steps", type=int, default=100,
                        help="optimiser updates per variant at --batch-size (batch_64: half as many at twice the batch)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--warmup", type=int, default=10, help="learning-rate warm-up steps (every variant)")
    parser.add_argument("--n", type=int, default=128, help="images per set for FID / precision / recall")
    parser.add_argument("--inference-steps", type=int, default=15)
    parser.add_argument("--variants", nargs="*", default=None, help="subset and order of stages to run")
    parser.add_argument("--curve-factors", type=int, nargs="*", default=list(CURVE_FACTORS),
                        help=f"lengths (x --steps) at which the {CURVE_VARIANT} run is continued and scored")
    parser.add_argument("--report", action="store_true", help="only write the table and curve from finished stages")
    parser.add_argument("--autoencoder", type=Path, default=AUTOENCODER,
                        help="autoencoder folder every variant trains on, and the ceiling's (default: the shipped "
                             "chest-xray one); one per --output, whose references record it")
    return parser.parse_args()


def stage_order(curve_factors=CURVE_FACTORS) -> list[str]:
    return [
        "shipped", "baseline", "rectified_flow", "constant_lr_ema", "scale_shift", *GUIDANCE, "unet_m",
        *(f"curve_x{factor}" for factor in curve_factors), "unet_l", "edm", "ema_long", "batch_64",
    ]


def variant_budget(name: str, steps: int, batch_size: int, warmup: int) -> tuple[int, int, int]:
    """(steps, batch size, warm-up steps) of `name`: a batch factor trades steps for batch at equal images seen."""
    factor = BATCH_FACTOR.get(name, 1)
    if steps % factor or warmup % factor:
        raise ValueError(f"{name}: --steps {steps} and --warmup {warmup} must be multiples of its batch factor {factor}")
    return steps // factor, batch_size * factor, warmup // factor


# ---------------------------------------------------------------- references


def to_unit(pixels) -> np.ndarray:
    """Dataset pixels in [-1, 1] -> float32 [0, 1]."""
    return ((np.asarray(pixels, dtype=np.float32) + 1.0) / 2.0).clip(0, 1)


def load_split(split: str):
    from medgen.config import load_config
    from medgen.data import build_dataset

    config = load_config(BASE_CONFIG, [f"data.split={split}"])
    return build_dataset(config.data)


def references(out: Path, n: int, extractor, autoencoder: Path = AUTOENCODER) -> dict:
    """Test-split features and labels of N images, plus the floor and the ceiling through `autoencoder` (cached in
    references.json/.npz, which record the autoencoder: another one in the same --output is an error)."""
    from medgen.evaluation.features import extract_features
    from medgen.evaluation.fidelity import frechet_distance, precision_recall

    path, arrays = out / "references.json", out / "references.npz"
    if path.is_file() and arrays.is_file():
        cached = json.loads(path.read_text())
        recorded = Path(cached.get("autoencoder", AUTOENCODER))
        if recorded.resolve() != autoencoder.resolve():
            raise SystemExit(f"{out} was scored with the autoencoder {recorded}, not {autoencoder}: use another --output")
        data = np.load(arrays)
        return {**json.loads(path.read_text()), "test_features": data["test_features"], "test_labels": data["test_labels"]}
    test, train = load_split("test"), load_split("train")
    rng = np.random.default_rng(0)
    test_index = np.sort(rng.choice(len(test), n, replace=False))
    train_index = np.sort(rng.choice(len(train), n, replace=False))
    test_rows = test.dataset.select(test_index.tolist())[:]  # through the dataset's transform: [-1, 1] tensors
    test_pixels = to_unit(test_rows["pixel_values"])
    test_labels = np.asarray(test_rows["labels"]).argmax(axis=1)
    train_pixels = to_unit(train.dataset.select(train_index.tolist())[:]["pixel_values"])

    from diffusers import AutoencoderKL

    vae = AutoencoderKL.from_pretrained(autoencoder, use_safetensors=True).eval()
    recon = []
    with torch.no_grad():
        for start in range(0, n, 32):
            batch = torch.from_numpy(test_pixels[start : start + 32] * 2 - 1)
            recon.append(((vae.decode(vae.encode(batch).latent_dist.mode()).sample + 1) / 2).clamp(0, 1).numpy())
    recon = np.concatenate(recon)

    test_features = extract_features(extractor, test_pixels)
    result = {"n": n, "autoencoder": str(autoencoder), "label_names": test.label_names, "test_label_counts": np.bincount(test_labels).tolist()}
    for name, pixels in (("floor", train_pixels), ("ceiling", recon)):
        features = extract_features(extractor, pixels)
        result[name] = {"fid": frechet_distance(test_features, features), **precision_recall(test_features, features)}
    np.savez(arrays, test_features=test_features, test_labels=test_labels)
    path.write_text(json.dumps(result, indent=2) + "\n")
    return {**result, "test_features": test_features, "test_labels": test_labels}


# ---------------------------------------------------------------- training and scoring


def train_variant(out: Path, name: str, overrides: list[str], steps: int, args) -> dict:
    from medgen.config import load_config
    from medgen.train import main

    folder = out / name
    steps, batch_size, warmup = variant_budget(name, steps, args.batch_size, args.warmup)
    config = load_config(BASE_CONFIG, [
        *overrides,
        f"model.pretrained_vae={args.autoencoder}",
        f"output_dir={folder}",
        f"max_train_steps={steps}",
        f"train_batch_size={batch_size}",
        f"optim.lr_warmup_steps={warmup}",
        "checkpointing_steps=50",
        "checkpoints_total_limit=1",
        "log_every_steps=25",
        "report_to=none",
    ])
    resume = "latest" if (folder / "checkpoints").is_dir() else None
    start = time.perf_counter()
    main(config, resume_from_checkpoint=resume)
    summary = json.loads((folder / "training_summary.json").read_text())
    return {"train_seconds_this_call": time.perf_counter() - start, "loop_seconds": summary["loop_seconds"],
            "steps": summary["steps"], "batch_size": batch_size, "images_seen": summary["steps"] * batch_size,
            "final_loss": summary["final_loss"]}


def score(folder: Path, refs: dict, extractor, guidance: float | None, args, grid: Path | None = None) -> dict:
    from medgen.evaluation.features import extract_features
    from medgen.evaluation.fidelity import frechet_distance, precision_recall
    from medgen.pipelines import load_pipeline

    pipeline = load_pipeline(folder)
    pipeline.set_progress_bar_config(disable=True)
    if guidance is None:
        guidance = float(_config_value(folder, "diffusion", "guidance_scale"))
    names = refs["label_names"]
    labels = [names[i] for i in refs["test_labels"]]  # the test sample's label mix
    generator = torch.Generator().manual_seed(0)
    images, start = [], time.perf_counter()
    with torch.no_grad():
        for begin in range(0, len(labels), 64):
            images.append(pipeline(
                labels=labels[begin : begin + 64], num_inference_steps=args.inference_steps,
                guidance_scale=guidance, generator=generator, output_type="np",
            ).images)
    sample_seconds = time.perf_counter() - start
    pixels = np.concatenate(images).transpose(0, 3, 1, 2).astype(np.float32)
    features = extract_features(extractor, pixels)
    test_features = refs["test_features"]
    result = {"fid": frechet_distance(test_features, features), **precision_recall(test_features, features),
              "guidance_scale": guidance, "sample_seconds": sample_seconds,
              "parameters": sum(p.numel() for p in pipeline.unet.parameters())}
    grid = grid or folder / "bench_grid.png"
    _save_grid(pixels, refs["test_labels"], names, grid)
    result["grid"] = str(grid)
    return result


def _config_value(folder: Path, section: str, key: str):
    import yaml

    return yaml.safe_load((folder / "training_config.yaml").read_text())[section][key]


def _save_grid(pixels: np.ndarray, labels: np.ndarray, names: list[str], path: Path, per_row: int = 8) -> None:
    from PIL import Image

    rows = []
    for index in range(len(names)):
        chosen = pixels[labels == index][:per_row]
        if len(chosen):
            rows.append(np.concatenate(list(chosen[:, 0]), axis=1))
    width = max(row.shape[1] for row in rows)
    rows = [np.pad(row, ((0, 0), (0, width - row.shape[1]))) for row in rows]
    Image.fromarray((np.concatenate(rows) * 255).round().astype(np.uint8)).save(path)


def claim(out: Path, stage: str) -> bool:
    """Marks `stage` as taken by this process (`<stage>.lock` holding its pid), so that two benchmark processes
    can share the stage list; a lock whose process is gone is taken over."""
    import os

    lock = out / f"{stage}.lock"
    if lock.is_file():
        try:
            os.kill(int(lock.read_text()), 0)
            return int(lock.read_text()) == os.getpid()
        except (ValueError, ProcessLookupError):
            pass
    lock.write_text(str(os.getpid()))
    return True


def run_stage(out: Path, stage: str, refs: dict, extractor, args) -> dict | None:
    result_path = out / f"{stage}.json"
    if result_path.is_file():
        return json.loads(result_path.read_text())
    if not claim(out, stage):
        print(f"[bench_recipe] {stage}: taken by another process, skipped", flush=True)
        return None
    if stage == "shipped":  # the shipped chest-xray model (cosine to zero, 1,800 steps) under the same scoring
        folder = REPO / "medgen" / "pretrained" / "chest-xray"
        summary = json.loads((folder / "training_summary.json").read_text())
        result = {"variant": stage, "change": "the shipped chest-xray model (today's recipe, full length)",
                  "training": {"loop_seconds": summary["loop_seconds"], "steps": summary["steps"],
                               "images_seen": summary["steps"] * 32, "final_loss": summary["final_loss"]}}
        result.update(score(folder, refs, extractor, None, args, grid=out / "shipped_grid.png"))
    elif stage in GUIDANCE:
        folder = out / "baseline"
        if not (out / "baseline.json").is_file():
            print(f"[bench_recipe] {stage}: needs the finished baseline, skipped", flush=True)
            (out / f"{stage}.lock").unlink(missing_ok=True)
            return None
        baseline = json.loads((out / "baseline.json").read_text())
        result = {"variant": stage, "change": f"guidance_scale={GUIDANCE[stage]} (baseline weights)",
                  "training": baseline["training"]}
        result.update(score(folder, refs, extractor, GUIDANCE[stage], args))
    elif stage.startswith("curve_x"):
        factor = int(stage.removeprefix("curve_x"))
        previous = [f for f in sorted(args.curve_factors) if f < factor]
        needed = out / (f"curve_x{previous[-1]}.json" if previous else f"{CURVE_VARIANT}.json")
        if not needed.is_file():  # the curve run grows one folder: its stages run in order
            print(f"[bench_recipe] {stage}: needs {needed.name} first, skipped", flush=True)
            (out / f"{stage}.lock").unlink(missing_ok=True)
            return None
        folder = out / CURVE_VARIANT
        training = train_variant(out, CURVE_VARIANT, VARIANTS[CURVE_VARIANT], args.steps * factor, args)
        result = {"variant": stage, "change": f"{CURVE_VARIANT} continued to {factor}x the budget", "training": training}
        result.update(score(folder, refs, extractor, None, args))
    else:
        training = train_variant(out, stage, VARIANTS[stage], args.steps, args)
        change = " ".join(VARIANTS[stage]) or "today's recipe"
        if stage in BATCH_FACTOR:
            change = f"train_batch_size={training['batch_size']} for {training['steps']} steps (same images seen)"
        result = {"variant": stage, "change": change, "training": training}
        result.update(score(out / stage, refs, extractor, None, args))
    result_path.write_text(json.dumps(result, indent=2) + "\n")
    (out / f"{stage}.lock").unlink(missing_ok=True)
    print(f"[bench_recipe] {stage}: FID {result['fid']:.1f} precision {result['precision']:.2f} recall {result['recall']:.2f}",
          flush=True)
    return result


# ---------------------------------------------------------------- report


def report_row(result: dict, floor: dict) -> str:
    """One table row. Results written before the batch size was recorded ran at `images_seen / steps`."""
    t = result["training"]
    batch = t.get("batch_size") or t["images_seen"] // max(t["steps"], 1)
    change = result["change"] + (f" (guidance {result['guidance_scale']:g})" if result["variant"] == "baseline" else "")
    return (
        f"| {result['variant']} | {change} | {result['parameters'] / 1e6:.1f} M | {t['steps']} x {batch} | "
        f"{t['images_seen']} | {t['loop_seconds'] / 60:.1f} | {result['fid']:.1f} | {result['fid'] / floor['fid']:.2f} | "
        f"{result['precision']:.2f} | {result['recall']:.2f} |"
    )


def write_report(out: Path, args) -> None:
    refs = json.loads((out / "references.json").read_text())
    stages = stage_order(sorted(args.curve_factors))
    results = [json.loads((out / f"{s}.json").read_text()) for s in stages if (out / f"{s}.json").is_file()]
    floor, ceiling = refs["floor"], refs["ceiling"]
    lines = [
        f"Chest-xray 128 px (Kermany), test split, N = {refs['n']}, Inception features; budget "
        f"{args.steps} steps x {args.batch_size} = {args.steps * args.batch_size} images seen per variant "
        f"({', '.join(f'{name}: {args.steps // k} x {args.batch_size * k}' for name, k in BATCH_FACTOR.items())}), "
        f"{args.inference_steps} DPM-Solver++ steps (EDM-DPM-Solver++ for edm); autoencoder "
        f"{refs.get('autoencoder', 'the shipped chest-xray one')}.",
        "",
        "| variant | change | UNet params | steps x batch | images seen | train min (this stage) | FID | FID / floor | precision | recall |",
        "|---|---|---|---|---|---|---|---|---|---|",
        f"| floor | {refs['n']} real training images | | | | | {floor['fid']:.1f} | 1.00 | {floor['precision']:.2f} | {floor['recall']:.2f} |",
        f"| ceiling | test images through the autoencoder | | | | | {ceiling['fid']:.1f} | {ceiling['fid'] / floor['fid']:.2f} | "
        f"{ceiling['precision']:.2f} | {ceiling['recall']:.2f} |",
    ]
    for r in results:
        lines.append(report_row(r, floor))
    (out / "recipe.md").write_text("\n".join(lines) + "\n")
    (out / "recipe.json").write_text(json.dumps({"references": refs, "results": results, "args": vars(args)}, indent=2, default=str) + "\n")
    print("\n".join(lines))

    curve = [r for r in results if r["variant"] == CURVE_VARIANT or r["variant"].startswith("curve_x")]
    if curve:
        try:
            import matplotlib
        except ImportError:
            print("[bench_recipe] the curve figure needs matplotlib (pip install matplotlib); table written", flush=True)
            return

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        seen = [r["training"]["images_seen"] for r in curve]
        hours = np.cumsum([r["training"]["loop_seconds"] / 3600 for r in curve])  # each stage extends the last
        fig, (ax_fid, ax_pr) = plt.subplots(1, 2, figsize=(9, 3.5))
        ax_fid.plot(seen, [r["fid"] for r in curve], "o-", label=f"{CURVE_VARIANT}")
        for r in results:
            if r["variant"] == "shipped":  # today's recipe at its full length: the point to beat
                ax_fid.plot([r["training"]["images_seen"]], [r["fid"]], "r*", ms=10, label="shipped (cosine LR)")
        ax_fid.axhline(floor["fid"], color="green", ls="--", label="floor (real train)")
        ax_fid.axhline(ceiling["fid"], color="orange", ls="--", label="ceiling (autoencoder)")
        ax_fid.set_xlabel("images seen")
        ax_fid.set_ylabel(f"FID (N = {refs['n']})")
        ax_fid.legend(fontsize=7)
        for x, y, h in zip(seen, [r["fid"] for r in curve], hours):
            ax_fid.annotate(f"{h * 60:.0f} min", (x, y), fontsize=7)
        ax_pr.plot(seen, [r["precision"] for r in curve], "o-", label="precision")
        ax_pr.plot(seen, [r["recall"] for r in curve], "s-", label="recall")
        ax_pr.set_xlabel("images seen")
        ax_pr.set_ylim(0, 1)
        ax_pr.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / "curve.svg")
        fig.savefig(out / "curve.png", dpi=100)


def main() -> None:
    args = parse_args()
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    stages = args.variants or stage_order(sorted(args.curve_factors))
    for stage in stages:  # a budget that does not divide fails now, not after the stages before it
        variant_budget(stage, args.steps, args.batch_size, args.warmup)
    if not args.report:
        from medgen.evaluation.features import get_feature_extractor

        torch.manual_seed(0)
        extractor = get_feature_extractor("inception")
        refs = references(out, args.n, extractor, args.autoencoder)
        print(f"[bench_recipe] floor FID {refs['floor']['fid']:.1f}, ceiling FID {refs['ceiling']['fid']:.1f}", flush=True)
        for stage in stages:
            run_stage(out, stage, refs, extractor, args)
            write_report(out, args)
    write_report(out, args)


if __name__ == "__main__":
    main()
