"""`medgen downstream --task segmentation`: do synthetic image + mask pairs help a segmenter trained on scarce
real pairs?

The classification experiment with pairs instead of labelled images: for each real fraction and seed, one fixed
segmenter recipe (`medgen.segmentation`, a MONAI U-Net) is trained under the four arms of `arms.ARMS` and scored
by Dice on the held-out real test pairs:

- `real`: the real subset of pairs alone;
- `real+synthetic`: plus `ratio x len(real)` synthetic pairs (label-balanced, or of `rare_label` only);
- `real+duplicated`: plus as many real pairs of the subset, with the same labels, re-sampled with replacement:
  the control that separates "new pairs" from "more pairs";
- `synthetic`: synthetic pairs only, as many as the real subset and with its label counts.

The arms of a cell share the segmenter seed; intervals are the two-level bootstrap of `stats` (seeds and test
images, paired between arms) on per-image Dice.
"""

from __future__ import annotations

import sys
import time
from typing import Any, Sequence

import numpy as np

from medgen.downstream.arms import ARMS, extra_count, extra_label_counts, synthetic_needs
from medgen.downstream.data import LabelledImages, draw_subset
from medgen.downstream.experiment import CONTROL_COMPARISON, _cell_key, _rare_index, _verdict
from medgen.downstream.stats import INTERVAL_METHOD, paired_difference, resampling_plan, seed_warnings, summarize
from medgen.downstream.synthetic import pool_seed
from medgen.sampling import DEFAULT_INFERENCE_STEPS
from medgen.segmentation.pairs import Pairs, concatenate_pairs, masks_from_indices

METRICS = ("dice", "dice_nonempty")


def as_labelled(pairs: Pairs) -> LabelledImages:
    """A view of the pairs' images and labels for the shared subset draw (`data.draw_subset`)."""
    return LabelledImages(pairs.images, pairs.targets, list(pairs.label_names), list(pairs.sources))


def _take(pool: Pairs, count: int, order: np.ndarray, label_name: str) -> Pairs:
    if count > len(pool):
        raise ValueError(f"{count} synthetic pairs of label {label_name!r} are needed but only {len(pool)} are available")
    return pool.subset(order[:count])


def build_pair_arms(real: Pairs, pools: list[Pairs], ratio: float, rng: np.random.Generator, rare_index: int | None = None) -> dict[str, Pairs]:
    """The four training sets of one cell (see the module docstring); `pools[label]` holds that label's synthetic pairs."""
    num_labels = len(real.label_names)
    subset_counts = np.bincount(real.targets, minlength=num_labels)
    extra = extra_label_counts(extra_count(len(real), ratio), num_labels, rare_index)
    orders = [rng.permutation(len(pool)) for pool in pools]
    added = [_take(pools[k], int(extra[k]), orders[k], real.label_names[k]) for k in range(num_labels)]
    duplicated_index = []
    for label, count in enumerate(extra):
        if count == 0:
            continue
        candidates = np.flatnonzero(real.targets == label)
        if len(candidates) == 0:
            raise ValueError(
                f"the real subset holds no pair of label {real.label_names[label]!r}, so the duplicated control "
                "cannot match the synthetic pairs' labels; use a larger --real-fraction"
            )
        duplicated_index.append(rng.choice(candidates, size=int(count), replace=True))
    duplicated = real.subset(np.concatenate(duplicated_index) if duplicated_index else np.arange(0))
    synthetic = [_take(pools[k], int(subset_counts[k]), orders[k], real.label_names[k]) for k in range(num_labels)]
    return {
        "real": real,
        "real+synthetic": concatenate_pairs([real, *added]),
        "real+duplicated": concatenate_pairs([real, duplicated]),
        "synthetic": concatenate_pairs(synthetic),
    }


