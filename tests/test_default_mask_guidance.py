"""A mask model's own mask guidance: stored in model_index.json (`medgen models ship --mask-guidance-scale`), used by a
call that gives none, by `medgen generate` (which can override it) and by evaluate and the segmentation downstream
experiment, which record it; listed by `medgen models`. Folders saved before the field existed sample at 1.0."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from helpers import tiny_label_pipeline
from mask_helpers import saved_mask_pipeline, square_mask, tiny_mask_pipeline
from medgen.cli import main as cli
from medgen.pipelines import load_pipeline
from medgen.pipelines.catalog import ship
from medgen.sampling import effective_mask_guidance_scale
from medgen.segmentation.segmenter import SegmenterRecipe

TINY_SEGMENTER = SegmenterRecipe(channels=(8, 16), steps=10, batch_size=8, learning_rate=1e-2, image_size=None, max_shift=2)


pytestmark = pytest.mark.usefixtures("single_thread")  # tiny models run fastest on one thread


def _images(pipe, **kwargs):
    pipe.set_progress_bar_config(disable=True)
    return pipe(masks=[square_mask(), square_mask()], labels=["normal", "tuberculosis"], num_inference_steps=3,
                generator=torch.Generator().manual_seed(0), output_type="np", **kwargs).images


def test_a_saved_default_is_what_a_call_without_mask_guidance_samples_with(tmp_path):
    folder = saved_mask_pipeline(tmp_path / "pipe", default_mask_guidance_scale=3.0)
    assert json.loads((folder / "model_index.json").read_text())["default_mask_guidance_scale"] == 3.0

    pipe = load_pipeline(folder)
    assert pipe.default_mask_guidance_scale == 3.0
    default = _images(pipe)
    np.testing.assert_array_equal(default, _images(pipe, mask_guidance_scale=3.0))
    assert not np.array_equal(default, _images(pipe, mask_guidance_scale=1.0))
    assert effective_mask_guidance_scale(pipe) == 3.0 and effective_mask_guidance_scale(pipe, 2.0) == 2.0


def test_a_folder_saved_without_the_field_samples_without_mask_guidance_as_before(tmp_path):
    folder = saved_mask_pipeline(tmp_path / "pipe")
    index = json.loads((folder / "model_index.json").read_text())
    index.pop("default_mask_guidance_scale", None)  # a folder written before the field existed
    (folder / "model_index.json").write_text(json.dumps(index))

    pipe = load_pipeline(folder)
    assert pipe.default_mask_guidance_scale == 1.0
    np.testing.assert_array_equal(_images(pipe), _images(pipe, mask_guidance_scale=1.0))


@pytest.mark.parametrize("field", ["default_mask_guidance_scale", "default_mask_generator_guidance_scale"])
@pytest.mark.parametrize("bad", [-1.0, float("nan"), float("inf")])
def test_a_bad_default_is_refused_naming_the_field(field, bad):
    from medgen.pipelines import MaskConditionedPipeline

    pipe = tiny_mask_pipeline()
    with pytest.raises(ValueError, match=field):
        MaskConditionedPipeline(unet=pipe.unet, scheduler=pipe.scheduler, vae=pipe.vae, mask_unet=pipe.mask_unet,
                                mask_scheduler=pipe.mask_scheduler, id2label=pipe.config.id2label,
                                id2mask_class=pipe.config.id2mask_class, **{field: bad})


def test_only_mask_pipelines_take_a_mask_guidance():
    label_pipe = tiny_label_pipeline()
    assert effective_mask_guidance_scale(label_pipe) is None
    with pytest.raises(ValueError, match="--mask-guidance-scale: a LabelConditionedPipeline takes no mask"):
        effective_mask_guidance_scale(label_pipe, 3.0)
    with pytest.raises(ValueError, match="--mask-guidance-scale must be a finite number >= 0"):
        effective_mask_guidance_scale(tiny_mask_pipeline(), -1.0)


def test_ship_stores_the_chosen_default_redraws_the_samples_and_refuses_what_it_cannot_store(tmp_path):
    run = tmp_path / "run"
    tiny_mask_pipeline().save_pretrained(run)
    (run / "training_config.yaml").write_text("seed: 5\nnum_sample_images: 2\ndiffusion:\n  num_inference_steps: 2\n")
    out = ship(run, "lesions", "breast ultrasound", "BUSI", output=tmp_path / "shipped", mask_guidance_scale=3.0)
    assert json.loads((out / "model_index.json").read_text())["default_mask_guidance_scale"] == 3.0
    assert load_pipeline(out).default_mask_guidance_scale == 3.0
    assert (out / "samples.png").is_file()

    from medgen.commands.models import _detail_lines
    from medgen.pipelines.catalog import describe

    assert describe(out).default_mask_guidance == 3.0
    assert any(key == "labels" and value.endswith("; mask guidance 3 by default") for key, value in _detail_lines(describe(out)))
    assert describe(run).default_mask_guidance is None

    with pytest.raises(ValueError, match="--mask-guidance-scale must be a finite number"):
        ship(run, "lesions", "breast ultrasound", "BUSI", output=tmp_path / "bad", mask_guidance_scale=float("nan"))
    label_run = tmp_path / "label_run"
    tiny_label_pipeline().save_pretrained(label_run)
    with pytest.raises(ValueError, match="--mask-guidance-scale: .* LabelConditionedPipeline, which takes no mask"):
        ship(label_run, "cxr", "chest X-ray", "Kermany", output=tmp_path / "label_shipped", mask_guidance_scale=3.0)
    assert not (tmp_path / "bad").exists() and not (tmp_path / "label_shipped").exists()


def test_generate_samples_with_and_records_the_models_default_or_the_asked_scale(tmp_path):
    from PIL import Image

    folder = saved_mask_pipeline(tmp_path / "pipe", default_mask_guidance_scale=3.0)
    masks = tmp_path / "masks"
    masks.mkdir()
    Image.fromarray((square_mask().numpy() * 255).astype(np.uint8)).save(masks / "a.png")
    argv = ["generate", "--pipeline", str(folder), "--labels", "normal", "--masks", str(masks), "--count", "1",
            "--num-inference-steps", "2", "--seed", "0", "--device", "cpu"]
    assert cli([*argv, "--output", str(tmp_path / "default")]) == 0
    assert cli([*argv, "--output", str(tmp_path / "same"), "--mask-guidance-scale", "3"]) == 0
    assert cli([*argv, "--output", str(tmp_path / "none"), "--mask-guidance-scale", "1"]) == 0
    records = {name: json.loads((tmp_path / name / "params.json").read_text()) for name in ("default", "same", "none")}
    assert [records[name]["mask_guidance_scale"] for name in ("default", "same", "none")] == [3.0, 3.0, 1.0]

    def image(name):
        return np.asarray(Image.open(tmp_path / name / "image_00000.png"))  # its mask lies in masks/

    np.testing.assert_array_equal(image("default"), image("same"))
    assert not np.array_equal(image("default"), image("none"))


def test_generate_refuses_a_mask_guidance_for_a_label_model_before_writing(tmp_path):
    folder = tmp_path / "label"
    tiny_label_pipeline().save_pretrained(folder)
    argv = ["generate", "--pipeline", str(folder), "--labels", "normal", "--count", "1", "--num-inference-steps", "2",
            "--seed", "0", "--device", "cpu", "--output", str(tmp_path / "out"), "--mask-guidance-scale", "3"]
    assert cli(argv) != 0
    assert not list((tmp_path / "out").rglob("*.png"))


def test_evaluate_records_the_mask_guidance_it_sampled_with(tmp_path, monkeypatch):
    from segmentation_helpers import disc_pairs, write_pair_folder

    real = disc_pairs(12, seed=0, size=16, labels=("normal", "tuberculosis"))
    write_pair_folder(real, tmp_path / "real", split=["test" if i % 3 == 0 else "train" for i in range(len(real))])
    folder = saved_mask_pipeline(tmp_path / "pipe", default_mask_guidance_scale=2.5, default_mask_generator_guidance_scale=1.5)
    argv = [
        "evaluate", "--pipeline", str(folder), "--data", str(tmp_path / "real"), "--label-column", "label",
        "--mask-column", "mask_file_name", "--num-samples", "4", "--num-inference-steps", "2", "--output",
        str(tmp_path / "out"), "--feature-extractor", "pixel", "--no-classifier", "--no-cache", "--device", "cpu",
        "--split", "test", "--store-in-pipeline", "--bootstrap", "0",
    ]
    monkeypatch.setattr("medgen.segmentation.segmenter.STANDARD", TINY_SEGMENTER)  # seconds, not minutes
    assert cli(argv) == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["sampling"]["mask_guidance_scale"] == 2.5
    assert report["sampling"]["mask_generator_guidance_scale"] == 1.5  # the FID images' masks came from the generator
    assert report["mask_faithfulness"]["sampling"]["mask_guidance_scale"] == 2.5  # the images scored against masks
    assert report["mask_faithfulness"]["sampling"]["guidance_scale"] == 2.0  # the pipeline's own label guidance
    stored = json.loads((folder / "evaluation.json").read_text())["sampling"]  # kept with the model, and on its card
    assert stored["mask_guidance_scale"] == 2.5 and stored["mask_generator_guidance_scale"] == 1.5
    card = (folder / "README.md").read_text()
    assert "mask guidance 2.50, masks drawn at label guidance 1.50" in card
    # ... and its mask generator's masks, drawn at that guidance for the test masks' labels, against the test masks
    generator = report["mask_generator"]
    assert generator["sampling"]["guidance_scale"] == 1.5 and generator["n_masks"] == 4
    assert sorted(generator["per_label"]) == ["normal", "tuberculosis"]
    assert generator["per_label"]["normal"]["lung"]["real"]["empty"] == 0.0  # every real test mask holds a disc
    stored_generator = json.loads((folder / "evaluation.json").read_text())["mask_generator"]
    assert stored_generator["per_label"] == generator["per_label"] and stored_generator["guidance_scale"] == 1.5
    assert "| Mask generator (label guidance 1.50), one mask per test mask's label | normal: empty 0.00 / " in card
