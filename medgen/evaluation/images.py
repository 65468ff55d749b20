"""Image sets the metrics work on, and the adapters that build them.

Every metric in `medgen.evaluation` takes an `ImageSet`: float32 images `(N, C, H, W)` in
[0, 1] plus optional label vectors. Keeping one in-memory form means the metrics never care
whether images came from a pipeline, a folder of PNGs or the data layer.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
UNLABELLED = "unlabelled"


def as_image_batch(images: Any, name: str = "images") -> np.ndarray:
    """Returns `images` as float32 `(N, C, H, W)` in [0, 1].

    Accepts `(N, H, W)`, `(N, C, H, W)` with C in {1, 3}, or `(N, H, W, C)` (pipeline `"np"` output);
    uint8 arrays are scaled by 1/255. Float arrays outside [0, 1] are an error rather than silently
    clipped, because a [-1, 1] tensor passed by mistake would otherwise score as a dark, low-contrast set.
    """
    array = np.asarray(images)
    if array.ndim == 3:
        array = array[:, None]
    elif array.ndim == 4 and array.shape[1] not in (1, 3) and array.shape[-1] in (1, 3):
        array = np.transpose(array, (0, 3, 1, 2))
    if array.ndim != 4 or array.shape[1] not in (1, 3):
        raise ValueError(f"{name}: expected (N, H, W), (N, C, H, W) or (N, H, W, C) with C in 1 or 3, got shape {array.shape}")
    if array.shape[0] == 0:
        raise ValueError(f"{name}: the image set is empty")
    if array.dtype == np.uint8:
        return array.astype(np.float32) / 255.0
    array = array.astype(np.float32)
    if not np.isfinite(array).all():
        raise ValueError(f"{name}: images contain NaN or infinite values")
    low, high = float(array.min()), float(array.max())
    if low < -1e-3 or high > 1 + 1e-3:
        raise ValueError(f"{name}: float images must be in [0, 1], got values in [{low:.3f}, {high:.3f}]")
    return np.clip(array, 0.0, 1.0)


@dataclass
class ImageSet:
    """Images `(N, C, H, W)` float32 in [0, 1] with optional labels.

    Args:
        images: anything `as_image_batch` accepts.
        labels: `(N, L)` label vectors (one-hot or multi-hot), or `None` for unlabelled images.
        label_names: names of the L label columns.
        multi_label: whether an image may carry several labels.
        source: a short description for the report (path, "pipeline", ...).
        groups: optional `(N,)` group of each image (e.g. patient id): images of one group are never put
            on both sides of a train / held-out split.
    """

    images: np.ndarray
    labels: np.ndarray | None = None
    label_names: list[str] = field(default_factory=list)
    multi_label: bool = False
    source: str = ""
    groups: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.images = as_image_batch(self.images, name=self.source or "images")
        if self.groups is not None:
            self.groups = np.asarray(self.groups).astype(str)
            if self.groups.shape != (len(self.images),):
                raise ValueError(
                    f"{self.source or 'images'}: {len(self.images)} images but groups of shape {self.groups.shape}"
                )
        if self.labels is not None:
            self.labels = np.asarray(self.labels, dtype=np.float32)
            if self.labels.ndim == 1:
                self.labels = self.labels[:, None]
            if self.labels.shape[0] != len(self.images):
                raise ValueError(
                    f"{self.source or 'images'}: {len(self.images)} images but {self.labels.shape[0]} label rows"
                )
            if self.label_names and self.labels.shape[1] != len(self.label_names):
                raise ValueError(
                    f"{self.source or 'images'}: label vectors have {self.labels.shape[1]} columns but "
                    f"{len(self.label_names)} label names {self.label_names}"
                )

    def __len__(self) -> int:
        return len(self.images)

    @property
    def size(self) -> tuple[int, int]:
        return int(self.images.shape[2]), int(self.images.shape[3])

    def label_mask(self, name: str) -> np.ndarray:
        """Boolean mask of the images that carry label `name` (value >= 0.5)."""
        if self.labels is None:
            raise ValueError(f"{self.source or 'images'} has no labels; cannot select label {name!r}")
        if name not in self.label_names:
            raise ValueError(f"unknown label {name!r}; {self.source or 'images'} has labels {self.label_names}")
        return self.labels[:, self.label_names.index(name)] >= 0.5

    def subset(self, mask_or_index: np.ndarray) -> ImageSet:
        labels = None if self.labels is None else self.labels[mask_or_index]
        groups = None if self.groups is None else self.groups[mask_or_index]
        return ImageSet(self.images[mask_or_index], labels, list(self.label_names), self.multi_label, self.source, groups)

    def grayscale(self) -> np.ndarray:
        """`(N, H, W)` float32: the channel mean, which the intensity statistics are defined on."""
        return self.images.mean(axis=1)

    def image_hashes(self) -> np.ndarray:
        """`(N,)` content hash of each image (its 8-bit pixels and shape): two images with the same hash show
        the same pixels, whatever file or path they came from."""
        pixels = np.ascontiguousarray((self.images * 255).round().astype(np.uint8))
        return np.array(
            [hashlib.sha256(str(image.shape).encode() + image.tobytes()).hexdigest()[:32] for image in pixels]
        )

    def fingerprint(self) -> str:
        """Content hash of images and labels: the cache key for features and classifiers."""
        digest = hashlib.sha256()
        digest.update(str(self.images.shape).encode())
        digest.update(np.ascontiguousarray((self.images * 255).round().astype(np.uint8)).tobytes())
        if self.labels is not None:
            digest.update(np.ascontiguousarray(self.labels).tobytes())
            digest.update(json.dumps(self.label_names).encode())
        return digest.hexdigest()[:16]


def check_same_geometry(real: ImageSet, generated: ImageSet) -> None:
    """Metrics compare pixels and feature statistics, so both sets must have one size and channel count."""
    if real.images.shape[1:] != generated.images.shape[1:]:
        raise ValueError(
            f"generated images have shape (C, H, W) = {generated.images.shape[1:]} but real images have "
            f"{real.images.shape[1:]}; generate at the data resolution or load the real data at the generated resolution"
        )


def _read_png(path: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image.load()
            mode = "L" if image.mode in ("L", "I", "I;16", "F", "1", "LA") else "RGB"
            array = np.asarray(image.convert(mode) if image.mode not in ("I;16", "I", "F") else image)
    except (UnidentifiedImageError, OSError) as error:
        raise ValueError(f"cannot read image {path}: {error}") from error
    if array.dtype == np.uint16 or array.dtype == np.int32:
        array = array.astype(np.float32) / 65535.0
    elif array.dtype == np.uint8:
        array = array.astype(np.float32) / 255.0
    else:
        array = np.clip(array.astype(np.float32), 0.0, 1.0)
    return array[None] if array.ndim == 2 else np.transpose(array, (2, 0, 1))


def _labels_from_params(folder: Path, lookup: dict[str, int], label_names: list[str]) -> list[int] | None:
    """Label indices from the `labels` entry of a `medgen generate` params.json (name -> value, or names)."""
    params_path = folder / "params.json"
    if not params_path.is_file():
        return None
    try:
        params = json.loads(params_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"cannot parse {params_path}: {error}") from error
    labels = params.get("labels") if isinstance(params, dict) else None
    if not labels:
        return None
    names = [name for name, value in labels.items() if float(value) >= 0.5] if isinstance(labels, dict) else list(labels)
    for name in names:
        if str(name).lower() not in lookup:
            raise ValueError(
                f"{params_path} names label {name!r}, which is not a label of the real data "
                f"({label_names or 'the real data has no labels'})"
            )
    return [lookup[str(name).lower()] for name in names]


def _images_in(folder: Path) -> list[Path]:
    return [p for p in sorted(folder.iterdir()) if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]


def load_generated_folder(folder: str | Path, label_names: Sequence[str] | None = None) -> ImageSet:
    """Reads a folder of generated images (PNG, JPEG, TIFF, BMP).

    Labels, in order of precedence:
    1. a `params.json` with a `labels` entry (what `medgen generate` writes) labels every image beside it;
    2. otherwise a sub-folder's name is its images' label (`OUT/pneumonia/0001.png`); a multi-label image
       goes in a sub-folder whose name joins its labels with `+` (`effusion+edema`);
    3. images directly in `folder` without a params.json are unlabelled.
    So several `medgen generate --output OUT/<label>` runs side by side form one labelled set.
    Names are matched case-insensitively against `label_names` (the real data's labels); an unknown
    name is an error, so that a typo cannot silently drop a label.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"generated image folder not found: {folder}")
    label_names = list(label_names or [])
    lookup = {name.lower(): index for index, name in enumerate(label_names)}
    top_labels = _labels_from_params(folder, lookup, label_names)
    entries: list[tuple[Path, list[int] | None]] = [(path, top_labels) for path in _images_in(folder)]
    for path in sorted(p for p in folder.iterdir() if p.is_dir()):
        indices = _labels_from_params(path, lookup, label_names)
        if indices is None:
            indices = []
            for part in path.name.split("+"):
                if part.lower() not in lookup:
                    raise ValueError(
                        f"sub-folder {path} names label {part!r}, which is not a label of the real data "
                        f"({label_names or 'the real data has no labels'})"
                    )
                indices.append(lookup[part.lower()])
        entries.extend((image_path, indices) for image_path in _images_in(path))
    if not entries:
        raise ValueError(f"no images ({', '.join(IMAGE_SUFFIXES)}) found in {folder} or its label sub-folders")
    arrays = []
    for path, _ in entries:
        array = _read_png(path)
        if arrays and array.shape != arrays[0].shape:
            raise ValueError(
                f"{path} has shape (C, H, W) = {array.shape} but {entries[0][0]} has {arrays[0].shape}; "
                "all generated images must have one size"
            )
        arrays.append(array)
    labelled = [indices is not None for _, indices in entries]
    labels = None
    if any(labelled):
        if not all(labelled):
            raise ValueError(
                f"{folder} mixes images at the top level (unlabelled) with label sub-folders; put every image in a label sub-folder"
            )
        labels = np.zeros((len(entries), len(label_names)), dtype=np.float32)
        for row, (_, indices) in enumerate(entries):
            labels[row, indices] = 1.0
    multi_label = any(len(indices or []) > 1 for _, indices in entries)
    return ImageSet(np.stack(arrays), labels, label_names if labels is not None else [], multi_label, str(folder))


