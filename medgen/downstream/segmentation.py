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

import time
from typing import Any, Sequence

import numpy as np

from medgen.downstream.arms import duplicated_index, extra_count, extra_label_counts
from medgen.downstream.data import LabelledImages
from medgen.downstream.grid import draw_cells, grid_report, interval_results, make_grid, synthetic_record, train_cells
from medgen.downstream.synthetic import pool_seed
from medgen.sampling import (
    effective_inference_steps,
    effective_mask_generator_guidance_scale,
    effective_mask_guidance_scale,
)
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
    duplicated = real.subset(duplicated_index(real.targets, extra, real.label_names, rng, noun="pair"))
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
    num_inference_steps: int | None = None,
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
    from medgen.segmentation.dice import dice_scores
    from medgen.segmentation.segmenter import STANDARD, predict_masks, train_segmenter

    recipe = recipe or STANDARD
    if (pipeline is None) == (synthetic_pairs is None):
        raise ValueError("give exactly one source of synthetic pairs: a mask-conditioned pipeline or a folder of pairs")
    grid = make_grid(train_pairs.label_names, real_fractions, synthetic_ratio, seeds, seed, rare_label)
    if train_pairs.targets is None or test_pairs.targets is None:
        raise ValueError("the real pairs carry no labels; the control matches the synthetic pairs' labels, so give a label column")
    if train_pairs.label_names != test_pairs.label_names:
        raise ValueError(f"train labels {train_pairs.label_names} differ from test labels {test_pairs.label_names}")
    if train_pairs.masks.shape[1:] != test_pairs.masks.shape[1:]:
        raise ValueError(f"train masks {train_pairs.masks.shape[1:]} and test masks {test_pairs.masks.shape[1:]} differ")
    label_names = grid.label_names
    started = time.perf_counter()

    # 1. the real subset of every cell (cheap), so that the synthetic pools can be sized once
    cells, needs = draw_cells(grid, as_labelled(train_pairs))

    # 2. synthetic pools of pairs, one per label, sampled (or read) once and shared by all cells
    if pipeline is not None:
        num_inference_steps = effective_inference_steps(pipeline, num_inference_steps)  # the model's own unless given
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
    nonempty = test_pairs.masks.reshape(len(test_pairs), -1).any(axis=1)

    def train_and_score(pairs: Pairs, segmenter_seed: int) -> tuple[dict, np.ndarray]:
        segmenter = train_segmenter(pairs, recipe, segmenter_seed, device)
        scores = dice_scores(predict_masks(segmenter, test_pairs.images, device), test_pairs.masks)
        return {
            "dice": float(scores.mean()),
            "dice_nonempty": float(scores[nonempty].mean()) if nonempty.any() else None,
            "dice_per_label": {
                name: float(scores[test_pairs.targets == k].mean())
                for k, name in enumerate(label_names) if (test_pairs.targets == k).any()
            },
        }, scores

    runs, scores = train_cells(
        train_pairs, cells, lambda real, rng: build_pair_arms(real, pools, synthetic_ratio, rng, grid.rare_index), train_and_score,
        seed_key="segmenter_seed", desc="medgen downstream (segmentation)", progress=progress,
    )

    # 4. intervals: one bootstrap plan (seeds and test pairs) shared by every arm and fraction, so differences are paired
    results = interval_results(
        grid, runs, scores, lambda s, plan: _replicates(s, test_pairs.masks, plan), dict.fromkeys(METRICS), test_pairs.targets,
    )
    seed_rule = "label k's pair i uses torch.Generator('cpu').manual_seed(pools[k].seed + i): mask first, then image"
    synthetic = synthetic_record(pool_records, pipeline is not None, num_inference_steps, guidance_scale, seed_rule, synthetic_folder)
    if pipeline is not None:  # the pairs were drawn at the model's own mask guidance, over its generator's masks
        synthetic["mask_guidance_scale"] = effective_mask_guidance_scale(pipeline)
        synthetic["mask_generator_guidance_scale"] = effective_mask_generator_guidance_scale(pipeline)
    return grid_report(
        grid, train=train_pairs, test=test_pairs, recipe={**recipe.describe(), "device": device},
        synthetic=synthetic,
        results=results, runs=runs, started=started,
        task_fields={"task": "segmentation"},
        shape_fields={"mask_shape": list(train_pairs.masks.shape[1:])},
        test_fields={"n_test_empty_masks": int((~nonempty).sum())},
    )


__all__ = ["build_pair_arms", "folder_pair_pools", "run_segmentation_downstream", "sample_pair_pools"]