def sample_pair_pools(
    pipe: Any,
    label_names: list[str],
    needs: np.ndarray,
    run_seed: int,
    num_inference_steps: int,
    guidance_scale: float | None,
    batch_size: int,
    progress: bool,
) -> tuple[list[Pairs], list[dict]]:
    """`needs[label]` new pairs of each label from a mask-conditioned pipeline with a mask generator (the mask is
    drawn first, then the image from it); pair i of label k uses seed `pool_seed(run_seed, k) + i`."""
    import torch
    from tqdm.auto import tqdm

    lookup = {name.lower(): name for name in getattr(pipe, "labels", None) or []}
    pools, records = [], []
    num_classes = len(pipe.mask_classes)
    for index, (name, count) in enumerate(zip(label_names, needs)):
        seed = pool_seed(run_seed, index)
        images, masks = [], []
        for start in tqdm(range(0, int(count), batch_size), desc=f"pairs: {name}", disable=not progress, unit="batch"):
            size = min(batch_size, int(count) - start)
            kwargs: dict[str, Any] = {
                "labels": [lookup[name.lower()]] * size,
                "num_inference_steps": num_inference_steps,
                "generator": [torch.Generator("cpu").manual_seed(seed + start + i) for i in range(size)],
                "output_type": "np",
            }
            if guidance_scale is not None:
                kwargs["guidance_scale"] = guidance_scale
            with torch.inference_mode():
                output = pipe(**kwargs)
            images.append(np.asarray(output.images, dtype=np.float32).transpose(0, 3, 1, 2))
            masks.append(masks_from_indices(np.asarray(output.masks), num_classes))
        if images:
            pool = Pairs(np.concatenate(images), np.concatenate(masks), list(label_names), np.full(int(count), index))
        else:
            height, width = pipe.image_size
            channels = int(pipe.vae.config.out_channels) if getattr(pipe, "vae", None) is not None else int(pipe.unet.config.out_channels)
            pool = Pairs(np.zeros((0, channels, height, width)), np.zeros((0, num_classes, height, width)), list(label_names), np.zeros(0, int))
        pools.append(pool)
        records.append({"label": name, "count": int(count), "seed": seed})
    return pools, records


def folder_pair_pools(synthetic: Pairs, label_names: list[str], needs: np.ndarray, folder: str) -> tuple[list[Pairs], list[dict]]:
    """Pools from pairs read out of a `medgen generate --pairs` folder (already relabelled to `label_names`)."""
    pools, records = [], []
    for index, name in enumerate(label_names):
        pool = synthetic.subset(np.flatnonzero(synthetic.targets == index))
        if len(pool) < needs[index]:
            raise ValueError(f"--synthetic {folder}: {int(needs[index])} pairs of label {name!r} are needed, the folder has {len(pool)}")
        pools.append(pool)
        records.append({"label": name, "count": int(len(pool))})
    return pools, records


def _summaries(runs: list[dict], per_image: list[dict], plan: Any) -> dict:
    """Per arm and for the paired differences: mean Dice over seeds and its bootstrap interval."""
    by_arm = {arm: sorted((i for i, run in enumerate(runs) if run["arm"] == arm), key=lambda i: runs[i]["seed_index"]) for arm in ARMS}

    def values(arm: str, metric: str) -> tuple[list, np.ndarray]:
        indices = by_arm[arm]
        return [runs[i][metric] for i in indices], np.stack([per_image[i][metric] for i in indices], axis=1)

    arms = {
        arm: {
            **{metric: summarize(*values(arm, metric), plan) for metric in METRICS},
            "n_train": summarize([runs[i]["n_train"] for i in by_arm[arm]]),
        }
        for arm in ARMS
    }

    def difference(first: str, second: str) -> dict:
        result = {}
        for metric in METRICS:
            (a, a_replicates), (b, b_replicates) = values(first, metric), values(second, metric)
            result[metric] = paired_difference(a, b, a_replicates, b_replicates, plan)
        return result

    versus_control = difference(*CONTROL_COMPARISON)
    versus_control["verdict_dice"] = _verdict(versus_control["dice"])
    return {"arms": arms, "synthetic_minus_duplicated": versus_control, "synthetic_minus_real": difference("real+synthetic", "real")}


