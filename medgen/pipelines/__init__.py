"""medgen's pipelines: the self-contained diffusers pipelines plus medgen's loading and saving.

Each `pipeline_*.py` file is what a saved folder ships as `pipeline.py`; the classes exported
here add `MedgenPipelineMixin` so that, with medgen installed, loading runs no remote code.
"""

from __future__ import annotations

import os
from typing import Any

from medgen.pipelines import (
    pipeline_label_conditioned,
    pipeline_mask_conditioned,
    pipeline_text_to_image,
    pipeline_unconditional,
)
from medgen.pipelines.hub import MedgenPipelineMixin, pipeline_class_name, read_model_index, resolve_pipeline_folder


class UnconditionalPipeline(MedgenPipelineMixin, pipeline_unconditional.UnconditionalPipeline):
    __doc__ = pipeline_unconditional.UnconditionalPipeline.__doc__


class LabelConditionedPipeline(MedgenPipelineMixin, pipeline_label_conditioned.LabelConditionedPipeline):
    __doc__ = pipeline_label_conditioned.LabelConditionedPipeline.__doc__


class TextToImagePipeline(MedgenPipelineMixin, pipeline_text_to_image.TextToImagePipeline):
    __doc__ = pipeline_text_to_image.TextToImagePipeline.__doc__


class MaskConditionedPipeline(MedgenPipelineMixin, pipeline_mask_conditioned.MaskConditionedPipeline):
    __doc__ = pipeline_mask_conditioned.MaskConditionedPipeline.__doc__


PIPELINE_CLASSES: dict[str, type] = {
    "UnconditionalPipeline": UnconditionalPipeline,
    "LabelConditionedPipeline": LabelConditionedPipeline,
    "TextToImagePipeline": TextToImagePipeline,
    "MaskConditionedPipeline": MaskConditionedPipeline,
}


def load_pipeline(name_or_path: str | os.PathLike, **kwargs: Any):
    """
    Loads a medgen pipeline with the right medgen class, without running code from the folder.

    `name_or_path` is a built-in name (`"default"`: the pipeline embedded in the package), a local folder
    holding `model_index.json`, or a Hugging Face Hub repo id. Other keyword arguments go to `from_pretrained`.
    """
    download_kwargs = {key: kwargs.pop(key) for key in ("revision", "token", "cache_dir") if key in kwargs}
    folder = resolve_pipeline_folder(name_or_path, **download_kwargs)
    class_name = pipeline_class_name(read_model_index(folder))
    if class_name not in PIPELINE_CLASSES:
        raise ValueError(
            f"{folder} holds a {class_name}, which is not a medgen pipeline. "
            f"medgen pipelines: {', '.join(PIPELINE_CLASSES)}."
        )
    return PIPELINE_CLASSES[class_name].from_pretrained(folder, **kwargs)


__all__ = ["UnconditionalPipeline", "LabelConditionedPipeline", "TextToImagePipeline", "MaskConditionedPipeline", "MedgenPipelineMixin", "PIPELINE_CLASSES", "load_pipeline"]
