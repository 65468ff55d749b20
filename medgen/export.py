"""Write generated images as PNG, NPY and synthetic DICOM Secondary Capture files.

One call to :func:`export_images` writes one run: every image in every requested format
plus ``params.json`` with the generation parameters. Files are never overwritten: if
any file the run would write already exists, nothing is written and a ``ValueError``
names the folder (every file is also put in place with a no-replace rename, so a concurrent
writer cannot be overwritten either). Use :func:`new_run_dir` for a fresh subfolder.

Each file is written under a temporary name and renamed when complete
(:func:`medgen.files.atomic_write`), so a full disk or an unusable folder never leaves a
0-byte or truncated file; the failure is an :class:`medgen.files.OutputError` (an
``OSError``) naming the file and the reason.

DICOM files are Secondary Capture Image Storage instances that say, in every way DICOM
offers, that they are synthetic: Synthetic Data = YES, Conversion Type = SYN, Image
Type DERIVED\\SECONDARY, a Contributing Equipment item with purpose "Synthesizing
Equipment" (DCM 109100, CID 7005) naming medgen, a made-up patient
(``SYNTHETIC^<LABEL>`` / ``SYNTH-<hex>``), and the generation parameters in Image
Comments and in a private block (creator ``MEDGEN``, element (0011,xx01), JSON).
"""

from __future__ import annotations

import datetime as _dt
import json
import re
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medgen.files import OutputError, atomic_write, check_writable_dir

__all__ = [
    "DICOM_MODALITIES",
    "EXPORT_FORMATS",
    "PRIVATE_CREATOR",
    "RunWriter",
    "SyntheticStudy",
    "build_dicom",
    "export_images",
    "new_run_dir",
    "parse_formats",
    "quantize",
    "read_private_params",
    "write_dicom",
    "write_npy",
    "write_png",
]

EXPORT_FORMATS = ("png", "dcm", "npy")
# Modalities a synthetic image may claim; OT ("other") is the honest default for a generated image.
DICOM_MODALITIES = ("OT", "DX", "CR", "MR", "CT", "US", "MG", "XA", "PT", "NM")
PRIVATE_CREATOR = "MEDGEN"
PRIVATE_GROUP = 0x0011


def _medgen_version() -> str:
    from medgen import __version__

    return __version__


def quantize(image: np.ndarray, bit_depth: int = 8) -> np.ndarray:
    """Map a float image in ``[0, 1]`` to ``uint8`` (0-255) or ``uint16`` (0-65535) by rounding."""
    if bit_depth not in (8, 16):
        raise ValueError(f"bit_depth must be 8 or 16; got {bit_depth}")
    image = _check_range(image)
    max_value = (1 << bit_depth) - 1
    dtype = np.uint8 if bit_depth == 8 else np.uint16
    return np.rint(np.clip(image.astype(np.float64), 0.0, 1.0) * max_value).astype(dtype)


def _check_range(image: np.ndarray) -> np.ndarray:
    from medgen.postprocess import check_unit_range

    return check_unit_range(image)


