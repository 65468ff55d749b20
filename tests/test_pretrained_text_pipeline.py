"""The built-in text model `medical-text`: one TextToImagePipeline across chest X-ray, brain MRI, breast ultrasound
and chest CT. It ships without its frozen encoder's weights (medgen fills them in from the installed MiniLM
package), loads by name with medgen and with stock diffusers, follows the prompt it is given, offers its trained
prompts to the app, and carries an evaluation of its own weights scored per prompt group."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

import medgen
from medgen.pipelines import TextToImagePipeline, pipeline_text_to_image
from medgen.pipelines.hub import builtin_pipeline_path
from medgen.pipelines.publishing import stored_evaluation
from medgen.text_encoders import OFFLINE_TEXT_ENCODER, TEXT_ENCODER_REFERENCE_KEY, offline_encoder_folder

NAME = "medical-text"
MODALITIES = {"chest x-ray", "brain MRI", "breast ultrasound", "chest CT"}
MAX_SHIPPED_MB = 30  # the UNet (11.5 M parameters) and the shared autoencoder in fp16, and the tokenizer
MAX_PACKAGE_WEIGHTS_MB = 100  # every built-in together: the package must stay publishable on PyPI

pytestmark = [
    pytest.mark.skipif(
        not (builtin_pipeline_path(NAME) / "model_index.json").is_file(), reason=f"the built-in {NAME!r} is not in this install"
    ),
    pytest.mark.usefixtures("single_thread"),  # tiny models run fastest on one thread
]


@pytest.fixture(scope="module")
def pipe():
    pipe = medgen.load_pipeline(NAME)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _sample(pipe, prompts: list[str], steps: int = 3) -> np.ndarray:
    generators = [torch.Generator().manual_seed(0) for _ in prompts]
    return pipe(prompt=prompts, num_inference_steps=steps, generator=generators, output_type="np").images


def test_shipped_folder_names_its_encoder_carries_the_current_source_and_fits_the_package():
    folder = builtin_pipeline_path(NAME)
    assert (folder / "pipeline.py").read_text() == Path(pipeline_text_to_image.__file__).read_text()
    index = json.loads((folder / "model_index.json").read_text())
    assert index["_class_name"] == ["pipeline", "TextToImagePipeline"]
    assert index["text_encoder"] == [None, None] and index[TEXT_ENCODER_REFERENCE_KEY]["name"] == OFFLINE_TEXT_ENCODER
    size_mb = sum(path.stat().st_size for path in folder.rglob("*") if path.is_file()) / 2**20
    assert size_mb <= MAX_SHIPPED_MB
    weights_mb = sum(path.stat().st_size for path in folder.parent.rglob("*.safetensors")) / 2**20
    assert weights_mb <= MAX_PACKAGE_WEIGHTS_MB


def test_loads_by_name_and_follows_the_prompt_at_128_px_deterministically(pipe):
    assert isinstance(pipe, TextToImagePipeline) and pipe.vae is not None and pipe.unet.dtype == torch.float32
    prompts = ["brain MRI, glioma", "chest x-ray, tuberculosis"]
    images = _sample(pipe, prompts)
    assert images.shape == (2, 128, 128, 1) and images.std() > 0.05
    np.testing.assert_array_equal(images, _sample(pipe, prompts))
    # same noise, different prompts: the prompt, not the seed alone, decides the image
    assert np.abs(images[0] - images[1]).mean() > 0.05


def test_example_prompts_offer_every_modality_to_the_app():
    from medgen.app.models import builtin_models, describe_pipeline_folder

    assert NAME in builtin_models()
    info = describe_pipeline_folder(builtin_pipeline_path(NAME), source=NAME)
    assert info.kind == "text" and info.image_size == 128
    assert {modality for modality in MODALITIES if any(p.startswith(modality) for p in info.example_prompts)} == MODALITIES


STOCK_DIFFUSERS_SCRIPT = textwrap.dedent(
    """
    import sys
    sys.modules["medgen"] = None  # stock diffusers and transformers only
    import numpy as np, torch
    from diffusers import DiffusionPipeline
    from transformers import AutoModel
    torch.set_num_threads(1)
    pipe = DiffusionPipeline.from_pretrained(sys.argv[1], trust_remote_code=True, text_encoder=AutoModel.from_pretrained(sys.argv[2]))
    pipe.set_progress_bar_config(disable=True)
    images = pipe(prompt=sys.argv[3], num_inference_steps=3, generator=[torch.Generator().manual_seed(0)], output_type="np").images
    np.save(sys.argv[4], images)
    """
)


def test_stock_diffusers_given_the_encoder_samples_what_medgen_samples(pipe, tmp_path):
    output = tmp_path / "stock.npy"
    prompt = "breast ultrasound, malignant lesion"
    subprocess.run(
        [sys.executable, "-c", STOCK_DIFFUSERS_SCRIPT, str(builtin_pipeline_path(NAME)), str(offline_encoder_folder()),
         prompt, str(output)],
        check=True, timeout=300,
    )
    assert np.abs(np.load(output) - _sample(pipe, [prompt])).max() < 1e-4


def test_stored_evaluation_vouches_for_these_weights_per_prompt_group():
    summary, why_not = stored_evaluation(builtin_pipeline_path(NAME), NAME)
    assert why_not is None, why_not
    assert summary["kind"] == "prompt_groups" and summary["data"]["held_out"] is True
    assert set(summary["per_modality"]) == MODALITIES
    assert summary["memorization"]["alarm"] is False
    # the prompts it was scored on, per group: the canonical one and paraphrases
    assert all(len(prompts) >= 2 for prompts in summary["prompts"].values())
    assert summary["paraphrases"]["n_paraphrases"] > 0
