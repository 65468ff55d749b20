"""95% intervals that stay inside each metric's range: a bootstrap over seeds and test images.

The old intervals (mean +/- t x standard error over seeds) left the metric's range with few seeds
(balanced accuracy [0.265, 1.002], sensitivity [-0.684, 1.824] over 3 seeds) and ignored that the test
set is itself a sample. Here every replicate of a two-level bootstrap redraws

1. the seeds, with replacement (a seed is one real subset and one classifier initialisation), and
2. the test images, with replacement within each label (so every label keeps its count and AUROC stays
   defined), one redraw shared by every arm and seed of the replicate;

and recomputes the metric of each drawn classifier from its stored test predictions, then averages over
the drawn seeds. A replicate is a mean of values of the metric, so every percentile, and the interval,
lies inside the metric's range ([0, 1]; [-1, 1] for a difference). Differences are paired: both arms of a
replicate share the drawn seeds and test images.

A percentile bootstrap over n seeds is too narrow for small n (it uses the normal quantile and the
divide-by-n spread; with 5 seeds a nominal 95% interval covers about 85%). The interval therefore takes the
*expanded* percentiles of Hesterberg ("What teachers should know about the bootstrap", The American
Statistician 69(4), 2015): tail probability Phi(-sqrt(n / (n - 1)) t(0.975, n - 1)) instead of 0.025, aiming
at the t-interval's width for the seed level. Measured without test-image spread, the width is 84% of the
t-interval's at 5 seeds and 97% at 10 (a plain percentile interval: 63% and 82%). With 2 or 3 seeds no
bootstrap gets there: the interval is the replicates' range and cannot be much wider than the seeds' own
spread, hence the warning below 5 seeds. One seed gives an interval over test images only, and no verdict.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Sequence

import numpy as np

CONFIDENCE = 0.95
BOOTSTRAP_REPLICATES = 2000
MIN_SEEDS = 5  # fewer seeds: the report warns that the intervals mean little
FIRM_SEEDS = 10

INTERVAL_METHOD = {
    "name": "two-level bootstrap over seeds and test images, expanded percentile interval",
    "confidence": CONFIDENCE,
    "replicates": BOOTSTRAP_REPLICATES,
    "description": (
        "each replicate redraws the seeds (real subset + classifier) with replacement and the test images with "
        "replacement within each label, recomputes every metric from the stored test predictions and averages over "
        "the drawn seeds; differences are paired (same seeds and test images for both arms). The interval is the "
        "replicates' percentiles at Phi(-sqrt(n/(n-1)) t(0.975, n-1)) and its complement for n seeds (Hesterberg "
        "2015, expanded percentile): inside the metric's range, and close to a t-interval's width for the seed level "
        "from 5 seeds on. With one seed it covers the test images only."
    ),
}


def seed_warnings(seeds: int) -> list[str]:
    """What a reader must know when there are too few seeds per real fraction for an interval to mean much."""
    if seeds == 1:
        return [
            "one seed per real fraction: the intervals cover test-image sampling only, not the spread between "
            f"classifiers, and no verdict is drawn; use --seeds {MIN_SEEDS} or more"
        ]
    if seeds < MIN_SEEDS:
        return [
            f"only {seeds} seeds per real fraction: each interval rests on {seeds} classifiers per arm and cannot be "
            f"much wider than their spread, too few for it to mean much; use --seeds {MIN_SEEDS} or more "
            f"({FIRM_SEEDS} for a firm verdict)"
        ]
    return []


@dataclass(frozen=True)
class ResamplingPlan:
    """The bootstrap draws, shared by every arm, fraction and metric of a report (that makes differences paired).

    `seed_draws[b]` are the seed indices of replicate b, `test_draws[b]` its test image indices, laid out in
    blocks of one label each: `blocks[k]` is the slice of label k's images.
    """

    seed_draws: np.ndarray
    test_draws: np.ndarray
    blocks: tuple[slice, ...]

    @property
    def n_seeds(self) -> int:
        return int(self.seed_draws.shape[1])


def resampling_plan(
    targets: np.ndarray, num_labels: int, n_seeds: int, rng: np.random.Generator, replicates: int = BOOTSTRAP_REPLICATES
) -> ResamplingPlan:
    """Draws `replicates` sets of seeds (with replacement) and of test images (with replacement, within each label)."""
    if n_seeds < 1 or replicates < 1:
        raise ValueError(f"a bootstrap needs at least one seed and one replicate, got {n_seeds} and {replicates}")
    seed_draws = rng.integers(0, n_seeds, size=(replicates, n_seeds)) if n_seeds > 1 else np.zeros((replicates, 1), int)
    columns, blocks, start = [], [], 0
    for label in range(num_labels):
        members = np.flatnonzero(targets == label)
        columns.append(members[rng.integers(0, len(members), size=(replicates, len(members)))] if len(members) else
                       np.zeros((replicates, 0), int))
        blocks.append(slice(start, start + len(members)))
        start += len(members)
    return ResamplingPlan(seed_draws, np.concatenate(columns, axis=1), tuple(blocks))


def _auroc_replicates(scores: np.ndarray, positives: np.ndarray, negatives: np.ndarray) -> np.ndarray:
    """Mann-Whitney AUROC (ties count one half) for each row of drawn positive and negative indices."""
    _, bucket = np.unique(scores, return_inverse=True)
    width = int(bucket.max()) + 1
    replicates = len(positives)
    offsets = np.arange(replicates)[:, None] * width
    negative_counts = np.bincount((offsets + bucket[negatives]).ravel(), minlength=replicates * width).reshape(replicates, width)
    below = np.cumsum(negative_counts, axis=1) - negative_counts
    drawn = bucket[positives]
    wins = np.take_along_axis(below, drawn, axis=1) + 0.5 * np.take_along_axis(negative_counts, drawn, axis=1)
    return wins.sum(axis=1) / (positives.shape[1] * negatives.shape[1])


def replicate_scores(probabilities: np.ndarray, targets: np.ndarray, label_names: Sequence[str], plan: ResamplingPlan) -> dict:
    """The metrics of `classifier.score_on_test` on every bootstrap redraw of the test images: arrays `(B,)`.

    Same definitions: AUROC binary, or one-vs-rest macro over the labels present; balanced accuracy the mean
    sensitivity over the labels present; sensitivity 0 for a label absent from the test set.
    """
    replicates = len(plan.test_draws)
    present = [k for k, block in enumerate(plan.blocks) if block.stop > block.start]
    correct = probabilities.argmax(axis=1) == targets
    sensitivity = {}
    for k, name in enumerate(label_names):
        block = plan.blocks[k]
        drawn = plan.test_draws[:, block]
        sensitivity[name] = correct[drawn].mean(axis=1) if drawn.shape[1] else np.zeros(replicates)
    balanced = np.mean([sensitivity[label_names[k]] for k in present], axis=0)
    if len(present) < 2:
        auroc = np.full(replicates, np.nan)
    else:
        scores = probabilities[:, present] / np.clip(probabilities[:, present].sum(axis=1, keepdims=True), 1e-12, None)
        classes = present[1:] if len(label_names) == 2 else present
        per_class = []
        for k in classes:
            negatives = np.concatenate([plan.test_draws[:, plan.blocks[j]] for j in present if j != k], axis=1)
            per_class.append(_auroc_replicates(scores[:, present.index(k)], plan.test_draws[:, plan.blocks[k]], negatives))
        auroc = np.mean(per_class, axis=0)
    return {"auroc": auroc, "balanced_accuracy": balanced, "sensitivity": sensitivity}


def _tail(n_seeds: int, confidence: float) -> float:
    """Tail probability of the expanded percentile interval (Hesterberg 2015) for `n_seeds` seeds."""
    from scipy.stats import norm, t

    if n_seeds < 2:
        return (1 - confidence) / 2
    return float(norm.sf(math.sqrt(n_seeds / (n_seeds - 1)) * t.ppf(0.5 + confidence / 2, n_seeds - 1)))


def _interval(replicates: np.ndarray | None, plan: ResamplingPlan | None, confidence: float) -> list[float] | None:
    """Percentile interval of the seed-averaged replicates; `replicates` is `(B, n_seeds)`, NaN where undefined."""
    if replicates is None or plan is None:
        return None
    drawn = np.take_along_axis(replicates, plan.seed_draws, axis=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a replicate whose drawn seeds are all undefined is NaN
        means = np.nanmean(drawn, axis=1)
    means = means[np.isfinite(means)]
    if not len(means):
        return None
    tail = _tail(plan.n_seeds, confidence)
    low, high = np.quantile(means, [tail, 1 - tail])
    return [float(low), float(high)]


def summarize(
    values: Sequence[float | None],
    replicates: np.ndarray | None = None,
    plan: ResamplingPlan | None = None,
    confidence: float = CONFIDENCE,
) -> dict:
    """`{"mean", "ci95": [low, high], "std", "n", "values"}` over the seeds' finite values.

    `mean` and `std` (ddof 1) are over the per-seed values; `ci95` is the bootstrap interval of the module
    docstring from `replicates` `(B, n_seeds)` and `plan` (None without them). `None` values (e.g. AUROC
    undefined) are left out of the mean and counted in `n_missing`.
    """
    finite = [float(v) for v in values if v is not None and math.isfinite(v)]
    result: dict = {"mean": None, "ci95": None, "std": None, "n": len(finite), "values": list(values)}
    if len(values) != len(finite):
        result["n_missing"] = len(values) - len(finite)
    if not finite:
        return result
    mean = sum(finite) / len(finite)
    result["mean"] = mean
    if len(finite) > 1:
        result["std"] = math.sqrt(sum((v - mean) ** 2 for v in finite) / (len(finite) - 1))
    result["ci95"] = _interval(replicates, plan, confidence)
    return result


def paired_difference(
    first: Sequence[float | None],
    second: Sequence[float | None],
    first_replicates: np.ndarray | None = None,
    second_replicates: np.ndarray | None = None,
    plan: ResamplingPlan | None = None,
) -> dict:
    """`summarize` of `first[i] - second[i]` over the seeds where both exist (same real subset, same init),
    its interval from the paired replicates (same seeds and test images on both sides)."""
    if len(first) != len(second):
        raise ValueError(f"paired difference needs as many values on each side, got {len(first)} and {len(second)}")
    differences = [a - b if a is not None and b is not None else None for a, b in zip(first, second)]
    replicates = None if first_replicates is None or second_replicates is None else first_replicates - second_replicates
    return summarize(differences, replicates, plan)
