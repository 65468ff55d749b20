"""medgen: synthetic medical images with Hugging Face diffusers pipelines.

Research and teaching only; generated images are not for diagnosis.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# Public names, imported on first use so that `import medgen` stays light.
_LAZY = {
    "UnconditionalPipeline": "medgen.pipelines",
    "LabelConditionedPipeline": "medgen.pipelines",
    "TextToImagePipeline": "medgen.pipelines",
    "MaskConditionedPipeline": "medgen.pipelines",
    "load_pipeline": "medgen.pipelines",
    "DataConfig": "medgen.data",
    "build_dataset": "medgen.data",
    "read_image": "medgen.data",
    "read_dicom": "medgen.data",
    "evaluate": "medgen.evaluation",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'medgen' has no attribute {name!r}")
