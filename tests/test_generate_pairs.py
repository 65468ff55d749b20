"""`medgen generate --pairs` / `--masks DIR`: image + mask pairs as an imagefolder dataset whose metadata.csv
has file_name, mask_file_name and the label, readable by `datasets` and by medgen's own data layer."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from PIL import Image

import helpers
from mask_helpers import square_mask, tiny_mask_pipeline
from medgen import cli
from medgen.data import DataConfig, build_dataset


@pytest.fixture(autouse=True)
def _generate_command_only(monkeypatch):
    monkeypatch.setattr(cli, "COMMAND_MODULES", ("medgen.commands.generate",))


pytestmark = pytest.mark.usefixtures("single_thread")  # tiny models run fastest on one thread


@pytest.fixture(scope="module")
def mask_pipeline_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mask_pipeline")
    tiny_mask_pipeline().save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def no_generator_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("no_generator")
    tiny_mask_pipeline(mask_generator=False).save_pretrained(folder)
    return folder


def _generate(pipeline, output, *extra):
    argv = ["generate", "--pipeline", str(pipeline), "--output", str(output), "--num-inference-steps", "2"]
    return cli.main([*argv, *map(str, extra)])


def _rows(folder):
    with open(folder / "metadata.csv", newline="") as file:
        return list(csv.DictReader(file))


def test_pairs_write_images_masks_and_metadata(mask_pipeline_dir, tmp_path):
    out = tmp_path / "pairs"
    assert _generate(mask_pipeline_dir, out, "--labels", "tuberculosis", "--pairs", "--count", 5, "--seed", 3, "--batch-size", 2) == 0
    rows = _rows(out)
    assert list(rows[0])[:3] == ["file_name", "mask_file_name", "label"]
    assert [row["file_name"] for row in rows] == [f"image_{i:05d}.png" for i in range(5)]
    assert [row["mask_file_name"] for row in rows] == [f"masks/image_{i:05d}.png" for i in range(5)]
    assert {row["label"] for row in rows} == {"tuberculosis"}
    for row in rows:
        mask = np.array(Image.open(out / row["mask_file_name"]))
        image = Image.open(out / row["file_name"])
        assert mask.shape == image.size[::-1] and set(np.unique(mask)) <= {0, 255}
    params = json.loads((out / "params.json").read_text())
    assert params["masks"] == "mask generator (--pairs)"

    # the same seed gives the same pair whatever the batch size
    again = tmp_path / "again"
    _generate(mask_pipeline_dir, again, "--labels", "tuberculosis", "--pairs", "--count", 1, "--seed", 5)
    np.testing.assert_array_equal(np.array(Image.open(again / "masks/image_00000.png")), np.array(Image.open(out / "masks/image_00002.png")))
    np.testing.assert_allclose(
        np.array(Image.open(again / "image_00000.png"), dtype=float), np.array(Image.open(out / "image_00002.png"), dtype=float), atol=1
    )


def test_pairs_load_with_datasets_and_medgen(mask_pipeline_dir, tmp_path):
    import datasets

    out = tmp_path / "pairs"
    _generate(mask_pipeline_dir, out, "--labels", "normal", "--pairs", "--count", 3, "--seed", 0)
    loaded = datasets.load_dataset("imagefolder", data_dir=str(out), split="train")
    assert {"image", "mask", "label"} <= set(loaded.column_names) and len(loaded) == 3
    data = build_dataset(DataConfig(
        source="csv", path=str(out), findings_column="label", mask_column="mask_file_name", resolution=16,
        cache_dir=str(tmp_path / "cache"),
    ))
    assert len(data) == 3 and data[0]["mask"].shape == (1, 16, 16)


def test_own_masks_cycle_in_name_order_and_are_written_as_pairs(mask_pipeline_dir, tmp_path):
    masks = tmp_path / "my_masks"
    masks.mkdir()
    full = np.zeros((32, 32), dtype=np.uint8)
    full[4:20, 4:28] = 255
    Image.fromarray(full).save(masks / "case_10.png")  # larger than the images: resized nearest-neighbour
    Image.fromarray((square_mask().numpy() * 255).astype(np.uint8)).save(masks / "case_2.png")
    (masks / "notes.txt").write_text("not a mask")
    out = tmp_path / "out"
    assert _generate(mask_pipeline_dir, out, "--labels", "normal", "--masks", masks, "--count", 3, "--seed", 0) == 0
    rows = _rows(out)
    assert [row["mask_source"] for row in rows] == ["case_2.png", "case_10.png", "case_2.png"]
    np.testing.assert_array_equal(np.array(Image.open(out / rows[0]["mask_file_name"])) // 255, square_mask().numpy())


def test_bad_mask_in_the_folder_is_named_before_sampling(mask_pipeline_dir, tmp_path, capsys):
    masks = tmp_path / "bad"
    masks.mkdir()
    Image.fromarray(np.full((16, 16), 9, dtype=np.uint8)).save(masks / "weird.png")
    out = tmp_path / "out"
    assert _generate(mask_pipeline_dir, out, "--labels", "normal", "--masks", masks, "--count", 2) == 2
    assert "weird.png" in capsys.readouterr().err
    assert not out.exists() or not any(out.iterdir())


@pytest.mark.parametrize(
    "fixture, extra, message",
    [
        ("no_generator_dir", ["--pairs"], "no mask generator"),
        ("label_dir", ["--pairs"], "not mask-conditioned"),
        ("mask_pipeline_dir", ["--pairs", "--masks", "."], "not both"),
        ("mask_pipeline_dir", ["--masks", "/nowhere/masks"], "no such folder"),
    ],
)
def test_pair_options_are_checked(request, tmp_path, capsys, fixture, extra, message):
    if fixture == "label_dir":
        folder = tmp_path / "label"
        helpers.tiny_label_pipeline(labels=("normal", "tuberculosis")).save_pretrained(folder)
    else:
        folder = request.getfixturevalue(fixture)
    assert _generate(folder, tmp_path / "out", "--labels", "normal", *extra) == 2
    assert message in capsys.readouterr().err


def test_mask_pipeline_without_pair_options_writes_images_only(mask_pipeline_dir, tmp_path):
    out = tmp_path / "plain"
    assert _generate(mask_pipeline_dir, out, "--labels", "normal", "--count", 2, "--seed", 0) == 0
    assert "mask_file_name" not in _rows(out)[0] and not (out / "masks").exists()
