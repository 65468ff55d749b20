"""Readers on real files: pydicom / pydicom-data DICOM test files, MedMNIST npz, Pillow images."""

from __future__ import annotations

import importlib.util
import shutil

import numpy as np
import pydicom
import pytest
from PIL import Image

from medgen.data import read_dicom, read_image
from medgen.data.readers import DicomDecoderMissingError, iter_files, read_medmnist, window_image

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def dicom_file(name: str) -> str:
    from pydicom.data import get_testdata_file

    path = get_testdata_file(name)
    if path is None:
        pytest.skip(f"DICOM test file {name} not installed (pip install pydicom-data)")
    return str(path)


def raw_pixels(name: str) -> tuple[np.ndarray, pydicom.Dataset]:
    ds = pydicom.dcmread(dicom_file(name))
    return ds.pixel_array.astype(np.float32), ds


def test_ct_modality_lut_gives_hounsfield_units():
    raw, ds = raw_pixels("CT_small.dcm")
    frames, meta = read_dicom(dicom_file("CT_small.dcm"))
    assert frames.shape == (1, 128, 128) and frames.dtype == np.float32
    expected = raw * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    np.testing.assert_allclose(frames[0], expected)
    assert meta["modality"] == "CT" and meta["rescale"] == (1.0, -1024.0) and meta["voi"] is None


def test_window_argument_overrides_and_maps_to_unit_range():
    raw, ds = raw_pixels("CT_small.dcm")
    frames, meta = read_dicom(dicom_file("CT_small.dcm"), window=(40, 400))
    hounsfield = raw + float(ds.RescaleIntercept)
    np.testing.assert_allclose(frames[0], np.clip((hounsfield - (40 - 200)) / 400, 0, 1), atol=1e-6)
    assert meta["voi"] == "window_override" and meta["window"] == (40.0, 400.0)
    assert frames.min() == 0.0 and frames.max() == 1.0  # soft-tissue window saturates bone and air
    with pytest.raises(ValueError, match="width"):
        read_dicom(dicom_file("CT_small.dcm"), window=(40, 0))


def test_mr_16bit_uses_the_files_window():
    raw, ds = raw_pixels("MR_small.dcm")
    assert ds.BitsStored == 16 and raw.max() > 255
    frames, meta = read_dicom(dicom_file("MR_small.dcm"))
    center, width = float(ds.WindowCenter), float(ds.WindowWidth)
    np.testing.assert_allclose(frames[0], window_image(raw, center, width))
    assert meta["voi"] == "window" and meta["value_range"] == (0.0, 1.0)


def test_cr_monochrome1_is_inverted():
    raw, ds = raw_pixels("RG1_UNCR.dcm")
    assert ds.PhotometricInterpretation == "MONOCHROME1" and ds.Modality == "CR"
    frames, meta = read_dicom(dicom_file("RG1_UNCR.dcm"))
    windowed = window_image(raw, float(ds.WindowCenter), float(ds.WindowWidth))
    np.testing.assert_allclose(frames[0], 1.0 - windowed, atol=1e-6)
    assert meta["inverted"] is True
    # high raw value (white in MONOCHROME2 terms) now reads dark
    assert np.corrcoef(frames[0].ravel()[::97], raw.ravel()[::97])[0, 1] < -0.99


def test_jpeg2000_and_rle_decode_like_the_uncompressed_file():
    reference, _ = read_dicom(dicom_file("MR_small.dcm"))
    rle, meta = read_dicom(dicom_file("MR_small_RLE.dcm"))
    np.testing.assert_array_equal(rle, reference)
    assert "RLE" in meta["transfer_syntax"]
    try:
        j2k, _ = read_dicom(dicom_file("MR_small_jp2klossless.dcm"))
    except DicomDecoderMissingError:
        pytest.skip("no JPEG 2000 decoder (Pillow without OpenJPEG, no pylibjpeg)")
    np.testing.assert_array_equal(j2k, reference)


def test_multiframe_mr_returns_every_frame():
    frames, meta = read_dicom(dicom_file("emri_small.dcm"))
    assert frames.shape == (10, 64, 64) and meta["num_frames"] == 10
    assert not np.array_equal(frames[0], frames[5])
    image, image_meta = read_image(dicom_file("emri_small.dcm"), frame=5)
    np.testing.assert_array_equal(image, frames[5])
    with pytest.raises(ValueError, match="frame 10 out of range"):
        read_image(dicom_file("emri_small.dcm"), frame=10)


def test_ultrasound_rgb_and_palette_color():
    frames, meta = read_dicom(dicom_file("US1_UNCR.dcm"))
    assert frames.shape == (1, 480, 640, 3) and meta["color"] and meta["modality"] == "US"
    palette, palette_meta = read_dicom(dicom_file("OBXXXX1A_2frame.dcm"))
    assert palette.shape == (2, 600, 800, 3) and palette_meta["photometric_interpretation"] == "PALETTE COLOR"
    gray, _ = read_image(dicom_file("US1_UNCR.dcm"), keep_rgb=False)
    assert gray.shape == (480, 640)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("MR_truncated.dcm", "corrupt pixel data"),
        ("no_meta.dcm", "not a DICOM file"),
        ("rtplan.dcm", "no pixel data"),
    ],
)
def test_malformed_dicom_raises_value_error_naming_the_file(name, message):
    with pytest.raises(ValueError, match=message) as info:
        read_dicom(dicom_file(name))
    assert name in str(info.value)


