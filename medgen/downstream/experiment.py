"""The downstream experiment: real subsets, synthetic pools, four arms per cell, metrics, summaries."""

from __future__ import annotations

import sys
import time
from typing import Any, Sequence

import numpy as np

from medgen.downstream.arms import ARMS, build_arms, synthetic_needs
from medgen.downstream.classifier import STANDARD, Recipe, predict, score_on_test, train
from medgen.downstream.data import LabelledImages, draw_subset
from medgen.downstream.stats import INTERVAL_METHOD, ResamplingPlan, paired_difference, replicate_scores, resampling_plan, seed_warnings, summarize
from medgen.sampling import DEFAULT_INFERENCE_STEPS

CONTROL_COMPARISON = ("real+synthetic", "real+duplicated")


def _cell_key(run_seed: int, fraction: float, seed_index: int) -> list[int]:
    # Keyed on the fraction's value, not its position, so a cell is the same whichever other fractions are run.
    return [run_seed, int(round(fraction * 1_000_000)), seed_index]


def _rare_index(rare_label: str | None, label_names: list[str]) -> int | None:
    if rare_label is None:
        return None
    lookup = {name.lower(): index for index, name in enumerate(label_names)}
    if rare_label.lower() not in lookup:
        raise ValueError(f"--rare-label {rare_label!r} is not a label of the real data; its labels are {label_names}")
    return lookup[rare_label.lower()]


def _verdict(difference: dict) -> str:
    interval = difference.get("ci95")
    if interval is None or difference.get("n", 0) < 2:
        return "undetermined (one seed: no interval over classifiers)"
    if interval[0] > 0:
        return "real+synthetic beats the duplicated control"
    if interval[1] < 0:
        return "the duplicated control beats real+synthetic"
    return "no clear difference from the duplicated control (the 95% CI contains 0)"


def _summaries(runs: list[dict], replicates: list[dict], label_names: list[str], plan: ResamplingPlan) -> dict:
    """Per arm and for the paired differences: mean over seeds and the bootstrap interval (see `stats`).

    `replicates[i]` holds the bootstrap replicates of `runs[i]`'s metrics (`stats.replicate_scores`).
    """
    by_arm = {arm: sorted((i for i, run in enumerate(runs) if run["arm"] == arm), key=lambda i: runs[i]["seed_index"]) for arm in ARMS}

    def values(arm: str, metric: str, name: str | None = None) -> tuple[list, np.ndarray]:
        """The per-seed values of a metric, and its replicates as `(B, n_seeds)`."""
        pick = (lambda entry: entry[metric]) if name is None else (lambda entry: entry[metric][name])
        indices = by_arm[arm]
        return [pick(runs[i]) for i in indices], np.stack([pick(replicates[i]) for i in indices], axis=1)

    def summary(arm: str, metric: str, name: str | None = None) -> dict:
        return summarize(*values(arm, metric, name), plan)

    arms = {
        arm: {
            "auroc": summary(arm, "auroc"),
            "balanced_accuracy": summary(arm, "balanced_accuracy"),
            "sensitivity": {name: summary(arm, "sensitivity", name) for name in label_names},
            "n_train": summarize([runs[i]["n_train"] for i in by_arm[arm]]),
        }
        for arm in ARMS
    }

    def paired(first: str, second: str, metric: str, name: str | None = None) -> dict:
        (a, a_replicates), (b, b_replicates) = values(first, metric, name), values(second, metric, name)
        return paired_difference(a, b, a_replicates, b_replicates, plan)

    def difference(first: str, second: str) -> dict:
        return {
            "auroc": paired(first, second, "auroc"),
            "balanced_accuracy": paired(first, second, "balanced_accuracy"),
            "sensitivity": {name: paired(first, second, "sensitivity", name) for name in label_names},
        }

    versus_control = difference(*CONTROL_COMPARISON)
    versus_control["verdict_auroc"] = _verdict(versus_control["auroc"])
    return {"arms": arms, "synthetic_minus_duplicated": versus_control, "synthetic_minus_real": difference("real+synthetic", "real")}


