"""`model.init_from`: a run that starts from a trained pipeline's denoiser (fine-tuning a built-in or a run of one's own)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from medgen.config import load_config
from medgen.pipelines import load_pipeline
from medgen.train import main
from medgen.training.initial_weights import init_folder
from medgen.training.tasks import build_task

from test_train import TINY, tiny_overrides

LABELS = ["normal", "pneumonia"]


@pytest.fixture(scope="module")
def trained(pneumoniamnist_npz, tmp_path_factory) -> Path:
    output_dir = tmp_path_factory.mktemp("init") / "first"
    main(load_config(TINY, tiny_overrides(pneumoniamnist_npz, output_dir, steps=4)))
    return output_dir


def test_a_run_starts_from_the_pipelines_weights_and_fine_tunes_them(trained, pneumoniamnist_npz, tmp_path):
    saved = load_file(str(trained / "unet" / "diffusion_pytorch_model.safetensors"))
    config = load_config(TINY, tiny_overrides(pneumoniamnist_npz, tmp_path / "second", steps=2) + [f"model.init_from={trained}"])
    unet = build_task(config, LABELS, False).unet
    assert all(torch.equal(unet.state_dict()[name], tensor) for name, tensor in saved.items())
    # a fresh UNet of the same config is another model: the weights above came from the folder
    fresh = build_task(load_config(TINY, tiny_overrides(pneumoniamnist_npz, tmp_path / "x", steps=2)), LABELS, False).unet
    assert not all(torch.equal(fresh.state_dict()[name], tensor) for name, tensor in saved.items())

    main(config)
    tuned = load_file(str(tmp_path / "second" / "unet" / "diffusion_pytorch_model.safetensors"))
    changed = [name for name in saved if not torch.equal(saved[name], tuned[name])]
    assert changed  # trained further, not copied
    assert f"init_from: {trained}" in (tmp_path / "second" / "training_config.yaml").read_text()  # provenance
    summary = json.loads((tmp_path / "second" / "training_summary.json").read_text())
    weights = (trained / "unet" / "diffusion_pytorch_model.safetensors").read_bytes()
    assert summary["init_from"]["unet_sha256"] == hashlib.sha256(weights).hexdigest()
    assert (summary["steps"], summary["init_from"]["steps"], summary["total_steps"]) == (2, 4, 6)
    assert f"| Optimisation steps | 6 in all: 4 of `{trained}`, then 2 fine-tuning from its weights (batch 16 x 1 accumulation)" in (
        tmp_path / "second" / "README.md"
    ).read_text()
    images = load_pipeline(tmp_path / "second")(labels=LABELS, num_inference_steps=2, output_type="np").images
    assert images.shape == (2, 16, 16, 1)


def test_a_resumed_fine_tune_reports_the_weights_it_started_from_not_the_folder_as_it_is_now(
    trained, pneumoniamnist_npz, tmp_path
):
    import shutil

    base = tmp_path / "base"
    shutil.copytree(trained, base)
    started_from = hashlib.sha256((base / "unet" / "diffusion_pytorch_model.safetensors").read_bytes()).hexdigest()
    overrides = [f"model.init_from={base}", "checkpointing_steps=1"]
    main(load_config(TINY, tiny_overrides(pneumoniamnist_npz, tmp_path / "tune", steps=2) + overrides))
    # the starting folder is replaced by the fine-tuned model (a built-in re-shipped), then the run is extended
    shutil.copy(tmp_path / "tune" / "unet" / "diffusion_pytorch_model.safetensors", base / "unet")
    shutil.copy(tmp_path / "tune" / "training_summary.json", base)
    main(load_config(TINY, tiny_overrides(pneumoniamnist_npz, tmp_path / "tune", steps=3) + overrides),
         resume_from_checkpoint="latest")
    summary = json.loads((tmp_path / "tune" / "training_summary.json").read_text())
    assert summary["init_from"]["unet_sha256"] == started_from
    assert (summary["steps"], summary["init_from"]["steps"], summary["total_steps"]) == (3, 4, 7)


def test_other_labels_or_another_unet_are_refused_before_training(trained, pneumoniamnist_npz, tmp_path):
    base = tiny_overrides(pneumoniamnist_npz, tmp_path / "run", steps=2) + [f"model.init_from={trained}"]
    with pytest.raises(ValueError, match=r"trained on labels \['normal', 'pneumonia'\].*\['pneumonia', 'normal'\]"):
        main(load_config(TINY, base + ["data.labels=[pneumonia,normal]"]))
    assert not list((tmp_path / "run").rglob("*.safetensors"))  # nothing trained or saved
    with pytest.raises(ValueError, match=r"init_from .*is not the one this config builds \(.*other shape"):
        build_task(load_config(TINY, base + ["model.block_out_channels=[16,48]"]), LABELS, False)
    with pytest.raises(FileNotFoundError, match=r"init_from 'no/such/run'.*unet"):
        build_task(load_config(TINY, tiny_overrides(pneumoniamnist_npz, tmp_path / "run") + ["model.init_from=no/such/run"]), LABELS, False)


def test_a_built_in_name_names_its_folder():
    folder = init_folder("chest-xray")
    assert (folder / "unet" / "diffusion_pytorch_model.safetensors").is_file() and folder.name == "chest-xray"


def test_a_mask_generator_run_starts_from_a_mask_pipelines_generator_and_an_image_run_from_its_image_unet(tmp_path):
    from mask_helpers import saved_mask_pipeline, tiny_conditioned_unet
    from medgen.training.initial_weights import init_record, load_initial_weights

    folder = saved_mask_pipeline(tmp_path / "lesions")  # unet/ (image model) and mask_unet/ (mask generator)
    generator = tiny_conditioned_unet(1, 1, 2, sample_size=8, seed=5)  # the generator's shape, other weights
    load_initial_weights(generator, str(folder), ["normal", "tuberculosis"], kind="mask_generator")
    expected = load_pipeline(folder).mask_unet.state_dict()
    assert all(torch.equal(tensor, expected[name]) for name, tensor in generator.state_dict().items())
    assert init_record(str(folder), "mask_generator")["component"] == "mask_unet"
    with pytest.raises(ValueError, match=r"its UNet \(.*unet/config.json\) is not the one this config builds"):
        load_initial_weights(tiny_conditioned_unet(1, 1, 2, sample_size=8), str(folder), kind="image")