def _as_2d_or_rgb(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    if image.ndim == 2 or (image.ndim == 3 and image.shape[-1] == 3):
        return image
    raise ValueError(f"expected an image shaped (H, W), (H, W, 1) or (H, W, 3); got shape {image.shape}")


def write_png(image: np.ndarray, path: str | Path, bit_depth: int = 8) -> Path:
    """Write a float ``[0, 1]`` image as PNG: 8-bit ``L``/``RGB`` or 16-bit grayscale (``I;16``)."""
    from PIL import Image

    image = _as_2d_or_rgb(image)
    if bit_depth == 16 and image.ndim == 3:
        raise ValueError("16-bit PNG export supports grayscale images only; use bit_depth=8 for RGB")
    pixels = quantize(image, bit_depth)
    if bit_depth == 16:
        pil_image = Image.fromarray(pixels.astype("<u2"))  # Pillow maps little-endian uint16 to I;16
    else:
        pil_image = Image.fromarray(pixels, mode="RGB" if pixels.ndim == 3 else "L")
    path = Path(path)
    with atomic_write(path, overwrite=False) as file:
        pil_image.save(file, format="PNG")
    return path


def write_npy(image: np.ndarray, path: str | Path) -> Path:
    """Write the float image as ``float32`` NPY (no pickle), the exact values before quantisation."""
    image = np.asarray(image, dtype=np.float32)
    path = Path(path)
    with atomic_write(path, overwrite=False) as file:
        np.save(file, image, allow_pickle=False)
    return path


def _dicom_text(value: str, max_length: int) -> str:
    # DICOM strings have hard length limits; backslash is the value separator.
    value = value.replace("\\", "/")
    return value if len(value) <= max_length else value[: max_length - 3] + "..."


def _patient_label(label: str | None) -> str:
    cleaned = re.sub(r"[^A-Z0-9]+", "_", (label or "").upper()).strip("_")
    return cleaned[:50] or "IMAGE"


@dataclass
class SyntheticStudy:
    """One synthetic patient, study and series shared by all images of a run.

    The patient is invented: ``PatientName`` is ``SYNTHETIC^<LABEL>`` and ``PatientID`` is
    ``SYNTH-`` followed by random hex, which no hospital issues. No real identifier is set.
    """

    label: str | None = None
    modality: str = "OT"
    study_uid: str = ""
    series_uid: str = ""
    patient_id: str = ""
    created: _dt.datetime = field(default_factory=lambda: _dt.datetime.now().astimezone())
    description: str = "Synthetic images (medgen)"

    def __post_init__(self) -> None:
        from pydicom.uid import generate_uid

        if self.modality not in DICOM_MODALITIES:
            raise ValueError(f"unknown DICOM modality {self.modality!r}; choose one of {', '.join(DICOM_MODALITIES)}")
        self.study_uid = self.study_uid or generate_uid()
        self.series_uid = self.series_uid or generate_uid()
        self.patient_id = self.patient_id or f"SYNTH-{secrets.token_hex(6).upper()}"

    @property
    def patient_name(self) -> str:
        return f"SYNTHETIC^{_patient_label(self.label)}"


def _summary(params: Mapping[str, Any]) -> str:
    """A one-line human-readable description of how the image was made."""
    keys = ("labels", "prompt", "seed", "num_inference_steps", "guidance_scale", "scheduler", "pipeline")
    parts = [f"{key}={params[key]}" for key in keys if params.get(key) not in (None, "")]
    postprocess = params.get("postprocess")
    if isinstance(postprocess, Mapping):
        parts.append(f"postprocess={postprocess.get('preset')}")
    elif postprocess:
        parts.append(f"postprocess={postprocess}")
    return "; ".join(parts)


def build_dicom(
    image: np.ndarray,
    study: SyntheticStudy,
    instance_number: int = 1,
    params: Mapping[str, Any] | None = None,
    bit_depth: int = 8,
):
    """Build (without writing) a synthetic Secondary Capture ``pydicom.Dataset`` for one image.

    ``params`` (JSON-serialisable) are stored in full in the private block and summarised in
    Image Comments. Grayscale images become MONOCHROME2 with a full-range window; RGB
    images (8-bit only) become RGB.
    """
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.sr.codedict import codes
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    image = _as_2d_or_rgb(image)
    if image.ndim == 3 and bit_depth != 8:
        raise ValueError("16-bit DICOM export supports grayscale images only; use bit_depth=8 for RGB")
    if instance_number < 1:
        raise ValueError(f"instance_number must be >= 1; got {instance_number}")
    pixels = quantize(image, bit_depth)
    params = dict(params or {})
    version = _medgen_version()
    now = _dt.datetime.now().astimezone()
    date, time = now.strftime("%Y%m%d"), now.strftime("%H%M%S.%f")
    study_date, study_time = study.created.strftime("%Y%m%d"), study.created.strftime("%H%M%S.%f")

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    sop_instance_uid = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = sop_instance_uid

    # SOP Common
    ds.SpecificCharacterSet = "ISO_IR 192"  # UTF-8: prompts may hold any character
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = sop_instance_uid
    ds.InstanceCreationDate, ds.InstanceCreationTime = date, time
    # Patient: invented, and marked as such.
    ds.PatientName = study.patient_name
    ds.PatientID = study.patient_id
    ds.PatientBirthDate = ""
    ds.PatientSex = ""
    # General Study / Series
    ds.StudyInstanceUID = study.study_uid
    ds.StudyDate, ds.StudyTime = study_date, study_time
    ds.StudyID = "SYNTH"
    ds.AccessionNumber = ""
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = _dicom_text(study.description, 64)
    ds.SeriesInstanceUID = study.series_uid
    ds.SeriesNumber = 1
    ds.SeriesDate, ds.SeriesTime = study_date, study_time
    ds.Modality = study.modality
    # General Equipment and SC Equipment
    ds.Manufacturer = "medgen"
    ds.SoftwareVersions = version
    ds.ConversionType = "SYN"  # Synthetic Image
    ds.SecondaryCaptureDeviceManufacturer = "medgen"
    ds.SecondaryCaptureDeviceManufacturerModelName = _dicom_text(str(params.get("pipeline_class", "medgen")), 64)
    ds.SecondaryCaptureDeviceSoftwareVersions = version
    # General Image
    ds.ImageType = ["DERIVED", "SECONDARY"]
    ds.InstanceNumber = instance_number
    ds.PatientOrientation = ""
    ds.ContentDate, ds.ContentTime = date, time
    ds.SyntheticData = "YES"
    ds.BurnedInAnnotation = "NO"
    ds.LossyImageCompression = "00"
    ds.ImageComments = _dicom_text(f"Synthetic image, not a real patient. {_summary(params)}", 10240)
    postprocess = params.get("postprocess")
    preset = postprocess.get("preset") if isinstance(postprocess, Mapping) else postprocess
    ds.DerivationDescription = _dicom_text(
        f"Synthesized by diffusion pipeline {params.get('pipeline', 'unknown')}; post-processing: {preset or 'none'}",
        1024,
    )
    # Contributing Equipment: medgen as Synthesizing Equipment (DCM 109100, CID 7005).
    equipment = Dataset()
    purpose = Dataset()
    purpose.CodeValue = codes.DCM.SynthesizingEquipment.value
    purpose.CodingSchemeDesignator = codes.DCM.SynthesizingEquipment.scheme_designator
    purpose.CodeMeaning = codes.DCM.SynthesizingEquipment.meaning
    equipment.PurposeOfReferenceCodeSequence = [purpose]
    equipment.Manufacturer = "medgen"
    equipment.ManufacturerModelName = _dicom_text(str(params.get("pipeline", "medgen")), 64)
    equipment.SoftwareVersions = version
    equipment.ContributionDateTime = now.strftime("%Y%m%d%H%M%S.%f%z")
    equipment.ContributionDescription = "Image synthesized by a diffusion model"
    ds.ContributingEquipmentSequence = [equipment]
    # Full parameters, machine-readable, in a private block.
    block = ds.private_block(PRIVATE_GROUP, PRIVATE_CREATOR, create=True)
    block.add_new(0x01, "UT", json.dumps(params, sort_keys=True, default=str))
    # Image Pixel (+ VOI LUT for grayscale)
    if pixels.ndim == 3:
        ds.set_pixel_data(pixels, "RGB", 8, generate_instance_uid=False)
    else:
        ds.set_pixel_data(pixels, "MONOCHROME2", bit_depth, generate_instance_uid=False)
        # A full-range LINEAR_EXACT window (PS3.3 C.11.2.1.3.2) maps stored value v to v / max
        # exactly, so a viewer (and medgen.data.read_dicom) shows the image as exported.
        max_value = (1 << bit_depth) - 1
        ds.WindowCenter = max_value / 2
        ds.WindowWidth = max_value
        ds.VOILUTFunction = "LINEAR_EXACT"
    return ds


def write_dicom(
    image: np.ndarray,
    path: str | Path,
    study: SyntheticStudy,
    instance_number: int = 1,
    params: Mapping[str, Any] | None = None,
    bit_depth: int = 8,
) -> Path:
    """Write one synthetic Secondary Capture file (DICOM File Format: preamble and file meta)."""
    ds = build_dicom(image, study, instance_number=instance_number, params=params, bit_depth=bit_depth)
    path = Path(path)
    with atomic_write(path, overwrite=False) as file:
        ds.save_as(file, enforce_file_format=True)
    return path


def read_private_params(ds) -> dict[str, Any]:
    """The generation parameters stored by :func:`build_dicom` in a dataset read back with pydicom."""
    block = ds.private_block(PRIVATE_GROUP, PRIVATE_CREATOR)
    return json.loads(block[0x01].value)


def new_run_dir(parent: str | Path, prefix: str = "run") -> Path:
    """Create and return a fresh ``<parent>/<prefix>-YYYYmmdd-HHMMSS[-n]`` folder."""
    parent = check_writable_dir(parent, create=True)
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    for attempt in range(1000):
        candidate = parent / (f"{prefix}-{stamp}" if attempt == 0 else f"{prefix}-{stamp}-{attempt}")
        try:
            candidate.mkdir()
        except FileExistsError:
            continue
        except OSError as error:
            raise OutputError(candidate, error) from error
        return candidate
    raise ValueError(f"could not create a new run folder in {parent}")


def parse_formats(formats: str | Iterable[str]) -> tuple[str, ...]:
    """``"png,dcm"`` or ``["png", "dicom"]`` -> ``("png", "dcm")``; unknown names raise ``ValueError``."""
    if isinstance(formats, str):
        formats = formats.split(",")
    aliases = {"dicom": "dcm", "numpy": "npy"}
    parsed: list[str] = []
    for name in formats:
        key = aliases.get(name.strip().lower(), name.strip().lower())
        if key not in EXPORT_FORMATS:
            raise ValueError(f"unknown export format {name!r}; choose from {', '.join(EXPORT_FORMATS)}")
        if key not in parsed:
            parsed.append(key)
    if not parsed:
        raise ValueError(f"no export format given; choose from {', '.join(EXPORT_FORMATS)}")
    return tuple(parsed)


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    if isinstance(value, (Path, _dt.datetime)):
        return str(value)
    raise TypeError(f"parameter value {value!r} of type {type(value).__name__} is not JSON-serialisable")


class RunWriter:
    """Writes one run incrementally: images batch by batch, then ``params.json``.

    All checks that can fail (formats, bit depth, clashing files for ``count`` images, a folder
    that cannot be created or written to) run in the constructor, before anything is written;
    each batch is checked before any of its files is written. Use it as a context manager:
    ``params.json`` is written on exit, also after an error or Ctrl-C, with ``"complete": false``
    and the images written so far. A run that fails before its first image leaves nothing (not
    even the folder, if the constructor created it).

    Several processes can write one run into one folder (``medgen generate`` under ``accelerate
    launch``): each writes its share with ``write(..., indices=...)``, every one sharing the first
    writer's ``params`` and ``study`` (so their DICOM files belong to one series); only the main
    process's writer is closed, after :meth:`merge_records` has given it the others' records.

    Example::

        with RunWriter("out", formats="png,dcm", params={"labels": ["pneumonia"]}, count=8) as run:
            for batch, seeds in batches:
                run.write(batch, [{"seed": seed} for seed in seeds])
    """

    def __init__(
        self,
        output_dir: str | Path,
        formats: str | Iterable[str] = ("png",),
        params: Mapping[str, Any] | None = None,
        bit_depth: int = 8,
        modality: str = "OT",
        prefix: str = "image",
        count: int | None = None,
        study: SyntheticStudy | None = None,
    ) -> None:
        self.formats = parse_formats(formats)
        if bit_depth not in (8, 16):
            raise ValueError(f"bit_depth must be 8 or 16; got {bit_depth}")
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", prefix):
            raise ValueError(f"file prefix {prefix!r} must be letters, digits, '_', '.' or '-'")
        if count is not None and count < 1:
            raise ValueError(f"count must be >= 1; got {count}")
        self.output_dir = Path(output_dir)
        self.bit_depth = bit_depth
        self.prefix = prefix
        self.count = count
        self.params = dict(params or {})
        json.dumps(self.params, default=_json_default)  # fail before writing anything
        created = _dt.datetime.now().astimezone()
        self.params.setdefault("medgen_version", _medgen_version())
        self.params.setdefault("created", created.isoformat(timespec="seconds"))
        labels = self.params.get("labels")
        if isinstance(labels, Mapping):
            labels = list(labels)
        study_label = ",".join(map(str, labels)) if isinstance(labels, (list, tuple)) else labels
        study_label = study_label or self.params.get("prompt")
        self.study = study or SyntheticStudy(
            label=str(study_label) if study_label else None, modality=modality, created=created
        )
        self.records: list[dict[str, Any]] = []
        self.written: list[Path] = []
        self.params_path = self.output_dir / "params.json"
        self._closed = False

        if self.output_dir.exists() and not self.output_dir.is_dir():
            raise ValueError(f"output path {self.output_dir} exists and is not a folder")
        planned = [self.params_path]
        if count is not None:
            planned += [self._path(index, fmt) for index in range(count) for fmt in self.formats]
        self._refuse_existing(planned)
        self._created_dir = not self.output_dir.exists()
        check_writable_dir(self.output_dir, create=True)

    def _path(self, index: int, fmt: str) -> Path:
        return self.output_dir / f"{self.prefix}_{index:05d}.{fmt}"

    def _refuse_existing(self, paths: Iterable[Path]) -> None:
        existing = [path.name for path in paths if path.exists()]
        if existing:
            raise ValueError(
                f"output folder {self.output_dir} already holds {', '.join(existing[:3])}"
                f"{' ...' if len(existing) > 3 else ''}; medgen never overwrites files: choose a new folder"
            )

    def write(
        self,
        images: np.ndarray | Sequence[np.ndarray],
        image_params: Sequence[Mapping[str, Any]] | None = None,
        indices: Sequence[int] | None = None,
    ) -> list[Path]:
        """Write a batch ``(B, H, W[, C])`` or list of float images in ``[0, 1]``; returns their paths.

        ``image_params`` (one dict per image, e.g. ``{"seed": 42}``) go into ``params.json``
        and the image's DICOM file. ``indices`` are the images' numbers in the run (file names,
        DICOM Instance Number); by default they follow the images written so far.
        """
        if self._closed:
            raise ValueError(f"run in {self.output_dir} is already closed")
        images = list(images)
        if image_params is not None and len(image_params) != len(images):
            raise ValueError(f"got {len(image_params)} image_params for {len(images)} images")
        start = len(self.records)
        if indices is None:
            indices = range(start, start + len(images))
        indices = [int(index) for index in indices]
        if len(indices) != len(images):
            raise ValueError(f"got {len(indices)} indices for {len(images)} images")
        written = {record["index"] for record in self.records}
        if min(indices, default=0) < 0 or len(set(indices)) != len(indices) or written & set(indices):
            raise ValueError(f"image indices {indices} repeat an index or are negative")
        if self.count is not None and (start + len(images) > self.count or max(indices, default=0) >= self.count):
            raise ValueError(f"run was planned for {self.count} images; got {start + len(images)} (indices {indices})")
        for offset, image in enumerate(images):
            # Check the whole batch before writing any of it.
            try:
                image = _as_2d_or_rgb(_check_range(image))
                if image.ndim == 3 and self.bit_depth == 16 and {"png", "dcm"} & set(self.formats):
                    raise ValueError("16-bit PNG/DICOM export supports grayscale images only; use bit_depth=8 for RGB")
            except ValueError as error:
                raise ValueError(f"image {indices[offset]}: {error}") from None
        self._refuse_existing(self._path(index, fmt) for index in indices for fmt in self.formats)

        paths: list[Path] = []
        for offset, image in enumerate(images):
            index = indices[offset]
            per_image = json.loads(json.dumps(dict(image_params[offset]) if image_params else {}, default=_json_default))
            image_paths = self._write_image(image, index, per_image)
            self.records.append({"index": index, "files": [path.name for path in image_paths], **per_image})
            self.written.extend(image_paths)
            paths.extend(image_paths)
        return paths

    def _write_image(self, image: np.ndarray, index: int, per_image: Mapping[str, Any]) -> list[Path]:
        """All formats of one image, or none: files of an image that failed half-way are removed."""
        paths: list[Path] = []
        try:
            for fmt in self.formats:
                path = self._path(index, fmt)
                if fmt == "png":
                    write_png(image, path, self.bit_depth)
                elif fmt == "npy":
                    write_npy(image, path)
                else:
                    dicom_params = json.loads(json.dumps({**self.params, **per_image}, default=_json_default))
                    write_dicom(image, path, self.study, index + 1, dicom_params, self.bit_depth)
                paths.append(path)
        except BaseException:
            for path in paths:
                path.unlink(missing_ok=True)
            raise
        return paths

    def merge_records(self, records: Iterable[Mapping[str, Any]]) -> None:
        """Add the records of images other processes of this run wrote into the folder (each a
        ``{"index", "files", ...}`` dict from their writer's ``records``), so that ``params.json``
        lists every image, in index order."""
        if self._closed:
            raise ValueError(f"run in {self.output_dir} is already closed")
        known = {record["index"] for record in self.records}
        self.records.extend(dict(record) for record in records if record["index"] not in known)
        self.records.sort(key=lambda record: record["index"])
        self.written = [self.output_dir / name for record in self.records for name in record["files"]]

    def close(self, complete: bool = True) -> Path:
        """Write ``params.json`` (all run parameters and one record per written image)."""
        if self._closed:
            return self.params_path
        with atomic_write(self.params_path, "w", overwrite=False) as file:
            json.dump(self.document(complete), file, indent=2, default=_json_default)
            file.write("\n")
        self._closed = True
        self.written.append(self.params_path)
        return self.params_path

    def document(self, complete: bool = True) -> dict[str, Any]:
        """What ``params.json`` holds for the images written so far (also before the run is closed)."""
        document = {
            **self.params,
            "formats": list(self.formats),
            "bit_depth": self.bit_depth,
            "count": len(self.records),
            "complete": complete,
            "images": self.records,
        }
        if "dcm" in self.formats:
            document["dicom"] = {
                "modality": self.study.modality,
                "study_instance_uid": self.study.study_uid,
                "series_instance_uid": self.study.series_uid,
                "patient_id": self.study.patient_id,
                "patient_name": self.study.patient_name,
            }
        return document

    def __enter__(self) -> RunWriter:
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        if exc_type is None:
            self.close(complete=self.count is None or len(self.records) == self.count)
        elif self.records:
            # Keep the record of the images already written; the original error matters more
            # than a second one (e.g. the same full disk) while writing that record.
            try:
                self.close(complete=False)
            except OSError:
                pass
        else:
            self._closed = True
            if self._created_dir:
                try:
                    self.output_dir.rmdir()  # only succeeds while it is still empty
                except OSError:
                    pass


def export_images(
    images: np.ndarray | Sequence[np.ndarray],
    output_dir: str | Path,
    formats: str | Iterable[str] = ("png",),
    params: Mapping[str, Any] | None = None,
    bit_depth: int = 8,
    image_params: Sequence[Mapping[str, Any]] | None = None,
    modality: str = "OT",
    prefix: str = "image",
) -> list[Path]:
    """Write one run of images and ``params.json`` into ``output_dir``; return the written paths.

    Args:
        images: a batch ``(B, H, W[, C])`` or a list of float images in ``[0, 1]``.
        output_dir: created if missing. If any file this run would write already exists,
            ``ValueError`` is raised before anything is written.
        formats: any of ``png``, ``dcm`` (alias ``dicom``), ``npy``; a list or ``"png,dcm"``.
        params: run-level generation parameters (labels or prompt, steps, guidance, pipeline,
            post-processing record, ...); stored in ``params.json`` and in every DICOM file.
        bit_depth: 8 or 16, for PNG and DICOM (NPY is always float32).
        image_params: optional per-image parameters (e.g. ``{"seed": 42}``), one per image.
        modality: DICOM Modality, one of :data:`DICOM_MODALITIES` (default ``OT``, "other").
        prefix: file name prefix; files are ``<prefix>_<index:05d>.<ext>``.

    Returns:
        The image file paths in image order (formats grouped per image), then ``params.json``.
    """
    images = list(images)
    if not images:
        raise ValueError("no images to export")
    if image_params is not None and len(image_params) != len(images):
        raise ValueError(f"got {len(image_params)} image_params for {len(images)} images")
    with RunWriter(output_dir, formats, params, bit_depth, modality, prefix, count=len(images)) as writer:
        writer.write(images, image_params)
    return writer.written