def save_generated_folder(images: ImageSet, folder: str | Path) -> None:
    """Writes `images` with the sub-folder convention of `load_generated_folder` (8-bit PNG)."""
    from PIL import Image

    folder = Path(folder)
    for index, image in enumerate(images.images):
        if images.labels is None:
            target = folder
        else:
            names = [name for name, value in zip(images.label_names, images.labels[index]) if value >= 0.5]
            target = folder / ("+".join(names) if names else UNLABELLED)
        target.mkdir(parents=True, exist_ok=True)
        array = (np.clip(image, 0, 1) * 255).round().astype(np.uint8)
        pil = Image.fromarray(array[0] if array.shape[0] == 1 else np.transpose(array, (1, 2, 0)))
        pil.save(target / f"{index:05d}.png")


def infer_data_source(path: Path) -> str:
    """Guesses the data layer's `DataConfig.source` from a path: `.npz` -> medmnist, folder with a CSV -> csv, ..."""
    if path.suffix.lower() == ".npz":
        return "medmnist"
    if path.is_file() and path.suffix.lower() == ".csv":
        return "csv"
    if path.is_file() and (path.suffix.lower() == ".dcm" or path.suffix == ""):
        return "dicom"
    if path.is_dir():
        if (path / "metadata.csv").is_file():
            return "csv"
        if any(p.suffix.lower() == ".dcm" for p in path.rglob("*.dcm")):
            return "dicom"
        return "folder"
    raise FileNotFoundError(f"real data not found: {path} (expected a .npz file, a CSV, an image folder or DICOM files)")


