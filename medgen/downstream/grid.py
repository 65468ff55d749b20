"""The experiment grid both downstream tasks run: (real fraction, seed) cells, four arms per cell trained with one
seed (the paired design), bootstrap intervals per arm and for the paired differences, and the report's fields.

A task (classification in `experiment`, segmentation in `segmentation`) supplies how to build a cell's arms,
how to train and score one arm, how to score it on the bootstrap redraws, and the names of its metrics.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from medgen.downstream.arms import ARMS, synthetic_needs
from medgen.downstream.data import LabelledImages, draw_subset
from medgen.downstream.stats import INTERVAL_METHOD, ResamplingPlan, paired_difference, resampling_plan, seed_warnings, summarize

CONTROL_COMPARISON = ("real+synthetic", "real+duplicated")

# A task's metrics: each name, with the label names where the metric has one value per label (e.g. sensitivity).
Metrics = Mapping[str, Sequence[str] | None]


@dataclass(frozen=True)
class Cell:
    """One (real fraction, seed) cell: `index` picks its real subset; `key` seeds everything random in it."""

    fraction: float
    seed_index: int
    key: list[int]
    index: np.ndarray


def _cell_key(run_seed: int, fraction: float, seed_index: int) -> list[int]:
    # Keyed on the fraction's value, not its position, so a cell is the same whichever other fractions are run.
    return [run_seed, int(round(fraction * 1_000_000)), seed_index]


def rare_label_index(rare_label: str | None, label_names: list[str]) -> int | None:
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


@dataclass(frozen=True)
class Grid:
    """The settings of one experiment: its labels, the real fractions, the synthetic ratio, the seeds per fraction,
    the run seed everything random derives from, and the rare label's index (None: label-balanced extras)."""

    label_names: list[str]
    real_fractions: list[float]
    synthetic_ratio: float
    seeds: int
    seed: int
    rare_index: int | None


def make_grid(label_names: list[str], real_fractions: Sequence[float], synthetic_ratio: float, seeds: int, seed: int, rare_label: str | None) -> Grid:
    """The grid, checked: fractions in (0, 1], a ratio > 0, at least one seed, a rare label among the labels."""
    if not real_fractions or any(not 0 < f <= 1 for f in real_fractions):
        raise ValueError(f"real fractions must lie in (0, 1], got {list(real_fractions)}")
    if not synthetic_ratio > 0:
        raise ValueError(f"the synthetic ratio must be > 0, got {synthetic_ratio}")
    if seeds < 1:
        raise ValueError(f"seeds must be >= 1, got {seeds}")
    label_names = list(label_names)
    return Grid(label_names, list(real_fractions), synthetic_ratio, seeds, seed, rare_label_index(rare_label, label_names))


def draw_cells(grid: Grid, train: LabelledImages) -> tuple[list[Cell], np.ndarray]:
    """The real subset of every cell (cheap), and how many synthetic items of each label the largest cell needs,
    so that the synthetic pools can be sized once."""
    cells = []
    for fraction in grid.real_fractions:
        for seed_index in range(grid.seeds):
            key = _cell_key(grid.seed, fraction, seed_index)
            cells.append(Cell(fraction, seed_index, key, draw_subset(train, fraction, np.random.default_rng(key + [0]))))
    needs = np.zeros(len(grid.label_names), dtype=np.int64)
    for cell in cells:
        counts = np.bincount(train.targets[cell.index], minlength=len(grid.label_names))
        needs = np.maximum(needs, synthetic_needs(counts, grid.synthetic_ratio, grid.rare_index))
    return cells, needs


def train_cells(
    train: Any,
    cells: list[Cell],
    build_arms: Callable[[Any, np.random.Generator], dict[str, Any]],
    train_and_score: Callable[[Any, int], tuple[dict, Any]],
    *,
    seed_key: str,
    desc: str,
    progress: bool,
) -> tuple[list[dict], list[Any]]:
    """Trains and tests every arm of every cell; the arms of a cell share the model seed (paired design).

    `build_arms(real_subset, rng)` gives a cell's four training sets; `train_and_score(training_set, seed)` trains
    one model and gives its test metrics (a dict, stored in the run) and its per-test-item output (kept for the
    bootstrap). Returns one run record per (cell, arm), with the model seed under `seed_key`, and the outputs.
    """
    from tqdm.auto import tqdm

    runs, outputs = [], []
    bar = tqdm(total=len(cells) * len(ARMS), desc=desc, unit="model", disable=not progress, file=sys.stderr)
    for cell in cells:
        real = train.subset(cell.index)
        arms = build_arms(real, np.random.default_rng(cell.key + [1]))
        model_seed = int(np.random.SeedSequence(cell.key + [2]).generate_state(1)[0] & 0x3FFFFFFF)
        for arm in ARMS:
            bar.set_postfix_str(f"fraction {cell.fraction:g}, seed {cell.seed_index}, {arm}")
            scores, output = train_and_score(arms[arm], model_seed)
            outputs.append(output)
            runs.append({
                "real_fraction": cell.fraction,
                "seed_index": cell.seed_index,
                seed_key: model_seed,
                "arm": arm,
                "n_train": len(arms[arm]),
                "n_real": len(real),
                "train_label_counts": arms[arm].counts(),
                **scores,
            })
            bar.update()
    bar.close()
    return runs, outputs