def _replicates(scores: np.ndarray, reference: np.ndarray, plan: Any) -> dict[str, np.ndarray]:
    """Mean Dice (and mean over non-empty reference masks) on every bootstrap redraw of the test pairs: `(B,)`."""
    per_image = scores.mean(axis=1)
    nonempty = reference.reshape(len(reference), -1).any(axis=1).astype(np.float64)
    drawn = plan.test_draws
    weights = nonempty[drawn]
    with np.errstate(invalid="ignore", divide="ignore"):
        nonempty_mean = (per_image[drawn] * weights).sum(axis=1) / weights.sum(axis=1)
    return {"dice": per_image[drawn].mean(axis=1), "dice_nonempty": nonempty_mean}


def run_segmentation_downstream(
    train_pairs: Pairs,
    test_pairs: Pairs,
    *,
    pipeline: Any = None,
    synthetic_pairs: Pairs | None = None,
    synthetic_folder: str | None = None,
    real_fractions: Sequence[float] = (0.05, 0.2, 1.0),
    synthetic_ratio: float = 1.0,
    seeds: int = 5,
    seed: int = 0,
    rare_label: str | None = None,
    recipe: Any = None,
    num_inference_steps: int = DEFAULT_INFERENCE_STEPS,
    guidance_scale: float | None = None,
    sample_batch_size: int = 16,
    device: str = "cpu",
    progress: bool = True,
) -> dict[str, Any]:
    """Runs every (real fraction, seed) cell under the four arms; returns the report as a dict.

    Give synthetic pairs as a loaded mask-conditioned `pipeline` with a mask generator (sampled here) or as
    `synthetic_pairs` already read (e.g. from a `medgen generate --pairs` folder, `synthetic_folder` names it in
    the report). Everything random derives from `seed`, so the same arguments give the same report.
    """
    from tqdm.auto import tqdm

    from medgen.segmentation.dice import dice_scores
    from medgen.segmentation.segmenter import STANDARD, predict_masks, train_segmenter

    recipe = recipe or STANDARD
    if (pipeline is None) == (synthetic_pairs is None):
        raise ValueError("give exactly one source of synthetic pairs: a mask-conditioned pipeline or a folder of pairs")
    if not real_fractions or any(not 0 < f <= 1 for f in real_fractions):
        raise ValueError(f"real fractions must lie in (0, 1], got {list(real_fractions)}")
    if not synthetic_ratio > 0:
        raise ValueError(f"the synthetic ratio must be > 0, got {synthetic_ratio}")
    if seeds < 1:
        raise ValueError(f"seeds must be >= 1, got {seeds}")
    if train_pairs.targets is None or test_pairs.targets is None:
        raise ValueError("the real pairs carry no labels; the control matches the synthetic pairs' labels, so give a label column")
    if train_pairs.label_names != test_pairs.label_names:
        raise ValueError(f"train labels {train_pairs.label_names} differ from test labels {test_pairs.label_names}")
    if train_pairs.masks.shape[1:] != test_pairs.masks.shape[1:]:
        raise ValueError(f"train masks {train_pairs.masks.shape[1:]} and test masks {test_pairs.masks.shape[1:]} differ")
    label_names = list(train_pairs.label_names)
    rare_index = _rare_index(rare_label, label_names)
    started = time.perf_counter()

    # 1. the real subset of every cell (cheap), so that the synthetic pools can be sized once
    labelled = as_labelled(train_pairs)
    cells = []
    for fraction in real_fractions:
        for seed_index in range(seeds):
            key = _cell_key(seed, fraction, seed_index)
            cells.append({"fraction": fraction, "seed_index": seed_index, "key": key,
                          "index": draw_subset(labelled, fraction, np.random.default_rng(key + [0]))})
    needs = np.zeros(len(label_names), dtype=np.int64)
    for cell in cells:
        counts = np.bincount(train_pairs.targets[cell["index"]], minlength=len(label_names))
        needs = np.maximum(needs, synthetic_needs(counts, synthetic_ratio, rare_index))

    # 2. synthetic pools of pairs, one per label, sampled (or read) once and shared by all cells
    if pipeline is not None:
        pools, pool_records = sample_pair_pools(
            pipeline, label_names, needs, seed, num_inference_steps, guidance_scale, sample_batch_size, progress
        )
    else:
        pools, pool_records = folder_pair_pools(synthetic_pairs, label_names, needs, str(synthetic_folder))
    for pool in pools:
        if len(pool) and pool.masks.shape[1:] != train_pairs.masks.shape[1:]:
            raise ValueError(
                f"synthetic pairs have masks {pool.masks.shape[1:]} (classes, height, width), the real ones "
                f"{train_pairs.masks.shape[1:]}: same size and mask classes needed"
            )

    # 3. train and test every arm of every cell; the arms of a cell share the segmenter seed (paired design)
    runs, scores = [], []
    bar = tqdm(total=len(cells) * len(ARMS), desc="medgen downstream (segmentation)", unit="model", disable=not progress, file=sys.stderr)
    for cell in cells:
        real = train_pairs.subset(cell["index"])
        arms = build_pair_arms(real, pools, synthetic_ratio, np.random.default_rng(cell["key"] + [1]), rare_index)
        segmenter_seed = int(np.random.SeedSequence(cell["key"] + [2]).generate_state(1)[0] & 0x3FFFFFFF)
        for arm in ARMS:
            bar.set_postfix_str(f"fraction {cell['fraction']:g}, seed {cell['seed_index']}, {arm}")
            segmenter = train_segmenter(arms[arm], recipe, segmenter_seed, device)
            arm_scores = dice_scores(predict_masks(segmenter, test_pairs.images, device), test_pairs.masks)
            scores.append(arm_scores)
            nonempty = test_pairs.masks.reshape(len(test_pairs), -1).any(axis=1)
            runs.append({
                "real_fraction": cell["fraction"],
                "seed_index": cell["seed_index"],
                "segmenter_seed": segmenter_seed,
                "arm": arm,
                "n_train": len(arms[arm]),
                "n_real": len(real),
                "train_label_counts": arms[arm].counts(),
                "dice": float(arm_scores.mean()),
                "dice_nonempty": float(arm_scores[nonempty].mean()) if nonempty.any() else None,
                "dice_per_label": {
                    name: float(arm_scores[test_pairs.targets == k].mean())
                    for k, name in enumerate(label_names) if (test_pairs.targets == k).any()
                },
            })
            bar.update()
    bar.close()

    # 4. intervals: one bootstrap plan (seeds and test pairs) shared by every arm and fraction, so differences are paired
    plan = resampling_plan(test_pairs.targets, len(label_names), seeds, np.random.default_rng([seed, 3]))
    per_image = [_replicates(s, test_pairs.masks, plan) for s in scores]
    results = []
    for fraction in real_fractions:
        chosen = [i for i, run in enumerate(runs) if run["real_fraction"] == fraction]
        results.append({
            "real_fraction": fraction,
            "n_real": [runs[i]["n_real"] for i in chosen if runs[i]["arm"] == "real"],
            **_summaries([runs[i] for i in chosen], [per_image[i] for i in chosen], plan),
        })
    return {
        "task": "segmentation",
        "label_names": label_names,
        "mask_shape": list(train_pairs.masks.shape[1:]),
        "real_fractions": list(real_fractions),
        "synthetic_ratio": synthetic_ratio,
        "seeds": seeds,
        "seed": seed,
        "rare_label": label_names[rare_index] if rare_index is not None else None,
        "arms": list(ARMS),
        "n_real_train": len(train_pairs),
        "n_real_test": len(test_pairs),
        "real_train_label_counts": train_pairs.counts(),
        "real_test_label_counts": test_pairs.counts(),
        "n_test_empty_masks": int((~test_pairs.masks.reshape(len(test_pairs), -1).any(axis=1)).sum()),
        "recipe": {**recipe.describe(), "device": device},
        "synthetic": {
            "source": "pipeline" if pipeline is not None else "folder",
            "pools": pool_records,
            **(
                {
                    "num_inference_steps": num_inference_steps,
                    "guidance_scale": guidance_scale,
                    "seed_rule": "label k's pair i uses torch.Generator('cpu').manual_seed(pools[k].seed + i): mask first, then image",
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


__all__ = ["build_pair_arms", "folder_pair_pools", "run_segmentation_downstream", "sample_pair_pools"]