def _image_groups(built: Any, sources: Sequence[str], group_column: str) -> np.ndarray:
    """The `group_column` value (e.g. patient id) of each image, read from the CSV the data layer read."""
    from medgen.data.tables import locate_csv, read_table

    config = built.config
    if config.source != "csv":
        raise ValueError(f"group_column {group_column!r} needs CSV data (a folder with metadata.csv or a CSV), not source {config.source!r}")
    root, csv_path = locate_csv(config.path, config.csv_path)
    frame = read_table(csv_path)
    path_column = (getattr(built, "read_from", None) or {}).get("path_column") or config.path_column
    if group_column not in frame.columns:
        raise ValueError(f"group_column {group_column!r} is not a column of {csv_path}; its columns are {list(frame.columns)}")
    lookup = {}
    for path, group in zip(frame[path_column], frame[group_column]):
        path = Path(str(path).strip())
        lookup[str(path if path.is_absolute() else root / path)] = str(group).strip()
    groups = np.array([lookup.get(source.rsplit("#", 1)[0] if "#" in source else source, "") for source in sources])
    blank = np.flatnonzero(groups == "")
    if len(blank):
        raise ValueError(
            f"group_column {group_column!r} of {csv_path} is blank for {len(blank)} image(s), e.g. {sources[blank[0]]}"
        )
    return groups


