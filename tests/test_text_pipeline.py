"""TextToImagePipeline: outputs, guidance and negative prompts, determinism, validation, save/load both ways."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch
from diffusers import (
    AutoencoderKL, DDIMScheduler, DDPMScheduler, DiffusionPipeline, DPMSolverMultistepScheduler, UNet2DConditionModel,
    UniPCMultistepScheduler,
)
from transformers import AutoTokenizer, BertConfig, BertModel

import medgen
from medgen.pipelines import TextToImagePipeline
from medgen.text_encoders import offline_encoder_folder

STEPS = 3


def tiny_text_unet(in_channels: int, sample_size: int, cross_attention_dim: int, seed: int = 0) -> UNet2DConditionModel:
    torch.manual_seed(seed)
    return UNet2DConditionModel(
        sample_size=sample_size, in_channels=in_channels, out_channels=in_channels,
        block_out_channels=(8, 16), layers_per_block=1, norm_num_groups=8, attention_head_dim=8,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=cross_attention_dim,
    )


def tiny_vae(seed: int = 0) -> AutoencoderKL:
    torch.manual_seed(seed)
    return AutoencoderKL(
        in_channels=1, out_channels=1, latent_channels=4, block_out_channels=(8, 16),
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
        layers_per_block=1, norm_num_groups=8, sample_size=16,
    )


@pytest.fixture(scope="module")
def minilm():
    """The real MiniLM tokenizer with a tiny seeded BERT of the same vocabulary: fast to run, save and load.
    (The pretrained encoder itself is tested in test_text_encoders.py and end to end in test_text_train.py.)"""
    tokenizer = AutoTokenizer.from_pretrained(offline_encoder_folder())
    torch.manual_seed(0)
    encoder = BertModel(BertConfig(
        vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=128,
    )).eval()
    encoder.config._name_or_path = "tiny-bert-for-tests"
    return tokenizer, encoder


@pytest.fixture(scope="module")
def pipe(minilm) -> TextToImagePipeline:
    tokenizer, encoder = minilm
    scheduler = DPMSolverMultistepScheduler.from_config(DDPMScheduler(num_train_timesteps=100).config)
    pipeline = TextToImagePipeline(
        vae=tiny_vae(), text_encoder=encoder, tokenizer=tokenizer,
        unet=tiny_text_unet(4, 8, encoder.config.hidden_size), scheduler=scheduler, max_length=16,
    )
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def sample(pipeline, prompt="right lower lobe pneumonia", seed=0, **kwargs) -> np.ndarray:
    kwargs = {"num_inference_steps": STEPS, "output_type": "np", **kwargs}
    return pipeline(prompt, generator=torch.manual_seed(seed), **kwargs).images


def test_output_types_shapes_and_ranges(pipe):
    images = sample(pipe, ["pneumonia", "cardiomegaly"], num_images_per_prompt=2)
    assert images.shape == (4, 16, 16, 1) and images.dtype == np.float32
    assert images.min() >= 0.0 and images.max() <= 1.0
    tensors = pipe("effusion", num_inference_steps=STEPS, output_type="pt").images
    assert tensors.shape == (1, 1, 16, 16)
    pil = pipe("effusion", num_inference_steps=STEPS).images
    assert len(pil) == 1 and pil[0].mode == "L" and pil[0].size == (16, 16)
    latents = pipe("effusion", num_inference_steps=STEPS, output_type="latent").images
    assert latents.shape == (1, 4, 8, 8)


def test_fixed_generator_is_deterministic_and_seeds_differ(pipe):
    first = sample(pipe, seed=3)
    np.testing.assert_array_equal(first, sample(pipe, seed=3))
    assert not np.allclose(first, sample(pipe, seed=4))


def test_prompt_guidance_and_negative_prompt_change_the_output(pipe):
    base = sample(pipe, guidance_scale=4.0)
    assert not np.allclose(base, sample(pipe, "no finding", guidance_scale=4.0), atol=1e-6)
    assert not np.allclose(base, sample(pipe, guidance_scale=1.0), atol=1e-6)
    assert not np.allclose(base, sample(pipe, guidance_scale=4.0, negative_prompt="pleural effusion"), atol=1e-6)
    # The default negative prompt is the empty (unconditional) prompt.
    np.testing.assert_allclose(base, sample(pipe, guidance_scale=4.0, negative_prompt=""), atol=1e-6)


def test_empty_prompt_is_unconditional_sampling(pipe):
    images = sample(pipe, "", guidance_scale=4.0)
    # With an empty prompt both halves of the guidance batch are the same condition, so guidance is a no-op.
    np.testing.assert_allclose(images, sample(pipe, "", guidance_scale=1.0), atol=1e-5)


def test_over_long_prompt_is_truncated_with_a_warning(pipe, caplog):
    report = "patchy airspace opacities in the right lower lobe consistent with pneumonia " * 10
    with caplog.at_level(logging.WARNING):
        images = sample(pipe, report)
    assert images.shape == (1, 16, 16, 1)
    assert "truncated" in caplog.text


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"prompt": []}, "prompt"),
        ({"prompt": 3}, "prompt"),
        ({"prompt": ["a", "b"], "negative_prompt": ["x", "y", "z"]}, "negative_prompt"),
        ({"negative_prompt": 5}, "negative_prompt"),
        ({"num_inference_steps": 0}, "num_inference_steps"),
        ({"num_images_per_prompt": 0}, "num_images_per_prompt"),
        ({"guidance_scale": -1.0}, "guidance_scale"),
        ({"output_type": "jpeg"}, "output_type"),
        ({"latents": torch.zeros(1, 4, 4, 4)}, "latents"),
        ({"callback_on_step_end_tensor_inputs": ["noise"]}, "callback_on_step_end_tensor_inputs"),
    ],
)
def test_bad_inputs_raise_clear_errors(pipe, kwargs, match):
    kwargs = {"prompt": "pneumonia", "num_inference_steps": STEPS, **kwargs}
    with pytest.raises(ValueError, match=match):
        pipe(**kwargs)


def test_mismatched_components_are_rejected(minilm):
    tokenizer, encoder = minilm
    scheduler = DDPMScheduler(num_train_timesteps=100)
    with pytest.raises(ValueError, match="cross_attention_dim"):
        TextToImagePipeline(vae=tiny_vae(), text_encoder=encoder, tokenizer=tokenizer, unet=tiny_text_unet(4, 8, 48), scheduler=scheduler)
    with pytest.raises(ValueError, match="latent"):
        TextToImagePipeline(vae=tiny_vae(), text_encoder=encoder, tokenizer=tokenizer, unet=tiny_text_unet(8, 8, 32), scheduler=scheduler)


def test_callback_can_interrupt_within_one_step(pipe):
    calls = []

    def stop_after_first(pipeline, step, timestep, callback_kwargs):
        calls.append(step)
        pipeline._interrupt = True
        return callback_kwargs

    images = pipe("pneumonia", num_inference_steps=10, output_type="np", callback_on_step_end=stop_after_first).images
    assert calls == [0] and pipe.interrupt
    assert images.shape == (1, 16, 16, 1)
    pipe("pneumonia", num_inference_steps=2, output_type="np")
    assert not pipe.interrupt


def test_any_diffusers_scheduler_can_be_swapped_in(pipe):
    original = pipe.scheduler
    try:
        for scheduler_class in (UniPCMultistepScheduler, DDIMScheduler, DDPMScheduler):
            pipe.scheduler = scheduler_class.from_config(original.config)
            assert sample(pipe).shape == (1, 16, 16, 1)
    finally:
        pipe.scheduler = original


def test_pixel_space_without_vae(minilm):
    tokenizer, encoder = minilm
    pipeline = TextToImagePipeline(
        vae=None, text_encoder=encoder, tokenizer=tokenizer, unet=tiny_text_unet(1, 16, 32),
        scheduler=DDPMScheduler(num_train_timesteps=100), max_length=16,
    )
    pipeline.set_progress_bar_config(disable=True)
    assert sample(pipeline).shape == (1, 16, 16, 1)


def test_save_and_load_with_medgen_and_stock_diffusers(pipe, tmp_path):
    folder = pipe.save_pretrained(tmp_path / "text-pipe")
    index = json.loads((folder / "model_index.json").read_text())
    assert index["_class_name"] == ["pipeline", "TextToImagePipeline"]
    assert index["text_encoder"] == ["transformers", "BertModel"] and index["max_length"] == 16
    assert (folder / "pipeline.py").is_file()
    assert list(folder.rglob("*.safetensors")) and not list(folder.rglob("*.bin"))
    card = (folder / "README.md").read_text()
    assert "tiny-bert-for-tests" in card and "text-to-image" in card

    expected = sample(pipe, ["pneumonia", ""], guidance_scale=3.0)
    with_medgen = medgen.TextToImagePipeline.from_pretrained(folder)  # load_pipeline(folder): see test_text_train.py
    assert type(with_medgen) is TextToImagePipeline  # medgen's class: no remote code ran
    with pytest.raises(ValueError, match="not a LabelConditionedPipeline"):
        medgen.LabelConditionedPipeline.from_pretrained(folder)
    stock = DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)
    assert type(stock).__module__.endswith("pipeline")  # the folder's own pipeline.py
    for loaded in (with_medgen, stock):
        loaded.set_progress_bar_config(disable=True)
        np.testing.assert_allclose(sample(loaded, ["pneumonia", ""], guidance_scale=3.0), expected, atol=1e-5)


def test_example_prompts_travel_with_the_saved_pipeline(pipe, minilm, tmp_path):
    """Apps offer the prompts a model was trained on; they are saved in model_index.json and read back by medgen
    and by stock diffusers."""
    tokenizer, encoder = minilm
    prompts = ["chest x-ray, viral pneumonia", "brain MRI, no tumor"]
    pipeline = TextToImagePipeline(
        vae=pipe.vae, text_encoder=encoder, tokenizer=tokenizer, unet=pipe.unet, scheduler=pipe.scheduler,
        max_length=16, example_prompts=prompts,
    )
    folder = pipeline.save_pretrained(tmp_path / "with-examples")
    assert json.loads((folder / "model_index.json").read_text())["example_prompts"] == prompts
    assert medgen.TextToImagePipeline.from_pretrained(folder).config.example_prompts == prompts
    assert DiffusionPipeline.from_pretrained(folder, trust_remote_code=True).config.example_prompts == prompts
    from medgen.app import describe_pipeline, describe_pipeline_folder

    assert describe_pipeline_folder(folder).example_prompts == tuple(prompts)  # the app's model list, unloaded
    assert describe_pipeline(medgen.TextToImagePipeline.from_pretrained(folder)).example_prompts == tuple(prompts)
    assert pipe.config.example_prompts == []  # none given: none offered
    with pytest.raises(ValueError, match="example_prompts"):
        TextToImagePipeline(
            vae=pipe.vae, text_encoder=encoder, tokenizer=tokenizer, unet=pipe.unet, scheduler=pipe.scheduler,
            example_prompts=["brain MRI", "  "],
        )
