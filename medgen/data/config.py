"""Typed configuration of a medgen dataset.

One `DataConfig` describes where the images are, how labels and text are read, and how
images are preprocessed. It is validated when it is built, so that a typo in a YAML file
fails at once with a message naming the field, not after an hour of decoding.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

SOURCES = ("medmnist", "csv", "dicom", "folder")
UNCERTAIN_POLICIES = ("ones", "zeros", "ignore")
RESIZE_MODES = ("crop", "pad")
HOLDOUT_ORDERS = ("last", "random")
BAD_FILE_POLICIES = ("skip", "error")
EMPTY_FINDINGS_POLICIES = ("error", "skip")  # or a label name
NORMALIZATIONS = ("minmax", "percentile", "range")


@dataclass
class DataConfig:
    """Where the images are and how to turn them into training tensors.

    Args:
        source: `"medmnist"` (a MedMNIST `.npz`), `"csv"` (a folder of PNG/JPEG/TIFF/DICOM
            images listed in a CSV), `"dicom"` (DICOM files or a folder of them, searched
            recursively, every frame one sample) or `"folder"` (every image under a folder,
            unlabelled: for unconditional models).
        path: the `.npz` file (medmnist), the image folder (csv, folder) or a DICOM file or
            folder (dicom). Relative paths in the CSV are resolved against this folder. For
            `source="csv"` it may also be the CSV file itself (the folder is then its parent).
        split: MedMNIST split to read (`train`, `val`, `test`); for CSV data, the value of
            `split_column` to keep.
        csv_path: CSV file for `source="csv"`; default `<path>/metadata.csv` (the `datasets`
            imagefolder convention).
        path_column: CSV column holding the image path, relative to `path`. Default: `file_name`
            (imagefolder convention) when the CSV has it, else `Path` (CheXpert).
        split_column: CSV column naming each row's split (`train`/`val`/`test`); only rows equal
            to `split` are kept. Default: `split` when the CSV has it, else every row is read.
        label_columns: CheXpert-style label columns (1 positive, 0 negative, -1 uncertain,
            blank unknown = negative). Multi-label.
        findings_column: one column with delimited findings (NIH `Finding Labels`, e.g.
            `Effusion|Pneumonia`, or a single class name per row).
        findings_separator: separator inside `findings_column`.
        empty_findings: what a blank `findings_column` cell means: `"error"` (stop, naming the
            rows), `"skip"` (leave the rows out; they are listed in `.skipped`) or a label name
            (e.g. `"No Finding"`) given to them.
        holdout_fraction: for a CSV without a split column, the fraction of each class (of
            `findings_column`) that forms split `test`; the rest is `train`. Lets sets without an
            official split (BUSI, IQ-OTH/NCCD) keep the same test images out of every run.
        holdout_order: `"last"` (the last files of each class in natural name order: for sets whose
            numbered files run through cases, where a random split leaks near-identical slices) or
            `"random"` (seeded by `holdout_seed`).
        holdout_seed: seed of the random held-out choice.
        stratify_columns: more CSV columns the held-out split is stratified by, beside
            `findings_column`: `fraction` of every (label, column values) group is held out, e.g.
            `["source"]` for chest X-rays from two hospitals.
        mask_column: CSV column holding each image's segmentation mask path (relative to `path`,
            like `path_column`), e.g. `mask_file_name`. The mask must have its image's size; it
            goes through the same geometric transforms as its image (nearest-neighbour) and is
            read as the `mask` column (class indices `(1, H, W)`; 0 = background). A missing or
            unreadable mask is treated like a missing or unreadable image (`bad_files`); a mask
            of another size than its image, or with values that are no class index, is an error
            naming the CSV row.
        mask_classes: names of the mask classes 1, 2, ... (default `["foreground"]`). Mask files
            hold class indices (0..K), or for 8-bit files `c * 255 // K` (0/255 for one class;
            one class also takes any value >= 128 as foreground).
        labels: label names to keep, in this order (matched case-insensitively). For
            MedMNIST these name the classes (default from a built-in table, e.g.
            PneumoniaMNIST: `normal`, `pneumonia`).
        multi_label: `True` multi-hot vectors, `False` one-hot (single class per image);
            `None` infers it (label_columns or a row with several findings -> multi-label).
        text_column: CSV column with free text (report, clinical notes) used as the
            prompt; rows with empty text fall back to `prompt_template`.
        filters: keep only rows whose column value is in the list, e.g.
            `{"Frontal/Lateral": ["Frontal"], "AP/PA": ["AP", "PA"]}` (case-insensitive).
        uncertain_policy: what an uncertain CheXpert label (-1) becomes: `"ones"`,
            `"zeros"`, `"ignore"` (drop every row with an uncertain *selected* label) or a
            float such as 0.5.
        resolution: output side in pixels (square); at least 8.
        channels: 1 (grayscale) or 3 (RGB kept, or grayscale repeated).
        resize_mode: `"crop"` (aspect-preserving resize then center crop, no distortion,
            edges lost) or `"pad"` (aspect-preserving resize then zero padding, whole image
            kept).
        normalization: intensity scaling to [0, 1] before mapping to [-1, 1]: `"minmax"`
            (per image), `"percentile"` (0.5-99.5 percentiles per image, robust to burned-in
            text and hot pixels) or `"range"` (the file's nominal range: 0-255 for 8-bit,
            0-65535 for 16-bit, the window for windowed DICOM; keeps brightness differences
            between images).
        clahe: apply CLAHE (`skimage.exposure.equalize_adapthist`) after scaling.
        hflip: random horizontal flips in training (each drawn image with probability 1/2, its
            mask with it; a latent model reads the mirror image's own cached latent). Off by
            default: a flipped chest X-ray has the heart on the right (dextrocardia), an
            anatomically wrong image.
        window: DICOM `(center, width)` window overriding the file's VOI LUT/window.
        bad_files: `"skip"` (record in `.skipped`, warn once at the end) or `"error"`.
        cache_dir: where `datasets` caches the preprocessed images (default: its own). The
            cache holds uint8 pixels (uint16 for 16-bit sources), keyed on every option that
            changes them; `medgen prepare-data` fills it in several processes.
        streaming: read and preprocess images while training, with no local cache (a `datasets`
            IterableDataset, shuffled through a buffer): for sets larger than the disk.
        max_samples: keep at most this many samples (first ones, after filtering).
        prompt_template: prompt for label-only data; `{labels}` becomes the present label
            names joined by ", ", or "no finding" when none is set.
        prompts: a prompt set of `medgen.data.prompts` (`kermany`, `busi`, `covid_notes`,
            `lung_cxr_tb`, `brain_mri`, `lung_ct`) for `source="csv"`: each image's `text` becomes
            several phrasings of what its CSV row says (modality, view, label, subtype, notes);
            replaces `text_column` and `prompt_template`.
    """

    source: str
    path: str
    split: str = "train"
    csv_path: str | None = None
    path_column: str | None = None
    split_column: str | None = None
    label_columns: list[str] | None = None
    findings_column: str | None = None
    findings_separator: str = "|"
    empty_findings: str = "error"
    holdout_fraction: float | None = None
    holdout_order: str = "last"
    holdout_seed: int = 0
    stratify_columns: list[str] = field(default_factory=list)
    mask_column: str | None = None
    mask_classes: list[str] | None = None
    labels: list[str] | None = None
    multi_label: bool | None = None
    text_column: str | None = None
    filters: dict[str, list[str]] = field(default_factory=dict)
    uncertain_policy: str | float = "ones"
    resolution: int = 32
    channels: int = 1
    resize_mode: str = "crop"
    normalization: str = "minmax"
    clahe: bool = False
    hflip: bool = False
    window: tuple[float, float] | None = None
    bad_files: str = "skip"
    cache_dir: str | None = None
    streaming: bool = False
    max_samples: int | None = None
    prompt_template: str = "chest x-ray, {labels}"
    prompts: str | None = None

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ValueError(f"DataConfig.source must be one of {SOURCES}, got {self.source!r}")
        if not self.path:
            raise ValueError("DataConfig.path is empty: give the .npz file or the image folder")
        self.path = str(self.path)
        if self.csv_path is not None:
            self.csv_path = str(self.csv_path)
        if isinstance(self.uncertain_policy, bool) or not (
            self.uncertain_policy in UNCERTAIN_POLICIES or isinstance(self.uncertain_policy, (int, float))
        ):
            raise ValueError(
                f"DataConfig.uncertain_policy must be one of {UNCERTAIN_POLICIES} or a number, "
                f"got {self.uncertain_policy!r}"
            )
        if isinstance(self.uncertain_policy, int):
            self.uncertain_policy = float(self.uncertain_policy)
        if not isinstance(self.resolution, int) or isinstance(self.resolution, bool) or self.resolution < 8:
            raise ValueError(f"DataConfig.resolution must be an integer >= 8, got {self.resolution!r}")
        if self.channels not in (1, 3):
            raise ValueError(f"DataConfig.channels must be 1 or 3, got {self.channels!r}")
        if self.resize_mode not in RESIZE_MODES:
            raise ValueError(f"DataConfig.resize_mode must be one of {RESIZE_MODES}, got {self.resize_mode!r}")
        if self.normalization not in NORMALIZATIONS:
            raise ValueError(
                f"DataConfig.normalization must be one of {NORMALIZATIONS}, got {self.normalization!r}"
            )
        if not isinstance(self.streaming, bool):
            raise ValueError(f"DataConfig.streaming must be true or false, got {self.streaming!r}")
        if self.bad_files not in BAD_FILE_POLICIES:
            raise ValueError(f"DataConfig.bad_files must be one of {BAD_FILE_POLICIES}, got {self.bad_files!r}")
        if self.window is not None:
            if len(self.window) != 2 or float(self.window[1]) <= 0:
                raise ValueError(f"DataConfig.window must be (center, width) with width > 0, got {self.window!r}")
            self.window = (float(self.window[0]), float(self.window[1]))
        if self.max_samples is not None and (not isinstance(self.max_samples, int) or self.max_samples < 1):
            raise ValueError(f"DataConfig.max_samples must be a positive integer or None, got {self.max_samples!r}")
        if self.label_columns is not None and self.findings_column is not None:
            raise ValueError(
                "DataConfig: give either label_columns (CheXpert style) or findings_column (NIH style), not both"
            )
        if self.label_columns is not None and not self.label_columns:
            raise ValueError("DataConfig.label_columns is an empty list: give column names or None")
        if self.labels is not None and not self.labels:
            raise ValueError("DataConfig.labels is an empty list: give label names or None")
        if not self.findings_separator:
            raise ValueError("DataConfig.findings_separator must not be empty")
        if not isinstance(self.empty_findings, str) or not self.empty_findings.strip():
            raise ValueError(
                f"DataConfig.empty_findings must be 'error', 'skip' or a label name, got {self.empty_findings!r}"
            )
        if self.empty_findings != "error" and self.findings_column is None:
            raise ValueError(
                f"DataConfig.empty_findings={self.empty_findings!r} needs findings_column: it says what a blank "
                "findings cell means (CheXpert label_columns read blank as 'not mentioned' = 0)"
            )
        if "{labels}" not in self.prompt_template:
            raise ValueError(
                f"DataConfig.prompt_template must contain '{{labels}}', got {self.prompt_template!r}"
            )
        if self.holdout_fraction is not None and not (
            isinstance(self.holdout_fraction, (int, float)) and 0 < self.holdout_fraction < 1
        ):
            raise ValueError(f"DataConfig.holdout_fraction must be in (0, 1) or None, got {self.holdout_fraction!r}")
        if self.holdout_order not in HOLDOUT_ORDERS:
            raise ValueError(f"DataConfig.holdout_order must be one of {HOLDOUT_ORDERS}, got {self.holdout_order!r}")
        if isinstance(self.stratify_columns, str):
            self.stratify_columns = [self.stratify_columns]
        self.stratify_columns = [str(column) for column in self.stratify_columns or []]
        if self.stratify_columns and self.holdout_fraction is None:
            raise ValueError(
                f"DataConfig.stratify_columns {self.stratify_columns} stratify the held-out split: set holdout_fraction too"
            )
        if self.mask_classes is not None:
            if not self.mask_classes or not all(isinstance(name, str) and name.strip() for name in self.mask_classes):
                raise ValueError(f"DataConfig.mask_classes must be a non-empty list of names, got {self.mask_classes!r}")
            if len(self.mask_classes) > 254:
                raise ValueError(f"DataConfig.mask_classes: at most 254 classes, got {len(self.mask_classes)}")
            if self.mask_column is None:
                raise ValueError("DataConfig.mask_classes names the classes of mask_column: set mask_column too")
        if self.mask_column is not None and self.streaming:
            raise ValueError("DataConfig.mask_column needs the cached data: set streaming to false")
        if self.prompts is not None:
            from medgen.data.prompts import get_prompt_set

            get_prompt_set(self.prompts)  # an unknown name fails here, naming the sets
        if self.source != "csv":
            csv_only = {
                "prompts": self.prompts,
                "holdout_fraction": self.holdout_fraction,
                "label_columns": self.label_columns,
                "findings_column": self.findings_column,
                "text_column": self.text_column,
                "filters": self.filters or None,
                "csv_path": self.csv_path,
                "split_column": self.split_column,
                "mask_column": self.mask_column,
                "stratify_columns": self.stratify_columns or None,
            }
            given = sorted(name for name, value in csv_only.items() if value is not None)
            if given:
                raise ValueError(f"DataConfig options {given} only apply to source='csv', not {self.source!r}")
        if self.source in ("dicom", "folder") and self.labels is not None:
            raise ValueError(f"source={self.source!r} is unlabelled; remove labels={self.labels!r}")
        if not isinstance(self.filters, dict):
            raise ValueError(f"DataConfig.filters must be a mapping column -> list of values, got {self.filters!r}")
        self.filters = {
            str(column): [str(v) for v in (values if isinstance(values, (list, tuple)) else [values])]
            for column, values in self.filters.items()
        }

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> DataConfig:
        """Build from a plain mapping (e.g. a YAML section); unknown keys are errors."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown DataConfig keys {unknown}; valid keys are {sorted(known)}")
        values = dict(values)
        if values.get("window") is not None:
            values["window"] = tuple(values["window"])
        return cls(**values)

    @property
    def mask_names(self) -> list[str]:
        """The mask class names (classes 1, 2, ...), or `[]` without `mask_column`."""
        if self.mask_column is None:
            return []
        return list(self.mask_classes or ["foreground"])

    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON/YAML-serialisable mapping (saved next to checkpoints, used as cache key)."""
        values = dataclasses.asdict(self)
        if values["window"] is not None:
            values["window"] = list(values["window"])
        return values
