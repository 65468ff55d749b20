"""The text training task: prompt encoding as the pipeline does it, prompt dropout, and the UNet it builds."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from diffusers import DDPMScheduler

from medgen.config import load_config
from medgen.training.tasks import build_task
from medgen.training.vae import build_autoencoder

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    folder = tmp_path_factory.mktemp("autoencoder")
    config = load_config(REPO_ROOT / "train_configs" / "tiny_text.yaml", ["text.max_length=16"])
    torch.manual_seed(0)
    vae = build_autoencoder(config.vae, config.data.channels, config.data.resolution)
    vae.register_to_config(scaling_factor=0.7)
    vae.save_pretrained(folder)
    config.model.pretrained_vae = str(folder)
    return build_task(config, label_names=[], multi_label=False)


def test_unet_cross_attends_to_the_encoder_in_latent_space(task):
    unet = task.unet
    assert unet.config.cross_attention_dim == task.text_encoder.config.hidden_size == 384
    assert unet.config.in_channels == 4 and unet.config.sample_size == 16  # 32 px / autoencoder factor 2
    assert any("CrossAttn" in block for block in unet.config.down_block_types)


def test_training_conditions_match_what_the_pipeline_feeds(task):
    prompts = ["bilateral ground glass opacities", "left lower lobe consolidation"]
    drop = torch.tensor([False, True])
    kwargs = task.condition_kwargs({"text": prompts}, drop)
    pipe = task.build_pipeline(task.unet, DDPMScheduler(num_train_timesteps=100))
    with torch.no_grad():
        states, mask = pipe.encode_prompt([prompts[0], ""])
    torch.testing.assert_close(kwargs["encoder_hidden_states"], states)
    torch.testing.assert_close(kwargs["encoder_attention_mask"], mask)
    assert kwargs["encoder_attention_mask"][1].sum() == 2  # the dropped prompt is the empty prompt


def test_cached_encodings_equal_fresh_ones(task):
    first = task.condition_kwargs({"text": ["pleural effusion", "pleural effusion"]}, torch.tensor([False, False]))
    again = task.condition_kwargs({"text": ["pleural effusion"]}, torch.tensor([False]))
    torch.testing.assert_close(first["encoder_hidden_states"][0], again["encoder_hidden_states"][0])


def test_model_input_is_scaled_latents(task):
    pixels = torch.rand(2, 1, 32, 32) * 2 - 1
    latents = task.model_input({"pixel_values": pixels}, generator=torch.Generator().manual_seed(0))
    assert latents.shape == (2, 4, 16, 16)
    with torch.no_grad():
        raw = task.vae.encode(pixels).latent_dist.sample(generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(latents, raw * 0.7)


def test_sample_rows_come_from_the_config(task):
    assert [title for title, _ in task.sample_requests()] == task.config.text.sample_prompts
    assert all(set(kwargs) == {"prompt"} for _, kwargs in task.sample_requests())


def test_text_kind_without_autoencoder_is_explained():
    config = load_config(REPO_ROOT / "train_configs" / "tiny_text.yaml")
    with pytest.raises(ValueError, match="pretrained_vae"):
        build_task(config, label_names=[], multi_label=False)


def test_fine_tuning_needs_the_prepared_encoder(task):
    config = load_config(REPO_ROOT / "train_configs" / "tiny_text.yaml",
                         [f"model.pretrained_vae={task.config.model.pretrained_vae}", "text.train_last_layers=1"])
    fine_tuned = build_task(config, label_names=[], multi_label=False)
    assert fine_tuned.trainable_modules() == [fine_tuned.text_encoder]
    assert task.trainable_modules() == []  # frozen by default: nothing beside the UNet trains
    with pytest.raises(RuntimeError, match="use_prepared_modules"):
        fine_tuned.condition_kwargs({"text": ["effusion"]}, torch.tensor([False]))
    fine_tuned.use_prepared_modules(fine_tuned.trainable_modules())
    kwargs = fine_tuned.condition_kwargs({"text": ["effusion"]}, torch.tensor([False]))
    assert kwargs["encoder_hidden_states"].requires_grad


def test_pooled_prompt_summary_enters_the_timestep_embedding(task):
    assert task.unet.config.addition_embed_type is None  # cross-attention only by default
    config = load_config(REPO_ROOT / "train_configs" / "tiny_text.yaml",
                         [f"model.pretrained_vae={task.config.model.pretrained_vae}", "text.pooled_embedding=true"])
    pooled_task = build_task(config, label_names=[], multi_label=False)
    assert pooled_task.unet.config.addition_embed_type == "text"
    states = pooled_task.condition_kwargs({"text": ["effusion", "cardiomegaly"]}, torch.tensor([False, False]))
    pooled = pooled_task.unet.add_embedding(states["encoder_hidden_states"])
    assert pooled.shape == (2, pooled_task.unet.time_embedding.linear_2.out_features)
    assert not torch.allclose(pooled[0], pooled[1])
