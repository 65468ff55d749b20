"""MaskConditionedPipeline: masks in every accepted form, clear errors for wrong ones, guidance, the mask
generator, and the saved folder loading identically with medgen (no remote code) and with stock diffusers."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch
from PIL import Image

from mask_helpers import square_mask, tiny_mask_pipeline
from medgen.pipelines import MaskConditionedPipeline, load_pipeline

STEPS = 3


pytestmark = pytest.mark.usefixtures("single_thread")  # tiny models run fastest on one thread


@pytest.fixture(scope="module")
def pipe():
    pipeline = tiny_mask_pipeline()
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def _run(pipe, **kwargs):
    kwargs.setdefault("num_inference_steps", STEPS)
    return pipe(generator=torch.Generator().manual_seed(0), output_type="np", **kwargs)


def test_one_image_per_mask_with_its_mask_returned(pipe):
    masks = [square_mask(), torch.zeros(16, 16, dtype=torch.long)]
    output = _run(pipe, masks=masks, labels=["normal", "tuberculosis"])
    assert output.images.shape == (2, 16, 16, 1)
    assert 0.0 <= output.images.min() and output.images.max() <= 1.0
    np.testing.assert_array_equal(output.masks, np.stack([m.numpy() for m in masks]).astype(np.uint8))


def test_mask_changes_the_image_and_sampling_is_deterministic(pipe):
    first = _run(pipe, masks=[square_mask()], labels="normal").images
    again = _run(pipe, masks=[square_mask()], labels="normal").images
    other = _run(pipe, masks=[torch.zeros(16, 16, dtype=torch.long)], labels="normal").images
    np.testing.assert_array_equal(first, again)
    assert np.abs(first - other).max() > 1e-6


def test_masks_as_tensor_numpy_pil_0_255_and_path_agree(pipe, tmp_path):
    mask = square_mask()
    path = tmp_path / "mask.png"
    Image.fromarray((mask.numpy() * 255).astype(np.uint8)).save(path)
    forms = [mask, mask.numpy(), mask[None], Image.open(path), str(path), path, mask.numpy().astype(bool)]
    reference = _run(pipe, masks=[forms[0]], labels="normal").images
    for form in forms[1:]:
        np.testing.assert_array_equal(_run(pipe, masks=[form], labels="normal").images, reference)


def test_mask_of_another_size_is_resized_nearest_with_a_warning(pipe, caplog):
    large = square_mask(size=32)
    with caplog.at_level(logging.WARNING):
        output = _run(pipe, masks=[large], labels="normal")
    assert "resized nearest-neighbour" in caplog.text and "32x32" in caplog.text
    np.testing.assert_array_equal(output.masks[0], square_mask(16).numpy())


@pytest.mark.parametrize(
    "mask, message",
    [
        (torch.full((16, 16), 2), "1 mask class"),
        (np.full((16, 16), 7, dtype=np.uint8), "values up to 7"),
        (torch.zeros(3, 16, 16), "has 3 channels"),
        (np.full((16, 16), 0.3) + np.eye(16) * 1.5, "fractional"),
        (-torch.ones(16, 16), "negative"),
        (torch.zeros(2, 2, 16, 16), "expected (H, W)"),
        (np.full((16, 16), np.nan), "NaN"),
        (42, "give a torch.Tensor"),
    ],
)
def test_bad_masks_are_clear_errors(pipe, mask, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        _run(pipe, masks=[mask], labels="normal")


def test_missing_and_unreadable_mask_files_are_named(pipe, tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.png"):
        _run(pipe, masks=[tmp_path / "nowhere.png"])
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    with pytest.raises(ValueError, match="broken.png"):
        _run(pipe, masks=[broken])


def test_counts_labels_and_arguments_are_checked(pipe):
    with pytest.raises(ValueError, match="2 masks and 1 labels"):
        _run(pipe, masks=[square_mask(), square_mask()], labels=["normal"])
    with pytest.raises(ValueError, match="Unknown label 'pneumonia'"):
        _run(pipe, masks=[square_mask()], labels=["pneumonia"])
    with pytest.raises(ValueError, match="empty list"):
        _run(pipe, masks=[], labels=None)
    with pytest.raises(ValueError, match="guidance scales"):
        _run(pipe, masks=[square_mask()], mask_guidance_scale=-1.0)


def test_multi_class_masks_one_hot_and_scaled_png_values(tmp_path):
    pipe = tiny_mask_pipeline(mask_classes=("left lung", "right lung"), mask_generator=False)
    pipe.set_progress_bar_config(disable=True)
    indices = square_mask(value=1)
    indices[:4, :4] = 2
    one_hot = torch.stack([(indices == 1), (indices == 2)]).long()
    scaled = np.array([0, 127, 255], dtype=np.uint8)[indices.numpy()]  # class c stored as c * 255 // 2
    reference = _run(pipe, masks=[indices]).images
    for form in (one_hot, scaled):
        np.testing.assert_array_equal(_run(pipe, masks=[form]).images, reference)
    with pytest.raises(ValueError, match="not one-hot"):
        _run(pipe, masks=[torch.ones(2, 16, 16)])


def test_mask_condition_is_coverage_at_latent_size_and_drop_zeroes_it():
    mask = torch.zeros(2, 16, 16, dtype=torch.long)
    mask[:, :, :6] = 1  # covers 3 latent cells of 8 fully... 6/2 = 3 columns
    condition = MaskConditionedPipeline.mask_condition(mask, 1, (8, 8), drop_mask=torch.tensor([False, True]))
    assert condition.shape == (2, 2, 8, 8)
    assert torch.all(condition[0, 0, :, :3] == 1) and torch.all(condition[0, 0, :, 3:] == 0)
    assert torch.all(condition[0, 1] == 1)  # mask present
    assert torch.all(condition[1] == 0)  # dropped: no mask


def test_pairs_from_labels_alone_through_the_mask_generator(pipe):
    output = _run(pipe, labels=["normal", "tuberculosis"])
    assert output.images.shape == (2, 16, 16, 1)
    assert output.masks.shape == (2, 16, 16) and set(np.unique(output.masks)) <= {0, 1}
    masks = pipe.sample_masks(labels=["normal"], num_inference_steps=STEPS, generator=torch.manual_seed(3))
    again = pipe.sample_masks(labels=["normal"], num_inference_steps=STEPS, generator=torch.manual_seed(3))
    assert masks.shape == (1, 16, 16) and torch.equal(masks, again)


def test_without_masks_or_generator_images_are_sampled_unmasked():
    pipe = tiny_mask_pipeline(mask_generator=False)
    pipe.set_progress_bar_config(disable=True)
    output = _run(pipe, labels=["normal", "tuberculosis"], guidance_scale=2.0)
    assert output.images.shape == (2, 16, 16, 1) and output.masks is None
    with pytest.raises(ValueError, match="no mask generator"):
        pipe.sample_masks(labels=["normal"])


def test_guidance_combinations_run_and_differ(pipe):
    base = _run(pipe, masks=[square_mask()], labels="normal", guidance_scale=1.0).images
    label_guided = _run(pipe, masks=[square_mask()], labels="normal", guidance_scale=3.0).images
    both = _run(pipe, masks=[square_mask()], labels="normal", guidance_scale=3.0, mask_guidance_scale=2.0).images
    assert np.abs(base - label_guided).max() > 1e-6 and np.abs(label_guided - both).max() > 1e-6


def test_pil_output_gives_0_255_mask_images(pipe):
    output = pipe(masks=[square_mask()], num_inference_steps=2, generator=torch.manual_seed(0))
    assert output.masks[0].mode == "L"
    assert set(np.unique(np.array(output.masks[0]))) == {0, 255}


def test_wrong_component_shapes_are_refused():
    from mask_helpers import tiny_conditioned_unet, tiny_scheduler

    pipe = tiny_mask_pipeline()
    with pytest.raises(ValueError, match="mask generator's UNet"):
        MaskConditionedPipeline(
            unet=pipe.unet, scheduler=pipe.scheduler, vae=pipe.vae,
            mask_unet=tiny_conditioned_unet(2, 2, 2, 8), mask_scheduler=tiny_scheduler(),
            id2label=pipe.config.id2label, id2mask_class=pipe.config.id2mask_class,
        )
    with pytest.raises(ValueError, match="id2mask_class"):
        MaskConditionedPipeline(unet=pipe.unet, scheduler=pipe.scheduler, vae=pipe.vae, id2mask_class={"1": "a", "2": "b"})


def test_round_trip_with_medgen_and_stock_diffusers(pipe, tmp_path):
    from diffusers import DiffusionPipeline

    folder = pipe.save_pretrained(tmp_path / "saved", model_card={"license": "cc-by-4.0"})
    model_index = json.loads((folder / "model_index.json").read_text())
    assert model_index["_class_name"] == ["pipeline", "MaskConditionedPipeline"]
    assert model_index["mask_unet"] == ["diffusers", "UNet2DConditionModel"]
    assert model_index["id2mask_class"] == {"1": "lung"}
    assert not [p for p in folder.rglob("*") if p.suffix in {".bin", ".pt", ".pkl", ".ckpt"}]
    kwargs = {"masks": [square_mask()], "labels": ["tuberculosis"]}
    expected = _run(pipe, **kwargs).images
    expected_pairs = _run(pipe, labels=["normal"])

    loaded = load_pipeline(folder)
    loaded.set_progress_bar_config(disable=True)
    assert type(loaded) is MaskConditionedPipeline and loaded.mask_classes == ["lung"]
    np.testing.assert_allclose(_run(loaded, **kwargs).images, expected, atol=1e-6)
    pairs = _run(loaded, labels=["normal"])
    np.testing.assert_array_equal(pairs.masks, expected_pairs.masks)

    stock = DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)
    stock.set_progress_bar_config(disable=True)
    assert not type(stock).__module__.startswith("medgen")
    np.testing.assert_allclose(_run(stock, **kwargs).images, expected, atol=1e-6)
    np.testing.assert_array_equal(_run(stock, labels=["normal"]).masks, expected_pairs.masks)


def test_a_refused_mask_generator_class_loads_nothing(pipe, tmp_path):
    folder = pipe.save_pretrained(tmp_path / "saved")
    index_path = folder / "model_index.json"
    model_index = json.loads(index_path.read_text())
    model_index["mask_unet"] = ["diffusers", "AutoModel"]
    index_path.write_text(json.dumps(model_index))
    with pytest.raises(ValueError, match="mask_unet"):
        load_pipeline(folder)


def test_step_callback_sees_latents_and_can_interrupt(pipe):
    seen = []

    def callback(pipeline, step, timestep, tensors):
        seen.append(tuple(tensors["latents"].shape))
        if step == 0:
            pipeline._interrupt = True
        return {}

    output = _run(pipe, masks=[square_mask()], labels="normal", num_inference_steps=4, callback_on_step_end=callback)
    assert seen == [(1, 4, 8, 8)] and pipe.interrupt
    assert output.images.shape == (1, 16, 16, 1)
