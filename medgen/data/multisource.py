"""Several image sets as one training set: a text model trained across modalities.

A training config lists its sets as `data` plus `extra_data` (each a `DataConfig`, usually with its own
`prompts` set and held-out split). `build_dataset` reads each; `combine_datasets` joins them into one
`MedicalImageDataset` whose labels are the union of the sets' labels, each named `<set folder>/<label>`
(`kermany-cxr-224/normal`), so that class balancing and data summaries still see every class of every set.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from medgen.data.dataset import MedicalImageDataset


def source_name(data: MedicalImageDataset) -> str:
    """The set's folder (or file) name: `kermany-cxr-224`."""
    return Path(data.config.path).name or str(data.config.path)


def combine_datasets(parts: list[MedicalImageDataset]) -> MedicalImageDataset:
    """One dataset of every row of `parts`, in order, with union label vectors `<set>/<label>`.

    The parts must be cached (not streaming) and share resolution and channels. The result's `config` is the
    first part's (it sets resolution, channels and the cache folder); its `fingerprint` covers every part."""
    from datasets import concatenate_datasets

    if not parts:
        raise ValueError("combine_datasets needs at least one dataset")
    if len(parts) == 1:
        return parts[0]
    first = parts[0]
    names = [source_name(part) for part in parts]
    duplicated = sorted({name for name in names if names.count(name) > 1})
    if duplicated:
        raise ValueError(f"the image sets {duplicated} are listed more than once (data and extra_data)")
    for name, part in zip(names, parts):
        if part.streaming:
            raise ValueError(f"{name}: several image sets are joined from the cached data; set streaming to false")
        if (part.config.resolution, part.config.channels) != (first.config.resolution, first.config.channels):
            raise ValueError(
                f"{name} is read at {part.config.resolution} px / {part.config.channels} channel(s), {names[0]} at "
                f"{first.config.resolution} px / {first.config.channels}: they must match"
            )
        if part.multi_label:
            raise ValueError(f"{name} is multi-label; joining sets takes single-label sets (one finding per image)")
    label_names = [f"{name}/{label}" for name, part in zip(names, parts) for label in part.label_names]
    datasets, offset = [], 0
    for part in parts:
        count = len(part.dataset)
        vectors = np.zeros((count, len(label_names)), dtype=np.float32)
        if part.num_labels:
            own = np.asarray(part.dataset.with_format("numpy", columns=["labels"])["labels"], dtype=np.float32)
            vectors[:, offset : offset + part.num_labels] = own.reshape(count, part.num_labels)
        offset += part.num_labels
        datasets.append(part.dataset.remove_columns("labels").add_column("labels", vectors.tolist()))
    dataset = concatenate_datasets(datasets)
    digest = hashlib.sha256("\0".join(part.fingerprint for part in parts).encode()).hexdigest()[:32]
    dropped = {f"{name}: {reason}": count for name, part in zip(names, parts) for reason, count in part.dropped.items()}
    return MedicalImageDataset(
        dataset=dataset,
        label_names=label_names,
        multi_label=False,
        skipped=[skip for part in parts for skip in part.skipped],
        config=first.config,
        fingerprint=f"medgen-sets-{digest}",
        dropped=dropped,
        read_from={"sets": [{"name": name, **part.read_from} for name, part in zip(names, parts)]},
    )
