"""End to end: `train_configs/tiny_text.yaml` trains the autoencoder, then the text-conditioned UNet, in one run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from medgen.config import load_config
from medgen.pipelines import TextToImagePipeline, load_pipeline
from medgen.train import main
from medgen.training.vae import AUTOENCODER_SUBFOLDER, METRICS_FILE, RECONSTRUCTIONS_FILE

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_tiny_text_config_runs_end_to_end(covid_notes_dir, tmp_path):
    output_dir = tmp_path / "run"
    config = load_config(
        REPO_ROOT / "train_configs" / "tiny_text.yaml",
        [f"data.path={covid_notes_dir}", f"data.cache_dir={tmp_path / 'cache'}", f"output_dir={output_dir}"],
    )
    assert main(config) == output_dir

    # Stage 1: the autoencoder, its scaling factor and its held-out report
    autoencoder = output_dir / AUTOENCODER_SUBFOLDER
    metrics = json.loads((autoencoder / METRICS_FILE).read_text())
    assert metrics["num_images"] > 0 and np.isfinite(metrics["psnr"]) and (autoencoder / RECONSTRUCTIONS_FILE).is_file()
    # Stage 2 checkpoints hold the UNet only, not the autoencoder trained before it
    checkpoint = sorted((output_dir / "checkpoints").glob("checkpoint-*"))[-1]
    assert (checkpoint / "model.safetensors").is_file() and not (checkpoint / "model_1.safetensors").exists()
    saved_config = yaml.safe_load((output_dir / "training_config.yaml").read_text())
    assert Path(saved_config["model"]["pretrained_vae"]) == autoencoder  # a resumed run reuses this autoencoder

    # The saved pipeline: latent space, the computed scaling factor, MiniLM named in the card, prompts work
    pipe = load_pipeline(output_dir)
    assert isinstance(pipe, TextToImagePipeline)
    assert pipe.vae.config.scaling_factor == pytest.approx(metrics["scaling_factor"])
    assert "all-MiniLM-L6-v2" in (output_dir / "README.md").read_text()
    assert pipe.config.example_prompts == config.text.sample_prompts  # what the app offers (no prompt set: the grid's)
    assert list((output_dir / "samples").glob("step-*.png"))
    pipe.set_progress_bar_config(disable=True)

    def generate(prompt: str) -> np.ndarray:
        return pipe(prompt, num_inference_steps=4, generator=torch.manual_seed(0), output_type="np").images

    images = generate("infiltrate in the upper lobe of the left lung")
    assert images.shape == (1, 32, 32, 1) and 0.0 <= images.min() and images.max() <= 1.0
    np.testing.assert_array_equal(images, generate("infiltrate in the upper lobe of the left lung"))
    assert not np.allclose(images, generate("bilateral ground glass opacities"), atol=1e-6)


@pytest.mark.slow
def test_fine_tuned_encoder_layers_train_checkpoint_and_resume(covid_notes_dir, tmp_path):
    """`text.train_last_layers: 1`: the last encoder layer trains with the UNet, the rest stays as loaded, the
    checkpoint holds the encoder, and a run resumed from it ends with the same encoder as an uninterrupted one."""
    from medgen.text_encoders import encoder_layers, load_text_encoder
    from medgen.training.vae import build_autoencoder

    base = load_config(REPO_ROOT / "train_configs" / "tiny_text.yaml")
    torch.manual_seed(0)
    vae = build_autoencoder(base.vae, base.data.channels, base.data.resolution)
    vae.save_pretrained(tmp_path / "autoencoder")

    def run(output_dir: Path, resume: str | None = None) -> Path:
        config = load_config(
            REPO_ROOT / "train_configs" / "tiny_text.yaml",
            [f"data.path={covid_notes_dir}", f"data.cache_dir={tmp_path / 'cache'}", f"output_dir={output_dir}",
             f"model.pretrained_vae={tmp_path / 'autoencoder'}", "text.train_last_layers=1", "max_train_steps=4",
             "checkpointing_steps=2", "checkpoints_total_limit=2", "optim.learning_rate=1e-2"],
        )
        return main(config, resume_from_checkpoint=resume)

    full = run(tmp_path / "full")
    assert (full / "checkpoints" / "checkpoint-2" / "model_1.safetensors").is_file()  # the encoder is checkpointed

    _, pristine = load_text_encoder("minilm-offline")
    trained = load_pipeline(full).text_encoder
    pristine_layers, trained_layers = encoder_layers(pristine), encoder_layers(trained)
    assert not torch.equal(trained_layers[-1].output.dense.weight, pristine_layers[-1].output.dense.weight)
    torch.testing.assert_close(trained_layers[0].output.dense.weight, pristine_layers[0].output.dense.weight)
    torch.testing.assert_close(trained.embeddings.word_embeddings.weight, pristine.embeddings.word_embeddings.weight)

    # interrupted after step 2, resumed: the same encoder at step 4
    import shutil

    resumed_dir = tmp_path / "resumed"
    shutil.copytree(full / "checkpoints" / "checkpoint-2", resumed_dir / "checkpoints" / "checkpoint-2")
    run(resumed_dir, resume="latest")
    resumed = load_pipeline(resumed_dir).text_encoder
    torch.testing.assert_close(encoder_layers(resumed)[-1].output.dense.weight, trained_layers[-1].output.dense.weight)
