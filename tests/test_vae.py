"""The autoencoder stage: shapes, latent scaling, training on real images, reconstruction report, reuse."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from accelerate import Accelerator
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
from PIL import Image

from medgen.config import VAEConfig, load_config
from medgen.data import DataConfig, build_dataset
from medgen.pipelines import LabelConditionedPipeline
from medgen.training.vae import (
    METRICS_FILE,
    RECONSTRUCTIONS_FILE,
    build_autoencoder,
    latent_scaling_factor,
    load_autoencoder,
    reconstruction_metrics,
    split_holdout,
    train_autoencoder,
)

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("levels, latent_channels", [((8, 16), 4), ((8, 16, 16), 8)])
def test_encode_decode_shapes(levels, latent_channels):
    torch.manual_seed(0)
    vae = build_autoencoder(VAEConfig(block_out_channels=list(levels), latent_channels=latent_channels), channels=1, resolution=32)
    pixels = torch.rand(2, 1, 32, 32) * 2 - 1
    with torch.no_grad():
        latents = vae.encode(pixels).latent_dist.sample()
        side = 32 // 2 ** (len(levels) - 1)
        assert latents.shape == (2, latent_channels, side, side)
        assert vae.decode(latents).sample.shape == (2, 1, 32, 32)


def test_scaling_factor_makes_latents_unit_variance():
    torch.manual_seed(0)
    vae = build_autoencoder(VAEConfig(block_out_channels=[8, 16]), resolution=16)
    batches = [torch.rand(8, 1, 16, 16) * 2 - 1 for _ in range(2)]
    torch.manual_seed(1)
    factor = latent_scaling_factor(vae, batches)
    torch.manual_seed(1)  # the same posterior samples the training loop would draw
    with torch.no_grad():
        latents = torch.cat([vae.encode(b).latent_dist.sample() for b in batches])
    assert (latents * factor).std().item() == pytest.approx(1.0, abs=1e-4)
    assert factor != pytest.approx(vae.config.scaling_factor)  # not the Stable Diffusion default left in place
    with pytest.raises(ValueError, match="zero images"):
        latent_scaling_factor(vae, [])


def test_holdout_split_is_disjoint_and_seeded():
    train, held_out = split_holdout(20, 0.1, seed=0)
    assert len(held_out) == 2 and sorted(train + held_out) == list(range(20))
    assert split_holdout(20, 0.1, seed=0) == (train, held_out)
    with pytest.raises(ValueError, match="at least 2 images"):
        split_holdout(1, 0.1, seed=0)


@pytest.mark.parametrize(
    "override, match",
    [
        ("vae.block_out_channels=[8, 12]", "norm_num_groups"),
        ("vae.reconstruction_loss=l2", "reconstruction_loss"),
        ("vae.holdout_fraction=0", "holdout_fraction"),
        ("vae.latent_channels=0", "latent_channels"),
        ("vae.perceptual_weight=-0.1", "perceptual_weight"),
        ("vae.kl_weigth=1e-6", "vae.kl_weigth"),
        ("text.max_length=1", "max_length"),
    ],
)
def test_bad_autoencoder_and_text_settings_are_config_errors(override, match):
    with pytest.raises(ValueError, match=match):
        load_config(REPO_ROOT / "train_configs" / "tiny_text.yaml", [override])


def test_load_autoencoder_errors_name_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "missing")):
        load_autoencoder(tmp_path / "missing")


@pytest.fixture(scope="module")
def trained(pneumoniamnist_npz, tmp_path_factory):
    """A tiny autoencoder trained for a few steps on real PneumoniaMNIST images (kind `vae`)."""
    output_dir = tmp_path_factory.mktemp("vae")
    config = load_config(
        REPO_ROOT / "train_configs" / "vae_pneumoniamnist.yaml",
        [
            f"data.path={pneumoniamnist_npz}", "data.resolution=16", "data.max_samples=96",
            f"data.cache_dir={output_dir / 'cache'}", f"output_dir={output_dir}", "vae.block_out_channels=[8, 16]",
            "vae.max_train_steps=25", "vae.train_batch_size=16", "vae.learning_rate=3e-3", "vae.holdout_fraction=0.1",
            "vae.perceptual_weight=0.1", "report_to=none",
        ],
    )
    data = build_dataset(config.data)
    accelerator = Accelerator(cpu=True)
    folder = train_autoencoder(config, data, accelerator)
    return config, data, folder, accelerator


def test_training_saves_a_scaled_autoencoder_with_a_reconstruction_report(trained):
    config, data, folder, _ = trained
    assert folder == Path(config.output_dir)
    assert (folder / "diffusion_pytorch_model.safetensors").is_file()
    vae = AutoencoderKL.from_pretrained(folder, use_safetensors=True)
    metrics = json.loads((folder / METRICS_FILE).read_text())
    assert vae.config.scaling_factor == pytest.approx(metrics["scaling_factor"])
    assert vae.config.scaling_factor != 0.18215 and vae.config.latent_channels == 4  # computed, not the SD default
    assert metrics["num_images"] == 10 and metrics["train_images"] == 86  # 10 % of 96 held out
    assert 5.0 < metrics["psnr"] < 60.0 and -1.0 <= metrics["ssim"] <= 1.0
    grid = Image.open(folder / RECONSTRUCTIONS_FILE)
    assert grid.mode == "L" and grid.size == (8 * 18, 2 * 18)  # 8 originals over 8 reconstructions, 1-px borders


def test_training_improves_held_out_reconstructions(trained):
    config, data, folder, _ = trained
    _, held_out = split_holdout(len(data.dataset), config.vae.holdout_fraction, config.seed)
    pixels = data.dataset.select(held_out)[:]["pixel_values"]
    torch.manual_seed(config.seed)
    untrained = build_autoencoder(config.vae, 1, 16).eval()
    before = reconstruction_metrics(untrained, [pixels])
    after = reconstruction_metrics(load_autoencoder(folder), [pixels])
    assert after["psnr"] > before["psnr"] + 3.0
    assert after["ssim"] > before["ssim"]


def test_finished_stage_is_reused_not_retrained(trained):
    config, data, folder, accelerator = trained
    weights = folder / "diffusion_pytorch_model.safetensors"
    stamp = weights.stat().st_mtime_ns
    assert train_autoencoder(config, data, accelerator) == folder
    assert weights.stat().st_mtime_ns == stamp


def test_trained_autoencoder_drives_a_latent_label_pipeline(trained):
    _, _, folder, _ = trained
    vae = load_autoencoder(folder)
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, block_out_channels=(8, 16), layers_per_block=1,
        norm_num_groups=8, down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
        mid_block_type="UNetMidBlock2D", attention_head_dim=8,
        class_embed_type="projection", projection_class_embeddings_input_dim=3,
    )
    pipe = LabelConditionedPipeline(unet=unet, scheduler=DDPMScheduler(num_train_timesteps=50), vae=vae,
                                    id2label={"0": "normal", "1": "pneumonia"})
    pipe.set_progress_bar_config(disable=True)
    images = pipe(labels="pneumonia", num_inference_steps=2, output_type="np", generator=torch.manual_seed(0)).images
    assert images.shape == (1, 16, 16, 1) and np.isfinite(images).all()


def test_resolution_must_fit_the_downsampling(pneumoniamnist_npz, tmp_path):
    config = load_config(
        REPO_ROOT / "train_configs" / "vae_pneumoniamnist.yaml",
        [f"data.path={pneumoniamnist_npz}", "data.resolution=18", "vae.block_out_channels=[8, 16, 16]", f"output_dir={tmp_path}"],
    )
    data = type("Data", (), {"dataset": None})()
    with pytest.raises(ValueError, match="divisible"):
        train_autoencoder(config, data, Accelerator(cpu=True))


def test_perceptual_loss_ranks_distortions_and_trains_only_the_autoencoder(monkeypatch):
    from medgen.training import perceptual as perceptual_module
    from medgen.training.vae import autoencoder_loss

    loss = perceptual_module.InceptionPerceptualLoss()
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(4, 1, 32, 32, generator=generator) * 2 - 1
    noise = torch.randn(images.shape, generator=generator)
    assert loss(images, images).item() == pytest.approx(0.0, abs=1e-6)
    slight, strong = loss((images + 0.05 * noise).clamp(-1, 1), images), loss((images + 0.5 * noise).clamp(-1, 1), images)
    assert 0 < slight.item() < strong.item()

    config = load_config(REPO_ROOT / "train_configs" / "tiny_text.yaml", ["vae.perceptual_weight=0.5"]).vae
    torch.manual_seed(0)
    vae = build_autoencoder(config, 1, 32)
    frozen = [p.detach().clone() for p in loss.parameters()]
    total, parts = autoencoder_loss(vae, images, config, loss)
    total.backward()
    assert parts["perceptual_loss"] > 0 and all(p.grad is None for p in loss.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in vae.parameters())
    assert all(torch.equal(a, b) for a, b in zip(frozen, loss.parameters()))
    with pytest.raises(ValueError, match="perceptual"):
        autoencoder_loss(vae, images, config)  # weight set but no network: an error, not a silently missing term

    def not_installed():
        raise FileNotFoundError("the FID Inception network is not installed")

    monkeypatch.setattr("medgen.evaluation.features.inception_weights_path", not_installed)
    with pytest.raises(FileNotFoundError, match="perceptual_weight"):
        perceptual_module.InceptionPerceptualLoss()
