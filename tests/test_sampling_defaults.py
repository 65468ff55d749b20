"""One default step count everywhere: the pipelines' own `__call__` default (what a stock diffusers user gets)
and every medgen entry point (commands, Python API, app, training config) agree. A label model may store its own
(`default_num_inference_steps`, tests/test_default_steps.py): its pipeline and the entry points then leave the count
unset (None) and resolve it to the model's, which is the shared one when the model stores none."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from medgen.sampling import DEFAULT_INFERENCE_STEPS

PRETRAINED = Path(__file__).resolve().parents[1] / "medgen" / "pretrained"


def _default(function, name: str = "num_inference_steps"):
    return inspect.signature(function).parameters[name].default


@pytest.mark.parametrize("class_name", ["UnconditionalPipeline", "TextToImagePipeline"])
def test_each_pipeline_file_defaults_to_the_shared_step_count(class_name):
    import medgen.pipelines as pipelines

    assert _default(getattr(pipelines, class_name).__call__) == DEFAULT_INFERENCE_STEPS


def test_a_label_model_that_stores_no_step_count_samples_with_the_shared_one():
    from helpers import tiny_label_pipeline
    from medgen.pipelines import pipeline_label_conditioned

    assert pipeline_label_conditioned.DEFAULT_INFERENCE_STEPS == DEFAULT_INFERENCE_STEPS  # the file ships alone
    pipe = tiny_label_pipeline()
    assert pipe.default_num_inference_steps == DEFAULT_INFERENCE_STEPS
    calls = []
    pipe.unet.register_forward_pre_hook(lambda module, args: calls.append(1))
    pipe(labels="normal", output_type="np")
    assert len(calls) == DEFAULT_INFERENCE_STEPS


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

    assert build_parser().parse_args(argv).num_inference_steps is None  # the model's own, resolved on loading it


def test_python_api_and_training_config_use_it():
    from medgen.app import make_request
    from medgen.config import DiffusionConfig
    from medgen.downstream.experiment import run_downstream
    from medgen.evaluation.api import evaluate, sample_pipeline

    assert DiffusionConfig().num_inference_steps == DEFAULT_INFERENCE_STEPS
    for function in (run_downstream, evaluate, sample_pipeline, make_request):
        assert _default(function) is None, function.__name__  # the model's own (medgen.sampling.effective_inference_steps)


def test_shipped_models_sample_with_it_when_no_step_count_is_given():
    from medgen.pipelines import LabelConditionedPipeline

    # each shipped folder's pipeline.py is what stock diffusers runs with trust_remote_code
    for folder in sorted(path for path in PRETRAINED.iterdir() if (path / "pipeline.py").is_file()):
        text = (folder / "pipeline.py").read_text()
        assert (f"num_inference_steps: int = {DEFAULT_INFERENCE_STEPS}," in text
                or f"DEFAULT_INFERENCE_STEPS = {DEFAULT_INFERENCE_STEPS}  #" in text), folder.name
    assert _default(LabelConditionedPipeline.__call__) is None
