"""A `medgen generate` folder is a `datasets` imagefolder dataset (metadata.csv), and `--push-to-hub` uploads it."""

from __future__ import annotations

import csv
import errno
import json

import numpy as np
import pytest
from PIL import Image

import helpers  # tests/helpers.py: tiny seeded pipelines (pytest puts tests/ on sys.path)
from medgen import cli


@pytest.fixture(autouse=True)
def _generate_command_only(monkeypatch):
    # The parser is built from every command module; this file tests `generate` alone.
    monkeypatch.setattr(cli, "COMMAND_MODULES", ("medgen.commands.generate",))


@pytest.fixture(scope="module")
def label_pipeline_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pipeline")
    helpers.tiny_label_pipeline(labels=("normal", "pneumonia")).save_pretrained(folder)
    return folder


def _generate(pipeline, output, *extra):
    argv = ["generate", "--pipeline", str(pipeline), "--output", str(output), "--num-inference-steps", "2"]
    return cli.main([*argv, *map(str, extra)])


def _load_imagefolder(folder, cache_dir):
    import datasets

    return datasets.load_dataset("imagefolder", data_dir=str(folder), cache_dir=str(cache_dir))["train"]


def _error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("medgen generate: error: ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_output_folder_loads_as_an_imagefolder_dataset_with_labels(label_pipeline_dir, tmp_path):
    out = tmp_path / "out"
    # DICOM and NPY files beside the PNGs: the imagefolder loader must skip them.
    assert _generate(label_pipeline_dir, out, "--labels", "Pneumonia", "--count", 3, "--seed", 5, "--format", "png,dcm,npy") == 0
    rows = list(csv.DictReader((out / "metadata.csv").open()))
    assert [row["file_name"] for row in rows] == ["image_00000.png", "image_00001.png", "image_00002.png"]

    dataset = _load_imagefolder(out, tmp_path / "cache")
    assert len(dataset) == 3
    assert dataset["label"] == ["pneumonia"] * 3  # the pipeline's spelling
    assert dataset["seed"] == [5, 6, 7]
    assert set(dataset["num_inference_steps"]) == {2} and set(dataset["guidance_scale"]) == {2.0}
    assert set(dataset["pipeline"]) == {str(label_pipeline_dir)}
    for index, example in enumerate(dataset):
        with Image.open(out / f"image_{index:05d}.png") as png:
            np.testing.assert_array_equal(np.asarray(example["image"]), np.asarray(png))


def test_multi_label_run_has_one_column_per_label(tmp_path):
    pipeline = tmp_path / "pipeline"
    helpers.tiny_label_pipeline(labels=("effusion", "edema", "pneumonia"), multi_label=True).save_pretrained(pipeline)
    out = tmp_path / "out"
    assert _generate(pipeline, out, "--labels", "effusion=1,Edema=0.5", "--count", 2, "--seed", 1) == 0
    dataset = _load_imagefolder(out, tmp_path / "cache")
    assert dataset.column_names[:4] == ["image", "effusion", "edema", "pneumonia"]
    assert dataset["effusion"] == [1.0, 1.0] and dataset["edema"] == [0.5, 0.5] and dataset["pneumonia"] == [0.0, 0.0]


def test_text_run_records_the_prompt(tmp_path):
    pipeline = tmp_path / "pipeline"
    helpers.tiny_text_pipeline().save_pretrained(pipeline)
    out = tmp_path / "out"
    assert _generate(pipeline, out, "--prompt", "left pleural effusion", "--count", 1, "--seed", 2) == 0
    row = next(csv.DictReader((out / "metadata.csv").open()))
    assert (row["file_name"], row["prompt"], row["seed"]) == ("image_00000.png", "left pleural effusion", "2")


def test_an_existing_metadata_csv_is_refused_before_sampling(label_pipeline_dir, tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    (out / "metadata.csv").write_text("file_name,label\nmine.png,normal\n")

    def never(*args, **kwargs):
        raise AssertionError("sampled although the run was refused")

    monkeypatch.setattr("medgen.commands.generate._call_pipeline", never)
    assert _generate(label_pipeline_dir, out, "--labels", "pneumonia") == 2
    assert "already holds metadata.csv" in _error_line(capsys)
    assert (out / "metadata.csv").read_text() == "file_name,label\nmine.png,normal\n"


def test_full_disk_while_writing_metadata_leaves_no_partial_file(label_pipeline_dir, tmp_path, capsys, monkeypatch):
    def full_disk(self, rows):
        self.writer.writerow(["image_00000.png"])  # half the table, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(csv.DictWriter, "writerows", full_disk)
    out = tmp_path / "out"
    assert _generate(label_pipeline_dir, out, "--labels", "pneumonia", "--count", 2) == 2
    assert f"cannot write {out / 'metadata.csv'}: No space left on device" in _error_line(capsys)
    assert sorted(path.name for path in out.iterdir()) == ["image_00000.png", "image_00001.png", "params.json"]
    assert json.loads((out / "params.json").read_text())["complete"] is False


# ----------------------------------------------------------------------------------------------
# --push-to-hub (no network here: every Hub call fails)
# ----------------------------------------------------------------------------------------------


def test_push_to_hub_offline_fails_before_sampling_with_one_line(label_pipeline_dir, tmp_path, capsys):
    out = tmp_path / "out"
    code = _generate(label_pipeline_dir, out, "--labels", "pneumonia", "--push-to-hub", "someone/synthetic-cxr", "--allow-unevaluated")
    assert code == 2
    line = _error_line(capsys)
    assert "'someone/synthetic-cxr'" in line and "nothing was generated" in line and "HF_HUB_OFFLINE" in line
    assert not out.exists()


def test_failed_upload_keeps_the_images_and_says_where(label_pipeline_dir, tmp_path, capsys, monkeypatch):
    # The repo was created at the start; the network is gone (offline mode) when the upload starts.
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", lambda self, repo_id, **kwargs: f"https://hf.co/datasets/{repo_id}")
    out = tmp_path / "out"
    code = _generate(
        label_pipeline_dir, out, "--labels", "pneumonia", "--count", 2, "--push-to-hub", "someone/synthetic-cxr",
        "--allow-unevaluated",
    )  # fmt: skip
    assert code == 2
    line = _error_line(capsys)
    assert "could not upload" in line and "'someone/synthetic-cxr'" in line and f"the images are kept in {out}" in line
    assert sorted(path.name for path in out.iterdir()) == ["image_00000.png", "image_00001.png", "metadata.csv", "params.json"]


def test_push_to_hub_applies_the_privacy_gate(label_pipeline_dir, tmp_path, capsys):
    out = tmp_path / "out"
    assert _generate(label_pipeline_dir, out, "--labels", "pneumonia", "--push-to-hub", "someone/synthetic-cxr") == 2
    line = _error_line(capsys)
    assert "refusing to push images generated by" in line and "no stored evaluation" in line and "--allow-unevaluated" in line
    assert not out.exists()

    assert _generate(label_pipeline_dir, out, "--labels", "pneumonia", "--push-to-hub", "not a repo") == 2
    assert "--push-to-hub 'not a repo' is not a Hub repo id" in _error_line(capsys)
