"""`medgen generate` end to end on a tiny saved pipeline: files, params, DICOM, seeds, errors."""

from __future__ import annotations

import errno
import json
import re

import numpy as np
import pydicom
import pytest
from PIL import Image

import helpers  # tests/helpers.py: tiny seeded pipelines (pytest puts tests/ on sys.path)
from medgen import cli
from medgen.commands.generate import parse_labels


@pytest.fixture(autouse=True)
def _generate_command_only(monkeypatch):
    # The parser is built from every command module; this file tests `generate` alone.
    monkeypatch.setattr(cli, "COMMAND_MODULES", ("medgen.commands.generate",))


@pytest.fixture(scope="module")
def label_pipeline_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pipeline")
    helpers.tiny_label_pipeline(labels=("normal", "pneumonia")).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def unconditional_pipeline_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("unconditional")
    helpers.tiny_unconditional_pipeline().save_pretrained(folder)
    return folder


def _generate(pipeline, output, *extra):
    argv = ["generate", "--pipeline", str(pipeline), "--output", str(output), "--num-inference-steps", "2"]
    return cli.main([*argv, *map(str, extra)])


def test_generate_writes_images_params_and_dicom(label_pipeline_dir, tmp_path):
    out = tmp_path / "out"
    code = _generate(
        label_pipeline_dir, out, "--labels", "Pneumonia", "--count", 3, "--seed", 7, "--batch-size", 2,
        "--format", "png,dcm,npy", "--guidance-scale", 2.5, "--postprocess", "thesis", "--scheduler", "ddim",
    )  # fmt: skip
    assert code == 0
    assert sorted(p.name for p in out.glob("*.png")) == [f"image_{i:05d}.png" for i in range(3)]
    assert len(list(out.glob("*.dcm"))) == 3 and len(list(out.glob("*.npy"))) == 3

    params = json.loads((out / "params.json").read_text())
    assert params["labels"] == {"pneumonia": 1.0}  # matched case-insensitively, stored in the pipeline's spelling
    assert params["pipeline"] == str(label_pipeline_dir)
    assert params["pipeline_class"] == "LabelConditionedPipeline"
    assert (params["seed"], params["num_inference_steps"], params["guidance_scale"]) == (7, 2, 2.5)
    assert params["scheduler"] == "DDIMScheduler"
    assert params["postprocess"]["preset"] == "thesis" and len(params["postprocess"]["steps"]) == 2
    assert [image["seed"] for image in params["images"]] == [7, 8, 9]
    assert params["complete"] is True and params["count"] == 3
    assert params["medgen_version"] and params["created"]

    ds = pydicom.dcmread(out / "image_00002.dcm")
    assert ds.SyntheticData == "YES" and ds.InstanceNumber == 3
    assert str(ds.PatientName) == "SYNTHETIC^PNEUMONIA"
    assert "seed=9" in ds.ImageComments and "thesis" in ds.DerivationDescription
    image = np.load(out / "image_00002.npy")
    assert image.shape == (16, 16, 1) and 0 <= image.min() and image.max() <= 1
    assert ds.pixel_array.shape == (16, 16)


def test_same_seed_same_images_and_seed_i_reproduces_image_i(label_pipeline_dir, tmp_path):
    common = ("--labels", "pneumonia", "--format", "npy", "--guidance-scale", 2.0)
    assert _generate(label_pipeline_dir, tmp_path / "a", *common, "--count", 2, "--seed", 11, "--batch-size", 2) == 0
    assert _generate(label_pipeline_dir, tmp_path / "b", *common, "--count", 2, "--seed", 11, "--batch-size", 2) == 0
    assert _generate(label_pipeline_dir, tmp_path / "c", *common, "--count", 1, "--seed", 12) == 0
    a = [np.load(tmp_path / "a" / f"image_{i:05d}.npy") for i in range(2)]
    b = [np.load(tmp_path / "b" / f"image_{i:05d}.npy") for i in range(2)]
    for first, second in zip(a, b):
        np.testing.assert_array_equal(first, second)
    assert not np.allclose(a[0], a[1], atol=1e-3)  # different seeds, different images
    # Image 1 of a seed-11 batch is image 0 of a seed-12 run, generated alone.
    np.testing.assert_allclose(np.load(tmp_path / "c" / "image_00000.npy"), a[1], atol=1e-5)


