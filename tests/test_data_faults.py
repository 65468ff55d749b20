"""Bad data fails loudly, naming the file, row or key: blank findings, bad npz archives, wrong delimiters, bombs."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from medgen.config import load_config
from medgen.data import DataConfig, build_dataset, read_image
from medgen.data.readers import read_medmnist

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture
def blank_findings_dir(tmp_path):
    """Five images; rows 3 and 5 of metadata.csv (header = row 1) have no finding."""
    folder = tmp_path / "notes"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(5):
        Image.fromarray(rng.integers(0, 255, (12, 12), dtype=np.uint8)).save(folder / f"img{i}.png")
    pd.DataFrame(
        {"file_name": [f"img{i}.png" for i in range(5)], "finding": ["Pneumonia", "", "No finding", " ", "Pneumonia"]}
    ).to_csv(folder / "metadata.csv", index=False)
    return folder


def notes_config(folder, tmp_path, **overrides):
    values = dict(source="csv", path=str(folder), findings_column="finding", resolution=8,
                  cache_dir=str(tmp_path / "cache"))  # fmt: skip
    values.update(overrides)
    return DataConfig(**values)


def test_blank_findings_are_an_error_naming_the_rows(blank_findings_dir, tmp_path):
    expected = r"'finding' is blank in rows 3 \(img1.png\), 5 \(img3.png\) of .*metadata.csv; .*empty_findings"
    with pytest.raises(ValueError, match=expected):
        build_dataset(notes_config(blank_findings_dir, tmp_path))


def test_blank_findings_skip_lists_the_files(blank_findings_dir, tmp_path):
    built = build_dataset(notes_config(blank_findings_dir, tmp_path, empty_findings="skip"))
    assert sorted(os.path.basename(s) for s in built.dataset["source"]) == ["img0.png", "img2.png", "img4.png"]
    assert built.label_counts() == {"No finding": 1, "Pneumonia": 2}
    assert [(os.path.basename(path), reason) for path, reason in built.skipped] == [
        ("img1.png", "blank finding: 'finding' is empty in metadata.csv row 3"),
        ("img3.png", "blank finding: 'finding' is empty in metadata.csv row 5"),
    ]
    assert "skipped files: 2 (2 blank finding)" in built.summary()


def test_blank_findings_given_a_label_keep_the_csv_spelling(blank_findings_dir, tmp_path):
    built = build_dataset(notes_config(blank_findings_dir, tmp_path, empty_findings="No Finding"))
    # the CSV writes "No finding": the label keeps that spelling and the blank rows join it
    assert built.label_names == ["No finding", "Pneumonia"]
    assert built.label_counts() == {"No finding": 3, "Pneumonia": 2} and not built.skipped
    named = build_dataset(notes_config(blank_findings_dir, tmp_path, empty_findings="normal"))
    assert named.label_names == ["No finding", "normal", "Pneumonia"]
    assert named.label_counts()["normal"] == 2


def test_empty_findings_policy_in_yaml_and_validation(tmp_path):
    config = tmp_path / "train.yaml"
    config.write_text("data:\n  source: csv\n  path: x\n  findings_column: finding\n  empty_findings: skip\n")
    assert load_config(config).data.empty_findings == "skip"
    assert load_config(config, ["data.empty_findings=No Finding"]).data.empty_findings == "No Finding"
    assert DataConfig(source="csv", path="x").empty_findings == "error"
    with pytest.raises(ValueError, match="empty_findings='skip' needs findings_column"):
        DataConfig(source="csv", path="x", label_columns=["Edema"], empty_findings="skip")
    with pytest.raises(ValueError, match="empty_findings must be 'error', 'skip' or a label name, got ' '"):
        DataConfig(source="csv", path="x", findings_column="finding", empty_findings=" ")


def test_csv_with_another_delimiter_says_so(tmp_path):
    folder = tmp_path / "semicolons"
    folder.mkdir()
    (folder / "metadata.csv").write_text("file_name;label\na.png;normal\nb.png;1,5\n")
    with pytest.raises(ValueError, match=r"metadata.csv.*separated by semicolons \(';'\): save it comma-separated"):
        build_dataset(DataConfig(source="csv", path=str(folder), findings_column="label"))
    (folder / "metadata.csv").write_text("file_name\tlabel\na.png\tnormal\n")
    with pytest.raises(ValueError, match=r"one column 'file_name\\tlabel'.*separated by tabs"):
        build_dataset(DataConfig(source="csv", path=str(folder), findings_column="label"))


def save_npz(path, **arrays):
    np.savez(path, **arrays)
    return path


IMAGES = np.zeros((3, 8, 8), dtype=np.uint8)
LABELS = np.array([[0], [1], [0]], dtype=np.uint8)


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"train_images": np.where(np.eye(8, dtype=bool), np.nan, 0.5)[None].repeat(3, 0), "train_labels": LABELS},
         r"train_images has NaN/inf pixel values in 3 image\(s\), first at index 0"),
        ({"train_images": np.full((3, 8, 8), np.inf, dtype=np.float32), "train_labels": LABELS},
         "train_images has NaN/inf"),
        ({"train_images": IMAGES, "train_labels": LABELS.astype(np.float32) + 0.5},
         r"train_labels must be integer class indices .* got dtype float32 \(e.g. np.float32\(0.5\)\)"),
        ({"train_images": IMAGES, "train_labels": np.array([["normal"], ["pneumonia"], ["normal"]])},
         r"train_labels must be integer class indices .* got dtype <U9"),
        ({"train_images": np.array(["a", "b", "c"]), "train_labels": LABELS}, "train_images must hold numbers"),
        ({}, "is an empty .npz archive"),
        ({"x_train": IMAGES, "y_train": LABELS},
         r"has no '<split>_images' arrays .* its keys are \['x_train', 'y_train'\]"),
    ],
    ids=["nan-pixels", "inf-pixels", "float-labels", "string-labels", "string-images", "empty", "other-keys"],
)  # fmt: skip
def test_bad_npz_is_refused_naming_file_and_key(tmp_path, arrays, message):
    path = save_npz(tmp_path / "scans.npz", **arrays)
    with pytest.raises(ValueError, match=r"scans\.npz.*" + message):
        read_medmnist(path, "train")
    with pytest.raises(ValueError, match=r"scans\.npz"):  # and through the dataset builder
        build_dataset(DataConfig(source="medmnist", path=str(path), cache_dir=str(tmp_path / "cache")))


def test_renamed_npy_is_refused(tmp_path):
    path = tmp_path / "pneumoniamnist.npz"
    with open(path, "wb") as handle:
        np.save(handle, IMAGES)
    expected = r"pneumoniamnist.npz is a single NumPy array \(.npy format, shape \(3, 8, 8\)\)"
    with pytest.raises(ValueError, match=expected):
        read_medmnist(path, "train")


def test_decompression_bomb_names_the_file(tmp_path, monkeypatch):
    # Pillow refuses images over 2 x MAX_IMAGE_PIXELS and warns over 1 x; a small limit makes small bombs
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    Image.new("L", (16, 16)).save(tmp_path / "bomb.png")  # 256 > 200 pixels: refused
    Image.new("L", (12, 12)).save(tmp_path / "large.png")  # 144 > 100 pixels: warned
    with pytest.raises(ValueError, match=r"refusing to decode .*bomb\.png: .*MAX_IMAGE_PIXELS"):
        read_image(tmp_path / "bomb.png")
    with pytest.warns(Image.DecompressionBombWarning, match=r"large\.png"):
        read_image(tmp_path / "large.png")
    with pytest.warns(Image.DecompressionBombWarning, match=r"large\.png"):
        built = build_dataset(DataConfig(source="folder", path=str(tmp_path), resolution=8,
                                         cache_dir=str(tmp_path / "cache")))  # fmt: skip
    assert len(built) == 1
    assert [(os.path.basename(path), reason.split(":")[0]) for path, reason in built.skipped] == [
        ("bomb.png", "unreadable file")
    ]