def run_downstream(
    train_images: LabelledImages,
    test_images: LabelledImages,
    *,
    pipeline: Any = None,
    synthetic_folder: str | None = None,
    real_fractions: Sequence[float] = (0.05, 0.2, 1.0),
    synthetic_ratio: float = 1.0,
    seeds: int = 5,
    seed: int = 0,
    rare_label: str | None = None,
    recipe: Recipe = STANDARD,
    num_inference_steps: int = DEFAULT_INFERENCE_STEPS,
    guidance_scale: float | None = None,
    sample_batch_size: int = 32,
    device: str = "cpu",
    progress: bool = True,
) -> dict[str, Any]:
    """Runs every (real fraction, seed) cell under the four arms; returns the report as a dict.

    Give synthetic images as a loaded label-conditioned `pipeline` (sampled here: label `k`'s pool starts at
    seed `synthetic.pool_seed(seed, k)`, image i uses that + i) or as a `synthetic_folder` of `medgen generate`
    outputs. Everything random derives from `seed`, so the same arguments give the same report.
    """
    from tqdm.auto import tqdm

    from medgen.downstream.synthetic import folder_pools, sample_pools

    if (pipeline is None) == (synthetic_folder is None):
        raise ValueError("give exactly one source of synthetic images: a pipeline or a folder")
    if not real_fractions or any(not 0 < f <= 1 for f in real_fractions):
        raise ValueError(f"real fractions must lie in (0, 1], got {list(real_fractions)}")
    if not synthetic_ratio > 0:
        raise ValueError(f"the synthetic ratio must be > 0, got {synthetic_ratio}")
    if seeds < 1:
        raise ValueError(f"seeds must be >= 1, got {seeds}")
    if train_images.label_names != test_images.label_names:
        raise ValueError(f"train labels {train_images.label_names} differ from test labels {test_images.label_names}")
    label_names = list(train_images.label_names)
    rare_index = _rare_index(rare_label, label_names)
    started = time.perf_counter()

    # 1. the real subset of every cell (cheap), so that the synthetic pools can be sized once
    cells = []
    for fraction in real_fractions:
        for seed_index in range(seeds):
            key = _cell_key(seed, fraction, seed_index)
            index = draw_subset(train_images, fraction, np.random.default_rng(key + [0]))
            cells.append({"fraction": fraction, "seed_index": seed_index, "key": key, "index": index})
    needs = np.zeros(len(label_names), dtype=np.int64)
    for cell in cells:
        counts = np.bincount(train_images.targets[cell["index"]], minlength=len(label_names))
        needs = np.maximum(needs, synthetic_needs(counts, synthetic_ratio, rare_index))

    # 2. synthetic pools, one per label, generated (or read) once and shared by all cells
    if pipeline is not None:
        pools, pool_records = sample_pools(
            pipeline, label_names, needs, seed, num_inference_steps, guidance_scale, sample_batch_size, progress
        )
    else:
        pools, pool_records = folder_pools(synthetic_folder, label_names, needs)

    # 3. train and test every arm of every cell; the arms of a cell share the classifier seed (paired design)
    runs, probabilities = [], []
    bar = tqdm(total=len(cells) * len(ARMS), desc="medgen downstream", unit="model", disable=not progress, file=sys.stderr)
    for cell in cells:
        real = train_images.subset(cell["index"])
        arms = build_arms(real, pools, synthetic_ratio, np.random.default_rng(cell["key"] + [1]), rare_index)
        classifier_seed = int(np.random.SeedSequence(cell["key"] + [2]).generate_state(1)[0] & 0x3FFFFFFF)
        for arm in ARMS:
            bar.set_postfix_str(f"fraction {cell['fraction']:g}, seed {cell['seed_index']}, {arm}")
            model = train(arms[arm], recipe, classifier_seed, device)
            probabilities.append(predict(model, test_images, device, recipe))
            runs.append({
                "real_fraction": cell["fraction"],
                "seed_index": cell["seed_index"],
                "classifier_seed": classifier_seed,
                "arm": arm,
                "n_train": len(arms[arm]),
                "n_real": len(real),
                "train_label_counts": arms[arm].counts(),
                **score_on_test(probabilities[-1], test_images),
            })
            bar.update()
    bar.close()

    # 4. intervals: one bootstrap plan (seeds and test images) shared by every arm and fraction, so differences are paired
    plan = resampling_plan(test_images.targets, len(label_names), seeds, np.random.default_rng([seed, 3]))
    replicates = [replicate_scores(p, test_images.targets, label_names, plan) for p in probabilities]
    results = []
    for fraction in real_fractions:
        chosen = [i for i, run in enumerate(runs) if run["real_fraction"] == fraction]
        results.append({
            "real_fraction": fraction,
            "n_real": [runs[i]["n_real"] for i in chosen if runs[i]["arm"] == "real"],
            **_summaries([runs[i] for i in chosen], [replicates[i] for i in chosen], label_names, plan),
        })
    return {
        "label_names": label_names,
        "real_fractions": list(real_fractions),
        "synthetic_ratio": synthetic_ratio,
        "seeds": seeds,
        "seed": seed,
        "rare_label": label_names[rare_index] if rare_index is not None else None,
        "arms": list(ARMS),
        "n_real_train": len(train_images),
        "n_real_test": len(test_images),
        "real_train_label_counts": train_images.counts(),
        "real_test_label_counts": test_images.counts(),
        "recipe": {**recipe.describe(), "device": device},
        "synthetic": {
            "source": "pipeline" if pipeline is not None else "folder",
            "pools": pool_records,
            **(
                {
                    "num_inference_steps": num_inference_steps,
                    "guidance_scale": guidance_scale,
                    "seed_rule": "label k's image i uses torch.Generator('cpu').manual_seed(pools[k].seed + i)",
                }
                if pipeline is not None
                else {"folder": str(synthetic_folder)}
            ),
        },
        "interval_method": INTERVAL_METHOD,
        "warnings": seed_warnings(seeds),
        "results": results,
        "runs": runs,
        "duration_s": round(time.perf_counter() - started, 3),
    }
