"""`medgen evaluate` guard rails: it writes into a pipeline folder only when asked (never into a built-in),
refuses a split the data does not have and reference images the pipeline was trained on, reads labels and
preprocessing as the model saw them, and checks labels before sampling."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from helpers import tiny_label_pipeline
from PIL import Image

import medgen.evaluation.api as api
from medgen.cli import main

LABELS = ["normal", "pneumonia"]


@pytest.fixture(autouse=True)
def _no_radiomics(monkeypatch):
    # FRD extracts radiomic features image by image; it has its own tests (test_frd.py)
    monkeypatch.setattr("medgen.evaluation.frd.frd_report", lambda *args, **kwargs: {"skipped": "not measured here"})


def image_folder(root: Path, split: bool = False, side: tuple[int, int] = (16, 16), blank_label: bool = False) -> Path:
    """PNGs plus metadata.csv (file_name, label[, split]): 12 images per label, seeded."""
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True, exist_ok=True)
    header = "file_name,label" + (",split" if split else "")
    rows = [header]
    for index in range(24):
        label = LABELS[index % 2]
        pixels = np.clip(rng.normal(60 if label == "normal" else 160, 40, side), 0, 255).astype(np.uint8)
        name = f"images/{index:02d}.png"
        Image.fromarray(pixels).save(root / name)
        cell = "" if blank_label and index == 0 else label
        rows.append(f"{name},{cell}" + (f",{'test' if index % 3 == 0 else 'train'}" if split else ""))
    (root / "metadata.csv").write_text("\n".join(rows) + "\n")
    return root


def pipeline_folder(root: Path, data: Path | None = None, labels=tuple(LABELS), latent: bool = False, **data_fields) -> Path:
    """A tiny 16 px label pipeline saved to `root`; with `data`, a training_config.yaml recording it as training data."""
    folder = Path(tiny_label_pipeline(labels=labels, latent=latent).save_pretrained(root))
    if data is not None:
        section = {"source": "csv", "path": str(data), "findings_column": "label", "resolution": 16, **data_fields}
        (folder / "training_config.yaml").write_text(yaml.safe_dump({"data": section}))
    return folder


def argv(pipeline: Path | str, data: Path, output: Path, *extra: str, label_flag: bool = True) -> list[str]:
    """The command line of a quick evaluation; `--label-column label` unless `label_flag` is False, so that each
    test checks its own behaviour, not the label column being found."""
    return [
        "evaluate", "--pipeline", str(pipeline), "--data", str(data), "--output", str(output), "--num-samples", "8",
        "--num-inference-steps", "2", "--feature-extractor", "pixel", "--no-classifier", "--no-cache", "--device", "cpu",
        "--no-progress", "--no-feature-memorization", *(["--label-column", "label"] if label_flag else []), *extra,
    ]


@pytest.fixture
def sampled(monkeypatch) -> list[int]:
    """Records every call of `sample_pipeline` (still sampling), so a test can tell an error came before it."""
    calls: list[int] = []
    original = api.sample_pipeline

    def recording(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(api, "sample_pipeline", recording)
    return calls


def _files(folder: Path) -> dict[str, bytes]:
    return {path.relative_to(folder).as_posix(): path.read_bytes() for path in folder.rglob("*") if path.is_file()}


# ----------------------------------------------------------------------------------------------------
# 1. writes only where asked; never a built-in; no split that is not there; no training images as reference
# ----------------------------------------------------------------------------------------------------


def test_evaluate_writes_into_a_pipeline_folder_only_when_asked_and_says_where_before_sampling(tmp_path, capsys):
    data = image_folder(tmp_path / "data", split=True)
    folder = pipeline_folder(tmp_path / "pipe")
    before = _files(folder)
    assert main(argv(folder, data, tmp_path / "out")) == 0
    assert _files(folder) == before  # nothing stored by default
    capsys.readouterr()

    assert main(argv(folder, data, tmp_path / "out2", "--store-in-pipeline")) == 0
    out = capsys.readouterr().out
    announced = out.index(f"The evaluation will be stored in {folder}")
    assert announced < out.index("Real data, split 'test'") < out.index("evaluation stored:")
    assert (folder / "evaluation.json").is_file()


def test_a_builtin_is_written_only_by_the_shipping_flag(tmp_path, monkeypatch, capsys, sampled):
    data = image_folder(tmp_path / "data", split=True)
    monkeypatch.setattr("medgen.pipelines.catalog.PRETRAINED_DIR", tmp_path / "pretrained")
    folder = pipeline_folder(tmp_path / "pretrained" / "tiny")
    before = _files(folder)
    assert main(argv(folder, data, tmp_path / "out")) == 0
    assert _files(folder) == before
    capsys.readouterr()

    sampled.clear()
    assert main(argv(folder, data, tmp_path / "out", "--store-in-pipeline")) == 2
    error = capsys.readouterr().err
    assert "built-in pipeline" in error and "--store-in-builtin" in error and sampled == []
    assert _files(folder) == before

    assert main(argv(folder, data, tmp_path / "out", "--store-in-builtin")) == 0
    assert json.loads((folder / "evaluation.json").read_text())["data"]["held_out"] is None  # nothing recorded to check


def test_a_builtin_name_refuses_store_in_pipeline_before_loading_anything(tmp_path, capsys, sampled):
    data = image_folder(tmp_path / "data", split=True)
    assert main(argv("pneumoniamnist-32", data, tmp_path / "out", "--store-in-pipeline")) == 2
    assert "built-in pipeline" in capsys.readouterr().err and sampled == []


def test_a_split_the_data_does_not_have_is_an_error_naming_the_columns_and_the_ways_on(tmp_path, capsys, sampled):
    data = image_folder(tmp_path / "data")  # no split column
    folder = pipeline_folder(tmp_path / "pipe")
    assert main(argv(folder, data, tmp_path / "out", "--split", "test")) == 2
    error = capsys.readouterr().err
    assert "no split column" in error and "['file_name', 'label']" in error
    for way in ("--split-column", "holdout_fraction", "--split all"):
        assert way in error
    assert sampled == []

    assert main(argv(folder, data, tmp_path / "out", "--split", "all")) == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["n_real"] == 24 and report["split"] == "all" and report["train_split"] is None

    # a pipeline whose training config held out images is pointed at it
    held_out = pipeline_folder(tmp_path / "held_out", data=data, holdout_fraction=0.25, holdout_order="random")
    capsys.readouterr()
    assert main(argv(held_out, data, tmp_path / "out", "--split", "test")) == 2
    assert f"--config {held_out / 'training_config.yaml'} --split test" in capsys.readouterr().err
    assert main([
        "evaluate", "--pipeline", str(held_out), "--config", str(held_out / "training_config.yaml"), "--split", "test",
        "--output", str(tmp_path / "held_out_report"), "--num-samples", "8", "--num-inference-steps", "2",
        "--feature-extractor", "pixel", "--no-classifier", "--no-cache", "--device", "cpu", "--no-progress",
        "--no-feature-memorization",
    ]) == 0
    overlap = json.loads((tmp_path / "held_out_report" / "report.json").read_text())["training_overlap"]
    assert overlap["held_out"] is True and overlap["n_reference"] == 6 and overlap["n_training"] == 18


def test_reference_images_the_pipeline_was_trained_on_are_refused_or_marked_and_the_gate_refuses_them(tmp_path, capsys, sampled):
    from medgen.pipelines.publishing import PublishingRefused, check_before_publishing

    data = image_folder(tmp_path / "data")
    folder = pipeline_folder(tmp_path / "pipe", data=data)  # trained on every row of the folder
    assert main(argv(folder, data, tmp_path / "out", "--split", "all")) == 2
    error = capsys.readouterr().err
    assert "24 of the 24 reference images" in error and "--allow-training-overlap" in error and sampled == []

    code = main(argv(folder, data, tmp_path / "out", "--split", "all", "--allow-training-overlap", "--store-in-pipeline"))
    assert code == 0
    out = capsys.readouterr().out
    assert "NOT HELD OUT: 24 of 24" in out
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["training_overlap"]["held_out"] is False and report["training_overlap"]["n_overlap"] == 24
    assert "NOT HELD OUT" in (tmp_path / "out" / "report.html").read_text()
    assert json.loads((folder / "evaluation.json").read_text())["data"]["held_out"] is False
    with pytest.raises(PublishingRefused, match="not held out"):
        check_before_publishing(folder)


def test_a_held_out_split_passes_the_training_check(tmp_path, capsys):
    data = image_folder(tmp_path / "data", split=True)
    folder = pipeline_folder(tmp_path / "pipe", data=data, split="train")
    assert main(argv(folder, data, tmp_path / "out", "--split", "test")) == 0
    assert "none is a training image" in capsys.readouterr().out
    overlap = json.loads((tmp_path / "out" / "report.json").read_text())["training_overlap"]
    assert overlap["held_out"] is True and overlap["n_overlap"] == 0
    assert overlap["n_training"] == 16 and overlap["n_reference"] == 8


def test_test_images_duplicated_in_the_training_split_are_left_out_on_request_and_the_rest_scored(tmp_path, capsys, sampled):
    data = image_folder(tmp_path / "data", split=True)  # rows 0, 3, ..., 21 are the test split
    for test_row, training_row in ((0, 2), (3, 5)):  # the same image in both splits, as in some public sets
        shutil.copyfile(data / f"images/{training_row:02d}.png", data / f"images/{test_row:02d}.png")
    folder = pipeline_folder(tmp_path / "pipe", data=data, split="train")
    assert main(argv(folder, data, tmp_path / "out", "--split", "test")) == 2
    error = capsys.readouterr().err
    assert "2 of the 8 reference images" in error and "--exclude-training-overlap" in error and sampled == []

    both = argv(folder, data, tmp_path / "out", "--split", "test", "--exclude-training-overlap", "--allow-training-overlap")
    with pytest.raises(SystemExit):
        main(both)
    assert "not allowed with argument" in capsys.readouterr().err and sampled == []

    assert main(argv(folder, data, tmp_path / "out", "--split", "test", "--exclude-training-overlap", "--store-in-pipeline")) == 0
    assert "2 of 8 are training images and were left out" in capsys.readouterr().out
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    overlap = report["training_overlap"]
    assert overlap["held_out"] is True and overlap["n_overlap"] == 2 and overlap["n_excluded"] == 2
    assert report["n_real"] == 6
    assert "were left out" in (tmp_path / "out" / "report.html").read_text()
    stored = json.loads((folder / "evaluation.json").read_text())["data"]
    assert stored["held_out"] is True and stored["n_excluded_as_training"] == 2 and stored["n_real"] == 6
    card = (folder / "README.md").read_text()  # the model card says it too
    assert "| Held out | yes: reference images checked against the training images (content hashes); 2 that are training images were left out |" in card


# ----------------------------------------------------------------------------------------------------
# 2. labels found and checked before sampling; preprocessing as recorded; training's data options accepted
# ----------------------------------------------------------------------------------------------------


def test_a_label_column_is_found_without_the_flag(tmp_path, capsys):
    data = image_folder(tmp_path / "data", split=True)
    assert main(argv(pipeline_folder(tmp_path / "pipe"), data, tmp_path / "out", label_flag=False)) == 0
    assert "Labels read from column 'label'" in capsys.readouterr().out
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["label_names"] == LABELS and set(report["per_label"]) == set(LABELS)


def test_pipeline_and_data_labels_are_compared_before_sampling(tmp_path, capsys, sampled):
    data = image_folder(tmp_path / "data", split=True)
    folder = pipeline_folder(tmp_path / "pipe", labels=("benign", "malignant"))
    assert main(argv(folder, data, tmp_path / "out", label_flag=False)) == 2
    error = capsys.readouterr().err
    assert "['benign', 'malignant']" in error and "['normal', 'pneumonia']" in error and "--label-column" in error
    assert sampled == []


def test_the_recorded_preprocessing_reads_the_real_images_and_an_override_is_said(tmp_path, capsys):
    data = image_folder(tmp_path / "data", split=True, side=(16, 32))  # 2:1 images: pad and crop differ
    folder = pipeline_folder(tmp_path / "pipe", data=data, split="train", resize_mode="pad")
    assert main(argv(folder, data, tmp_path / "padded")) == 0
    out = capsys.readouterr().out
    assert "recorded preprocessing (resize_mode=pad" in out
    padded = json.loads((tmp_path / "padded" / "report.json").read_text())
    assert padded["preprocessing"]["recorded"]["resize_mode"] == "pad" and padded["preprocessing"]["overridden"] == {}

    assert main([*argv(folder, data, tmp_path / "cropped"), "data.resize_mode=crop"]) == 0
    assert "data.resize_mode=crop overrides the pipeline's recorded resize_mode=pad" in capsys.readouterr().out
    cropped = json.loads((tmp_path / "cropped" / "report.json").read_text())
    assert cropped["preprocessing"]["overridden"] == {"resize_mode": "crop"}
    # padding adds black bands the crop does not have
    assert padded["statistics"]["mean"]["real_mean"] < cropped["statistics"]["mean"]["real_mean"]


def test_the_empty_findings_hint_works_as_printed(tmp_path, capsys):
    data = image_folder(tmp_path / "data", split=True, blank_label=True)
    folder = pipeline_folder(tmp_path / "pipe")
    assert main(argv(folder, data, tmp_path / "out")) == 2
    error = capsys.readouterr().err
    assert "data.empty_findings=skip" in error
    assert main([*argv(folder, data, tmp_path / "out"), "data.empty_findings=skip"]) == 0  # as printed
    assert json.loads((tmp_path / "out" / "report.json").read_text())["n_real"] == 7  # row 0 (a test row) left out
    assert main([*argv(folder, data, tmp_path / "out"), "data.empty_finding=skip"]) == 2
    assert "did you mean data.empty_findings?" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------------
# 3. floors and the autoencoder ceiling beside the model's figures
# ----------------------------------------------------------------------------------------------------


def test_floors_and_the_autoencoder_ceiling_stand_beside_every_fidelity_figure(tmp_path, capsys):
    data = image_folder(tmp_path / "data", split=True)
    folder = pipeline_folder(tmp_path / "pipe", latent=True)
    assert main(argv(folder, data, tmp_path / "out")) == 0
    out = capsys.readouterr().out
    assert "floor: training" in out and "ceiling: autoencoder" in out
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    baselines = report["baselines"]
    for key in ("real_halves", "training", "autoencoder"):
        assert baselines[key]["fid"] >= 0 and "mean" in baselines[key]["kid"], key
    assert baselines["training"]["n"] == 8 and baselines["autoencoder"]["n"] == 8  # the generated set's N
    assert baselines["real_halves"]["n_per_set"] == 4  # capped at half of the 8 reference images
    html = (tmp_path / "out" / "report.html").read_text()
    assert "floor: real training images" in html and "ceiling: autoencoder" in html and "autoencoder ceiling" in html

    # a pixel-space pipeline has no autoencoder: said, not a number
    assert main(argv(pipeline_folder(tmp_path / "pixel"), data, tmp_path / "pixel_out")) == 0
    entry = json.loads((tmp_path / "pixel_out" / "report.json").read_text())["baselines"]["autoencoder"]
    assert "not a latent pipeline" in entry["skipped"]


def test_the_training_floor_sits_near_zero_when_training_and_reference_share_a_distribution():
    from medgen.evaluation import ImageSet, evaluate_image_sets

    rng = np.random.default_rng(0)

    def images(count: int, brightness: float) -> np.ndarray:
        return np.clip(rng.normal(brightness, 0.1, (count, 1, 16, 16)), 0, 1).astype(np.float32)

    report = evaluate_image_sets(
        ImageSet(images(64, 0.8)), ImageSet(images(64, 0.3)), ImageSet(images(200, 0.3)),
        feature_extractor="pixel", use_cache=False, classifier=False, memorization_features=False,
    )
    training = report["baselines"]["training"]
    assert training["n"] == 64
    assert training["fid"] < report["fid"] / 10 and training["precision"] > report["precision"]
    assert report["baselines"]["real_halves"]["fid"] < report["fid"] / 10
    assert "skipped" in report["baselines"]["autoencoder"]
