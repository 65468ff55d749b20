"""The label-accuracy judge: how well each classifier recipe recognises the labels of real test images.

`medgen evaluate` asks a classifier trained on real training images what it sees in each generated image
(label accuracy, goal >= 0.85) and trains the same recipe on generated images for TSTR. A judge that cannot
tell the labels apart in real test images cannot check generated ones: this benchmark trains several recipes
on each built-in model's real training split, side by side in one run, and prints each recipe's accuracy on
the real test split (training duplicates left out): overall, balanced (the mean of the per-label accuracies,
what an imbalanced test split hides) and per label, with its training time.

The recipe is chosen on real test images only. With `--n N`, each built-in model also samples N images once
(pipeline defaults, seeds 0..N-1) and every recipe's label accuracy on them is printed beside, for information:
choosing the judge by that figure would flatter the generator.

    python benchmarks/bench_judge.py                                   # the four 128 px built-ins, every recipe
    python benchmarks/bench_judge.py --models lung-ct --recipes v2 wide_long --n 128 --json runs/judge.json
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from medgen.config import load_config
from medgen.evaluation.classifier import ClassifierRecipe, agreement, auc, predict_probabilities, train_classifier
from medgen.evaluation.images import ImageSet, load_real_split
from medgen.pipelines.hub import builtin_pipeline_path

MODELS = ["chest-xray", "brain-mri", "breast-ultrasound", "lung-ct"]
RECIPES = {
    "v2": ClassifierRecipe(),  # the judge of evaluations up to December 2026: ~6k parameters, 300 steps
    "v2_long": ClassifierRecipe(steps=1200),
    "wide": ClassifierRecipe(width=32),
    "wide_long": ClassifierRecipe(width=32, steps=1200),
    "wide_long_aug": ClassifierRecipe(width=32, steps=1200, augment=True),
    "wide_long_aug_128": ClassifierRecipe(width=32, steps=1200, augment=True, max_side=128),
}


def real_splits(model: str) -> tuple[ImageSet, ImageSet, Path]:
    """The real training and test splits of a built-in's training config; test images equal to a training image are left out."""
    config_path = builtin_pipeline_path(model) / "training_config.yaml"
    data = load_config(config_path).data
    train = load_real_split(data, "train", data.resolution, data.channels)
    test = load_real_split(data, "test", data.resolution, data.channels)
    held_out = np.isin(test.image_hashes(), train.image_hashes(), invert=True)
    return train, test.subset(held_out), config_path


def generated_set(model: str, n: int, real: ImageSet) -> ImageSet:
    """N images sampled once with the pipeline's defaults, labelled with the label each was asked for."""
    import torch

    from medgen.evaluation.api import _labelled_set, sample_pipeline
    from medgen.pipelines import load_pipeline

    pipe = load_pipeline(builtin_pipeline_path(model))
    pipe.set_progress_bar_config(disable=True)
    with torch.inference_mode():
        images, labels = sample_pipeline(pipe, n, seed=0)
    return _labelled_set(images, labels, real, f"{model} samples")


def score(recipe: ClassifierRecipe, train: ImageSet, test: ImageSet, generated: ImageSet | None) -> dict:
    start = time.perf_counter()
    model = train_classifier(train, recipe)
    seconds = time.perf_counter() - start
    probabilities = predict_probabilities(model, test, train.multi_label, recipe.max_side)
    real = agreement(probabilities, test)
    row = {
        "train_seconds": round(seconds, 1),
        "parameters": sum(p.numel() for p in model.parameters()),
        "real_test_accuracy": real["accuracy"],
        "real_test_balanced_accuracy": float(np.mean(list(real["per_label"].values()))),
        "real_test_per_label": real["per_label"],
        "real_test_auc": auc(probabilities, test),
    }
    if generated is not None:
        found = agreement(predict_probabilities(model, generated, train.multi_label, recipe.max_side), generated)
        row["generated_accuracy"] = found["accuracy"]
        row["generated_per_label"] = found["per_label"]
    return row