def test_unconditional_pipeline_and_16_bit(unconditional_pipeline_dir, tmp_path):
    out = tmp_path / "u"
    assert _generate(unconditional_pipeline_dir, out, "--count", 2, "--bit-depth", 16, "--format", "dcm", "--seed", 0) == 0
    params = json.loads((out / "params.json").read_text())
    assert "labels" not in params and params["guidance_scale"] is None
    ds = pydicom.dcmread(out / "image_00001.dcm")
    assert ds.BitsStored == 16 and ds.Modality == "OT"


@pytest.mark.parametrize(
    "extra, message",
    [
        (("--labels", "Effusion"), "unknown label 'Effusion'.*valid labels: normal, pneumonia"),
        (("--labels", "normal,pneumonia"), "single-label"),
        (("--labels", "pneumonia=1.5"), r"must lie in \[0, 1\]"),
        (("--labels", "pneumonia", "--count", 0), "--count must be between 1 and 10000"),
        (("--labels", "pneumonia", "--count", 10001), "--count must be between 1 and 10000"),
        (("--labels", "pneumonia", "--format", "png,jpg"), "unknown export format 'jpg'"),
        (("--labels", "pneumonia", "--postprocess", "sharpn"), "unknown post-processing preset 'sharpn'"),
        (("--labels", "pneumonia", "--num-inference-steps", 0), "--num-inference-steps"),
        (("--prompt", "chest x-ray"), "label-conditioned: give --labels"),
        ((), "give --labels, among normal, pneumonia"),
    ],
)
def test_user_errors_exit_2_with_a_message(label_pipeline_dir, tmp_path, capsys, extra, message):
    out = tmp_path / "out"
    assert _generate(label_pipeline_dir, out, *extra) == 2
    assert re.search(message, capsys.readouterr().err)
    assert not (out / "params.json").exists()


def test_missing_pipeline_and_existing_output(label_pipeline_dir, tmp_path, capsys):
    assert _generate(tmp_path / "nowhere", tmp_path / "out", "--labels", "pneumonia") == 2
    assert "nowhere" in capsys.readouterr().err

    out = tmp_path / "again"
    assert _generate(label_pipeline_dir, out, "--labels", "pneumonia", "--seed", 1) == 0
    before = (out / "image_00000.png").read_bytes()
    assert _generate(label_pipeline_dir, out, "--labels", "pneumonia", "--seed", 2) == 2
    assert "never overwrites" in capsys.readouterr().err
    assert (out / "image_00000.png").read_bytes() == before


def test_parse_labels_forms():
    assert parse_labels("Pneumonia") == {"Pneumonia": 1.0}
    assert parse_labels("Effusion, Pneumonia") == {"Effusion": 1.0, "Pneumonia": 1.0}
    assert parse_labels("effusion=1,edema=0.5") == {"effusion": 1.0, "edema": 0.5}
    for bad in ("", "a,,b", "a=x", "a,A"):
        with pytest.raises(ValueError, match="--labels"):
            parse_labels(bad)


@pytest.fixture(scope="module")
def text_pipeline_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("text")
    helpers.tiny_text_pipeline().save_pretrained(folder)
    return folder


def test_text_pipeline_takes_prompts_not_labels(text_pipeline_dir, tmp_path, capsys):
    out = tmp_path / "t"
    prompt, negative = "right lower lobe pneumonia", "artifacts"
    code = _generate(
        text_pipeline_dir, out, "--prompt", prompt, "--negative-prompt", negative, "--count", 2, "--seed", 3,
        "--format", "png,dcm",
    )  # fmt: skip
    assert code == 0
    params = json.loads((out / "params.json").read_text())
    assert (params["prompt"], params["negative_prompt"]) == (prompt, negative)
    assert params["pipeline_class"] == "TextToImagePipeline" and len(list(out.glob("*.png"))) == 2
    assert str(pydicom.dcmread(out / "image_00001.dcm").PatientName) == "SYNTHETIC^RIGHT_LOWER_LOBE_PNEUMONIA"

    assert _generate(text_pipeline_dir, tmp_path / "x", "--labels", "pneumonia") == 2
    assert "takes no --labels" in capsys.readouterr().err