def _summaries(runs: list[dict], replicates: list[dict], metrics: Metrics, plan: ResamplingPlan) -> dict:
    """Per arm and for the paired differences: mean over seeds and the bootstrap interval (see `stats`).

    `replicates[i]` holds the bootstrap replicates of `runs[i]`'s metrics; the first metric gets the verdict.
    """
    by_arm = {arm: sorted((i for i, run in enumerate(runs) if run["arm"] == arm), key=lambda i: runs[i]["seed_index"]) for arm in ARMS}

    def values(arm: str, metric: str, name: str | None = None) -> tuple[list, np.ndarray]:
        """The per-seed values of a metric, and its replicates as `(B, n_seeds)`."""
        pick = (lambda entry: entry[metric]) if name is None else (lambda entry: entry[metric][name])
        indices = by_arm[arm]
        return [pick(runs[i]) for i in indices], np.stack([pick(replicates[i]) for i in indices], axis=1)

    def each(metric: str, per_name: Callable[[str | None], dict]) -> dict:
        names = metrics[metric]
        return per_name(None) if names is None else {name: per_name(name) for name in names}

    arms = {
        arm: {
            **{metric: each(metric, lambda name, m=metric: summarize(*values(arm, m, name), plan)) for metric in metrics},
            "n_train": summarize([runs[i]["n_train"] for i in by_arm[arm]]),
        }
        for arm in ARMS
    }

    def paired(first: str, second: str, metric: str, name: str | None) -> dict:
        (a, a_replicates), (b, b_replicates) = values(first, metric, name), values(second, metric, name)
        return paired_difference(a, b, a_replicates, b_replicates, plan)

    def difference(first: str, second: str) -> dict:
        return {metric: each(metric, lambda name, m=metric: paired(first, second, m, name)) for metric in metrics}

    primary = next(iter(metrics))
    versus_control = difference(*CONTROL_COMPARISON)
    versus_control[f"verdict_{primary}"] = _verdict(versus_control[primary])
    return {"arms": arms, "synthetic_minus_duplicated": versus_control, "synthetic_minus_real": difference("real+synthetic", "real")}


def interval_results(
    grid: Grid, runs: list[dict], outputs: list[Any], replicate: Callable[[Any, ResamplingPlan], dict], metrics: Metrics, test_targets: np.ndarray
) -> list[dict]:
    """One result per real fraction: per arm and for the paired differences, each metric's mean and interval.

    One bootstrap plan (seeds and test items) is shared by every arm and fraction, so differences are paired;
    `replicate(output, plan)` gives one run's metrics on every redraw of the test items.
    """
    plan = resampling_plan(test_targets, len(grid.label_names), grid.seeds, np.random.default_rng([grid.seed, 3]))
    replicates = [replicate(output, plan) for output in outputs]
    results = []
    for fraction in grid.real_fractions:
        chosen = [i for i, run in enumerate(runs) if run["real_fraction"] == fraction]
        results.append({
            "real_fraction": fraction,
            "n_real": [runs[i]["n_real"] for i in chosen if runs[i]["arm"] == "real"],
            **_summaries([runs[i] for i in chosen], [replicates[i] for i in chosen], metrics, plan),
        })
    return results


def synthetic_record(pool_records: list[dict], sampled: bool, num_inference_steps: int, guidance_scale: float | None, seed_rule: str, folder: str | None) -> dict:
    """The report's `synthetic` entry: where the synthetic items came from and how each was seeded."""
    return {
        "source": "pipeline" if sampled else "folder",
        "pools": pool_records,
        **(
            {"num_inference_steps": num_inference_steps, "guidance_scale": guidance_scale, "seed_rule": seed_rule}
            if sampled
            else {"folder": str(folder)}
        ),
    }


def grid_report(
    grid: Grid,
    *,
    train: Any,
    test: Any,
    recipe: dict,
    synthetic: dict,
    results: list[dict],
    runs: list[dict],
    started: float,
    task_fields: Mapping[str, Any] | None = None,
    shape_fields: Mapping[str, Any] | None = None,
    test_fields: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The report as a dict; a task's own fields go first (`task_fields`), after the label names
    (`shape_fields`: what one item is) and after the test split's label counts (`test_fields`)."""
    return {
        **(task_fields or {}),
        "label_names": grid.label_names,
        **(shape_fields or {}),
        "real_fractions": list(grid.real_fractions),
        "synthetic_ratio": grid.synthetic_ratio,
        "seeds": grid.seeds,
        "seed": grid.seed,
        "rare_label": grid.label_names[grid.rare_index] if grid.rare_index is not None else None,
        "arms": list(ARMS),
        "n_real_train": len(train),
        "n_real_test": len(test),
        "real_train_label_counts": train.counts(),
        "real_test_label_counts": test.counts(),
        **(test_fields or {}),
        "recipe": recipe,
        "synthetic": synthetic,
        "interval_method": INTERVAL_METHOD,
        "warnings": seed_warnings(grid.seeds),
        "results": results,
        "runs": runs,
        "duration_s": round(time.perf_counter() - started, 3),
    }