# Splits of data that has none: "all" reads every row (or file) deliberately.
ALL_ROWS = "all"
# How images are turned into pixels; a pipeline's saved training config records them, and real images are
# read the same way unless the user overrides them.
PREPROCESSING_FIELDS = ("resize_mode", "normalization", "clahe", "window")


def _csv_columns(config: Any) -> tuple[Path, list[str]]:
    from medgen.data.tables import locate_csv, read_table

    _, csv_path = locate_csv(config["path"], config.get("csv_path"))
    return csv_path, list(read_table(csv_path).columns)


def check_split_exists(values: dict[str, Any], split: str) -> None:
    """Raises `ValueError` when `split` is not a split of the data described by the `DataConfig` fields
    `values`: reading data without splits would otherwise silently score against every row, training images
    included. `split="all"` on data without splits reads every row deliberately."""
    source = values.get("source")
    if source == "medmnist":
        if split == ALL_ROWS:
            raise ValueError(
                f"--split all: {values.get('path')} is a MedMNIST file with the splits train, val and test; choose one"
            )
        return
    if source in ("folder", "dicom"):
        if split != ALL_ROWS:
            raise ValueError(
                f"--split {split!r}: {values.get('path')} ({source} data) has no splits, so every image would be read, "
                "training images included. Ways on: a folder with metadata.csv and a split column (--split-column), "
                "a training config whose data section sets holdout_fraction (--config), or --split all to score "
                "against every image deliberately"
            )
        return
    if source != "csv":
        return
    csv_path, columns = _csv_columns(values)
    split_column = values.get("split_column") or ("split" if "split" in columns else None)
    if split_column is not None or values.get("holdout_fraction") is not None:
        if split == ALL_ROWS:
            raise ValueError(
                f"--split all: {csv_path} has splits ({'column ' + repr(split_column) if split_column else 'holdout_fraction'}); "
                "choose one of them (e.g. --split test)"
            )
        return
    if split != ALL_ROWS:
        raise ValueError(
            f"--split {split!r}: {csv_path} has no split column, so every row would be read, training images "
            f"included. Its columns are {columns}. Ways on: --split-column COLUMN (the column naming each row's "
            "split); --config RUN/training_config.yaml when the training config sets data.holdout_fraction (its "
            "held-out rows are split 'test'), or data.holdout_fraction=0.2 on this command line to hold out the "
            "same rows a training run with that setting held out; or --split all to score against every row "
            "deliberately (memorization and the classifier then use two seeded halves)"
        )


def real_data_config(
    data: Any,
    split: str,
    resolution: int | None = None,
    channels: int = 1,
    max_samples: int | None = None,
    *,
    check_split: bool = True,
    quiet: bool = False,
    **options: Any,
) -> Any:
    """The `DataConfig` that reads one split of real data (see `load_real_split` for the arguments).

    For a path to a CSV folder whose `metadata.csv` has a `label` column, and no label option given, the
    labels are read from that column (the `datasets` imagefolder convention). With `check_split`, a split the
    data does not have is an error (`check_split_exists`).
    """
    from medgen.data import DataConfig

    if isinstance(data, DataConfig):
        # A configured dataset is read as configured: reading it at another size would compare the
        # generated images with data the model never saw in that form.
        if resolution is not None and int(resolution) != data.resolution:
            raise ValueError(
                f"the images to score are {resolution} px but the data config reads images at {data.resolution} px "
                f"({data.path}); generate at the training resolution"
            )
        values = data.to_dict()
    else:
        path = Path(data)
        if not path.exists():
            raise FileNotFoundError(f"real data not found: {path} (expected a .npz file, an image folder or DICOM files)")
        values = {"source": options.pop("source", None) or infer_data_source(path), "path": str(path)}
        label_options = ("findings_column", "label_columns", "text_column")
        if values["source"] == "csv" and not any(options.get(name) for name in label_options):
            csv_path, columns = _csv_columns({**values, **options})
            if "label" in columns:
                options["findings_column"] = "label"
                if not quiet:
                    print(f"Labels read from column 'label' of {csv_path} (--label-column names another column)", flush=True)
    values.update(options)
    values["split"] = split
    values["streaming"] = False  # scores read the whole split: through the cache, not a stream
    values["channels"] = channels
    if resolution is not None:
        values["resolution"] = int(resolution)
    if max_samples is not None:
        values["max_samples"] = int(max_samples)
    if check_split:
        check_split_exists(values, split)
    return DataConfig.from_dict(values)


