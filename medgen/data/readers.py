"""Image readers behind one interface: `read_x(path) -> (array, meta)`.

Following MONAI's reader habit, every reader returns a float32 NumPy array plus a plain
`meta` dict (path, format, original shape, intensity steps applied), and optional
dependencies are imported inside the function that needs them. Intensity handling is
explicit: DICOM modality LUT (rescale slope/intercept), then VOI LUT or window, then
MONOCHROME1 inversion, each recorded in `meta`.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

DICOM_SUFFIXES = (".dcm", ".dicom", ".dic")
PIL_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
DICOM_CODECS_HINT = (
    "install the DICOM decoders: `pip install pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg pylibjpeg-rle` "
    "(or `pip install medgen[dicom-codecs]`)"
)


class DicomDecoderMissingError(ValueError):
    """A DICOM file uses a compressed transfer syntax that no installed plugin decodes.

    A `ValueError` so that `bad_files="skip"` skips such a file and the CLI prints one line.
    """


class ImageTooLargeError(ValueError):
    """Pillow's decompression-bomb limit refused an image; the message names the file."""


def is_dicom(path: str | Path) -> bool:
    """True for a DICOM suffix or, whatever the suffix, the `DICM` magic at byte 128."""
    path = Path(path)
    if path.suffix.lower() in DICOM_SUFFIXES:
        return True
    try:
        with open(path, "rb") as handle:
            handle.seek(128)
            return handle.read(4) == b"DICM"
    except OSError:
        return False


def _check_exists(path: Path) -> None:
    if not path.exists():
        raise FileNotFoundError(f"image file not found: {path}")
    if path.is_dir():
        raise ValueError(f"expected an image file, got a directory: {path}")


