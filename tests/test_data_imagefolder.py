"""Folder datasets in the `datasets` imagefolder layout: metadata.csv with file_name, label and split columns."""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pytest
from conftest import SHARED_DATA
from PIL import Image

from medgen.data import DataConfig, build_dataset, summarize_dataset, write_data_summary

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

REAL_FOLDERS = ["kermany-cxr-224", "brain-tumor-mri", "busi-ultrasound", "lung-ct-iqothnccd"]


@pytest.mark.parametrize("name", REAL_FOLDERS)
def test_real_imagefolder_loads_with_label_and_split(name, tmp_path):
    folder = SHARED_DATA / name
    if not (folder / "metadata.csv").exists():
        pytest.skip(f"real data not found at {folder} (set MEDGEN_SHARED_DATA to the shared data folder)")
    metadata = pd.read_csv(folder / "metadata.csv", dtype=str, keep_default_na=False)
    has_split = "split" in metadata.columns
    rows = metadata[metadata["split"] == "test"] if has_split else metadata
    # only data.path and the label column: file_name and split are found by the imagefolder convention
    built = build_dataset(
        DataConfig(source="csv", path=str(folder), findings_column="label", split="test", resolution=16,
                   max_samples=6, cache_dir=str(tmp_path / "cache"))  # fmt: skip
    )
    assert len(built) == 6 and not built.skipped and not built.multi_label
    assert built.label_names == sorted(rows["label"].unique())
    label_of = dict(zip(rows["file_name"], rows["label"]))
    for source, vector in zip(built.dataset["source"], built.dataset["labels"]):
        relative = os.path.relpath(source, folder)
        assert relative in label_of  # every image comes from the requested split
        assert built.label_names[int(vector.argmax())] == label_of[relative]
    pixels = built.dataset["pixel_values"][:]
    assert pixels.shape == (6, 1, 16, 16) and pixels.min() >= -1 and pixels.max() <= 1
    summary = summarize_dataset(built)
    assert summary["read_from"]["path_column"] == "file_name"
    assert summary["split"] == ("test" if has_split else None)
    assert ("(split test)" in built.summary()) == has_split


@pytest.fixture
def imagefolder(tmp_path):
    folder = tmp_path / "scans"
    rng = np.random.default_rng(0)
    rows = []
    for split, label, count in [("train", "benign", 3), ("train", "malignant", 2), ("test", "benign", 1)]:
        (folder / split / label).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            name = f"{split}/{label}/{i}.png"
            Image.fromarray(rng.integers(0, 255, (20, 20), dtype=np.uint8)).save(folder / name)
            rows.append({"file_name": name, "label": label, "split": split})
    pd.DataFrame(rows).to_csv(folder / "metadata.csv", index=False)
    return folder


def test_imagefolder_split_column_and_csv_path(imagefolder, tmp_path):
    cache = str(tmp_path / "cache")
    train = build_dataset(DataConfig(source="csv", path=str(imagefolder), findings_column="label", resolution=8,
                                     cache_dir=cache))  # fmt: skip
    assert len(train) == 5 and train.label_counts() == {"benign": 3, "malignant": 2}
    # data.path may name the CSV itself; the folder is its parent
    test = build_dataset(DataConfig(source="csv", path=str(imagefolder / "metadata.csv"), findings_column="label",
                                    split="test", resolution=8, cache_dir=cache))  # fmt: skip
    assert len(test) == 1 and test.dataset["source"][0].endswith("test/benign/0.png")
    expected = r"split 'val' not in column 'split' of .*metadata.csv; its splits are \['test', 'train'\]"
    with pytest.raises(ValueError, match=expected):
        build_dataset(DataConfig(source="csv", path=str(imagefolder), findings_column="label", split="val",
                                 cache_dir=cache))  # fmt: skip
    expected = r"split_column: column 'fold' not in .*its columns are \['file_name', 'label', 'split'\]"
    with pytest.raises(ValueError, match=expected):
        build_dataset(DataConfig(source="csv", path=str(imagefolder), findings_column="label", split_column="fold",
                                 cache_dir=cache))  # fmt: skip
    with pytest.raises(FileNotFoundError, match=r"CSV file not found: .*empty/metadata.csv \(a folder dataset needs"):
        (tmp_path / "empty").mkdir()
        build_dataset(DataConfig(source="csv", path=str(tmp_path / "empty"), findings_column="label"))


def test_write_data_summary_records_counts_and_skips(imagefolder, tmp_path):
    (imagefolder / "train" / "benign" / "1.png").write_bytes(b"truncated")
    (imagefolder / "train" / "malignant" / "0.png").unlink()
    built = build_dataset(DataConfig(source="csv", path=str(imagefolder), findings_column="label", resolution=8,
                                     cache_dir=str(tmp_path / "cache")))  # fmt: skip
    path = write_data_summary(built, tmp_path / "run")
    assert path == tmp_path / "run" / "data_summary.json"
    summary = json.loads(path.read_text())
    assert summary["num_images"] == 3 and summary["images_per_label"] == {"benign": 2, "malignant": 1}
    assert summary["skipped_by_reason"] == {"missing file": 1, "unreadable file": 1}
    reasons = {os.path.relpath(item["path"], imagefolder): item["reason"] for item in summary["skipped"]}
    assert reasons["train/malignant/0.png"] == "missing file: not found (listed in metadata.csv row 5)"
    assert reasons["train/benign/1.png"].startswith("unreadable file:")
    assert summary["split"] == "train" and summary["read_from"]["split_column"] == "split"
    assert os.listdir(tmp_path / "run") == ["data_summary.json"]  # no temporary file left behind


@pytest.mark.slow
def test_training_prints_and_saves_what_it_read(imagefolder, tmp_path, capsys):
    from medgen.config import load_config
    from medgen.train import main

    pd.DataFrame(
        [{"file_name": "train/benign/0.png", "label": "benign", "split": "train"},
         {"file_name": "train/benign/1.png", "label": "", "split": "train"},
         {"file_name": "train/malignant/0.png", "label": "malignant", "split": "train"},
         {"file_name": "train/malignant/9.png", "label": "malignant", "split": "train"}]
    ).to_csv(imagefolder / "metadata.csv", index=False)  # fmt: skip
    config = tmp_path / "train.yaml"
    config.write_text(
        f"data: {{source: csv, path: {imagefolder}, findings_column: label, empty_findings: skip, resolution: 8,\n"
        f"       cache_dir: {tmp_path / 'cache'}}}\n"
        "model: {kind: label, block_out_channels: [8, 16], attention_levels: [false, false]}\n"
        f"output_dir: {tmp_path / 'run'}\nmax_train_steps: 1\ntrain_batch_size: 2\ncheckpointing_steps: 1\n"
        "sample_every_steps: 0\nnum_sample_images: 2\nreport_to: none\n"
    )
    main(load_config(config))
    printed = capsys.readouterr().out
    assert "images per label (single-label): benign: 1, malignant: 1" in printed
    assert "skipped files: 2 (1 blank finding, 1 missing file)" in printed
    summary = json.loads((tmp_path / "run" / "data_summary.json").read_text())
    assert summary["images_per_label"] == {"benign": 1, "malignant": 1}
    assert summary["skipped_by_reason"] == {"blank finding": 1, "missing file": 1}
