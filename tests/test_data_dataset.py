"""build_dataset end to end: CSV formats, real folders, cache reuse, bad files, config errors."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

import medgen.data.dataset as dataset_module
from medgen.data import DataConfig, MedicalImageDataset, build_dataset

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def write_pngs(folder, sizes):
    rng = np.random.default_rng(0)
    names = []
    for i, (height, width) in enumerate(sizes):
        name = f"img{i}.png"
        Image.fromarray(rng.integers(0, 255, (height, width), dtype=np.uint8)).save(folder / name)
        names.append(name)
    return names


@pytest.fixture
def chexpert_dir(tmp_path):
    folder = tmp_path / "chexpert"
    (folder / "train").mkdir(parents=True)
    names = write_pngs(folder / "train", [(40, 30), (30, 40), (20, 20), (50, 25)])
    pd.DataFrame(
        {
            "Path": [f"train/{n}" for n in names],
            "Frontal/Lateral": ["Frontal", "Frontal", "Lateral", "Frontal"],
            "AP/PA": ["AP", "PA", "", "PA"],
            "Cardiomegaly": ["1.0", "0.0", "1.0", ""],
            "Edema": ["", "-1.0", "1.0", ""],
            "Pleural Effusion": ["-1.0", "", "", "1.0"],
        }
    ).to_csv(folder / "train.csv", index=False)
    return folder


def chexpert_config(folder, tmp_path, **overrides):
    values = dict(
        source="csv",
        path=str(folder),
        csv_path=str(folder / "train.csv"),
        label_columns=["Cardiomegaly", "Edema", "Pleural Effusion"],
        resolution=16,
        cache_dir=str(tmp_path / "cache"),
    )
    values.update(overrides)
    return DataConfig(**values)


def by_source(built: MedicalImageDataset) -> dict[str, np.ndarray]:
    return {os.path.basename(s): built[i]["labels"].numpy() for i, s in enumerate(built.dataset["source"])}


@pytest.mark.parametrize(
    ("policy", "img0", "img1"),
    [("ones", [1, 0, 1], [0, 1, 0]), ("zeros", [1, 0, 0], [0, 0, 0]), (0.5, [1, 0, 0.5], [0, 0.5, 0])],
)
def test_chexpert_uncertainty_policies(chexpert_dir, tmp_path, policy, img0, img1):
    built = build_dataset(chexpert_config(chexpert_dir, tmp_path, uncertain_policy=policy))
    labels = by_source(built)
    assert built.multi_label and built.label_names == ["Cardiomegaly", "Edema", "Pleural Effusion"]
    np.testing.assert_array_equal(labels["img0.png"], img0)
    np.testing.assert_array_equal(labels["img1.png"], img1)
    np.testing.assert_array_equal(labels["img3.png"], [0, 0, 1])  # blank = not mentioned = 0
    sample = built[0]
    assert sample["pixel_values"].shape == (1, 16, 16) and sample["pixel_values"].dtype == torch.float32
    assert sample["labels"].dtype == torch.float32


def test_chexpert_ignore_drops_rows_with_uncertain_selected_labels(chexpert_dir, tmp_path):
    built = build_dataset(chexpert_config(chexpert_dir, tmp_path, uncertain_policy="ignore"))
    assert sorted(by_source(built)) == ["img2.png", "img3.png"]
    assert "uncertain" in built.summary()
    # only the selected labels count: Cardiomegaly is never uncertain
    only_cardio = build_dataset(
        chexpert_config(chexpert_dir, tmp_path, uncertain_policy="ignore", labels=["cardiomegaly"])
    )
    assert len(only_cardio) == 4 and only_cardio.label_names == ["Cardiomegaly"]


def test_filters_and_prompts(chexpert_dir, tmp_path):
    built = build_dataset(
        chexpert_config(chexpert_dir, tmp_path, filters={"Frontal/Lateral": ["frontal"], "AP/PA": ["PA"]})
    )
    assert sorted(by_source(built)) == ["img1.png", "img3.png"]
    texts = dict(zip((os.path.basename(s) for s in built.dataset["source"]), built.dataset["text"]))
    assert texts["img3.png"] == "chest x-ray, pleural effusion"
    assert texts["img1.png"] == "chest x-ray, edema"  # uncertain -> 1 with the default "ones" policy


def test_missing_column_and_unknown_label(chexpert_dir, tmp_path):
    with pytest.raises(ValueError, match=r"\['Fracture'\] not in .*its columns are \['Path'"):
        build_dataset(chexpert_config(chexpert_dir, tmp_path, label_columns=["Cardiomegaly", "Fracture"]))
    with pytest.raises(ValueError, match=r"unknown label 'Pneumonia'; valid labels are \['Cardiomegaly'"):
        build_dataset(chexpert_config(chexpert_dir, tmp_path, labels=["Pneumonia"]))
    with pytest.raises(ValueError, match="filters: column"):
        build_dataset(chexpert_config(chexpert_dir, tmp_path, filters={"View": ["PA"]}))
    with pytest.raises(FileNotFoundError, match="nothere.csv"):
        build_dataset(chexpert_config(chexpert_dir, tmp_path, csv_path=str(tmp_path / "nothere.csv")))


def test_empty_after_filters(chexpert_dir, tmp_path):
    expected = r"no samples in source 'csv' at .*chexpert with filters \{'AP/PA': \['LL'\]\}"
    with pytest.raises(ValueError, match=expected):
        build_dataset(chexpert_config(chexpert_dir, tmp_path, filters={"AP/PA": ["LL"]}))


@pytest.fixture
def nih_dir(tmp_path):
    folder = tmp_path / "nih"
    folder.mkdir()
    names = write_pngs(folder, [(32, 32)] * 4)
    pd.DataFrame(
        {
            "Image Index": names,
            "Finding Labels": ["Effusion|Pneumonia", "No Finding", "Cardiomegaly", "effusion"],
            "View Position": ["PA", "AP", "PA", "PA"],
        }
    ).to_csv(folder / "Data_Entry_2017.csv", index=False)
    return folder


def test_nih_findings_are_multi_label(nih_dir, tmp_path):
    cfg = DataConfig(
        source="csv", path=str(nih_dir), csv_path=str(nih_dir / "Data_Entry_2017.csv"), path_column="Image Index",
        findings_column="Finding Labels", resolution=8, cache_dir=str(tmp_path / "cache"),
    )  # fmt: skip
    built = build_dataset(cfg)
    assert built.multi_label and built.label_names == ["Cardiomegaly", "Effusion", "Pneumonia"]
    labels = by_source(built)
    np.testing.assert_array_equal(labels["img0.png"], [0, 1, 1])
    np.testing.assert_array_equal(labels["img1.png"], [0, 0, 0])  # No Finding = all zeros
    np.testing.assert_array_equal(labels["img3.png"], [0, 1, 0])  # case-insensitive
    assert built.dataset["text"][1] == "chest x-ray, no finding"
    assert built.label_counts() == {"Cardiomegaly": 1, "Effusion": 2, "Pneumonia": 1, "(no label set)": 1}
    subset = build_dataset(DataConfig.from_dict({**cfg.to_dict(), "labels": ["pneumonia", "No Finding"]}))
    assert subset.label_names == ["Pneumonia", "No Finding"]
    np.testing.assert_array_equal(by_source(subset)["img1.png"], [0, 1])


def test_covid_folder_real_data(covid_notes_dir, tmp_path):
    metadata = pd.read_csv(covid_notes_dir / "metadata.csv")
    xrays = metadata[metadata["modality"] == "X-ray"]
    built = build_dataset(
        DataConfig(
            source="csv", path=str(covid_notes_dir), path_column="file_name", findings_column="finding",
            text_column="clinical_notes", filters={"modality": ["x-ray"]}, resolution=24, resize_mode="pad",
            cache_dir=str(tmp_path / "cache"),
        )
    )  # fmt: skip
    assert len(built) == len(xrays) and not built.skipped
    assert not built.multi_label and set(built.label_names) == set(xrays["finding"].unique())
    pixels = built.dataset["pixel_values"][:]
    assert pixels.shape == (len(xrays), 1, 24, 24)  # mixed sizes and aspect ratios -> exact resolution
    assert pixels.min() >= -1 and pixels.max() <= 1
    np.testing.assert_array_equal(built.dataset["labels"][:].sum(1), 1.0)  # one-hot
    assert any("infiltrate" in text for text in built.dataset["text"])
    counts = built.label_counts()
    assert counts["COVID-19"] == int((xrays["finding"] == "COVID-19").sum())
    assert "COVID-19" in built.summary()


def test_medmnist_dataset(pneumoniamnist_npz, tmp_path):
    built = build_dataset(
        DataConfig(source="medmnist", path=str(pneumoniamnist_npz), split="test", cache_dir=str(tmp_path / "c"))
    )
    with np.load(pneumoniamnist_npz) as archive:
        raw = archive["test_labels"][:, 0]
    assert len(built) == len(raw) and built.label_names == ["normal", "pneumonia"] and not built.multi_label
    np.testing.assert_array_equal(built.dataset["labels"][:].argmax(1).numpy(), raw)
    assert built.label_counts() == {"normal": int((raw == 0).sum()), "pneumonia": int((raw == 1).sum())}
    assert built[0]["pixel_values"].shape == (1, 32, 32)
    assert built.dataset["text"][0] in ("chest x-ray, normal", "chest x-ray, pneumonia")
    with pytest.raises(ValueError, match="single-label"):
        build_dataset(DataConfig(source="medmnist", path=str(pneumoniamnist_npz), split="test", multi_label=True))


def test_cache_is_reused_and_invalidated(nih_dir, tmp_path, monkeypatch):
    calls = []
    real_read = dataset_module.read_frames

    def counting_read(path, **kwargs):
        calls.append(path)
        return real_read(path, **kwargs)

    monkeypatch.setattr(dataset_module, "read_frames", counting_read)
    cfg = DataConfig(
        source="csv", path=str(nih_dir), csv_path=str(nih_dir / "Data_Entry_2017.csv"), path_column="Image Index",
        findings_column="Finding Labels", resolution=8, cache_dir=str(tmp_path / "cache"),
    )  # fmt: skip
    first = build_dataset(cfg)
    assert len(calls) == 4
    second = build_dataset(cfg)
    assert len(calls) == 4  # nothing decoded again
    assert torch.equal(first.dataset["pixel_values"][:], second.dataset["pixel_values"][:])
    build_dataset(DataConfig.from_dict({**cfg.to_dict(), "resolution": 12}))
    assert len(calls) == 8  # an option changed
    stat = os.stat(nih_dir / "img2.png")
    os.utime(nih_dir / "img2.png", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    build_dataset(cfg)
    assert len(calls) == 12  # a file changed


def test_bad_files_skip_or_error(tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    names = write_pngs(folder, [(16, 16), (16, 16)])
    (folder / "corrupt.png").write_bytes(b"not an image")
    pd.DataFrame(
        {"Path": [*names, "corrupt.png", "missing.png"], "finding": ["a", "b", "a", "b"]}
    ).to_csv(folder / "metadata.csv", index=False)
    cfg = DataConfig(source="csv", path=str(folder), findings_column="finding", resolution=8,
                     cache_dir=str(tmp_path / "cache"))  # fmt: skip
    built = build_dataset(cfg)
    assert len(built) == 2
    skipped = {os.path.basename(path): reason for path, reason in built.skipped}
    assert set(skipped) == {"corrupt.png", "missing.png"}
    # a file that is not there and a file that is there but cannot be decoded are told apart
    assert skipped["missing.png"] == "missing file: not found (listed in metadata.csv row 5)"
    assert skipped["corrupt.png"].startswith("unreadable file: ValueError: cannot decode image")
    assert "skipped files: 2 (1 missing file, 1 unreadable file)" in built.summary()
    assert build_dataset(cfg).skipped == built.skipped  # still reported when the cache is reused
    strict = DataConfig.from_dict({**cfg.to_dict(), "bad_files": "error"})
    # missing files are found before any decoding
    with pytest.raises(FileNotFoundError, match=r"1 image file\(s\) not found: row 5 \(.*missing\.png\) of "):
        build_dataset(strict)
    pd.DataFrame({"Path": [*names, "corrupt.png"], "finding": ["a", "b", "b"]}).to_csv(
        folder / "metadata.csv", index=False
    )
    with pytest.raises(ValueError, match=r"unreadable file: .*corrupt\.png \(listed in metadata.csv row 4\)"):
        build_dataset(strict)


def test_every_file_bad_is_an_error(tmp_path):
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "a.png").write_bytes(b"junk")
    with pytest.raises(ValueError, match=r"no readable image .*bad/a\.png"):
        build_dataset(DataConfig(source="folder", path=str(folder), cache_dir=str(tmp_path / "cache")))


def test_dicom_and_folder_sources_are_unlabelled(tmp_path):
    from pydicom.data import get_testdata_file

    folder = tmp_path / "study" / "series"
    folder.mkdir(parents=True)
    shutil.copy(get_testdata_file("emri_small.dcm"), folder / "mr.dcm")  # 10 frames
    shutil.copy(get_testdata_file("CT_small.dcm"), folder / "CT0001")  # no suffix: found by magic
    write_pngs(tmp_path / "study", [(20, 10)])
    dicom = build_dataset(DataConfig(source="dicom", path=str(tmp_path / "study"), resolution=8,
                                     cache_dir=str(tmp_path / "cache")))  # fmt: skip
    assert len(dicom) == 11 and dicom.label_names == [] and dicom[0]["labels"].shape == (0,)
    assert sum("#" in source for source in dicom.dataset["source"]) == 10
    folder_built = build_dataset(
        DataConfig(source="folder", path=str(tmp_path / "study"), resolution=8, max_samples=5,
                   cache_dir=str(tmp_path / "cache"))  # fmt: skip
    )
    assert len(folder_built) == 5 and folder_built[0]["text"] == ""


def test_config_validation():
    with pytest.raises(ValueError, match="source must be one of .* got 'nifti'"):
        DataConfig(source="nifti", path="x")
    with pytest.raises(ValueError, match="uncertain_policy .* got 'maybe'"):
        DataConfig(source="csv", path="x", uncertain_policy="maybe")
    with pytest.raises(ValueError, match="resolution must be an integer >= 8, got 4"):
        DataConfig(source="csv", path="x", resolution=4)
    with pytest.raises(ValueError, match=r"only apply to source='csv'"):
        DataConfig(source="medmnist", path="x.npz", filters={"view": ["PA"]})
    with pytest.raises(ValueError, match=r"unknown DataConfig keys \['resolutoin'\]"):
        DataConfig.from_dict({"source": "csv", "path": "x", "resolutoin": 64})
    cfg = DataConfig.from_dict({"source": "dicom", "path": "x", "window": [40, 400]})
    assert cfg.window == (40.0, 400.0) and DataConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(FileNotFoundError, match="no_such_dir"):
        build_dataset(DataConfig(source="folder", path="no_such_dir"))
