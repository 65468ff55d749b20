"""The two built-in mask-conditioned pipelines: each loads by name with medgen and with stock diffusers, makes
image + mask pairs from labels alone (its mask generator), follows a given mask, carries the current pipeline
source and an evaluation of its own weights with the mask faithfulness section."""

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
from medgen.pipelines import MaskConditionedPipeline, pipeline_mask_conditioned
from medgen.pipelines.hub import BUILTIN_PIPELINES, builtin_pipeline_path
from medgen.pipelines.publishing import stored_evaluation

PRETRAINED_MASK = {
    "chest-xray-lungs": (["normal", "tuberculosis"], ["lung"]),
    "breast-ultrasound-lesions": (["benign", "malignant", "normal"], ["lesion"]),
}
MAX_SHIPPED_MB = 15


pytestmark = pytest.mark.usefixtures("single_thread")  # tiny models run fastest on one thread


@pytest.mark.parametrize("name", PRETRAINED_MASK)
def test_shipped_mask_folder_carries_the_current_source_its_mask_generator_and_an_evaluation(name):
    assert name in BUILTIN_PIPELINES
    folder = builtin_pipeline_path(name)
    assert (folder / "pipeline.py").read_text() == Path(pipeline_mask_conditioned.__file__).read_text()
    index = json.loads((folder / "model_index.json").read_text())
    assert index["_class_name"] == ["pipeline", "MaskConditionedPipeline"]
    assert (folder / "mask_unet" / "config.json").is_file()  # pairs from nothing
    assert not list(folder.rglob("*.bin")) and not list(folder.rglob("*.pt"))  # safetensors only
    size_mb = sum(path.stat().st_size for path in folder.rglob("*") if path.is_file()) / 2**20
    assert size_mb <= MAX_SHIPPED_MB
    summary, why_not = stored_evaluation(folder, name)
    assert why_not is None, why_not
    assert summary["memorization"]["alarm"] is False
    faithfulness = summary["mask_faithfulness"]
    assert 0.0 < faithfulness["dice_generated"] <= 1.0 and 0.0 < faithfulness["dice_real_test"] <= 1.0


@pytest.mark.parametrize("name", PRETRAINED_MASK)
def test_makes_pairs_from_labels_alone_deterministically(name):
    labels, classes = PRETRAINED_MASK[name]
    pipe = medgen.load_pipeline(name)
    assert isinstance(pipe, MaskConditionedPipeline) and pipe.vae is not None and pipe.mask_unet is not None
    assert pipe.labels == labels and list(pipe.mask_classes) == classes
    pipe.set_progress_bar_config(disable=True)

    def sample():
        generators = [torch.Generator().manual_seed(i) for i in range(len(labels))]
        return pipe(labels=labels, num_inference_steps=3, generator=generators, output_type="np")

    first, second = sample(), sample()
    assert first.images.shape == (len(labels), 128, 128, 1) and first.masks.shape == (len(labels), 128, 128)
    assert np.array_equal(first.images, second.images) and np.array_equal(first.masks, second.masks)
    assert set(np.unique(first.masks)) <= set(range(len(classes) + 1))
    assert first.images.std() > 0.05


def test_lung_images_follow_the_lung_mask_they_are_drawn_from():
    """Lung fields are dark on a chest X-ray: inside the given mask the image is darker than outside it, and
    moving the mask moves the dark region."""
    pipe = medgen.load_pipeline("chest-xray-lungs")
    pipe.set_progress_bar_config(disable=True)
    left = np.zeros((128, 128), dtype=np.uint8)
    left[24:104, 14:58] = 1
    right = np.zeros_like(left)
    right[24:104, 70:114] = 1
    out = pipe(masks=[left, right], labels="normal", generator=[torch.Generator().manual_seed(0)] * 2, output_type="np")
    for image, mask in zip(out.images[..., 0], (left, right)):
        assert image[mask == 1].mean() < image[mask == 0].mean()
    assert np.array_equal(out.masks, np.stack([left, right]))


STOCK_DIFFUSERS_SCRIPT = textwrap.dedent(
    """
    import sys
    sys.modules["medgen"] = None  # stock diffusers only
    import numpy as np, torch
    from diffusers import DiffusionPipeline
    torch.set_num_threads(1)
    pipe = DiffusionPipeline.from_pretrained(sys.argv[1], trust_remote_code=True)
    pipe.set_progress_bar_config(disable=True)
    out = pipe(labels=sys.argv[2], num_inference_steps=3, generator=torch.Generator().manual_seed(0), output_type="np")
    np.save(sys.argv[3], out.images)
    np.save(sys.argv[4], out.masks)
    """
)


def test_stock_diffusers_loads_a_shipped_mask_folder_and_makes_the_pair_medgen_makes(tmp_path):
    folder = builtin_pipeline_path("breast-ultrasound-lesions")
    images, masks = tmp_path / "images.npy", tmp_path / "masks.npy"
    subprocess.run([sys.executable, "-c", STOCK_DIFFUSERS_SCRIPT, str(folder), "malignant", str(images), str(masks)],
                   check=True, timeout=300)
    pipe = medgen.load_pipeline("breast-ultrasound-lesions")
    pipe.set_progress_bar_config(disable=True)
    ours = pipe(labels="malignant", num_inference_steps=3, generator=torch.Generator().manual_seed(0), output_type="np")
    assert np.array_equal(np.load(masks), ours.masks)
    assert np.abs(np.load(images) - ours.images).max() < 1e-4
