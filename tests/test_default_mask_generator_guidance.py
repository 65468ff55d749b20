"""A mask model's own mask-generator guidance: the label guidance its mask generator draws masks with, stored in
model_index.json (`medgen models ship --mask-generator-guidance-scale`), used by a call that gives none, by
`medgen generate --pairs` (which can override it and records it), listed by `medgen models`. Folders saved before
the field existed draw masks at 1.0 (no guidance)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from helpers import tiny_label_pipeline
from mask_helpers import saved_mask_pipeline, tiny_mask_pipeline
from medgen.cli import main as cli
from medgen.pipelines import load_pipeline
from medgen.pipelines.catalog import describe, ship
from medgen.sampling import effective_mask_generator_guidance_scale

pytestmark = pytest.mark.usefixtures("single_thread")  # tiny models run fastest on one thread

LABELS = ["normal", "tuberculosis", "normal", "tuberculosis"]


def _masks(pipe, **kwargs) -> np.ndarray:
    return pipe.sample_masks(LABELS, num_inference_steps=3, generator=torch.Generator().manual_seed(0), **kwargs).numpy()


def _pairs(pipe, **kwargs):
    pipe.set_progress_bar_config(disable=True)
    return pipe(labels=LABELS, num_inference_steps=3, generator=torch.Generator().manual_seed(0), output_type="np", **kwargs)


def test_a_saved_default_is_what_the_mask_generator_draws_with_when_a_call_gives_none(tmp_path):
    folder = saved_mask_pipeline(tmp_path / "pipe", default_mask_generator_guidance_scale=4.0)
    assert json.loads((folder / "model_index.json").read_text())["default_mask_generator_guidance_scale"] == 4.0

    pipe = load_pipeline(folder)
    assert pipe.default_mask_generator_guidance_scale == 4.0
    np.testing.assert_array_equal(_masks(pipe), _masks(pipe, guidance_scale=4.0))
    unguided = pipe.sample_masks(LABELS, num_inference_steps=3, guidance_scale=1.0, generator=torch.Generator().manual_seed(0))
    default_pairs, guided_pairs = _pairs(pipe), _pairs(pipe, mask_generator_guidance_scale=4.0)
    np.testing.assert_array_equal(default_pairs.masks, guided_pairs.masks)
    np.testing.assert_array_equal(default_pairs.images, guided_pairs.images)
    unguided_pairs = _pairs(pipe, mask_generator_guidance_scale=1.0)
    np.testing.assert_array_equal(unguided_pairs.masks, unguided.numpy())
    assert not np.array_equal(default_pairs.images, unguided_pairs.images)  # the guided generator drew other masks
    assert effective_mask_generator_guidance_scale(pipe) == 4.0
    assert effective_mask_generator_guidance_scale(pipe, 2.0) == 2.0


def test_a_folder_saved_without_the_field_draws_masks_without_guidance_as_before(tmp_path):
    folder = saved_mask_pipeline(tmp_path / "pipe")
    index = json.loads((folder / "model_index.json").read_text())
    index.pop("default_mask_generator_guidance_scale", None)  # a folder written before the field existed
    (folder / "model_index.json").write_text(json.dumps(index))

    pipe = load_pipeline(folder)
    assert pipe.default_mask_generator_guidance_scale == 1.0
    np.testing.assert_array_equal(_masks(pipe), _masks(pipe, guidance_scale=1.0))


def test_a_bad_scale_in_a_call_is_refused_naming_it():
    pipe = tiny_mask_pipeline()
    with pytest.raises(ValueError, match="mask_generator_guidance_scale"):
        _pairs(pipe, mask_generator_guidance_scale=float("nan"))
    with pytest.raises(ValueError, match="the mask generator's guidance scale must be a finite number"):
        _masks(pipe, guidance_scale=-2.0)


def test_only_pipelines_with_a_mask_generator_take_one():
    assert effective_mask_generator_guidance_scale(tiny_label_pipeline()) is None
    without_generator = tiny_mask_pipeline(mask_generator=False)
    assert effective_mask_generator_guidance_scale(without_generator) is None
    with pytest.raises(ValueError, match="--mask-generator-guidance-scale: this MaskConditionedPipeline has no mask generator"):
        effective_mask_generator_guidance_scale(without_generator, 2.0)
    with pytest.raises(ValueError, match="--mask-generator-guidance-scale must be a finite number >= 0"):
        effective_mask_generator_guidance_scale(tiny_mask_pipeline(), float("inf"))


def test_ship_stores_the_chosen_default_and_refuses_a_pipeline_without_a_mask_generator(tmp_path):
    run = tmp_path / "run"
    tiny_mask_pipeline().save_pretrained(run)
    (run / "training_config.yaml").write_text("seed: 5\nnum_sample_images: 2\ndiffusion:\n  num_inference_steps: 2\n")
    out = ship(run, "lesions", "breast ultrasound", "BUSI", output=tmp_path / "shipped", mask_generator_guidance_scale=2.0)
    assert json.loads((out / "model_index.json").read_text())["default_mask_generator_guidance_scale"] == 2.0
    assert load_pipeline(out).default_mask_generator_guidance_scale == 2.0
    assert (out / "samples.png").is_file()

    from medgen.commands.models import _detail_lines

    assert describe(out).default_mask_generator_guidance == 2.0 and describe(run).default_mask_generator_guidance is None
    assert any(key == "labels" and value.endswith("; masks drawn at label guidance 2 by default")
               for key, value in _detail_lines(describe(out)))

    plain = tmp_path / "plain"
    tiny_mask_pipeline(mask_generator=False).save_pretrained(plain)
    with pytest.raises(ValueError, match="--mask-generator-guidance-scale: this MaskConditionedPipeline has no mask generator"):
        ship(plain, "lesions", "breast ultrasound", "BUSI", output=tmp_path / "refused", mask_generator_guidance_scale=2.0)
    assert not (tmp_path / "refused").exists()


def test_generate_pairs_use_and_record_the_models_default_or_the_asked_scale(tmp_path):
    from PIL import Image

    folder = saved_mask_pipeline(tmp_path / "pipe", default_mask_generator_guidance_scale=4.0)
    argv = ["generate", "--pipeline", str(folder), "--labels", "tuberculosis", "--pairs", "--count", "2",
            "--num-inference-steps", "3", "--seed", "0", "--device", "cpu"]
    assert cli([*argv, "--output", str(tmp_path / "default")]) == 0
    assert cli([*argv, "--output", str(tmp_path / "same"), "--mask-generator-guidance-scale", "4"]) == 0
    assert cli([*argv, "--output", str(tmp_path / "none"), "--mask-generator-guidance-scale", "1"]) == 0
    records = {name: json.loads((tmp_path / name / "params.json").read_text()) for name in ("default", "same", "none")}
    assert [records[name]["mask_generator_guidance_scale"] for name in ("default", "same", "none")] == [4.0, 4.0, 1.0]

    def images(name):
        return np.stack([np.asarray(Image.open(path)) for path in sorted((tmp_path / name).glob("image_*.png"))])

    np.testing.assert_array_equal(images("default"), images("same"))
    assert not np.array_equal(images("default"), images("none"))


def test_generate_refuses_a_mask_generator_guidance_without_pairs_before_writing(tmp_path):
    folder = saved_mask_pipeline(tmp_path / "pipe")
    argv = ["generate", "--pipeline", str(folder), "--labels", "normal", "--count", "1", "--num-inference-steps", "2",
            "--seed", "0", "--device", "cpu", "--output", str(tmp_path / "out"), "--mask-generator-guidance-scale", "2"]
    assert cli(argv) != 0
    assert not list((tmp_path / "out").rglob("*.png"))