@pytest.mark.skipif(importlib.util.find_spec("pylibjpeg") is not None, reason="pylibjpeg is installed")
def test_compressed_dicom_without_plugin_names_what_to_install():
    with pytest.raises(DicomDecoderMissingError) as info:
        read_dicom(dicom_file("JPEG-lossy.dcm"))
    message = str(info.value)
    assert "JPEG-lossy.dcm" in message and "pylibjpeg-libjpeg" in message and "medgen[dicom-codecs]" in message
    assert isinstance(info.value, ValueError)


def test_dicom_recognised_by_magic_without_suffix(tmp_path):
    target = tmp_path / "IM0001"
    shutil.copy(dicom_file("CT_small.dcm"), target)
    image, meta = read_image(target)
    assert meta["format"] == "dicom" and image.shape == (128, 128)
    assert list(iter_files(tmp_path, dicom_only=True)) == [target]


def test_png_8_and_16_bit_and_rgb(tmp_path):
    values16 = (np.arange(20 * 30, dtype=np.uint16).reshape(20, 30) * 100).astype(np.uint16)
    Image.fromarray(values16).save(tmp_path / "deep.png")
    image, meta = read_image(tmp_path / "deep.png")
    np.testing.assert_array_equal(image, values16.astype(np.float32))
    assert image.dtype == np.float32 and image.max() > 255

    gray_as_rgb = np.repeat(np.arange(64, dtype=np.uint8).reshape(8, 8)[..., None], 3, axis=2)
    Image.fromarray(gray_as_rgb).save(tmp_path / "gray_rgb.jpg", quality=100)
    assert read_image(tmp_path / "gray_rgb.jpg")[0].ndim in (2, 3)
    Image.fromarray(gray_as_rgb).save(tmp_path / "gray_rgb.png")
    assert read_image(tmp_path / "gray_rgb.png")[0].shape == (8, 8)  # equal channels collapse

    color = np.zeros((8, 8, 3), dtype=np.uint8)
    color[..., 0] = 200
    Image.fromarray(color).save(tmp_path / "red.png")
    assert read_image(tmp_path / "red.png")[0].shape == (8, 8, 3)
    assert read_image(tmp_path / "red.png", keep_rgb=False)[0].shape == (8, 8)


def test_missing_and_corrupt_images(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothere.png"):
        read_image(tmp_path / "nothere.png")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    with pytest.raises(ValueError, match="broken.png"):
        read_image(tmp_path / "broken.png")
    (tmp_path / "fake.dcm").write_bytes(b"\0" * 300)
    with pytest.raises(ValueError, match="fake.dcm"):
        read_image(tmp_path / "fake.dcm")


def test_medmnist_real_file_splits_and_labels(pneumoniamnist_npz):
    with np.load(pneumoniamnist_npz) as archive:
        raw = {split: archive[f"{split}_labels"][:, 0] for split in ("train", "val", "test")}
        shapes = {split: archive[f"{split}_images"].shape for split in ("train", "val", "test")}
    for split in ("train", "val", "test"):
        images, vectors, names, multi_label = read_medmnist(pneumoniamnist_npz, split)
        assert images.shape == shapes[split] and images.shape[1:] == (28, 28)
        assert names == ["normal", "pneumonia"] and multi_label is False
        assert vectors.shape == (len(images), 2) and vectors.dtype == np.float32
        np.testing.assert_array_equal(vectors.argmax(1), raw[split])
        np.testing.assert_array_equal(vectors.sum(1), 1.0)
    with pytest.raises(ValueError, match=r"split 'validation' not in .*\['test', 'train', 'val'\]"):
        read_medmnist(pneumoniamnist_npz, "validation")
    with pytest.raises(ValueError, match="3 label names"):
        read_medmnist(pneumoniamnist_npz, "val", labels=["a", "b", "c"])


def test_medmnist_multilabel_any_size_and_no_pickle(tmp_path):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, size=(5, 14)).astype(np.uint8)
    path = tmp_path / "chestmnist_64.npz"
    np.savez(path, train_images=rng.integers(0, 255, (5, 64, 64), dtype=np.uint8), train_labels=labels)
    images, vectors, names, multi_label = read_medmnist(path, "train")
    assert images.shape == (5, 64, 64) and multi_label and names[0] == "atelectasis" and len(names) == 14
    np.testing.assert_array_equal(vectors, labels.astype(np.float32))

    pickled = tmp_path / "evil.npz"
    np.savez(pickled, train_images=np.array([object()], dtype=object), train_labels=np.zeros((1, 1)))
    with pytest.raises(ValueError, match="evil.npz"):
        read_medmnist(pickled, "train")
    with pytest.raises(FileNotFoundError, match="absent.npz"):
        read_medmnist(tmp_path / "absent.npz")
