"""One default step count everywhere: the pipelines' own `__call__` default (what a stock diffusers user gets)
and every medgen entry point (commands, Python API, app, training config) agree."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from medgen.sampling import DEFAULT_INFERENCE_STEPS

PRETRAINED = Path(__file__).resolve().parents[1] / "medgen" / "pretrained"


def _default(function, name: str = "num_inference_steps"):
    return inspect.signature(function).parameters[name].default


@pytest.mark.parametrize("class_name", ["UnconditionalPipeline", "LabelConditionedPipeline", "TextToImagePipeline"])
def test_each_pipeline_file_defaults_to_the_shared_step_count(class_name):
    import medgen.pipelines as pipelines

    assert _default(getattr(pipelines, class_name).__call__) == DEFAULT_INFERENCE_STEPS


@pytest.mark.parametrize(
    "argv",
    [
        ["generate", "--pipeline", "p", "--output", "o"],
        ["evaluate", "--pipeline", "p", "--data", "d", "--output", "o"],
        ["downstream", "--pipeline", "p", "--data", "d", "--output", "o"],
    ],
    ids=["generate", "evaluate", "downstream"],
)
def test_each_command_defaults_to_the_shared_step_count(argv):
    from medgen.cli import build_parser

    assert build_parser().parse_args(argv).num_inference_steps == DEFAULT_INFERENCE_STEPS


def test_python_api_and_training_config_use_it():
    from medgen.app import make_request
    from medgen.config import DiffusionConfig
    from medgen.downstream.experiment import run_downstream
    from medgen.evaluation.api import evaluate, sample_pipeline

    assert DiffusionConfig().num_inference_steps == DEFAULT_INFERENCE_STEPS
    for function in (run_downstream, evaluate, sample_pipeline, make_request):
        assert _default(function) == DEFAULT_INFERENCE_STEPS, function.__name__


def test_shipped_models_sample_with_it_when_no_step_count_is_given():
    from medgen.pipelines import LabelConditionedPipeline

    # each shipped folder's pipeline.py is what stock diffusers runs with trust_remote_code
    for folder in sorted(path for path in PRETRAINED.iterdir() if (path / "pipeline.py").is_file()):
        text = (folder / "pipeline.py").read_text()
        assert f"num_inference_steps: int = {DEFAULT_INFERENCE_STEPS}," in text, folder.name
    assert _default(LabelConditionedPipeline.__call__) == DEFAULT_INFERENCE_STEPS
