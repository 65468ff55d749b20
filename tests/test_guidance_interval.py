"""Guidance on part of the sampling steps only (`guidance_interval`): which steps are guided, the model's stored
default, and the commands that set (ship), use (generate, evaluate) and record it."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from medgen.cli import main as cli
from medgen.pipelines import load_pipeline
from medgen.pipelines.catalog import describe, ship
from medgen.sampling import effective_guidance_interval
from helpers import tiny_label_pipeline, tiny_unconditional_pipeline

STEPS = 4


def _images(pipe, **kwargs):
    return pipe(labels=["pneumonia", "normal"], num_inference_steps=STEPS, generator=torch.Generator().manual_seed(0),
                output_type="np", **kwargs).images


def _unet_batch_sizes(pipe, **kwargs) -> list[int]:
    sizes = []
    handle = pipe.unet.register_forward_pre_hook(lambda module, args: sizes.append(args[0].shape[0]))
    try:
        _images(pipe, **kwargs)
    finally:
        handle.remove()
    return sizes


def test_only_the_steps_inside_the_interval_run_the_unconditional_half():
    pipe = tiny_label_pipeline()
    assert _unet_batch_sizes(pipe, guidance_scale=3.0) == [4, 4, 4, 4]  # default: every step guided
    assert _unet_batch_sizes(pipe, guidance_scale=3.0, guidance_interval=(0.5, 1.0)) == [2, 2, 4, 4]
    assert _unet_batch_sizes(pipe, guidance_scale=3.0, guidance_interval=(0.0, 0.5)) == [4, 4, 2, 2]
    assert _unet_batch_sizes(pipe, guidance_scale=1.0, guidance_interval=(0.0, 1.0)) == [2, 2, 2, 2]


def test_an_interval_that_guides_no_step_samples_as_guidance_one_and_every_step_as_before():
    pipe = tiny_label_pipeline()
    unguided = _images(pipe, guidance_scale=1.0)
    np.testing.assert_array_equal(_images(pipe, guidance_scale=3.0, guidance_interval=(0.9, 1.0)), unguided)
    guided = _images(pipe, guidance_scale=3.0)
    np.testing.assert_array_equal(_images(pipe, guidance_scale=3.0, guidance_interval=[0, 1]), guided)
    partly = _images(pipe, guidance_scale=3.0, guidance_interval=(0.5, 1.0))
    assert not np.array_equal(partly, guided) and not np.array_equal(partly, unguided)


def test_a_stored_default_interval_is_used_by_a_call_that_gives_none(tmp_path):
    folder = tmp_path / "pipe"
    tiny_label_pipeline(default_guidance_interval=(0.5, 1.0)).save_pretrained(folder)
    # stored as a dict: a two-item list in model_index.json would read as a (library, class) component
    assert json.loads((folder / "model_index.json").read_text())["default_guidance_interval"] == {"start": 0.5, "stop": 1.0}
    pipe = load_pipeline(folder)
    assert pipe.default_guidance_interval == [0.5, 1.0]
    np.testing.assert_array_equal(_images(pipe, guidance_scale=3.0), _images(pipe, guidance_scale=3.0, guidance_interval=(0.5, 1.0)))
    assert effective_guidance_interval(pipe) == [0.5, 1.0] and effective_guidance_interval(pipe, (0.2, 0.9)) == [0.2, 0.9]
    assert describe(folder).default_guidance_interval == [0.5, 1.0]


def test_a_folder_saved_without_an_interval_guides_every_step(tmp_path):
    folder = tmp_path / "pipe"
    tiny_label_pipeline().save_pretrained(folder)
    index = json.loads((folder / "model_index.json").read_text())
    index.pop("default_guidance_interval", None)  # a folder written before the field existed
    (folder / "model_index.json").write_text(json.dumps(index))
    pipe = load_pipeline(folder)
    assert pipe.default_guidance_interval == [0.0, 1.0]
    assert _unet_batch_sizes(pipe, guidance_scale=3.0) == [4] * STEPS


@pytest.mark.parametrize("bad", [(0.5, 0.5), (0.6, 0.2), (-0.1, 1.0), (0.0, 1.5), (0.5,), "ab", (float("nan"), 1.0)])
def test_a_bad_interval_is_refused_naming_it(bad):
    pipe = tiny_label_pipeline()
    with pytest.raises(ValueError, match="guidance_interval"):
        _images(pipe, guidance_interval=bad)
    with pytest.raises(ValueError, match="default_guidance_interval"):
        tiny_label_pipeline(default_guidance_interval=bad)


def test_a_pipeline_without_guidance_steps_refuses_an_interval():
    pipe = tiny_unconditional_pipeline()
    assert effective_guidance_interval(pipe) is None
    with pytest.raises(ValueError, match="--guidance-interval"):
        effective_guidance_interval(pipe, (0.2, 1.0))


def test_generate_samples_with_and_records_the_interval(tmp_path):
    folder = tmp_path / "pipe"
    tiny_label_pipeline(default_guidance_scale=3.0, default_guidance_interval=(0.5, 1.0)).save_pretrained(folder)
    argv = ["generate", "--pipeline", str(folder), "--labels", "pneumonia", "--count", "2", "--num-inference-steps", "4",
            "--seed", "0", "--device", "cpu"]
    assert cli([*argv, "--output", str(tmp_path / "default")]) == 0
    assert cli([*argv, "--output", str(tmp_path / "every"), "--guidance-interval", "0", "1"]) == 0
    assert json.loads((tmp_path / "default" / "params.json").read_text())["guidance_interval"] == [0.5, 1.0]
    assert json.loads((tmp_path / "every" / "params.json").read_text())["guidance_interval"] == [0.0, 1.0]
    first = sorted((tmp_path / "default").glob("*.png"))[0].read_bytes()
    assert first != sorted((tmp_path / "every").glob("*.png"))[0].read_bytes()
    assert cli([*argv, "--output", str(tmp_path / "bad"), "--guidance-interval", "0.8", "0.2"]) != 0
    assert not (tmp_path / "bad").exists() or not list((tmp_path / "bad").glob("*.png"))


def test_evaluate_samples_with_and_records_the_interval(pneumoniamnist_npz, tmp_path):
    folder = tmp_path / "pipe"
    tiny_label_pipeline(default_guidance_scale=3.0).save_pretrained(folder)
    argv = ["evaluate", "--pipeline", str(folder), "--data", str(pneumoniamnist_npz), "--num-samples", "4",
            "--num-inference-steps", "2", "--feature-extractor", "pixel", "--no-classifier", "--max-real", "50",
            "--no-cache", "--device", "cpu", "--no-progress", "--no-feature-memorization", "--no-frd"]
    assert cli([*argv, "--output", str(tmp_path / "report"), "--guidance-interval", "0.5", "1"]) == 0
    assert json.loads((tmp_path / "report" / "report.json").read_text())["sampling"]["guidance_interval"] == [0.5, 1.0]
    assert cli([*argv, "--output", str(tmp_path / "bad"), "--guidance-interval", "1", "2"]) != 0
    assert not (tmp_path / "bad" / "report.json").exists()


def test_ship_stores_the_interval_and_models_lists_it(tmp_path):
    from medgen.commands.models import _detail_lines

    run = tmp_path / "run"
    tiny_label_pipeline(latent=True).save_pretrained(run)
    (run / "training_config.yaml").write_text("seed: 5\nnum_sample_images: 2\ndiffusion:\n  num_inference_steps: 2\n")
    out = ship(run, "busi", "breast ultrasound", "BUSI", output=tmp_path / "shipped", guidance_scale=3.0,
               guidance_interval=(0.25, 1.0))
    assert json.loads((out / "model_index.json").read_text())["default_guidance_interval"] == {"start": 0.25, "stop": 1.0}
    assert load_pipeline(out).default_guidance_interval == [0.25, 1.0]
    assert ("labels", "normal, pneumonia; samples at guidance 3 by default, guided on steps 25-100% of the way") in (
        _detail_lines(describe(out)))
    with pytest.raises(ValueError, match="--guidance-interval"):
        ship(run, "busi", "breast ultrasound", "BUSI", output=tmp_path / "other", guidance_interval=(0.5, 0.1))
    assert not (tmp_path / "other").exists()


def test_the_model_card_names_a_limited_interval_and_leaves_every_step_unsaid():
    from medgen.pipelines.model_card import _generated_text

    sampling = {"num_inference_steps": 15, "guidance_scale": 6.0}
    assert _generated_text({"n_generated": 156, "sampling": {**sampling, "guidance_interval": [0.1, 1.0]}}) == (
        "156 (15 steps, guidance 6.00, guided on steps 10-100% of the way)")
    assert _generated_text({"n_generated": 156, "sampling": {**sampling, "guidance_interval": [0.0, 1.0]}}) == (
        "156 (15 steps, guidance 6.00)")
