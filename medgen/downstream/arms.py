"""The four training sets of one (real fraction, seed) cell.

- `real`: the real subset alone.
- `real+synthetic`: plus `ratio x len(real)` synthetic images, label-balanced or, with a rare label, of that
  label only.
- `real+duplicated`: plus the same number of extra images, with the same labels, re-sampled (with replacement)
  from the real subset. This is the control: published comparisons found that much of the gain credited to
  synthetic images is also obtained by showing the classifier its real images more often, so a gain only
  counts when `real+synthetic` beats this arm, not when it beats `real`.
- `synthetic`: synthetic images only, as many as the real subset and with its label counts.
"""

from __future__ import annotations

import numpy as np

from medgen.downstream.data import LabelledImages, concatenate

ARMS = ("real", "real+synthetic", "real+duplicated", "synthetic")


def extra_label_counts(extra: int, num_labels: int, rare_index: int | None = None) -> np.ndarray:
    """How many extra images each label gets: all to the rare label, else as even as possible."""
    counts = np.zeros(num_labels, dtype=np.int64)
    if rare_index is not None:
        counts[rare_index] = extra
    else:
        counts += extra // num_labels
        counts[: extra % num_labels] += 1
    return counts


def extra_count(real_count: int, ratio: float) -> int:
    return int(round(ratio * real_count))


def synthetic_needs(subset_counts: np.ndarray, ratio: float, rare_index: int | None) -> np.ndarray:
    """Synthetic images per label that one cell uses: enough for `real+synthetic` and for `synthetic`."""
    extra = extra_label_counts(extra_count(int(subset_counts.sum()), ratio), len(subset_counts), rare_index)
    return np.maximum(extra, subset_counts)


def duplicated_index(targets: np.ndarray, extra: np.ndarray, label_names: list[str], rng: np.random.Generator, noun: str = "image") -> np.ndarray:
    """Indices into the real subset (labels `targets`) of the control's extras: `extra[label]` of each label,
    re-sampled with replacement."""
    chosen = []
    for label, count in enumerate(extra):
        if count == 0:
            continue
        candidates = np.flatnonzero(targets == label)
        if len(candidates) == 0:
            raise ValueError(
                f"the real subset holds no {noun} of label {label_names[label]!r}, so the duplicated control "
                f"cannot match the synthetic {noun}s' labels; use a larger --real-fraction"
            )
        chosen.append(rng.choice(candidates, size=int(count), replace=True))
    return np.concatenate(chosen) if chosen else np.arange(0)


def _synthetic(pool: list[np.ndarray], counts: np.ndarray, orders: list[np.ndarray], label_names: list[str]) -> LabelledImages:
    images, targets = [], []
    for label, count in enumerate(counts):
        if count > len(pool[label]):
            raise ValueError(
                f"{count} synthetic images of label {label_names[label]!r} are needed but only {len(pool[label])} are available"
            )
        images.append(pool[label][orders[label][:count]])
        targets.append(np.full(count, label, dtype=np.int64))
    return LabelledImages(np.concatenate(images), np.concatenate(targets), list(label_names), ["synthetic"] * int(counts.sum()))


def build_arms(
    real: LabelledImages,
    pool: list[np.ndarray],
    ratio: float,
    rng: np.random.Generator,
    rare_index: int | None = None,
) -> dict[str, LabelledImages]:
    """The four training sets (see module docstring). `pool[label]` holds synthetic images `(M, C, H, W)` in [0, 1]."""
    num_labels = len(real.label_names)
    subset_counts = np.bincount(real.targets, minlength=num_labels)
    extra = extra_label_counts(extra_count(len(real), ratio), num_labels, rare_index)
    # One random order of each label's pool per cell: different seeds see different synthetic images
    # whenever the pool holds more than a cell needs.
    orders = [rng.permutation(len(images)) for images in pool]
    added = _synthetic(pool, extra, orders, real.label_names)
    duplicated = real.subset(duplicated_index(real.targets, extra, real.label_names, rng))
    return {
        "real": real,
        "real+synthetic": concatenate([real, added]),
        "real+duplicated": concatenate([real, duplicated]),
        "synthetic": _synthetic(pool, subset_counts, orders, real.label_names),
    }
