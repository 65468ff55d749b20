"""Behaviour of the label-conditioned and unconditional pipelines that users rely on.

Tiny seeded models (16 px, a few thousand parameters) and 2-4 steps keep every test well under a second.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    EulerDiscreteScheduler,
    UniPCMultistepScheduler,
)
from PIL import Image

from helpers import tiny_label_pipeline, tiny_unconditional_pipeline

STEPS = 3
MULTI_LABELS = ("atelectasis", "effusion", "pneumonia")


pytestmark = pytest.mark.usefixtures("single_thread")  # tiny models run fastest on one thread


def _quiet(pipe):
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture
def label_pipe():
    return _quiet(tiny_label_pipeline())


@pytest.fixture
def multi_pipe():
    return _quiet(tiny_label_pipeline(labels=MULTI_LABELS, multi_label=True))


@pytest.fixture
def uncond_pipe():
    return _quiet(tiny_unconditional_pipeline())


def _np(pipe, seed: int = 0, **kwargs) -> np.ndarray:
    kwargs.setdefault("num_inference_steps", STEPS)
    return pipe(generator=torch.Generator().manual_seed(seed), output_type="np", **kwargs).images


def _count_unet_calls(pipe) -> list:
    """Records the keyword arguments of every UNet call."""
    calls: list = []
    pipe.unet.register_forward_pre_hook(lambda module, args, kwargs: calls.append(kwargs), with_kwargs=True)
    return calls


# ----------------------------------------------------------------------------------------------------
# Output types and shapes
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("latent", [False, True], ids=["pixel", "latent"])
def test_label_pipeline_output_types(latent):
    pipe = _quiet(tiny_label_pipeline(latent=latent))
    images = pipe(labels="pneumonia", num_images_per_prompt=2, num_inference_steps=STEPS, output_type="pil").images
    assert len(images) == 2
    assert all(isinstance(image, Image.Image) and image.mode == "L" and image.size == (16, 16) for image in images)

    array = pipe(labels="pneumonia", num_images_per_prompt=2, num_inference_steps=STEPS, output_type="np").images
    assert array.shape == (2, 16, 16, 1) and array.dtype == np.float32
    assert array.min() >= 0.0 and array.max() <= 1.0

    tensor = pipe(labels="pneumonia", num_images_per_prompt=2, num_inference_steps=STEPS, output_type="pt").images
    assert isinstance(tensor, torch.Tensor) and tensor.shape == (2, 1, 16, 16)
    assert tensor.min() >= 0.0 and tensor.max() <= 1.0

    raw = pipe(labels="pneumonia", num_images_per_prompt=2, num_inference_steps=STEPS, output_type="latent").images
    unet = pipe.unet.config
    assert raw.shape == (2, unet.in_channels, unet.sample_size, unet.sample_size)
    if latent:  # the VAE really decodes: 4 latent channels at 8 px -> 1 channel at 16 px
        assert raw.shape == (2, 4, 8, 8)


def test_return_dict_false_gives_tuple(label_pipe):
    output = label_pipe(labels="normal", num_inference_steps=2, output_type="np", return_dict=False)
    assert isinstance(output, tuple) and len(output) == 1 and output[0].shape == (1, 16, 16, 1)


def test_num_images_per_prompt_multiplies_each_entry(label_pipe):
    images = _np(label_pipe, labels=["normal", "pneumonia"], num_images_per_prompt=3)
    assert images.shape == (6, 16, 16, 1)


def test_unconditional_output_types(uncond_pipe):
    images = uncond_pipe(batch_size=3, num_inference_steps=STEPS).images
    assert len(images) == 3 and all(image.mode == "L" and image.size == (16, 16) for image in images)
    array = _np(uncond_pipe, batch_size=2)
    assert array.shape == (2, 16, 16, 1) and 0.0 <= array.min() and array.max() <= 1.0
    tensor = uncond_pipe(batch_size=2, num_inference_steps=STEPS, output_type="pt").images
    assert tensor.shape == (2, 1, 16, 16) and 0.0 <= tensor.min() and tensor.max() <= 1.0
    raw = uncond_pipe(batch_size=2, num_inference_steps=STEPS, output_type="latent").images
    assert raw.shape == (2, 1, 16, 16)
    assert uncond_pipe.labels == []


def test_unconditional_num_images_per_prompt_is_batch_size(uncond_pipe):
    # Same arguments drive every medgen pipeline: num_images_per_prompt is an alias of batch_size.
    by_alias = _np(uncond_pipe, seed=3, num_images_per_prompt=2)
    by_batch = _np(uncond_pipe, seed=3, batch_size=2)
    np.testing.assert_array_equal(by_alias, by_batch)


# ----------------------------------------------------------------------------------------------------
# Determinism
# ----------------------------------------------------------------------------------------------------


def test_label_pipeline_seed_determinism(label_pipe):
    first = _np(label_pipe, seed=7, labels="pneumonia")
    again = _np(label_pipe, seed=7, labels="pneumonia")
    other = _np(label_pipe, seed=8, labels="pneumonia")
    np.testing.assert_array_equal(first, again)
    assert not np.allclose(first, other)


def test_unconditional_seed_determinism(uncond_pipe):
    np.testing.assert_array_equal(_np(uncond_pipe, seed=1, batch_size=2), _np(uncond_pipe, seed=1, batch_size=2))
    assert not np.allclose(_np(uncond_pipe, seed=1), _np(uncond_pipe, seed=2))


def test_explicit_latents_replace_the_generator(label_pipe):
    noise = torch.randn(1, 1, 16, 16, generator=torch.Generator().manual_seed(5))
    from_latents = label_pipe(labels="normal", latents=noise, num_inference_steps=STEPS, output_type="np").images
    from_seed = _np(label_pipe, seed=5, labels="normal")
    np.testing.assert_allclose(from_latents, from_seed, atol=1e-6)


@pytest.mark.parametrize("scheduler_class", [DPMSolverMultistepScheduler, DDPMScheduler], ids=["dpm", "ddpm"])
def test_generator_list_gives_per_image_reproducibility(label_pipe, scheduler_class):
    # DDPM draws fresh noise at every step too, so each image must use its own generator there as well.
    label_pipe.scheduler = scheduler_class.from_config(label_pipe.scheduler.config)
    labels = ["pneumonia", "normal", "pneumonia"]
    seeds = [11, 12, 13]
    batch = label_pipe(
        labels=labels, generator=[torch.Generator().manual_seed(s) for s in seeds],
        num_inference_steps=STEPS, output_type="np",
    ).images
    for index, (label, seed) in enumerate(zip(labels, seeds)):
        alone = _np(label_pipe, seed=seed, labels=label)
        np.testing.assert_allclose(batch[index], alone[0], atol=1e-5)


def test_unconditional_generator_list_gives_per_image_reproducibility(uncond_pipe):
    batch = uncond_pipe(
        batch_size=2, generator=[torch.Generator().manual_seed(s) for s in (21, 22)],
        num_inference_steps=STEPS, output_type="np",
    ).images
    np.testing.assert_allclose(batch[1], _np(uncond_pipe, seed=22)[0], atol=1e-5)


# ----------------------------------------------------------------------------------------------------
# Conditioning and guidance
# ----------------------------------------------------------------------------------------------------


def test_guidance_scale_changes_output(label_pipe):
    unguided = _np(label_pipe, labels="pneumonia", guidance_scale=1.0)
    guided = _np(label_pipe, labels="pneumonia", guidance_scale=3.0)
    assert not np.allclose(unguided, guided)


def test_guidance_runs_null_and_label_conditions_in_one_batch(label_pipe):
    calls = _count_unet_calls(label_pipe)
    _np(label_pipe, labels=["normal", "pneumonia"], guidance_scale=3.0)
    expected = torch.cat([label_pipe.null_condition(2), label_pipe.encode_labels(["normal", "pneumonia"])])
    assert len(calls) == STEPS
    torch.testing.assert_close(calls[0]["class_labels"], expected)
    calls.clear()
    _np(label_pipe, labels=["normal", "pneumonia"], guidance_scale=1.0)  # no guidance: label conditions only
    torch.testing.assert_close(calls[0]["class_labels"], expected[2:])


def test_labels_change_output(label_pipe):
    assert not np.allclose(_np(label_pipe, labels="normal"), _np(label_pipe, labels="pneumonia"))


def test_labels_none_is_unconditional(label_pipe):
    calls = _count_unet_calls(label_pipe)
    unguided = _np(label_pipe, labels=None, num_images_per_prompt=2, guidance_scale=1.0)
    null = label_pipe.null_condition(2)
    assert torch.equal(calls[0]["class_labels"], null)
    assert null[:, :-1].abs().sum() == 0 and torch.all(null[:, -1] == 1)
    # Guidance extrapolates from the null condition towards... the null condition: no effect.
    guided = _np(label_pipe, labels=None, num_images_per_prompt=2, guidance_scale=3.0)
    assert unguided.shape == (2, 16, 16, 1)
    np.testing.assert_allclose(unguided, guided, atol=1e-5)
    assert not np.allclose(unguided, _np(label_pipe, labels=["pneumonia"] * 2, guidance_scale=1.0))


# ----------------------------------------------------------------------------------------------------
# Label forms and label errors
# ----------------------------------------------------------------------------------------------------


def test_labels_follow_id2label_order():
    pipe = tiny_label_pipeline(labels=("pneumonia", "normal", "covid"))
    assert pipe.labels == ["pneumonia", "normal", "covid"]
    torch.testing.assert_close(pipe.encode_labels("covid"), torch.tensor([[0.0, 0.0, 1.0, 0.0]]))


def test_label_names_are_case_insensitive(label_pipe):
    torch.testing.assert_close(label_pipe.encode_labels("PNEUMONIA"), label_pipe.encode_labels("pneumonia"))
    np.testing.assert_array_equal(_np(label_pipe, labels="Pneumonia"), _np(label_pipe, labels="pneumonia"))


def test_per_image_label_list(label_pipe):
    conditions = label_pipe.encode_labels(["normal", "pneumonia"], num_images_per_prompt=2)
    expected = torch.tensor([[1.0, 0, 0], [1.0, 0, 0], [0, 1.0, 0], [0, 1.0, 0]])
    torch.testing.assert_close(conditions, expected)
    batch = _np(label_pipe, labels=["normal", "pneumonia"], guidance_scale=1.0)
    assert batch.shape == (2, 16, 16, 1)
    assert not np.allclose(batch[0], batch[1])


def test_multi_label_list_of_names_is_one_image(multi_pipe):
    # An inner list holds one image's findings; the outer list holds images.
    torch.testing.assert_close(multi_pipe.encode_labels([["effusion", "pneumonia"]]), torch.tensor([[0.0, 1, 1, 0]]))
    assert _np(multi_pipe, labels=[["effusion", "pneumonia"]]).shape == (1, 16, 16, 1)
    # A flat list of names is one image per name.
    torch.testing.assert_close(
        multi_pipe.encode_labels(["effusion", "pneumonia"]), torch.tensor([[0.0, 1, 0, 0], [0.0, 0, 1, 0]])
    )


def test_multi_label_dict_with_uncertainty_values(multi_pipe):
    conditions = multi_pipe.encode_labels({"Effusion": 0.5, "pneumonia": 1.0})
    torch.testing.assert_close(conditions, torch.tensor([[0.0, 0.5, 1.0, 0.0]]))
    uncertain = _np(multi_pipe, labels={"effusion": 0.5, "pneumonia": 1.0})
    certain = _np(multi_pipe, labels={"effusion": 1.0, "pneumonia": 1.0})
    assert uncertain.shape == (1, 16, 16, 1) and not np.allclose(uncertain, certain)


@pytest.mark.parametrize("labels", ["emphysema", ["normal", "emphysema"], {"emphysema": 1.0}])
def test_unknown_label_raises_with_valid_names(label_pipe, labels):
    with pytest.raises(ValueError, match="emphysema") as error:
        label_pipe(labels=labels, num_inference_steps=1)
    assert "normal" in str(error.value) and "pneumonia" in str(error.value)


@pytest.mark.parametrize("labels", [[["normal", "pneumonia"]], {"normal": 1.0, "pneumonia": 1.0}])
def test_several_labels_on_single_label_pipeline_raise(label_pipe, labels):
    with pytest.raises(ValueError, match="single-label"):
        label_pipe(labels=labels, num_inference_steps=1)


@pytest.mark.parametrize("value", [1.5, -0.1, math.nan])
def test_label_values_outside_unit_interval_raise(multi_pipe, value):
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        multi_pipe(labels={"effusion": value}, num_inference_steps=1)


def test_empty_label_list_raises(label_pipe):
    with pytest.raises(ValueError, match="labels"):
        label_pipe(labels=[], num_inference_steps=1)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"num_inference_steps": 0}, "num_inference_steps"),
        ({"num_images_per_prompt": 0}, "num_images_per_prompt"),
        ({"guidance_scale": -1.0}, "guidance_scale"),
        ({"output_type": "jpeg"}, "output_type"),
        ({"callback_on_step_end_tensor_inputs": ["noise_pred"]}, "callback_on_step_end_tensor_inputs"),
        ({"latents": torch.zeros(1, 1, 8, 8)}, "latents"),
    ],
)
def test_bad_call_arguments_raise(label_pipe, kwargs, name):
    with pytest.raises(ValueError, match=name):
        label_pipe(labels="normal", **kwargs)


@pytest.mark.parametrize(
    "kwargs, name",
    [({"batch_size": 0}, "batch_size"), ({"output_type": "jpeg"}, "output_type"), ({"num_inference_steps": 0}, "num_inference_steps")],
)
def test_unconditional_bad_call_arguments_raise(uncond_pipe, kwargs, name):
    with pytest.raises(ValueError, match=name):
        uncond_pipe(**kwargs)


def test_id2label_must_match_unet():
    pipe = tiny_label_pipeline()
    with pytest.raises(ValueError, match="expects 2 labels"):
        type(pipe)(unet=pipe.unet, scheduler=pipe.scheduler, id2label={"0": "normal"})


# ----------------------------------------------------------------------------------------------------
# Scheduler swap
# ----------------------------------------------------------------------------------------------------

SCHEDULERS = [DDPMScheduler, DDIMScheduler, DPMSolverMultistepScheduler, UniPCMultistepScheduler, EulerDiscreteScheduler]


@pytest.mark.parametrize("scheduler_class", SCHEDULERS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("kind", ["label", "unconditional"])
def test_scheduler_swap(kind, scheduler_class):
    pipe = _quiet(tiny_label_pipeline() if kind == "label" else tiny_unconditional_pipeline())
    pipe.scheduler = scheduler_class.from_config(pipe.scheduler.config)
    kwargs = {"labels": "pneumonia"} if kind == "label" else {}
    calls = _count_unet_calls(pipe)
    images = pipe(num_inference_steps=4, generator=torch.Generator().manual_seed(0), output_type="pt", **kwargs).images
    assert images.shape == (1, 1, 16, 16)
    assert torch.isfinite(images).all()
    raw = pipe(num_inference_steps=4, generator=torch.Generator().manual_seed(0), output_type="latent", **kwargs).images
    assert torch.isfinite(raw).all()
    assert len(calls) == 2 * len(pipe.scheduler.timesteps)


# ----------------------------------------------------------------------------------------------------
# Step callbacks and interruption
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["label", "unconditional"])
def test_callback_called_once_per_step_with_latents(kind):
    pipe = _quiet(tiny_label_pipeline() if kind == "label" else tiny_unconditional_pipeline())
    kwargs = {"labels": "normal"} if kind == "label" else {}
    seen: list[tuple[int, tuple]] = []

    def callback(pipeline, step, timestep, callback_kwargs):
        assert pipeline is pipe
        seen.append((step, tuple(callback_kwargs["latents"].shape)))
        return {}

    pipe(num_inference_steps=4, callback_on_step_end=callback, output_type="np", **kwargs)
    assert seen == [(step, (1, 1, 16, 16)) for step in range(4)]


def test_callback_can_replace_latents(label_pipe):
    def to_zero(pipeline, step, timestep, callback_kwargs):
        return {"latents": torch.zeros_like(callback_kwargs["latents"])} if step == STEPS - 1 else {}

    images = _np(label_pipe, labels="normal", callback_on_step_end=to_zero)
    np.testing.assert_allclose(images, 0.5)  # a zero sample in [-1, 1] decodes to mid-grey


@pytest.mark.parametrize("kind", ["label", "unconditional"])
@pytest.mark.parametrize("stop_at", [0, 2])
def test_interrupt_stops_before_next_unet_call(kind, stop_at):
    pipe = _quiet(tiny_label_pipeline() if kind == "label" else tiny_unconditional_pipeline())
    kwargs = {"labels": "normal"} if kind == "label" else {}
    calls = _count_unet_calls(pipe)

    def stop(pipeline, step, timestep, callback_kwargs):
        if step == stop_at:
            pipeline._interrupt = True
        return {}

    images = pipe(num_inference_steps=5, callback_on_step_end=stop, output_type="np", **kwargs).images
    assert len(calls) == stop_at + 1
    assert pipe.interrupt is True
    assert images.shape == (1, 16, 16, 1)  # the partially denoised sample is still returned

    calls.clear()
    pipe(num_inference_steps=5, output_type="np", **kwargs)  # a new call starts afresh
    assert pipe.interrupt is False
    assert len(calls) == 5
