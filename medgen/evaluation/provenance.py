"""What a pipeline folder records about its training data, and the checks evaluate makes with it.

A training run saves its config as `training_config.yaml` in the pipeline folder (and `medgen models ship`
carries it into a built-in's folder). From it, evaluate learns two things before sampling:

- how the training images were read (`resize_mode`, `normalization`, ...), so that real images given with
  `--data` are read the same way (`recorded_preprocessing`);
- which images the model was trained on, so that reference images can be checked against them by content
  hash (`training_overlap`): a "held-out" score on training images says nothing about generalisation.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from medgen.evaluation.images import PREPROCESSING_FIELDS, ImageSet

TRAINING_CONFIG_FILE = "training_config.yaml"


def pipeline_folder(pipeline: Any) -> Path | None:
    """The local folder a pipeline was loaded from (a built-in name, a folder path, or a loaded pipeline whose
    `name_or_path` is a folder); None for a Hub repo id or an in-memory pipeline."""
    if isinstance(pipeline, (str, Path)):
        from medgen.pipelines.hub import BUILTIN_PIPELINES, builtin_pipeline_path

        if isinstance(pipeline, str) and pipeline.lower() in BUILTIN_PIPELINES:
            return builtin_pipeline_path(pipeline)
        folder = Path(pipeline).expanduser()
        return folder if folder.is_dir() else None
    name = getattr(pipeline, "name_or_path", None)
    return Path(name) if isinstance(name, str) and name and Path(name).is_dir() else None


def is_builtin_folder(folder: str | Path) -> bool:
    """Whether `folder` lies inside the installed package's `medgen/pretrained` (a built-in pipeline)."""
    from medgen.pipelines.catalog import PRETRAINED_DIR

    try:
        return Path(folder).resolve().is_relative_to(PRETRAINED_DIR.resolve())
    except OSError:
        return False


def recorded_training_data(folder: str | Path | None) -> tuple[Any, str]:
    """`(DataConfig, where)` of the data the pipeline in `folder` was trained on, read from its
    `training_config.yaml`; `(None, why not)` when the folder records none."""
    import yaml

    from medgen.data import DataConfig

    if folder is None:
        return None, "the pipeline is not a local folder, so its training data is unknown"
    path = Path(folder) / TRAINING_CONFIG_FILE
    if not path.is_file():
        return None, f"{Path(folder)} records no training data (no {TRAINING_CONFIG_FILE})"
    try:
        section = (yaml.safe_load(path.read_text()) or {}).get("data")
        config = DataConfig.from_dict(section)
    except (yaml.YAMLError, AttributeError, TypeError, ValueError) as error:
        return None, f"{path} has no readable data section ({error})"
    return config, str(path)


def recorded_preprocessing(config: Any) -> dict[str, Any]:
    """The preprocessing fields of a recorded training `DataConfig` (only the ones that are set)."""
    values = config.to_dict()
    return {name: values[name] for name in PREPROCESSING_FIELDS if values.get(name) is not None}


def training_overlap(reference: ImageSet, training: ImageSet) -> dict[str, Any]:
    """How many reference images are training images (same 8-bit pixels), with up to 5 examples by index."""
    if reference.images.shape[1:] != training.images.shape[1:]:
        raise ValueError(
            f"reference images {reference.images.shape[1:]} and training images {training.images.shape[1:]} "
            "differ in shape; they cannot be compared"
        )
    training_hashes = set(training.image_hashes())
    inside = np.array([digest in training_hashes for digest in reference.image_hashes()], dtype=bool)
    return {
        "n_reference": int(len(reference)),
        "n_training": int(len(training)),
        "n_overlap": int(inside.sum()),
        "overlap_index_examples": [int(i) for i in np.flatnonzero(inside)[:5]],
        "_mask": inside,
    }
