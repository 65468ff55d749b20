"""The 32 px PneumoniaMNIST pipeline (`pneumoniamnist-32`): the fastest built-in, for teaching and quick runs."""

from __future__ import annotations

import json
from pathlib import Path

import torch

import medgen
from medgen.pipelines import LabelConditionedPipeline, pipeline_label_conditioned

DEFAULT = Path(medgen.__file__).parent / "pretrained" / "pneumoniamnist-32"


def test_pneumoniamnist32_ships_the_current_pipeline_source():
    # a stale copy would make stock diffusers (trust_remote_code=True) run older code than medgen does
    assert (DEFAULT / "pipeline.py").read_text() == Path(pipeline_label_conditioned.__file__).read_text()
    assert json.loads((DEFAULT / "model_index.json").read_text())["_class_name"] == ["pipeline", "LabelConditionedPipeline"]


def test_pneumoniamnist32_generates_both_findings():
    pipe = medgen.load_pipeline(DEFAULT)
    assert isinstance(pipe, LabelConditionedPipeline)
    assert pipe.labels == ["normal", "pneumonia"]
    assert pipe.unet.dtype == torch.float32  # fp16 on disk, float32 on load for CPU
    images = pipe(labels=["Normal", "PNEUMONIA"], num_inference_steps=5, generator=torch.manual_seed(0), output_type="np").images
    assert images.shape == (2, 32, 32, 1)
    assert 0.0 <= images.min() and images.max() <= 1.0
    assert images.std() > 0.05  # a trained model gives structured images, not a flat field
