"""Class-balanced training by oversampling: rare findings are shown as often as the recipe asks.

A label-conditioned model trained on natural frequencies (2.9 pneumonia images per normal one in Kermany,
4.7 malignant per benign lung CT slice) spends most of its capacity on the common class and under-covers the
rare one: the "normal" mode collapsed in medgen's first 32 px model. `class_balance: p` repeats the images of
class c about `(n_max / n_c) ** p` times per epoch (p = 0: natural frequencies, p = 1: every class equally
often). The repetition is a fixed, seeded index list, so the seedable sampler, resuming mid-epoch and
multi-process sharding work exactly as on the plain dataset.
"""

from __future__ import annotations

import numpy as np


def balanced_indices(labels: np.ndarray, power: float, seed: int) -> list[int]:
    """Indices into a single-label set (`labels`: one-hot rows) with class c repeated ~`(n_max / n_c) ** power` times."""
    labels = np.asarray(labels)
    if labels.ndim != 2 or len(labels) == 0:
        raise ValueError("class_balance needs labelled training data (one label vector per image)")
    if (labels.sum(axis=1) != 1).any():
        raise ValueError("class_balance needs single-label data (exactly one label per image); this set is multi-label")
    classes = labels.argmax(axis=1)
    counts = np.bincount(classes, minlength=labels.shape[1])
    rng = np.random.default_rng(seed)
    indices: list[int] = []
    for label, count in enumerate(counts):
        if count == 0:
            continue
        members = np.flatnonzero(classes == label)
        repeats = (counts.max() / count) ** power
        whole, fraction = int(repeats), repeats - int(repeats)
        indices.extend(np.tile(members, whole).tolist())
        extra = int(round(fraction * count))
        indices.extend(rng.choice(members, size=extra, replace=False).tolist())
    return sorted(indices)
