"""Latent training at real resolution: held-out splits for sets without one, class balance, one autoencoder
over several sets (trained on crops, reported per set), and latents encoded once and reused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from medgen.config import load_config
from medgen.data import DataConfig, build_dataset
from medgen.training.balance import balanced_indices

REPO_ROOT = Path(__file__).resolve().parent.parent
TINY = REPO_ROOT / "train_configs" / "tiny.yaml"


def numbered_folder(root: Path, counts: dict[str, int], side: int = 24, seed: int = 0) -> Path:
    """A folder of numbered PNGs per class (`benign_1.png` ...) with a metadata.csv and no split column."""
    rng = np.random.default_rng(seed)
    rows = ["file_name,label"]
    for label, count in counts.items():
        (root / label).mkdir(parents=True, exist_ok=True)
        for number in range(1, count + 1):
            pixels = (rng.random((side, side)) * 255).astype(np.uint8)
            Image.fromarray(pixels, mode="L").save(root / label / f"{label}_{number}.png")
            rows.append(f"{label}/{label}_{number}.png,{label}")
    (root / "metadata.csv").write_text("\n".join(rows) + "\n")
    return root


def test_holdout_last_keeps_the_highest_numbered_files_of_each_class_out_of_training(tmp_path):
    from medgen.data.tables import derive_split, read_table

    root = numbered_folder(tmp_path / "ct", {"benign": 10, "malignant": 20})
    frame = derive_split(read_table(root / "metadata.csv"), "file_name", "label", 0.2, "last", seed=0)
    test = sorted(frame[frame["split"] == "test"]["file_name"])
    # natural order: benign_9 and benign_10 (not benign_9 and benign_8 as text order would give)
    assert test == sorted([
        "benign/benign_9.png", "benign/benign_10.png",
        "malignant/malignant_17.png", "malignant/malignant_18.png", "malignant/malignant_19.png", "malignant/malignant_20.png",
    ])
    train = build_dataset(DataConfig(source="csv", path=str(root), findings_column="label", split="train",
                                     resolution=16, holdout_fraction=0.2, cache_dir=str(tmp_path / "cache")))
    held_out = build_dataset(DataConfig(source="csv", path=str(root), findings_column="label", split="test",
                                        resolution=16, holdout_fraction=0.2, cache_dir=str(tmp_path / "cache")))
    assert train.label_counts() == {"benign": 8, "malignant": 16}
    assert held_out.label_counts() == {"benign": 2, "malignant": 4}


def test_holdout_random_is_seeded_stratified_and_disjoint(tmp_path):
    from medgen.data.tables import derive_split, read_table

    frame = read_table(numbered_folder(tmp_path / "us", {"benign": 15, "normal": 5}) / "metadata.csv")
    first = derive_split(frame, "file_name", "label", 0.2, "random", seed=3)
    again = derive_split(frame, "file_name", "label", 0.2, "random", seed=3)
    other = derive_split(frame, "file_name", "label", 0.2, "random", seed=4)
    assert first["split"].tolist() == again["split"].tolist()
    assert first["split"].tolist() != other["split"].tolist()
    test = first[first["split"] == "test"]
    assert test["label"].value_counts().to_dict() == {"benign": 3, "normal": 1}


def test_holdout_is_refused_where_the_table_has_its_own_split(tmp_path):
    root = numbered_folder(tmp_path / "x", {"a": 4})
    (root / "metadata.csv").write_text((root / "metadata.csv").read_text().replace("file_name,label", "file_name,label,split", 1).replace(",a\n", ",a,train\n"))
    with pytest.raises(ValueError, match="already has a split column"):
        build_dataset(DataConfig(source="csv", path=str(root), findings_column="label", resolution=16, holdout_fraction=0.2))
    with pytest.raises(ValueError, match="holdout_fraction"):
        DataConfig(source="csv", path=str(root), holdout_fraction=1.5)
    with pytest.raises(ValueError, match="holdout_order"):
        DataConfig(source="csv", path=str(root), holdout_order="first")


def test_class_balance_oversamples_rare_classes_towards_balance():
    labels = np.eye(2)[[0] * 10 + [1] * 40]
    natural = balanced_indices(labels, 0.0, seed=0)
    balanced = balanced_indices(labels, 1.0, seed=0)
    halfway = balanced_indices(labels, 0.5, seed=0)
    count = lambda indices: np.bincount(labels[indices].argmax(axis=1))  # noqa: E731
    assert count(natural).tolist() == [10, 40]
    assert count(balanced).tolist() == [40, 40]
    assert count(halfway).tolist() == [20, 40]  # sqrt(40 / 10) = 2 repeats
    assert balanced_indices(labels, 0.7, seed=1) == balanced_indices(labels, 0.7, seed=1)
    with pytest.raises(ValueError, match="single-label"):
        balanced_indices(np.array([[1, 1], [0, 1]]), 1.0, seed=0)


def test_class_balance_and_extra_data_are_validated(tmp_path):
    with pytest.raises(ValueError, match="class_balance"):
        load_config(TINY, ["class_balance=2"])
    with pytest.raises(ValueError, match="model.kind vae or text"):
        load_config(TINY, [f"extra_data=[{{source: folder, path: {tmp_path}, resolution: 16}}]"])
    with pytest.raises(ValueError, match="mid_block_attention"):
        load_config(TINY, ["model.kind=vae", "vae.crop_size=8"])


def test_one_autoencoder_trains_on_crops_of_two_sets_and_reports_each(tmp_path):
    from accelerate import Accelerator

    from medgen.training.vae import METRICS_FILE, train_autoencoder

    first = numbered_folder(tmp_path / "xray", {"normal": 12, "pneumonia": 12}, side=32, seed=1)
    second = numbered_folder(tmp_path / "ct", {"benign": 12, "malignant": 12}, side=32, seed=2)
    data_section = "{source: csv, path: %s, findings_column: label, resolution: 16, cache_dir: %s}"
    config = load_config(TINY, [
        f"data={data_section % (first, tmp_path / 'cache')}",
        f"extra_data=[{data_section % (second, tmp_path / 'cache')}]",
        "model.kind=vae", "vae.block_out_channels=[8, 16]", "vae.mid_block_attention=false", "vae.crop_size=8",
        "vae.max_train_steps=4", "vae.train_batch_size=8", "vae.holdout_fraction=0.25", "vae.lr_scheduler=cosine",
        f"output_dir={tmp_path / 'vae'}", "report_to=none",
    ])
    folder = train_autoencoder(config, build_dataset(config.data), Accelerator(cpu=True), [build_dataset(config.extra_data[0])])
    metrics = json.loads((folder / METRICS_FILE).read_text())
    assert metrics["train_images"] + metrics["num_images"] == 48  # both sets
    per_source = metrics["per_source"]
    assert set(per_source) == {"xray", "ct"}
    assert sum(values["num_images"] for values in per_source.values()) == metrics["num_images"]
    from diffusers import AutoencoderKL

    vae = AutoencoderKL.from_pretrained(folder)
    with torch.no_grad():  # trained on 8 px crops, it still encodes and decodes whole 16 px images
        assert vae.decode(vae.encode(torch.zeros(1, 1, 16, 16)).latent_dist.mode()).sample.shape == (1, 1, 16, 16)


def test_latents_are_encoded_once_and_reused_by_the_next_run(pneumoniamnist_npz, tmp_path, monkeypatch):
    from helpers import tiny_vae

    from medgen.train import main
    from medgen.training import latents

    vae_folder = tmp_path / "vae"
    tiny_vae().save_pretrained(vae_folder)
    calls = []
    encode = latents.encode_posteriors
    monkeypatch.setattr(latents, "encode_posteriors", lambda *a, **k: calls.append(1) or encode(*a, **k))

    def run(name: str):
        return main(load_config(TINY, [
            f"data.path={pneumoniamnist_npz}", "data.max_samples=48", "data.resolution=16",
            f"data.cache_dir={tmp_path / 'cache'}", f"model.pretrained_vae={vae_folder}", "model.block_out_channels=[8, 16]",
            "model.norm_num_groups=8", f"output_dir={tmp_path / name}", "max_train_steps=2", "train_batch_size=16",
            "checkpointing_steps=2", "report_to=none", "class_balance=1",
        ]))

    run("first")
    cached = list((tmp_path / "cache" / "medgen-latents").glob("*.safetensors"))
    assert len(calls) == 1 and len(cached) == 1
    run("second")
    assert len(calls) == 1  # read from the cache, not encoded again
    tiny_vae(seed=1).save_pretrained(vae_folder)  # another autoencoder: other latents
    run("third")
    assert len(calls) == 2 and len(list((tmp_path / "cache" / "medgen-latents").glob("*.safetensors"))) == 2


def test_hflip_mirrors_each_drawn_row_with_its_mask_and_its_mirror_images_latent():
    from medgen.training.latents import LATENT_MEAN, LATENT_MEAN_MIRRORED, LATENT_STD, LATENT_STD_MIRRORED
    from medgen.training.tasks import build_task

    config = load_config(TINY, ["data.hflip=true", "model.block_out_channels=[8, 16]", "model.norm_num_groups=8"])
    task = build_task(config, ["a", "b"], multi_label=False)
    rows = 64
    mean, std = torch.randn(rows, 4, 4, 4), torch.rand(rows, 4, 4, 4)
    mirrored_mean, mirrored_std = torch.randn(rows, 4, 4, 4), torch.rand(rows, 4, 4, 4)
    mask = torch.arange(rows * 16, dtype=torch.uint8).reshape(rows, 1, 4, 4) % 3
    batch = {LATENT_MEAN: mean, LATENT_STD: std, LATENT_MEAN_MIRRORED: mirrored_mean, LATENT_STD_MIRRORED: mirrored_std,
             "mask": mask, "labels": torch.zeros(rows, 2)}
    out = task.augment(batch, torch.Generator().manual_seed(0))
    took_mirror = torch.tensor([torch.equal(out[LATENT_MEAN][row], mirrored_mean[row]) for row in range(rows)])
    assert 10 < int(took_mirror.sum()) < rows - 10  # about half of the rows, drawn per row
    for row in range(rows):  # a row takes its mirror image's mean and std together, and its mask mirrored with it
        source_mean, source_std = (mirrored_mean, mirrored_std) if took_mirror[row] else (mean, std)
        assert torch.equal(out[LATENT_MEAN][row], source_mean[row]) and torch.equal(out[LATENT_STD][row], source_std[row])
        assert torch.equal(out["mask"][row], mask[row].flip(-1) if took_mirror[row] else mask[row])
    assert LATENT_MEAN_MIRRORED not in out and torch.equal(batch[LATENT_MEAN], mean)  # the loader's batch is left as it was
    again = task.augment(batch, torch.Generator().manual_seed(0))
    assert torch.equal(again[LATENT_MEAN], out[LATENT_MEAN])  # drawn from the step's generator: a resumed run replays it

    pixels = torch.randn(rows, 1, 8, 8)
    flipped = task.augment({"pixel_values": pixels}, torch.Generator().manual_seed(0))["pixel_values"]
    for row in range(rows):
        assert torch.equal(flipped[row], pixels[row].flip(-1) if took_mirror[row] else pixels[row])
    with pytest.raises(ValueError, match="mirrored images' posteriors"):
        task.augment({LATENT_MEAN: mean, LATENT_STD: std}, torch.Generator().manual_seed(0))

    plain = build_task(load_config(TINY, ["model.block_out_channels=[8, 16]", "model.norm_num_groups=8"]), ["a", "b"], False)
    assert plain.augment(batch, torch.Generator().manual_seed(0)) is batch  # hflip off (the default): untouched


def test_hflip_latent_training_encodes_the_mirrored_images_once_beside_the_plain_ones(pneumoniamnist_npz, tmp_path):
    from helpers import tiny_vae
    from safetensors.torch import load_file

    from medgen.train import main
    from medgen.training.latents import LATENT_MEAN, latent_cache_path

    vae_folder = tmp_path / "vae"
    vae = tiny_vae()
    vae.save_pretrained(vae_folder)
    overrides = [
        f"data.path={pneumoniamnist_npz}", "data.max_samples=16", "data.resolution=16", "data.hflip=true",
        f"data.cache_dir={tmp_path / 'cache'}", f"model.pretrained_vae={vae_folder}", "model.block_out_channels=[8, 16]",
        "model.norm_num_groups=8", f"output_dir={tmp_path / 'run'}", "max_train_steps=2", "train_batch_size=8",
        "checkpointing_steps=2", "report_to=none",
    ]
    main(load_config(TINY, overrides))
    assert (tmp_path / "run" / "model_index.json").is_file()
    data = build_dataset(load_config(TINY, overrides).data)
    plain = load_file(latent_cache_path(data.fingerprint, vae_folder, tmp_path / "cache"))
    mirrored = load_file(latent_cache_path(data.fingerprint, vae_folder, tmp_path / "cache", mirrored=True))
    pixels = torch.as_tensor(data.dataset[:16]["pixel_values"])
    with torch.no_grad():
        expected = vae.encode(pixels.flip(-1)).latent_dist.mean
        assert torch.allclose(mirrored[LATENT_MEAN], expected, atol=1e-5)  # the mirror image encoded, not the latent mirrored
        assert not torch.allclose(mirrored[LATENT_MEAN], plain[LATENT_MEAN].flip(-1), atol=1e-3)