def probe_score(train: ImageSet, test: ImageSet, generated: ImageSet | None) -> dict:
    """A linear probe for comparison: class-balanced logistic regression on the Inception pool features (medgen's
    FID network, features cached as the evaluation caches them)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from medgen.evaluation.features import cached_features, default_cache_dir, extract_features, get_feature_extractor

    extractor = get_feature_extractor("inception")
    features = {name: cached_features(extractor, images.images, images.fingerprint(), default_cache_dir())
                for name, images in (("train", train), ("test", test))}
    start = time.perf_counter()
    probe = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, class_weight="balanced", max_iter=2000))
    probe.fit(features["train"], train.labels.argmax(axis=1))
    seconds = time.perf_counter() - start
    probabilities = probe.predict_proba(features["test"])
    real = agreement(probabilities, test)
    row = {
        "train_seconds": round(seconds, 1), "parameters": int(probe[-1].coef_.size + probe[-1].intercept_.size),
        "real_test_accuracy": real["accuracy"],
        "real_test_balanced_accuracy": float(np.mean(list(real["per_label"].values()))),
        "real_test_per_label": real["per_label"], "real_test_auc": auc(probabilities, test),
    }
    if generated is not None:
        found = agreement(probe.predict_proba(extract_features(extractor, generated.images)), generated)
        row["generated_accuracy"], row["generated_per_label"] = found["accuracy"], found["per_label"]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=MODELS, help="built-in label models (default: the four 128 px ones)")
    parser.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="classifier seeds (the spread shows the noise)")
    parser.add_argument("--n", type=int, default=0, help="also sample N images per model and score them with every recipe")
    parser.add_argument("--probe", action="store_true", help="also a linear probe on Inception features (embeds every training image once)")
    parser.add_argument("--json", help="also write the rows here")
    args = parser.parse_args()

    rows = []
    for model in args.models:
        train, test, config_path = real_splits(model)
        generated = generated_set(model, args.n, train) if args.n else None
        print(f"\n{model}: {len(train)} training / {len(test)} held-out test images ({config_path})", flush=True)
        for name in [*args.recipes, *(["inception_probe"] if args.probe else [])]:
            for seed in args.seeds if name != "inception_probe" else [0]:
                if name == "inception_probe":
                    row = {"model": model, "recipe": name, "seed": seed, **probe_score(train, test, generated)}
                else:
                    row = {"model": model, "recipe": name, "seed": seed, **asdict(replace(RECIPES[name], seed=seed))}
                    row.update(score(replace(RECIPES[name], seed=seed), train, test, generated))
                rows.append(row)
                per_label = ", ".join(f"{label} {value:.2f}" for label, value in row["real_test_per_label"].items())
                extra = f"; generated {row['generated_accuracy']:.2f}" if generated is not None else ""
                print(f"  {name:<18} seed {seed}: real test accuracy {row['real_test_accuracy']:.3f}, balanced "
                      f"{row['real_test_balanced_accuracy']:.3f}, AUC {row['real_test_auc']:.3f} ({per_label}){extra}; "
                      f"{row['parameters']:,} parameters, {row['train_seconds']:.0f} s", flush=True)
                if args.json:
                    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
                    Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")

    print(f"\nbalanced real-test accuracy (mean over seeds {args.seeds}); generated-image accuracy in brackets with --n")
    print(f"{'recipe':<20}" + "".join(f"{model:>22}" for model in args.models))
    for name in [*args.recipes, *(["inception_probe"] if args.probe else [])]:
        cells = []
        for model in args.models:
            mine = [row for row in rows if row["model"] == model and row["recipe"] == name]
            cell = f"{np.mean([row['real_test_balanced_accuracy'] for row in mine]):.3f}"
            if args.n:
                cell += f" [{np.mean([row['generated_accuracy'] for row in mine]):.2f}]"
            cells.append(f"{cell:>22}")
        print(f"{name:<20}" + "".join(cells))


if __name__ == "__main__":
    main()
