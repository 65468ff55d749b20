"""Built-in pipeline names: `medgen.load_pipeline("default")` works from any folder, and so do the
CLI commands and the app, which resolve `--pipeline` through the same function."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import medgen
from helpers import tiny_unconditional_pipeline
from medgen import cli
from medgen.app import load_app_pipeline
from medgen.pipelines import LabelConditionedPipeline, UnconditionalPipeline
from medgen.pipelines.hub import BUILTIN_PIPELINES

ACCEPTED = ("'default'", "model_index.json", "Hub repo id")


@pytest.fixture(autouse=True)
def _elsewhere(tmp_path, monkeypatch):
    # Run from a folder that is not the repository root: the name must not depend on the working directory.
    monkeypatch.chdir(tmp_path)
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.mark.parametrize("name", ["default", "Default"])
def test_default_name_loads_the_embedded_pipeline(name):
    pipe = medgen.load_pipeline(name)
    assert type(pipe) is LabelConditionedPipeline
    assert pipe.labels == ["normal", "pneumonia"]


def test_builtin_name_wins_over_a_folder_of_that_name_which_stays_reachable(tmp_path):
    tiny_unconditional_pipeline().save_pretrained(tmp_path / "default")
    assert type(medgen.load_pipeline("default")) is LabelConditionedPipeline
    assert type(medgen.load_pipeline("./default")) is UnconditionalPipeline
    assert type(medgen.load_pipeline(Path("default"))) is UnconditionalPipeline


@pytest.mark.parametrize("name", ["knee-xray", "defualt", "./no_such_folder"])
def test_unknown_name_says_which_names_and_folders_are_accepted(name):
    with pytest.raises(FileNotFoundError, match=name.lstrip("./")) as error:
        medgen.load_pipeline(name)
    for accepted in ACCEPTED:
        assert accepted in str(error.value)


def test_names_come_from_one_table(monkeypatch):
    # A newly registered model is listed in errors, and one missing from the install is named as such.
    monkeypatch.setitem(BUILTIN_PIPELINES, "knee-mri", "pretrained/knee-mri")
    with pytest.raises(FileNotFoundError, match="'knee-mri' is not part of this medgen install"):
        medgen.load_pipeline("knee-mri")
    with pytest.raises(FileNotFoundError, match="'default', 'chest-xray', .*'knee-mri'"):
        medgen.load_pipeline("knee-xray")


def test_generate_accepts_the_default_name(tmp_path):
    out = tmp_path / "out"
    argv = ["generate", "--pipeline", "default", "--labels", "pneumonia", "--count", "1",
            "--num-inference-steps", "2", "--format", "png", "--output", str(out)]
    assert cli.main(argv) == 0
    assert (out / "image_00000.png").is_file()
    assert json.loads((out / "params.json").read_text())["pipeline"] == "default"


@pytest.mark.parametrize(
    "argv",
    [
        ["generate", "--pipeline", "knee-xray", "--labels", "pneumonia", "--output", "out"],
        ["evaluate", "--pipeline", "knee-xray", "--data", "data.npz", "--num-samples", "2", "--output", "out"],
    ],
)
def test_cli_unknown_name_is_one_line_listing_what_is_accepted(argv, capsys):
    assert cli.main(argv) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith(f"medgen {argv[0]}: error: ") and "\n" not in error
    for accepted in ("knee-xray", "'chest-xray'", *ACCEPTED):
        assert accepted in error


def test_app_accepts_the_default_name():
    pipe, device = load_app_pipeline("default", device="cpu")
    assert device == "cpu" and pipe.labels == ["normal", "pneumonia"]
