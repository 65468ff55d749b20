"""Benchmark the segmenter behind mask faithfulness and `medgen downstream --task segmentation`.

Usage::

    nice -n 15 env OMP_NUM_THREADS=1 python benchmarks/bench_segmenter.py --output runs/bench_segmenter
    python benchmarks/bench_segmenter.py --data ../shared/data/busi-ultrasound-masks --steps 300,600
    python benchmarks/bench_segmenter.py --real-fraction 0.1,0.2 --seeds 2 --output runs/bench_segmenter_fractions

Reads an image + mask folder (metadata.csv with file_name, mask_file_name, label[, source]) at --resolution
through the data layer, holds out a seeded 20% per label (and per source) as the test split (the split of
train_configs/lung_cxr_mask_128.yaml), trains the segmenter on the rest (or on --real-fraction subsets) with the
standard recipe (or each of --steps) and prints its Dice on the held-out real test images: the reference that
mask faithfulness divides by, and the real-only arm of `medgen downstream --task segmentation`. Writes
OUTPUT/bench_segmenter.json and OUTPUT/predictions_*.png (test images with the reference mask outline in green
and the predicted one in red).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np

from medgen.downstream.data import draw_subset
from medgen.downstream.segmentation import as_labelled
from medgen.segmentation.data import load_pairs
from medgen.segmentation.dice import dice_scores, dice_summary
from medgen.segmentation.figures import overlay_grid
from medgen.segmentation.segmenter import STANDARD, predict_masks, remove_small_objects, train_segmenter

DEFAULT_DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "lung-cxr-masks"


LUNG_DATA = {
    # the held-out split of the mask training configs: a seeded 20% per label and per source
    "source": "csv", "findings_column": "label", "mask_column": "mask_file_name", "mask_classes": ["lung"],
    "holdout_fraction": 0.2, "holdout_order": "random", "stratify_columns": ["source"],
}


def data_values(args: argparse.Namespace) -> dict:
    if args.config:
        from medgen.config import load_config

        return load_config(args.config).data.to_dict()
    values = {**LUNG_DATA, "path": args.data, "holdout_seed": args.seed}
    if "lung" not in Path(args.data).name:
        values.update(mask_classes=["lesion"], stratify_columns=[])
    return values


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="image + mask folder (default ../shared/data/lung-cxr-masks)")
    parser.add_argument("--config", help="a training config whose data section (with mask_column) is read instead of --data")
    parser.add_argument("--resolution", type=int, default=128, help="side the pairs are read at (default 128, the pipelines' size)")
    parser.add_argument("--steps", default=str(STANDARD.steps), help=f"comma-separated step counts to train (default {STANDARD.steps})")
    parser.add_argument(
        "--real-fraction", default="1.0",
        help="comma-separated fractions of the training pairs (stratified by label, seeded as `medgen downstream` "
        "draws them): how much room synthetic pairs have at 10-20%% of the real pairs (default 1.0)",
    )
    parser.add_argument("--seeds", type=int, default=1, help="subsets per fraction below 1 (default 1)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default="runs/bench_segmenter")
    args = parser.parse_args()

    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    values = data_values(args)
    train, _ = load_pairs(values, "train", args.resolution, 1)
    test, _ = load_pairs(values, "test", args.resolution, 1)
    test_sources = np.asarray(["montgomery" if "MCUCXR" in source else "shenzhen" if "CHNCXR" in source else "all" for source in test.sources])
    print(f"{args.data}: {len(train)} training / {len(test)} test pairs at {args.resolution} px (read in {time.perf_counter() - started:.1f} s)")
    results = []
    runs = [
        (steps, fraction, seed_index)
        for fraction in [float(part) for part in args.real_fraction.split(",")]
        for seed_index in range(args.seeds if fraction < 1 else 1)
        for steps in [int(part) for part in args.steps.split(",")]
    ]
    for steps, fraction, seed_index in runs:
        recipe = dataclasses.replace(STANDARD, steps=steps)
        subset = train.subset(draw_subset(as_labelled(train), fraction, np.random.default_rng([args.seed, seed_index])))
        started = time.perf_counter()
        segmenter = train_segmenter(subset, recipe, seed=args.seed + seed_index)
        train_s = time.perf_counter() - started
        predicted = predict_masks(segmenter, test.images)
        scores = dice_scores(predicted, test.masks)
        summary = dice_summary(scores, test.masks)
        summary["per_label"] = {name: float(scores[test.targets == k].mean()) for k, name in enumerate(test.label_names)}
        summary["per_source"] = {source: float(scores[test_sources == source].mean()) for source in sorted(set(test_sources))}
        summary.update(steps=steps, real_fraction=fraction, seed_index=seed_index, n_train=len(subset), train_s=round(train_s, 1), recipe=recipe.describe())
        results.append(summary)
        print(
            f"steps {steps}, real fraction {fraction:g} ({len(subset)} pairs), seed {seed_index}: test Dice {summary['dice']:.4f} (non-empty masks {summary['dice_nonempty']:.4f}); "
            f"per label {summary['per_label']}; per source {summary['per_source']}; trained in {train_s:.1f} s"
        )
        summary["min_object_fraction"] = {
            f"{fraction_kept:g}": dice_summary(dice_scores(remove_small_objects(predicted, fraction_kept), test.masks), test.masks)
            for fraction_kept in (0.001, 0.003, 0.01, 0.03)
        }
        print("  dropping predicted components under a fraction of the image: " + "; ".join(
            f"{key}: Dice {value['dice']:.4f} (non-empty {value['dice_nonempty']:.4f})" for key, value in summary["min_object_fraction"].items()
        ))
        overlay_grid(test.images[:32], test.masks[:32], predicted[:32], output / f"predictions_{steps}_{fraction:g}_{seed_index}.png")
    report = {"data": args.config or args.data, "resolution": args.resolution, "seed": args.seed, "n_train": len(train), "n_test": len(test), "results": results}
    (output / "bench_segmenter.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"written: {output / 'bench_segmenter.json'}")


if __name__ == "__main__":
    main()
