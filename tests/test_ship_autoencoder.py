"""Shipping a pipeline with an autoencoder whose decoder was trained further (`medgen models ship --vae`), and the
sample grid a shipped model is redrawn with."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL
from PIL import Image
from safetensors.torch import load_file

from medgen.cli import main as cli
from medgen.pipelines import load_pipeline
from medgen.pipelines.catalog import ship
from helpers import tiny_label_pipeline, tiny_unconditional_pipeline
from mask_helpers import tiny_mask_pipeline

GRID_CONFIG = "seed: 0\nnum_sample_images: 2\ndiffusion:\n  num_inference_steps: 2\n"


@pytest.fixture
def run(tmp_path):
    folder = tmp_path / "run"
    tiny_label_pipeline(latent=True).save_pretrained(folder)
    (folder / "training_config.yaml").write_text(GRID_CONFIG)
    return folder


def saved_autoencoder(run, folder, change=None):
    """The run's autoencoder saved to `folder`, its parameters under `change` (a name prefix) moved."""
    vae = AutoencoderKL.from_pretrained(run / "vae")
    with torch.no_grad():
        for name, parameter in vae.named_parameters():
            if change and name.startswith(change):
                parameter.add_(0.05 * torch.randn_like(parameter))
    vae.save_pretrained(folder)
    return folder


def test_a_decoder_trained_further_ships_and_the_pipeline_decodes_with_it(run, tmp_path, capsys):
    decoder = saved_autoencoder(run, tmp_path / "decoder_ft", change="decoder.")
    out = tmp_path / "shipped"
    assert cli(["models", "ship", str(run), "--name", "cxr", "--modality", "chest X-ray", "--training-data", "tiny",
                "--output", str(out), "--vae", str(decoder)]) == 0
    shipped = load_file(out / "vae" / "diffusion_pytorch_model.safetensors")
    trained = load_file(decoder / "diffusion_pytorch_model.safetensors")
    original = load_file(run / "vae" / "diffusion_pytorch_model.safetensors")
    assert all(torch.equal(shipped[key], trained[key].half()) for key in trained)  # the new decoder, in fp16
    assert not torch.equal(shipped["decoder.conv_out.weight"], original["decoder.conv_out.weight"].half())
    assert json.loads((out / "vae" / "config.json").read_text())["_name_or_path"].endswith("decoder_ft")
    # the UNet is the run's, and the shipped pipeline samples what the run's UNet + the new decoder sample
    unet = load_file(out / "unet" / "diffusion_pytorch_model.safetensors")
    assert all(torch.equal(value, tensor.half()) for value, tensor in
               zip(unet.values(), load_file(run / "unet" / "diffusion_pytorch_model.safetensors").values()))
    expected_pipe = load_pipeline(run)
    expected_pipe.vae = AutoencoderKL.from_pretrained(decoder)
    kwargs = dict(labels="pneumonia", num_inference_steps=2, output_type="np")
    expected = expected_pipe(generator=torch.Generator().manual_seed(0), **kwargs).images
    assert abs(load_pipeline(out)(generator=torch.Generator().manual_seed(0), **kwargs).images - expected).max() < 0.05
    # samples.png is drawn anew with the shipped pipeline: one row per label, two images each
    grid = Image.open(out / "samples.png")
    assert grid.mode == "L" and grid.height == 2 * (16 + 2)


@pytest.mark.parametrize("change, message", [
    ("encoder.", "another encoder"),
    ("quant_conv.", "another encoder"),
    ("scaling_factor", r"scaling_factor 0.18215 -> 0.5"),
])
def test_an_autoencoder_with_another_latent_space_is_refused_before_writing(run, tmp_path, change, message):
    folder = saved_autoencoder(run, tmp_path / "other", change=change)
    if change == "scaling_factor":
        config = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps({**config, "scaling_factor": 0.5}))
    with pytest.raises(ValueError, match=message) as error:
        ship(run, "cxr", "chest X-ray", "tiny", output=tmp_path / "shipped", vae=folder)
    assert str(folder) in str(error.value)
    assert not (tmp_path / "shipped").exists()


def test_a_missing_autoencoder_or_a_pixel_model_is_named(run, tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        ship(run, "cxr", "chest X-ray", "tiny", output=tmp_path / "shipped", vae=tmp_path / "nowhere")
    pixel = tmp_path / "pixel"
    tiny_unconditional_pipeline().save_pretrained(pixel)
    with pytest.raises(ValueError, match="without an autoencoder"):
        ship(pixel, "px", "chest X-ray", "tiny", output=tmp_path / "shipped", vae=run / "vae")
    assert not (tmp_path / "shipped").exists()


def test_a_pipeline_folder_gives_its_autoencoder(run, tmp_path):
    out = ship(run, "cxr", "chest X-ray", "tiny", output=tmp_path / "shipped", vae=run)  # the same autoencoder: allowed
    assert load_file(out / "vae" / "diffusion_pytorch_model.safetensors").keys() == load_file(
        run / "vae" / "diffusion_pytorch_model.safetensors").keys()


def test_a_mask_model_is_redrawn_as_pairs_with_the_mask_outlined(tmp_path):
    run = tmp_path / "mask_run"
    tiny_mask_pipeline().save_pretrained(run)
    (run / "training_config.yaml").write_text(GRID_CONFIG)
    out = ship(run, "lungs", "chest X-ray", "tiny", output=tmp_path / "shipped", vae=run / "vae")
    pipe = load_pipeline(out)
    pairs = pipe(labels="tuberculosis", num_images_per_prompt=2, num_inference_steps=2,
                 generator=torch.Generator("cpu").manual_seed(0), output_type="np")
    grid = np.asarray(Image.open(out / "samples.png"))
    assert grid.ndim == 3 and grid.shape[0] == 2 * (16 + 2)  # RGB, one row per label
    tile = grid[16 + 2 : 2 * 16 + 2, 96 : 96 + 16]  # the tuberculosis row's first pair
    coloured = (tile[..., 0] != tile[..., 1]) | (tile[..., 1] != tile[..., 2])
    from skimage.segmentation import find_boundaries

    edge = find_boundaries(pairs.masks[0] == 1, mode="inner")
    assert edge.any() and np.array_equal(coloured, edge)  # the outline is exactly the generated mask's edge


def test_a_text_model_is_redrawn_with_the_runs_sample_prompts(tmp_path):
    from helpers import tiny_text_pipeline

    run = tmp_path / "text_run"
    tiny_text_pipeline().save_pretrained(run)
    prompts = ["chest x-ray, normal", "brain MRI, glioma", "chest CT, normal"]
    (run / "training_config.yaml").write_text(GRID_CONFIG + "text:\n  sample_prompts:\n" + "".join(f"  - {p}\n" for p in prompts))
    out = ship(run, "notes", "chest X-ray", "tiny", output=tmp_path / "shipped", vae=run / "vae")
    assert Image.open(out / "samples.png").size == (96 + 2 * (16 + 2), len(prompts) * (16 + 2))  # a row per prompt
