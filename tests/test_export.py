"""PNG / NPY / synthetic DICOM export: exact pixels back, DICOM marked synthetic, no overwrites."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.uid import SecondaryCaptureImageStorage

from medgen import __version__
from medgen.export import (
    SyntheticStudy,
    build_dicom,
    export_images,
    RunWriter,
    new_run_dir,
    quantize,
    read_private_params,
    write_png,
)


def _images(count: int = 3, size: int = 16, channels: int = 1, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    images = rng.random((count, size, size, channels), dtype=np.float32)
    images[0, 0, 0] = 0.0  # make sure both ends of the range are exercised
    images[0, 0, 1] = 1.0
    return images


RUN_PARAMS = {
    "labels": ["Pneumonia"],
    "num_inference_steps": 4,
    "guidance_scale": 2.0,
    "pipeline": "tiny-pipeline",
    "postprocess": {"preset": "thesis", "steps": [{"function": "bilateral_filter", "params": {}}]},
}


@pytest.mark.parametrize("bit_depth", [8, 16])
def test_png_round_trip_is_exact_to_quantisation(tmp_path, bit_depth):
    images = _images()
    paths = export_images(images, tmp_path, formats=("png",), params=RUN_PARAMS, bit_depth=bit_depth)
    pngs = [p for p in paths if p.suffix == ".png"]
    assert len(pngs) == 3
    max_value = (1 << bit_depth) - 1
    for image, path in zip(images, pngs):
        with Image.open(path) as png:
            assert png.mode == ("L" if bit_depth == 8 else "I;16")
            pixels = np.asarray(png)
        np.testing.assert_array_equal(pixels, quantize(image[..., 0], bit_depth))
        assert np.abs(pixels / max_value - image[..., 0]).max() <= 0.5 / max_value + 1e-7


def test_rgb_png_and_16_bit_rgb_refused(tmp_path):
    image = _images(1, channels=3)[0]
    path = write_png(image, tmp_path / "rgb.png")
    with Image.open(path) as png:
        assert png.mode == "RGB"
        np.testing.assert_array_equal(np.asarray(png), quantize(image, 8))
    with pytest.raises(ValueError, match="grayscale"):
        write_png(image, tmp_path / "rgb16.png", bit_depth=16)


def test_npy_keeps_float32_values_without_pickle(tmp_path):
    images = _images(2)
    paths = export_images(images, tmp_path, formats="npy")
    for image, path in zip(images, [p for p in paths if p.suffix == ".npy"]):
        loaded = np.load(path, allow_pickle=False)
        assert loaded.dtype == np.float32
        np.testing.assert_array_equal(loaded, image)


@pytest.mark.parametrize("bit_depth", [8, 16])
def test_dicom_is_a_valid_synthetic_secondary_capture(tmp_path, bit_depth):
    images = _images(3)
    seeds = [{"seed": 10 + i} for i in range(3)]
    paths = export_images(
        images, tmp_path, formats="dcm", params=RUN_PARAMS, image_params=seeds, bit_depth=bit_depth, modality="DX"
    )
    dicoms = [p for p in paths if p.suffix == ".dcm"]
    assert len(dicoms) == 3
    datasets = []
    for path in dicoms:
        assert path.read_bytes()[128:132] == b"DICM"  # preamble + magic: DICOM File Format
        datasets.append(pydicom.dcmread(path))  # no force=True needed
    first = datasets[0]
    assert first.file_meta.MediaStorageSOPClassUID == SecondaryCaptureImageStorage
    assert first.SOPClassUID == SecondaryCaptureImageStorage
    assert first.SyntheticData == "YES"
    assert list(first.ImageType) == ["DERIVED", "SECONDARY"]
    assert first.ConversionType == "SYN"
    assert first.Modality == "DX"
    assert first.PhotometricInterpretation == "MONOCHROME2"
    assert first.BitsAllocated == bit_depth and first.BitsStored == bit_depth
    assert float(first.WindowWidth) == 2**bit_depth - 1 and first.VOILUTFunction == "LINEAR_EXACT"
    assert str(first.PatientName) == "SYNTHETIC^PNEUMONIA"
    assert first.PatientID.startswith("SYNTH-")
    assert first.PatientBirthDate == "" and first.PatientSex == ""
    equipment = first.ContributingEquipmentSequence[0]
    purpose = equipment.PurposeOfReferenceCodeSequence[0]
    assert (purpose.CodeValue, purpose.CodingSchemeDesignator, purpose.CodeMeaning) == (
        "109100",
        "DCM",
        "Synthesizing Equipment",
    )
    assert equipment.Manufacturer == "medgen" and equipment.SoftwareVersions == __version__

    # One study and series per run, one SOP instance per image, numbered in order.
    assert len({ds.StudyInstanceUID for ds in datasets}) == 1
    assert len({ds.SeriesInstanceUID for ds in datasets}) == 1
    assert len({ds.SOPInstanceUID for ds in datasets}) == 3
    assert all(ds.SOPInstanceUID == ds.file_meta.MediaStorageSOPInstanceUID for ds in datasets)
    assert [ds.InstanceNumber for ds in datasets] == [1, 2, 3]

    # Generation parameters travel with each file.
    for ds, seed in zip(datasets, seeds):
        stored = read_private_params(ds)
        assert stored["seed"] == seed["seed"]
        assert stored["labels"] == ["Pneumonia"] and stored["postprocess"]["preset"] == "thesis"
        assert f"seed={seed['seed']}" in ds.ImageComments
        assert "thesis" in ds.DerivationDescription

    # Pixels read back exactly as quantised.
    max_value = (1 << bit_depth) - 1
    for ds, image in zip(datasets, images):
        np.testing.assert_array_equal(ds.pixel_array, quantize(image[..., 0], bit_depth))
        assert np.abs(ds.pixel_array / max_value - image[..., 0]).max() <= 0.5 / max_value + 1e-7

    # A second run gets new study and series UIDs.
    again = export_images(images[:1], tmp_path / "again", formats="dcm", params=RUN_PARAMS)
    assert pydicom.dcmread(again[0]).StudyInstanceUID != first.StudyInstanceUID


def test_dicom_carries_no_real_identifiers():
    ds = build_dicom(_images(1)[0], SyntheticStudy(label="Effusion,Pneumonia"), params=RUN_PARAMS)
    assert str(ds.PatientName) == "SYNTHETIC^EFFUSION_PNEUMONIA"
    for keyword in ("InstitutionName", "OperatorsName", "PerformingPhysicianName", "OtherPatientIDs"):
        assert keyword not in ds
    assert ds.ReferringPhysicianName == "" and ds.AccessionNumber == ""


def test_unknown_modality_is_rejected():
    with pytest.raises(ValueError, match="unknown DICOM modality 'XR'"):
        SyntheticStudy(modality="XR")


@pytest.mark.parametrize("bit_depth", [8, 16])
def test_project_dicom_reader_reads_same_pixels(tmp_path, bit_depth):
    images = _images(2)
    paths = export_images(images, tmp_path, formats="dcm", bit_depth=bit_depth)
    from medgen.data import read_dicom

    max_value = (1 << bit_depth) - 1
    for image, path in zip(images, [p for p in paths if p.suffix == ".dcm"]):
        frames, meta = read_dicom(path)
        assert meta["voi"] == "window" and meta["modality"] == "OT"
        assert frames.shape == (1, *image.shape[:2])
        # The reader returns [0, 1] intensities; they match the export to the quantisation step.
        np.testing.assert_allclose(frames[0], quantize(image[..., 0], bit_depth) / max_value, atol=1e-6)
        assert np.abs(frames[0] - image[..., 0]).max() <= 0.5 / max_value + 1e-6


def test_params_json_lists_every_file_and_parameter(tmp_path):
    images = _images(2)
    paths = export_images(
        images, tmp_path, formats="png,dcm,npy", params=RUN_PARAMS, image_params=[{"seed": 5}, {"seed": 6}]
    )
    assert len(paths) == 2 * 3 + 1 and paths[-1].name == "params.json"
    document = json.loads(paths[-1].read_text())
    assert document["labels"] == ["Pneumonia"] and document["num_inference_steps"] == 4
    assert document["medgen_version"] == __version__ and "created" in document
    assert document["count"] == 2 and document["formats"] == ["png", "dcm", "npy"]
    assert [image["seed"] for image in document["images"]] == [5, 6]
    for record in document["images"]:
        for name in record["files"]:
            assert (tmp_path / name).is_file()
    assert document["dicom"]["patient_id"].startswith("SYNTH-")


def test_existing_files_are_never_overwritten(tmp_path):
    images = _images(2)
    export_images(images, tmp_path, formats="png")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(ValueError, match=f"{tmp_path}.*never overwrites"):
        export_images(_images(2, seed=1), tmp_path, formats=("png", "npy"))
    after = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert after == before  # nothing written, not even the formats that did not clash


def test_new_run_dir_gives_fresh_folders(tmp_path):
    first, second = new_run_dir(tmp_path), new_run_dir(tmp_path)
    assert first != second and first.is_dir() and second.is_dir()
    assert first.parent == tmp_path


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"formats": "png,jpeg"}, "unknown export format 'jpeg'"),
        ({"bit_depth": 12}, "bit_depth must be 8 or 16"),
        ({"image_params": [{"seed": 1}]}, "1 image_params for 2 images"),
        ({"prefix": "../x"}, "prefix"),
        ({"modality": "XR", "formats": "dcm"}, "modality"),
    ],
)
def test_bad_arguments_raise_clear_errors(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        export_images(_images(2), tmp_path / "out", **kwargs)


def test_out_of_range_images_are_rejected(tmp_path):
    images = _images(2)
    images[1] *= 255  # the second image is bad: nothing at all is written
    with pytest.raises(ValueError, match=r"image 1: expected image values in \[0, 1\]"):
        export_images(images, tmp_path, formats="png")
    with pytest.raises(ValueError, match="no images"):
        export_images(np.zeros((0, 8, 8, 1), np.float32), tmp_path)
    assert not any(Path(tmp_path).iterdir())


def test_run_writer_writes_batches_and_records_interrupted_runs(tmp_path):
    with RunWriter(tmp_path / "full", formats="png,dcm", params=RUN_PARAMS, count=4) as run:
        run.write(_images(3), [{"seed": s} for s in range(3)])
        run.write(_images(1, seed=1), [{"seed": 3}])
    document = json.loads((tmp_path / "full" / "params.json").read_text())
    assert document["complete"] is True and document["count"] == 4
    assert [record["seed"] for record in document["images"]] == [0, 1, 2, 3]
    numbers = [pydicom.dcmread(tmp_path / "full" / f"image_{i:05d}.dcm").InstanceNumber for i in range(4)]
    assert numbers == [1, 2, 3, 4]

    with pytest.raises(KeyboardInterrupt):
        with RunWriter(tmp_path / "cut", formats="png", params=RUN_PARAMS, count=4) as run:
            run.write(_images(2))
            raise KeyboardInterrupt
    document = json.loads((tmp_path / "cut" / "params.json").read_text())
    assert document["complete"] is False and document["count"] == 2

    with pytest.raises(ValueError, match="planned for 2 images"):
        with RunWriter(tmp_path / "over", count=2) as run:
            run.write(_images(3))


def test_a_full_disk_half_way_through_an_image_leaves_no_file_of_it(tmp_path, monkeypatch):
    """PNG written, then the disk fills during the DICOM file: the run leaves no file at all."""
    from pydicom.dataset import Dataset

    def save_as(self, fp, *args, **kwargs):
        fp.write(b"\0" * 128 + b"DICM")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Dataset, "save_as", save_as)
    out = tmp_path / "out"
    with pytest.raises(OSError, match=f"cannot write {out / 'image_00000.dcm'}: No space left on device"):
        export_images(_images(2), out, formats="png,dcm", params=RUN_PARAMS)
    assert not out.exists()
