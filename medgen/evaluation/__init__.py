"""`medgen evaluate`: are synthetic images realistic, diverse, faithful to their label, useful, and not copies?

Public API (imported on first use, so that `medgen --help` stays fast):
`evaluate`, `evaluate_image_sets`, `sample_pipeline`, `ImageSet`, `load_generated_folder`,
`load_real_split`, `get_feature_extractor`, `InceptionV3Features`.
"""

from __future__ import annotations

import importlib

_LAZY = {
    "evaluate": "medgen.evaluation.api",
    "evaluate_image_sets": "medgen.evaluation.api",
    "sample_pipeline": "medgen.evaluation.api",
    "ImageSet": "medgen.evaluation.images",
    "load_generated_folder": "medgen.evaluation.images",
    "save_generated_folder": "medgen.evaluation.images",
    "load_real_split": "medgen.evaluation.images",
    "get_feature_extractor": "medgen.evaluation.features",
    "InceptionV3Features": "medgen.evaluation.features",
    "ClassifierRecipe": "medgen.evaluation.classifier",
}

__all__ = list(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'medgen.evaluation' has no attribute {name!r}")