def read_image_set(
    config: Any, group_column: str | None = None, summary_dir: str | Path | None = None, what: str | None = None
) -> ImageSet:
    """Reads a `DataConfig` through the data layer into an `ImageSet`; prints (and, with `summary_dir`, saves as
    `data_summary_<split>.json`) what was read. `what` names the set in the printed line."""
    from medgen.data import build_dataset, format_data_summary, summarize_dataset, write_data_summary

    split = config.split
    try:
        built = build_dataset(config)
    except ValueError as error:
        if "data.empty_findings" in str(error):
            # the data layer's hint is written for training configs; say how evaluate takes it
            raise ValueError(
                f"{error}. On the medgen evaluate command line: data.empty_findings=skip (or a label name, "
                "e.g. data.empty_findings='No Finding')"
            ) from error
        raise
    dataset = built.dataset  # rows read as float tensors in [-1, 1] (the cache holds integers)
    if len(dataset) == 0:
        raise ValueError(f"real data {config.path} split {split!r} is empty")
    print(f"{what or 'Real data'}, split {split!r}: " + format_data_summary(summarize_dataset(built)), flush=True)
    if summary_dir is not None:
        write_data_summary(built, summary_dir, filename=f"data_summary_{split}.json")
    pixels = np.asarray(dataset["pixel_values"][:], dtype=np.float32)
    images = (np.clip(pixels, -1.0, 1.0) + 1.0) / 2.0
    label_names = list(getattr(built, "label_names", []) or [])
    labels = np.asarray(dataset["labels"][:], dtype=np.float32) if label_names and "labels" in dataset.column_names else None
    if labels is not None and labels.ndim == 2 and labels.shape[1] == 0:
        labels = None
    groups = _image_groups(built, list(dataset["source"]), group_column) if group_column else None
    return ImageSet(
        images,
        labels,
        label_names if labels is not None else [],
        bool(getattr(built, "multi_label", False)),
        f"{config.path} [{split}]",
        groups,
    )


def load_real_split(
    data: Any,
    split: str,
    resolution: int | None = None,
    channels: int = 1,
    max_samples: int | None = None,
    group_column: str | None = None,
    summary_dir: str | Path | None = None,
    **options: Any,
) -> ImageSet:
    """Reads one split of real data through the data layer (`medgen.data.build_dataset`).

    `data` is a `DataConfig` (its split and resolution are replaced; everything else, e.g. normalization,
    filters and label mapping, is read as configured) or a path whose source is inferred
    (`infer_data_source`); `options` are further `DataConfig` fields (e.g. `findings_column`, `filters`).
    A folder whose `metadata.csv` has a `label` column is read as labelled by it unless a label option is
    given. `split` must be a split the data has; `"all"` reads data without splits whole (`check_split_exists`).
    `group_column` names a CSV column (e.g. `patient_id`) whose value becomes each image's group.
    What was read (images per label, files left out and why) is printed and, with `summary_dir`, saved
    there as `data_summary_<split>.json`.
    """
    config = real_data_config(data, split, resolution, channels, max_samples, **options)
    return read_image_set(config, group_column, summary_dir)


__all__ = [
    "ImageSet",
    "as_image_batch",
    "check_same_geometry",
    "infer_data_source",
    "load_generated_folder",
    "load_real_split",
    "read_image_set",
    "real_data_config",
    "save_generated_folder",
]
