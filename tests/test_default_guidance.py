"""A label model's own default guidance scale: stored in model_index.json, used by a call that gives none,
shown by the app, recorded by generate and evaluate, and set when shipping (chosen with bench_guidance.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from medgen.cli import main as cli
from medgen.pipelines import LabelConditionedPipeline, load_pipeline
from medgen.pipelines.catalog import ship
from medgen.sampling import effective_guidance_scale
from helpers import tiny_label_pipeline, tiny_text_pipeline


def _images(pipe, **kwargs):
    return pipe(labels=["pneumonia", "normal"], num_inference_steps=3, generator=torch.Generator().manual_seed(0),
                output_type="np", **kwargs).images


def test_a_saved_default_is_what_a_call_without_guidance_samples_with(tmp_path):
    folder = tmp_path / "pipe"
    tiny_label_pipeline(default_guidance_scale=4.0).save_pretrained(folder)
    assert json.loads((folder / "model_index.json").read_text())["default_guidance_scale"] == 4.0

    pipe = load_pipeline(folder)
    assert pipe.default_guidance_scale == 4.0
    default = _images(pipe)
    np.testing.assert_array_equal(default, _images(pipe, guidance_scale=4.0))
    assert not np.array_equal(default, _images(pipe, guidance_scale=2.0))
    assert effective_guidance_scale(pipe, None) == 4.0 and effective_guidance_scale(pipe, 1.5) == 1.5


def test_a_folder_saved_without_a_default_samples_at_two_as_before(tmp_path):
    folder = tmp_path / "pipe"
    tiny_label_pipeline().save_pretrained(folder)
    index = json.loads((folder / "model_index.json").read_text())
    index.pop("default_guidance_scale", None)  # a folder written before the field existed
    (folder / "model_index.json").write_text(json.dumps(index))

    pipe = load_pipeline(folder)
    assert pipe.default_guidance_scale == 2.0
    np.testing.assert_array_equal(_images(pipe), _images(pipe, guidance_scale=2.0))


@pytest.mark.parametrize("bad", [-1.0, float("nan"), float("inf")])
def test_a_bad_default_is_refused_naming_the_field(bad):
    with pytest.raises(ValueError, match="default_guidance_scale"):
        tiny_label_pipeline(default_guidance_scale=bad)


def test_the_text_pipeline_keeps_its_own_default_when_none_is_asked_for():
    pipe = tiny_text_pipeline()
    assert effective_guidance_scale(pipe, None) == 3.0  # its __call__ default, not the label models' 2.0


def test_the_app_offers_the_models_default(tmp_path):
    from medgen.app.models import describe_pipeline, describe_pipeline_folder

    folder = tmp_path / "pipe"
    tiny_label_pipeline(default_guidance_scale=3.0).save_pretrained(folder)
    assert describe_pipeline_folder(folder).default_guidance == 3.0
    assert describe_pipeline(load_pipeline(folder)).default_guidance == 3.0
    tiny_label_pipeline().save_pretrained(tmp_path / "plain")
    assert describe_pipeline_folder(tmp_path / "plain").default_guidance == 2.0


def test_generate_samples_with_and_records_the_models_default(tmp_path):
    folder = tmp_path / "pipe"
    tiny_label_pipeline(default_guidance_scale=3.0).save_pretrained(folder)
    argv = ["generate", "--pipeline", str(folder), "--labels", "pneumonia", "--count", "2", "--num-inference-steps", "2",
            "--seed", "0", "--device", "cpu"]
    assert cli([*argv, "--output", str(tmp_path / "default")]) == 0
    assert cli([*argv, "--output", str(tmp_path / "asked"), "--guidance-scale", "3"]) == 0
    assert json.loads((tmp_path / "default" / "params.json").read_text())["guidance_scale"] == 3.0
    assert json.loads((tmp_path / "asked" / "params.json").read_text())["guidance_scale"] == 3.0
    first = sorted((tmp_path / "default").glob("*.png"))[0].read_bytes()
    assert first == sorted((tmp_path / "asked").glob("*.png"))[0].read_bytes()
    assert cli([*argv, "--output", str(tmp_path / "bad"), "--guidance-scale", "-1"]) != 0
    assert not (tmp_path / "bad").exists() or not list((tmp_path / "bad").glob("*.png"))


def test_evaluate_records_the_scale_it_sampled_with(pneumoniamnist_npz, tmp_path):
    folder = tmp_path / "pipe"
    tiny_label_pipeline(default_guidance_scale=3.0).save_pretrained(folder)
    argv = ["evaluate", "--pipeline", str(folder), "--data", str(pneumoniamnist_npz), "--num-samples", "4",
            "--num-inference-steps", "2", "--feature-extractor", "pixel", "--no-classifier", "--max-real", "50",
            "--no-cache", "--device", "cpu", "--no-progress", "--no-feature-memorization", "--no-frd"]
    assert cli([*argv, "--output", str(tmp_path / "report")]) == 0
    assert json.loads((tmp_path / "report" / "report.json").read_text())["sampling"]["guidance_scale"] == 3.0


def test_ship_stores_the_chosen_default_and_refuses_a_bad_one(tmp_path):
    run = tmp_path / "run"
    tiny_label_pipeline(latent=True).save_pretrained(run)
    (run / "training_config.yaml").write_text("seed: 0\n")
    (run / "training_config.yaml").write_text("seed: 5\nnum_sample_images: 3\ndiffusion:\n  num_inference_steps: 2\n")
    out = ship(run, "busi", "breast ultrasound", "BUSI", output=tmp_path / "shipped", guidance_scale=3.0)
    assert json.loads((out / "model_index.json").read_text())["default_guidance_scale"] == 3.0
    assert load_pipeline(out).default_guidance_scale == 3.0

    # samples.png shows the shipped default: one row per label, the run's seed, count and steps, at guidance 3
    from PIL import Image

    from medgen.sample_grid import image_grid

    source = load_pipeline(run)

    def grid(guidance):
        return np.asarray(image_grid([
            (label, source(labels=label, num_images_per_prompt=3, num_inference_steps=2, guidance_scale=guidance,
                           generator=torch.Generator().manual_seed(5), output_type="np").images)
            for label in source.labels
        ]))

    shipped = np.asarray(Image.open(out / "samples.png"))
    np.testing.assert_array_equal(shipped, grid(3.0))
    assert not np.array_equal(shipped, grid(2.0))
    with pytest.raises(ValueError, match="--guidance-scale"):
        ship(run, "busi", "breast ultrasound", "BUSI", output=tmp_path / "other", guidance_scale=-2.0)
    assert not (tmp_path / "other").exists()


def test_training_stores_the_configs_guidance_as_the_default():
    from medgen.config import load_config
    from medgen.training.tasks import build_task

    repo = Path(__file__).resolve().parents[1]
    config = load_config(repo / "train_configs" / "chest_xray_128.yaml", [
        "diffusion.guidance_scale=3.5", f"model.pretrained_vae={repo / 'medgen' / 'pretrained' / 'chest-xray' / 'vae'}",
    ])
    task = build_task(config, ["normal", "pneumonia"], multi_label=False)
    pipe = task.build_pipeline(tiny_label_pipeline().unet, tiny_label_pipeline().scheduler)
    assert isinstance(pipe, LabelConditionedPipeline) and pipe.default_guidance_scale == 3.5


def test_models_lists_a_stored_default(tmp_path):
    from medgen.commands.models import _detail_lines
    from medgen.pipelines.catalog import describe

    tiny_label_pipeline(default_guidance_scale=3.0).save_pretrained(tmp_path / "pipe")
    description = describe(tmp_path / "pipe")
    assert description.default_guidance == 3.0
    assert ("labels", "normal, pneumonia; samples at guidance 3 by default") in _detail_lines(description)