def test_help_answers_without_importing_the_heavy_libraries():
    """`medgen --help` and `medgen train --help` build every subcommand's parser without torch or diffusers."""
    import subprocess
    import sys

    code = (
        "import sys, contextlib, io\n"
        "from medgen.cli import build_parser\n"
        "with contextlib.redirect_stdout(io.StringIO()) as out:\n"
        "    try: build_parser().parse_args(['train', '--help'])\n"
        "    except SystemExit: pass\n"
        "assert '--resume_from_checkpoint' in out.getvalue(), out.getvalue()\n"
        "heavy = sorted(m for m in ('torch', 'diffusers', 'accelerate', 'transformers') if m in sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


# ----------------------------------------------------------------------------------------------
# File system faults: complete files or none, one line naming the path, exit 2
# ----------------------------------------------------------------------------------------------


def _fill_disk_at_png(monkeypatch, failing_call: int):
    """From the `failing_call`-th PNG on, the disk is full: half a file is written, then ENOSPC."""
    from PIL import Image

    real_save = Image.Image.save
    calls = {"n": 0}

    def save(self, fp, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] < failing_call:
            return real_save(self, fp, *args, **kwargs)
        fp.write(b"\x89PNG\r\n\x1a\n")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Image.Image, "save", save)


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if "error" in line]  # stderr also carries the progress bar
    assert len(lines) == 1 and lines[0].startswith("medgen generate: error: "), err
    return lines[0]


def test_unusable_output_is_refused_before_loading_or_sampling(label_pipeline_dir, tmp_path, capsys, monkeypatch):
    blocker = tmp_path / "results.txt"
    blocker.write_text("a regular file")

    def never(*args, **kwargs):
        raise AssertionError("sampled although the output could not be written")

    monkeypatch.setattr("medgen.commands.generate._call_pipeline", never)
    out = blocker / "run1"
    assert _generate(label_pipeline_dir, out, "--labels", "pneumonia", "--count", 2) == 2
    line = _one_error_line(capsys)
    assert str(out) in line and "is a file, not a folder" in line
    assert sorted(path.name for path in tmp_path.iterdir()) == ["results.txt"]


def test_full_disk_mid_run_keeps_only_complete_files(label_pipeline_dir, tmp_path, capsys, monkeypatch):
    _fill_disk_at_png(monkeypatch, failing_call=2)
    out = tmp_path / "out"
    assert _generate(label_pipeline_dir, out, "--labels", "pneumonia", "--count", 2, "--batch-size", 1) == 2
    line = _one_error_line(capsys)
    assert f"cannot write {out / 'image_00001.png'}: No space left on device" in line
    # No 0-byte or temporary file; the images written stay a dataset.
    assert sorted(path.name for path in out.iterdir()) == ["image_00000.png", "metadata.csv", "params.json"]
    params = json.loads((out / "params.json").read_text())
    assert params["complete"] is False and [image["files"] for image in params["images"]] == [["image_00000.png"]]
    assert (out / "metadata.csv").read_text().splitlines()[1].startswith("image_00000.png,pneumonia,")
    with Image.open(out / "image_00000.png") as image:
        image.load()  # complete and readable


def test_full_disk_before_the_first_image_leaves_nothing(label_pipeline_dir, tmp_path, capsys, monkeypatch):
    _fill_disk_at_png(monkeypatch, failing_call=1)
    out = tmp_path / "out"
    assert _generate(label_pipeline_dir, out, "--labels", "pneumonia", "--count", 2) == 2
    assert "image_00000.png: No space left on device" in _one_error_line(capsys)
    assert not out.exists()  # no params.json, no empty folder

    with pytest.raises(OSError, match="No space left on device"):  # --verbose: the full traceback
        _generate(label_pipeline_dir, tmp_path / "verbose", "--labels", "pneumonia", "--verbose")
    assert not (tmp_path / "verbose").exists()
