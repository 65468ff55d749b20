"""The pretrained pipelines shipped inside medgen: each loads by name with medgen and with stock diffusers,
samples every label at 128 px deterministically, is a latent pipeline whose autoencoder round-trips real
images of its modality, carries the current pipeline source and an evaluation of its own weights."""

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
from medgen.pipelines import LabelConditionedPipeline, pipeline_label_conditioned
from medgen.pipelines.hub import BUILTIN_PIPELINES, builtin_pipeline_path
from medgen.pipelines.publishing import stored_evaluation

SHARED_DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data"
PRETRAINED = {
    "chest-xray": (["normal", "pneumonia"], "kermany-cxr-224"),
    "brain-mri": (["glioma", "meningioma", "no_tumor", "pituitary"], "brain-tumor-mri"),
    "breast-ultrasound": (["benign", "malignant", "normal"], "busi-ultrasound"),
    "lung-ct": (["benign", "malignant", "normal"], "lung-ct-iqothnccd"),
}
MAX_SHIPPED_MB = 15


pytestmark = pytest.mark.usefixtures("single_thread")  # tiny models run fastest on one thread


def test_every_pretrained_model_is_registered_and_default_is_chest_xray():
    assert set(PRETRAINED) <= set(BUILTIN_PIPELINES)
    assert builtin_pipeline_path("default") == builtin_pipeline_path("chest-xray")


@pytest.mark.parametrize("name", PRETRAINED)
def test_shipped_folder_carries_the_current_source_and_an_evaluation_of_its_weights(name):
    folder = builtin_pipeline_path(name)
    # a stale copy would make stock diffusers (trust_remote_code=True) run older code than medgen does
    assert (folder / "pipeline.py").read_text() == Path(pipeline_label_conditioned.__file__).read_text()
    assert json.loads((folder / "model_index.json").read_text())["_class_name"] == ["pipeline", "LabelConditionedPipeline"]
    size_mb = sum(path.stat().st_size for path in folder.rglob("*") if path.is_file()) / 2**20
    assert size_mb <= MAX_SHIPPED_MB
    summary, why_not = stored_evaluation(folder, name)
    assert why_not is None, why_not
    assert summary["memorization"]["alarm"] is False


@pytest.mark.parametrize("name", PRETRAINED)
def test_loads_by_name_and_samples_every_label_at_128_px_deterministically(name):
    labels, _ = PRETRAINED[name]
    pipe = medgen.load_pipeline(name)
    assert isinstance(pipe, LabelConditionedPipeline) and pipe.vae is not None  # a latent pipeline
    assert pipe.labels == labels and pipe.unet.dtype == torch.float32
    pipe.set_progress_bar_config(disable=True)

    def sample():
        generators = [torch.Generator().manual_seed(i) for i in range(len(labels))]
        return pipe(labels=labels, num_inference_steps=3, generator=generators, output_type="np").images

    images = sample()
    assert images.shape == (len(labels), 128, 128, 1)
    assert np.array_equal(images, sample())
    assert images.std() > 0.05  # structured images, not a flat field


STOCK_DIFFUSERS_SCRIPT = textwrap.dedent(
    """
    import sys
    sys.modules["medgen"] = None  # stock diffusers only
    import numpy as np, torch
    from diffusers import DiffusionPipeline
    torch.set_num_threads(1)
    pipe = DiffusionPipeline.from_pretrained(sys.argv[1], trust_remote_code=True)
    pipe.set_progress_bar_config(disable=True)
    images = pipe(labels=sys.argv[2], num_inference_steps=3, generator=torch.Generator().manual_seed(0), output_type="np").images
    np.save(sys.argv[3], images)
    """
)


def test_stock_diffusers_loads_a_shipped_folder_and_samples_what_medgen_samples(tmp_path):
    folder = builtin_pipeline_path("lung-ct")
    output = tmp_path / "stock.npy"
    subprocess.run([sys.executable, "-c", STOCK_DIFFUSERS_SCRIPT, str(folder), "malignant", str(output)], check=True, timeout=300)
    pipe = medgen.load_pipeline("lung-ct")
    pipe.set_progress_bar_config(disable=True)
    ours = pipe(labels="malignant", num_inference_steps=3, generator=torch.Generator().manual_seed(0), output_type="np").images
    assert np.abs(np.load(output) - ours).max() < 1e-4


@pytest.mark.parametrize("name", PRETRAINED)
def test_autoencoder_round_trips_held_out_real_images_of_each_modality(name):
    from medgen.config import load_config
    from medgen.data import build_dataset
    from medgen.training.vae import reconstruction_metrics

    _, data_folder = PRETRAINED[name]
    if not (SHARED_DATA / data_folder).is_dir():
        pytest.skip(f"../shared/data/{data_folder} is absent")
    folder = builtin_pipeline_path(name)
    config = load_config(folder / "training_config.yaml", [f"data.path={SHARED_DATA / data_folder}", "data.split=test",
                                                           "data.max_samples=16", "model.pretrained_vae=null"])
    data = build_dataset(config.data)
    pixels = torch.as_tensor(np.asarray(data.dataset[:]["pixel_values"]))
    metrics = reconstruction_metrics(medgen.load_pipeline(name).vae, [pixels])
    assert metrics["psnr"] > 25.0 and metrics["ssim"] > 0.8  # measured on the whole test splits: 27.6-35.3 dB, 0.89-0.96
