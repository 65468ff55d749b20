"""The classification downstream experiment: labelled images, a classifier per arm, AUROC, balanced accuracy and
per-label sensitivity, on the grid of cells, arms and intervals of `grid`."""

from __future__ import annotations

import time
from typing import Any, Sequence

from medgen.downstream.arms import build_arms
from medgen.downstream.classifier import STANDARD, Recipe, predict, score_on_test, train
from medgen.downstream.data import LabelledImages
from medgen.downstream.grid import draw_cells, grid_report, interval_results, make_grid, synthetic_record, train_cells
from medgen.downstream.stats import replicate_scores
from medgen.sampling import effective_inference_steps


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
    num_inference_steps: int | None = None,
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
    from medgen.downstream.synthetic import folder_pools, sample_pools

    if (pipeline is None) == (synthetic_folder is None):
        raise ValueError("give exactly one source of synthetic images: a pipeline or a folder")
    grid = make_grid(train_images.label_names, real_fractions, synthetic_ratio, seeds, seed, rare_label)
    if train_images.label_names != test_images.label_names:
        raise ValueError(f"train labels {train_images.label_names} differ from test labels {test_images.label_names}")
    label_names = grid.label_names
    started = time.perf_counter()

    # 1. the real subset of every cell (cheap), so that the synthetic pools can be sized once
    cells, needs = draw_cells(grid, train_images)

    # 2. synthetic pools, one per label, generated (or read) once and shared by all cells
    if pipeline is not None:
        num_inference_steps = effective_inference_steps(pipeline, num_inference_steps)  # the model's own unless given
        pools, pool_records = sample_pools(
            pipeline, label_names, needs, seed, num_inference_steps, guidance_scale, sample_batch_size, progress
        )
    else:
        pools, pool_records = folder_pools(synthetic_folder, label_names, needs)

    # 3. train and test every arm of every cell; the arms of a cell share the classifier seed (paired design)
    def train_and_score(images: LabelledImages, classifier_seed: int) -> tuple[dict, Any]:
        probabilities = predict(train(images, recipe, classifier_seed, device), test_images, device, recipe)
        return score_on_test(probabilities, test_images), probabilities

    runs, probabilities = train_cells(
        train_images, cells, lambda real, rng: build_arms(real, pools, synthetic_ratio, rng, grid.rare_index), train_and_score,
        seed_key="classifier_seed", desc="medgen downstream", progress=progress,
    )

    # 4. intervals: one bootstrap plan (seeds and test images) shared by every arm and fraction, so differences are paired
    results = interval_results(
        grid, runs, probabilities, lambda p, plan: replicate_scores(p, test_images.targets, label_names, plan),
        {"auroc": None, "balanced_accuracy": None, "sensitivity": label_names}, test_images.targets,
    )
    seed_rule = "label k's image i uses torch.Generator('cpu').manual_seed(pools[k].seed + i)"
    return grid_report(
        grid, train=train_images, test=test_images, recipe={**recipe.describe(), "device": device},
        synthetic=synthetic_record(pool_records, pipeline is not None, num_inference_steps, guidance_scale, seed_rule, synthetic_folder),
        results=results, runs=runs, started=started,
    )