def read_image(
    path: str | Path,
    *,
    keep_rgb: bool = True,
    window: tuple[float, float] | None = None,
    frame: int = 0,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Read one 2-D image: PNG/JPEG/TIFF/BMP through Pillow, DICOM through `read_dicom`.

    Args:
        path: image file. DICOM is recognised by its suffix or by the `DICM` magic, so
            suffix-less files from PACS exports work.
        keep_rgb: keep colour images as `(H, W, 3)`; if False they are converted to
            luminance. Colour files whose three channels are equal (common for chest
            X-rays saved as RGB) are always returned as `(H, W)`.
        window: DICOM `(center, width)` overriding the file's VOI LUT / window.
        frame: which frame of a multi-frame DICOM to return (`read_dicom` gives them all).

    Returns:
        `(image, meta)`: float32 `(H, W)` or `(H, W, 3)` in the file's own intensity
        units (0-255 for 8-bit, 0-65535 for 16-bit PNG, windowed values for DICOM), and
        a dict with at least `path`, `format` and `shape`.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is corrupt or not an image (the message names the file).
    """
    path = Path(path)
    _check_exists(path)
    if is_dicom(path):
        frames, meta = read_dicom(path, window=window)
        if not 0 <= frame < frames.shape[0]:
            raise ValueError(f"frame {frame} out of range for {path}: it has {frames.shape[0]} frame(s)")
        image = frames[frame]
        meta["frame"] = frame
    else:
        image, meta = _read_pillow(path)
    if image.ndim == 3:
        image = _collapse_gray_rgb(image)
    if image.ndim == 3 and not keep_rgb:
        from skimage.color import rgb2gray

        image = rgb2gray(image).astype(np.float32)
    meta["shape"] = tuple(image.shape)
    return image, meta


def _collapse_gray_rgb(image: np.ndarray) -> np.ndarray:
    if np.array_equal(image[..., 0], image[..., 1]) and np.array_equal(image[..., 0], image[..., 2]):
        return image[..., 0]
    return image


def _open_pillow(path: Path) -> Any:
    """`Image.open` whose decompression-bomb error and warning name the file.

    Pillow's own messages give only the pixel count, useless in a folder of thousands.
    """
    from PIL import Image

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", Image.DecompressionBombWarning)
        try:
            opened = Image.open(path)
        except Image.DecompressionBombError as error:
            raise ImageTooLargeError(
                f"refusing to decode {path}: {error} Raise PIL.Image.MAX_IMAGE_PIXELS if you trust this file."
            ) from error
    for warning in caught:
        if issubclass(warning.category, Image.DecompressionBombWarning):
            warnings.warn(f"{path}: {warning.message}", Image.DecompressionBombWarning, stacklevel=3)
        else:
            warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
    return opened


def _read_pillow(path: Path) -> tuple[np.ndarray, dict[str, Any]]:
    from PIL import ImageOps, UnidentifiedImageError

    try:
        with _open_pillow(path) as opened:
            opened.load()
            # JPEGs from phones and some viewers store rotation in EXIF only.
            image = ImageOps.exif_transpose(opened)
            mode = image.mode
            if mode in ("P", "PA", "RGBA", "CMYK", "YCbCr", "LAB", "HSV"):
                image = image.convert("RGB")
            elif mode == "LA":
                image = image.convert("L")
            elif mode == "1":
                image = image.convert("L")
            array = np.asarray(image)
    except ImageTooLargeError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise ValueError(f"cannot decode image {path}: {error}") from error
    if array.dtype.kind not in "uif" or array.ndim not in (2, 3):
        raise ValueError(f"unsupported image layout in {path}: mode {mode}, shape {array.shape}")
    meta = {
        "path": str(path),
        "format": "pillow",
        "mode": mode,
        "bit_depth": int(array.dtype.itemsize * 8),
        "original_shape": tuple(array.shape),
        # Nominal range of integer pixels, for `normalization="range"`.
        "value_range": (0.0, float(np.iinfo(array.dtype).max)) if array.dtype.kind in "ui" else None,
    }
    return array.astype(np.float32), meta


def read_dicom(path: str | Path, window: tuple[float, float] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
    """Read every frame of a DICOM file as display-ready intensities.

    Steps (each recorded in `meta`): decode the pixel data; for MONOCHROME images apply
    the modality LUT (rescale slope/intercept, e.g. CT Hounsfield units), then the VOI
    LUT or window stored in the file, or `window` if given; invert MONOCHROME1 (where
    0 means white) within the image's value range so that high always means bright.
    PALETTE COLOR images go through their colour LUT; YBR images are converted to RGB.

    Args:
        path: DICOM file.
        window: `(center, width)` overriding the file's VOI LUT and window.

    Returns:
        `(frames, meta)`: float32 `(F, H, W)` for monochrome or `(F, H, W, 3)` for colour
        (F = 1 for single-frame files), and a dict with `modality`,
        `photometric_interpretation`, `bits_stored`, `num_frames`, `transfer_syntax`,
        `voi` (`"lut"`, `"window"`, `"window_override"` or None), `inverted`, ...

    Raises:
        FileNotFoundError: the file does not exist.
        DicomDecoderMissingError (a ValueError): compressed pixel data that no installed
            plugin can decode; the message names the packages to install.
        ValueError: not DICOM, no pixel data, or truncated/corrupt pixel data.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError
    from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut

    path = Path(path)
    _check_exists(path)
    try:
        ds = pydicom.dcmread(path)
    except InvalidDicomError as error:
        raise ValueError(f"not a DICOM file (no DICM preamble/meta header): {path}") from error
    except Exception as error:  # pydicom raises many types for truncated headers
        raise ValueError(f"malformed DICOM file {path}: {error}") from error

    file_meta = getattr(ds, "file_meta", None)
    transfer_syntax = file_meta.get("TransferSyntaxUID") if file_meta is not None else None
    if not any(tag in ds for tag in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        raise ValueError(f"DICOM file has no pixel data (modality {ds.get('Modality')!r}): {path}")
    try:
        pixels = ds.pixel_array
    except (RuntimeError, NotImplementedError) as error:
        if transfer_syntax is not None and transfer_syntax.is_compressed:
            raise DicomDecoderMissingError(
                f"cannot decode {path}: no installed plugin decoded its compressed transfer syntax "
                f"{transfer_syntax.name!r}; {DICOM_CODECS_HINT}. ({error})"
            ) from error
        raise ValueError(f"cannot decode pixel data of {path}: {error}") from error
    except Exception as error:  # truncated pixel data, inconsistent group 0028 values, ...
        raise ValueError(f"corrupt pixel data in DICOM file {path}: {error}") from error

    num_frames = int(ds.get("NumberOfFrames", 1) or 1)
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    samples_per_pixel = int(ds.get("SamplesPerPixel", 1))
    meta: dict[str, Any] = {
        "path": str(path),
        "format": "dicom",
        "modality": ds.get("Modality"),
        "photometric_interpretation": photometric,
        "bits_allocated": int(ds.get("BitsAllocated", 0)),
        "bits_stored": int(ds.get("BitsStored", ds.get("BitsAllocated", 0))),
        "num_frames": num_frames,
        "transfer_syntax": transfer_syntax.name if transfer_syntax is not None else None,
        "pixel_spacing": [float(v) for v in ds.PixelSpacing] if "PixelSpacing" in ds else None,
        "rescale": None,
        "voi": None,
        "inverted": False,
        "value_range": None,
    }

    if photometric == "PALETTE COLOR":
        pixels = apply_color_lut(pixels, ds)
    if photometric.startswith("MONOCHROME") and samples_per_pixel == 1:
        array = apply_modality_lut(pixels, ds)
        if "RescaleSlope" in ds or "ModalityLUTSequence" in ds:
            meta["rescale"] = (float(ds.get("RescaleSlope", 1.0)), float(ds.get("RescaleIntercept", 0.0)))
        array = np.asarray(array, dtype=np.float32)
        file_window = _file_window(ds)
        if window is not None:
            if window[1] <= 0:
                raise ValueError(f"window width must be > 0, got {window[1]} (for {path})")
            meta["voi"], meta["window"] = "window_override", (float(window[0]), float(window[1]))
            array = window_image(array, *window)
        elif "VOILUTSequence" in ds or ("WindowCenter" in ds and file_window is None):
            # LUT tables and SIGMOID windows: pydicom implements them; rescale its output to [0, 1].
            meta["voi"] = "lut"
            array = np.asarray(apply_voi_lut(array, ds), dtype=np.float32)
            array = _minmax(array)
        elif file_window is not None:
            meta["voi"], meta["window"] = "window", file_window
            array = window_image(array, *file_window)
        if meta["voi"] is not None:
            meta["value_range"] = (0.0, 1.0)
        if photometric == "MONOCHROME1":
            # MONOCHROME1: the minimum value is displayed white. Mirror within the range.
            low, high = meta.get("value_range") or (float(array.min()), float(array.max()))
            array = (low + high) - array
            meta["inverted"] = True
    else:
        array = np.asarray(pixels, dtype=np.float32)

    color = array.ndim == (4 if num_frames > 1 else 3) and array.shape[-1] == 3
    if num_frames == 1 or array.ndim == (3 if color else 2):
        array = array[None]
    meta["color"] = bool(color)
    meta["original_shape"] = tuple(array.shape)
    return np.ascontiguousarray(array, dtype=np.float32), meta


def window_image(image: np.ndarray, center: float, width: float) -> np.ndarray:
    """Linear DICOM window (`LINEAR_EXACT`, PS3.3 C.11.2.1.3) mapped to [0, 1].

    Values below `center - width / 2` become 0 (black), above `center + width / 2` 1.
    """
    if width <= 0:
        raise ValueError(f"window width must be > 0, got {width}")
    low = float(center) - float(width) / 2.0
    return np.clip((np.asarray(image, dtype=np.float32) - low) / float(width), 0.0, 1.0).astype(np.float32)


def _file_window(ds: Any) -> tuple[float, float] | None:
    """The first linear (center, width) stored in the file, or None (absent, SIGMOID, bad)."""
    if "WindowCenter" not in ds or "WindowWidth" not in ds:
        return None
    if str(ds.get("VOILUTFunction", "LINEAR")).upper() not in ("LINEAR", "LINEAR_EXACT"):
        return None
    center, width = ds.WindowCenter, ds.WindowWidth
    # Several windows may be stored (MultiValue); the first is the default display.
    center = center if isinstance(center, (int, float)) else center[0]
    width = width if isinstance(width, (int, float)) else width[0]
    try:
        center, width = float(center), float(width)
    except (TypeError, ValueError):
        return None
    return (center, width) if width > 0 else None


def _minmax(array: np.ndarray) -> np.ndarray:
    low, high = float(array.min()), float(array.max())
    if high <= low:
        return np.zeros_like(array, dtype=np.float32)
    return ((array - low) / (high - low)).astype(np.float32)


def read_frames(
    path: str | Path, *, keep_rgb: bool = True, window: tuple[float, float] | None = None
) -> tuple[list[np.ndarray], dict[str, Any]]:
    """Every 2-D image a file holds: all frames of a DICOM, the single image otherwise."""
    path = Path(path)
    _check_exists(path)
    if is_dicom(path):
        frames, meta = read_dicom(path, window=window)
        images = []
        for frame in frames:
            if frame.ndim == 3:
                frame = _collapse_gray_rgb(frame)
            if frame.ndim == 3 and not keep_rgb:
                from skimage.color import rgb2gray

                frame = rgb2gray(frame).astype(np.float32)
            images.append(frame)
        return images, meta
    image, meta = read_image(path, keep_rgb=keep_rgb)
    return [image], meta


# MedMNIST label names, from the MedMNIST v2 INFO table (github.com/MedMNIST/MedMNIST, Apache-2.0).
MEDMNIST_LABELS: dict[str, list[str]] = {
    "pathmnist": [
        "adipose", "background", "debris", "lymphocytes", "mucus", "smooth muscle",
        "normal colon mucosa", "cancer-associated stroma", "colorectal adenocarcinoma epithelium",
    ],
    "chestmnist": [
        "atelectasis", "cardiomegaly", "effusion", "infiltration", "mass", "nodule", "pneumonia",
        "pneumothorax", "consolidation", "edema", "emphysema", "fibrosis", "pleural", "hernia",
    ],
    "dermamnist": [
        "actinic keratoses and intraepithelial carcinoma", "basal cell carcinoma",
        "benign keratosis-like lesions", "dermatofibroma", "melanoma", "melanocytic nevi", "vascular lesions",
    ],
    "octmnist": ["choroidal neovascularization", "diabetic macular edema", "drusen", "normal"],
    "pneumoniamnist": ["normal", "pneumonia"],
    "retinamnist": ["0", "1", "2", "3", "4"],
    "breastmnist": ["malignant", "normal, benign"],
    "bloodmnist": [
        "basophil", "eosinophil", "erythroblast",
        "immature granulocytes(myelocytes, metamyelocytes and promyelocytes)",
        "lymphocyte", "monocyte", "neutrophil", "platelet",
    ],
    "tissuemnist": [
        "Collecting Duct, Connecting Tubule", "Distal Convoluted Tubule", "Glomerular endothelial cells",
        "Interstitial endothelial cells", "Leukocytes", "Podocytes", "Proximal Tubule Segments",
        "Thick Ascending Limb",
    ],
    "organamnist": [
        "bladder", "femur-left", "femur-right", "heart", "kidney-left", "kidney-right", "liver",
        "lung-left", "lung-right", "pancreas", "spleen",
    ],
}  # fmt: skip
MEDMNIST_LABELS["organcmnist"] = MEDMNIST_LABELS["organamnist"]
MEDMNIST_LABELS["organsmnist"] = MEDMNIST_LABELS["organamnist"]
MEDMNIST_MULTI_LABEL = {"chestmnist"}


def medmnist_name(path: str | Path) -> str:
    """`pneumoniamnist` from `pneumoniamnist.npz`, `pneumoniamnist_224.npz`, ..."""
    return re.sub(r"_\d+$", "", Path(path).stem.lower())


def read_medmnist(
    path: str | Path, split: str = "train", labels: list[str] | None = None
) -> tuple[np.ndarray, np.ndarray, list[str], bool]:
    """Read one split of a MedMNIST `.npz` (any size: 28, 64, 128, 224 px).

    Opened with `allow_pickle=False`: an npz from the internet must not run code.

    Args:
        path: the `.npz` file with `{split}_images` and `{split}_labels`.
        split: `train`, `val` or `test` (whatever `*_images` keys the file has).
        labels: class names in label-index order; default from the MedMNIST table for
            known files (by file name), else `class_0`, `class_1`, ...

    Returns:
        `(images, vectors, label_names, multi_label)`: images uint8 `(N, H, W)` or
        `(N, H, W, 3)`; vectors float32 `(N, K)`, one-hot for single-label files
        (labels `(N, 1)` of class indices) and multi-hot for multi-label files
        (labels `(N, K)` of 0/1, e.g. ChestMNIST).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"MedMNIST file not found: {path}")
    images, raw = _load_medmnist_arrays(path, split)
    raw = raw.reshape(raw.shape[0], -1)
    name = medmnist_name(path)
    multi_label = raw.shape[1] > 1 or name in MEDMNIST_MULTI_LABEL
    if multi_label:
        num_labels = raw.shape[1]
    else:
        known = MEDMNIST_LABELS.get(name)
        # A split may lack the last class, so unknown files may name more classes than seen.
        num_labels = len(known) if known else max(int(raw.max()) + 1, len(labels or []))
    if labels is None:
        labels = MEDMNIST_LABELS.get(name) or [f"class_{i}" for i in range(num_labels)]
    labels = list(labels)
    if len(labels) != num_labels:
        raise ValueError(
            f"{len(labels)} label names given for {path}, which has {num_labels} classes: {labels}"
        )
    if multi_label:
        vectors = raw.astype(np.float32)
    else:
        index = raw[:, 0].astype(np.int64)
        if index.min() < 0 or index.max() >= num_labels:
            raise ValueError(f"class index out of range 0..{num_labels - 1} in {path} ({split})")
        vectors = np.eye(num_labels, dtype=np.float32)[index]
    return images, vectors, labels, multi_label


def _load_medmnist_arrays(path: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """`{split}_images` and `{split}_labels` of an npz, checked so that bad files fail naming file and key."""
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as error:
        raise ValueError(f"cannot open MedMNIST npz {path}: {error}") from error
    if isinstance(archive, np.ndarray):
        # np.load reads a renamed `.npy` as one bare array; a MedMNIST file is a named archive.
        raise ValueError(
            f"{path} is a single NumPy array (.npy format, shape {archive.shape}), not an .npz archive; "
            "save the arrays with np.savez(path, train_images=..., train_labels=..., ...)"
        )
    with archive:
        if not archive.files:
            raise ValueError(f"{path} is an empty .npz archive: it holds no arrays")
        splits = sorted(key[: -len("_images")] for key in archive.files if key.endswith("_images"))
        if not splits:
            raise ValueError(
                f"{path} has no '<split>_images' arrays (MedMNIST layout); its keys are {sorted(archive.files)}"
            )
        if split not in splits:
            raise ValueError(f"split {split!r} not in {path}; available splits: {splits}")
        if f"{split}_labels" not in archive.files:
            raise ValueError(f"{path} has {split}_images but no {split}_labels")
        arrays = {}
        for key in (f"{split}_images", f"{split}_labels"):
            try:
                arrays[key] = archive[key]
            except ValueError as error:  # object arrays need pickle: refuse them
                raise ValueError(f"{path}: {key} is a non-numeric array (refusing to unpickle): {error}") from error
    images, raw = arrays[f"{split}_images"], arrays[f"{split}_labels"]
    if images.dtype.kind not in "uif":
        raise ValueError(f"{path}: {split}_images must hold numbers, got dtype {images.dtype}")
    if images.ndim not in (3, 4) or raw.ndim == 0 or raw.shape[0] != images.shape[0]:
        raise ValueError(
            f"unexpected MedMNIST layout in {path}: {split}_images {images.shape}, {split}_labels {raw.shape}"
        )
    if images.shape[0] == 0:
        raise ValueError(f"{path}: {split}_images is empty (0 images)")
    if images.dtype.kind == "f":
        bad_images = np.flatnonzero(~np.isfinite(images.reshape(len(images), -1)).all(axis=1))
        if bad_images.size:
            raise ValueError(
                f"{path}: {split}_images has NaN/inf pixel values in {bad_images.size} image(s), "
                f"first at index {int(bad_images[0])}"
            )
    if raw.dtype.kind not in "biu":
        example = raw.reshape(-1)[0] if raw.size else None
        raise ValueError(
            f"{path}: {split}_labels must be integer class indices (or 0/1 per label), got dtype {raw.dtype} "
            f"(e.g. {example!r}); convert with labels.astype(np.int64) only if the values are whole numbers"
        )
    return images, raw


def iter_files(root: str | Path, *, dicom_only: bool = False) -> Iterator[Path]:
    """Image files under `root` (recursive, sorted, hidden files skipped).

    With `dicom_only`, DICOM files by suffix or, for suffix-less files, by magic bytes.
    """
    root = Path(root)
    if root.is_file():
        yield root
        return
    if not root.exists():
        raise FileNotFoundError(f"folder not found: {root}")
    for path in sorted(root.rglob("*")):
        if not path.is_file() or any(part.startswith(".") for part in path.relative_to(root).parts):
            continue
        suffix = path.suffix.lower()
        if dicom_only:
            if suffix in DICOM_SUFFIXES or (suffix not in PIL_SUFFIXES and is_dicom(path)):
                yield path
        elif suffix in PIL_SUFFIXES or suffix in DICOM_SUFFIXES or (suffix == "" and is_dicom(path)):
            yield path
