"""`build_dataset(cfg)`: images decoded and preprocessed once, cached by `datasets`.

Building has two steps. *Planning* reads only metadata (the CSV, the npz labels, the
file list) and decides which samples exist, their label vectors and their text; files the
CSV lists but the disk lacks, and rows with a blank finding, are settled here, before any
decoding (see `.skipped` and `medgen.data.summary`). *Decoding*
reads and preprocesses every image inside `Dataset.from_generator` (sharded over
`num_proc` processes), whose Arrow cache is keyed on a fingerprint of the options that
change the stored pixels and of every source file's size and mtime: a second build with
the same config and files reuses the cache and decodes nothing, and editing a file or such
an option re-decodes. The cache stores each image as uint8 bytes (uint16 for sources with
more than 8 bits per sample); `ModelRangeTransform` turns them into float tensors in
[-1, 1] when batches are read. With `streaming=True` nothing is cached: images are decoded
while they are read, through a `datasets.IterableDataset`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medgen.data.config import DataConfig
from medgen.data.labels import (
    apply_uncertain_policy,
    encode_findings,
    findings_vocabulary,
    label_counts,
    match_label_names,
    normalize_name,
    one_hot,
    parse_chexpert_value,
    parse_findings,
    present_labels,
)
from medgen.data.readers import iter_files, read_frames, read_medmnist
from medgen.data.tables import (
    PATH_COLUMNS,
    SPLIT_COLUMN,
    derive_split,
    describe_rows,
    locate_csv,
    read_table,
    resolve_column,
    row_number,
    select_split,
)
from medgen.data.prompts import PROMPTS_VERSION, row_prompt
from medgen.data.text import clean_report, template_prompt
from medgen.data.transforms import ModelRangeTransform, pixels_from_bytes, preprocess_mask, preprocess_unit, quantize

logger = logging.getLogger(__name__)

# Bump when decoding/preprocessing changes, so that old caches are not reused.
CACHE_VERSION = "3"  # 3: uint8/uint16 pixel bytes instead of float32 arrays
SKIPPED_FILE = "medgen_skipped.json"
# DataConfig fields that do not change the stored pixels, so they stay out of the cache key.
NOT_IN_CACHE_KEY = ("cache_dir", "hflip", "streaming")
# Images buffered by the streaming shuffle (`IterableDataset.shuffle`); larger mixes better, costs memory.
STREAMING_SHUFFLE_BUFFER = 1000
# Why a file was left out: the first words of every `.skipped` reason.
SKIP_MISSING = "missing file"
SKIP_UNREADABLE = "unreadable file"
SKIP_BLANK = "blank finding"
SKIP_MISSING_MASK = "missing mask"
SKIP_UNREADABLE_MASK = "unreadable mask"
# DataConfig fields added after caches existed: left out of the cache key while unset, so old caches stay valid.
KEY_ONLY_WHEN_SET = ("stratify_columns", "mask_column", "mask_classes", "prompts")


@dataclass
class _Sample:
    """One planned sample: a file (all its frames) or one npz row."""

    key: str
    vector: np.ndarray
    text: str
    origin: str = ""  # where it was listed, e.g. "metadata.csv row 12", for error messages
    mask: str | None = None  # the segmentation mask file (`DataConfig.mask_column`)


@dataclass
class _Plan:
    samples: list[_Sample]
    label_names: list[str]
    multi_label: bool
    files: list[str]  # files whose size/mtime key the cache
    dropped: dict[str, int] = field(default_factory=dict)
    images: np.ndarray | None = None  # MedMNIST pixels, already in memory
    skipped: list[tuple[str, str]] = field(default_factory=list)  # left out while planning (missing, blank)
    read: dict[str, Any] = field(default_factory=dict)  # what was read: CSV file, columns used


class MedicalImageDataset:
    """A preprocessed image dataset and what is known about it.

    Attributes:
        dataset: `datasets.Dataset` whose rows read as `pixel_values` float32 tensor
            `(C, H, W)` in [-1, 1], `labels` float32 tensor `(num_labels,)` (length 0 when
            unlabelled), `text` str and `source` str (file path, `path#frame` for
            multi-frame DICOM, or `file.npz:split:index`). The pixels are stored as
            integers and converted by a read transform (`ModelRangeTransform`):
            `.select`, `.select_columns`, `.add_column` and `concatenate_datasets` keep it,
            `.with_format(...)` replaces it and shows the stored bytes. With
            `config.streaming` a shuffled `datasets.IterableDataset` with the same rows.
            With `config.mask_column`, also `mask`: int64 tensor `(1, H, W)` of class indices
            (0 = background), through the same geometric transforms as `pixel_values`.
        label_names: names of the label vector's entries, in order.
        multi_label: True for multi-hot vectors, False for one-hot.
        skipped: `(path, reason)` for every listed file left out; the reason starts with
            "missing file", "unreadable file" or "blank finding" (`empty_findings="skip"`).
        dropped: rows left out on purpose (e.g. `uncertain_policy="ignore"`), by reason.
        config: the `DataConfig` it was built from.
        fingerprint: the cache key.
        read_from: what was read beyond the config: for CSV data the CSV file and the path and
            split columns actually used.
        mask_names: the mask class names (classes 1, 2, ...; 0 is the background), `[]` without masks.
    """

    def __init__(
        self,
        dataset: Any,
        label_names: list[str],
        multi_label: bool,
        skipped: list[tuple[str, str]],
        config: DataConfig,
        fingerprint: str,
        dropped: dict[str, int] | None = None,
        read_from: dict[str, Any] | None = None,
        planned_labels: np.ndarray | None = None,
    ) -> None:
        self.dataset = dataset
        self.label_names = label_names
        self.multi_label = multi_label
        self.skipped = skipped
        self.config = config
        self.fingerprint = fingerprint
        self.dropped = dropped or {}
        self.read_from = read_from or {}
        # streaming: the label vectors planned (unreadable files only show up while reading)
        self.planned_labels = planned_labels
        self.mask_names = config.mask_names

    @property
    def num_labels(self) -> int:
        return len(self.label_names)

    @property
    def streaming(self) -> bool:
        return self.planned_labels is not None

    def __len__(self) -> int:
        """The number of images; when streaming, the number planned (unreadable files are left out when read)."""
        return len(self.planned_labels) if self.streaming else len(self.dataset)

    def __getitem__(self, index: Any) -> Any:
        return self.dataset[index]

    def label_counts(self) -> dict[str, int]:
        """Images per label, plus "(no label set)": for class-balance reports."""
        if self.streaming:
            return label_counts(self.planned_labels, self.label_names) if self.label_names else {}
        return dataset_label_counts(self.dataset, self.label_names)

    def summary(self) -> str:
        """A few lines for logs and model cards: what was read, images per label, skipped files."""
        from medgen.data.summary import format_data_summary, summarize_dataset

        return format_data_summary(summarize_dataset(self))

    def __repr__(self) -> str:
        return f"MedicalImageDataset({self.summary().splitlines()[0]})"


def dataset_label_counts(dataset: Any, label_names: list[str]) -> dict[str, int]:
    """Per-label image counts of a dataset with a `labels` column."""
    if not label_names:
        return {}
    vectors = np.asarray(dataset.with_format("numpy", columns=["labels"])["labels"], dtype=np.float32)
    return label_counts(vectors.reshape(len(dataset), len(label_names)), label_names)


def build_dataset(cfg: DataConfig, num_proc: int = 1) -> MedicalImageDataset:
    """Plan, decode (or reuse the cache) and wrap a dataset described by `cfg`.

    Args:
        cfg: what to read and how.
        num_proc: processes that decode at once (`datasets` shards the files among them).
            1 by default: a library call or a training run never forks unasked; `medgen
            prepare-data --num-proc N` fills the same cache in parallel. The cache does not
            depend on it: any `num_proc` stores the same rows in the same order. Ignored
            when streaming.

    Raises:
        FileNotFoundError: the npz / folder / CSV does not exist.
        ValueError: missing CSV column, unknown label, unknown split, no sample left
            after filtering, every file unreadable, or (with `bad_files="error"`) the
            first unreadable file.
    """
    if not isinstance(num_proc, int) or isinstance(num_proc, bool) or num_proc < 1:
        raise ValueError(f"num_proc must be a positive integer, got {num_proc!r}")
    plan = _plan(cfg)
    if cfg.max_samples is not None:
        plan.samples = plan.samples[: cfg.max_samples]
    if not plan.samples:
        left_out = f"; {len(plan.skipped)} left out, e.g. {': '.join(plan.skipped[0])}" if plan.skipped else ""
        raise ValueError(
            f"no samples in source {cfg.source!r} at {cfg.path} with filters {cfg.filters or 'none'}"
            + (f" and labels {cfg.labels}" if cfg.labels else "")
            + (f"; dropped rows: {plan.dropped}" if plan.dropped else "")
            + left_out
        )
    fingerprint = _fingerprint(cfg, plan)
    if plan.dropped:
        for reason, count in plan.dropped.items():
            logger.info("dropped %d rows of %s: %s", count, cfg.path, reason)
    if cfg.streaming:
        return _stream(cfg, plan, fingerprint)
    dataset, skipped = _cached(cfg, plan, fingerprint, num_proc)
    skipped = plan.skipped + skipped
    if skipped:
        logger.warning(
            "left out %d file(s) of %s, e.g. %s: %s",
            len(skipped),
            cfg.path,
            skipped[0][0],
            skipped[0][1],
        )
    return MedicalImageDataset(
        dataset=dataset.with_transform(ModelRangeTransform((cfg.channels, cfg.resolution, cfg.resolution))),
        label_names=plan.label_names,
        multi_label=plan.multi_label,
        skipped=skipped,
        config=cfg,
        fingerprint=fingerprint,
        dropped=plan.dropped,
        read_from=plan.read,
    )


def _features(cfg: DataConfig, stored: bool) -> Any:
    from datasets import Array3D, Features, List, Value

    shape = (cfg.channels, cfg.resolution, cfg.resolution)
    mask = {"mask": Value("binary")} if cfg.mask_column else {}  # class indices (1, H, W) as uint8 bytes
    return Features(
        {
            **mask,
            # stored: one image's uint8/uint16 bytes (`pixels_from_bytes`); streamed: the same values in [-1, 1]
            "pixel_values": Value("binary") if stored else Array3D(shape=shape, dtype="float32"),
            "labels": List(Value("float32")),
            "text": Value("string"),
            "source": Value("string"),
        }
    )


def _shards(count: int, num_shards: int) -> list[tuple[int, int]]:
    """`num_shards` contiguous (start, stop) ranges of sample indices, in order."""
    bounds = np.linspace(0, count, min(num_shards, count) + 1).round().astype(int)
    return [(int(start), int(stop)) for start, stop in zip(bounds[:-1], bounds[1:])]


def _cached(cfg: DataConfig, plan: _Plan, fingerprint: str, num_proc: int) -> tuple[Any, list[tuple[str, str]]]:
    """The Arrow cache of `plan` (built now, or reused) and the files left out while decoding."""
    from datasets import config as datasets_config
    from datasets.exceptions import DatasetGenerationError
    from datasets.io.generator import GeneratorDatasetInputStream

    # Decoding may run in other processes: each shard writes what it left out into this folder,
    # merged below. Files there after the build mean it decoded; none mean the cache was reused.
    cache_root = Path(cfg.cache_dir or datasets_config.HF_DATASETS_CACHE)
    shard_dir = cache_root / "medgen_skipped_shards" / fingerprint
    shutil.rmtree(shard_dir, ignore_errors=True)

    def generate(shards: list[tuple[int, int]]) -> Iterator[dict[str, Any]]:
        for start, stop in shards:
            skipped: list[tuple[str, str]] = []
            rows = 0
            for row in _decode(cfg, plan, range(start, stop), skipped, stored=True):
                rows += 1
                yield row
            shard_dir.mkdir(parents=True, exist_ok=True)
            (shard_dir / f"{start:012d}.json").write_text(json.dumps({"rows": rows, "skipped": skipped}))

    reader = GeneratorDatasetInputStream(
        generate,
        features=_features(cfg, stored=True),
        cache_dir=cfg.cache_dir,
        fingerprint=fingerprint,
        gen_kwargs={"shards": _shards(len(plan.samples), num_proc)},
        num_proc=num_proc if num_proc > 1 else None,
    )
    failure: Exception | None = None
    try:
        dataset = reader.read()
    except DatasetGenerationError as error:
        # datasets wraps generator errors; surface ours (they name the file).
        cause = error.__cause__ or error.__context__
        if isinstance(cause, (ValueError, FileNotFoundError)):
            raise cause from None
        raise
    except ValueError as error:  # datasets refuses a split of 0 rows; said better below
        failure = error
    finally:
        shard_files = sorted(shard_dir.glob("*.json")) if shard_dir.exists() else []
        shards = [json.loads(name.read_text()) for name in shard_files]
        shutil.rmtree(shard_dir, ignore_errors=True)
    skipped = [tuple(item) for shard in shards for item in shard["skipped"]]
    if shards and not sum(shard["rows"] for shard in shards):
        shutil.rmtree(reader.builder.cache_dir, ignore_errors=True)  # never keep an empty cache
        first_path, first_reason = skipped[0] if skipped else (cfg.path, "no image")
        raise ValueError(
            f"no readable image in source {cfg.source!r} at {cfg.path}: all {len(skipped)} "
            f"file(s) failed, e.g. {first_path}: {first_reason}"
        )
    if failure is not None:
        raise failure
    folder = Path(dataset.cache_files[0]["filename"]).parent if dataset.cache_files else None
    if folder is not None:
        sidecar = folder / SKIPPED_FILE
        if shard_files:
            sidecar.write_text(json.dumps(skipped))
        elif sidecar.exists():
            skipped = [tuple(item) for item in json.loads(sidecar.read_text())]
    if cfg.max_samples is not None and len(dataset) > cfg.max_samples:  # multi-frame files give several rows
        dataset = dataset.select(range(cfg.max_samples))
    return dataset, skipped


def _stream(cfg: DataConfig, plan: _Plan, fingerprint: str) -> MedicalImageDataset:
    """An IterableDataset decoding while it is read: many shards, so that processes and workers split it."""
    from datasets import IterableDataset

    def generate(shards: list[tuple[int, int]]) -> Iterator[dict[str, Any]]:
        for start, stop in shards:
            skipped: list[tuple[str, str]] = []
            yield from _decode(cfg, plan, range(start, stop), skipped, stored=False)
            for path, reason in skipped:  # no cache to keep them in: say so as they happen
                logger.warning("left out %s: %s", path, reason)

    dataset = IterableDataset.from_generator(
        generate,
        features=_features(cfg, stored=False),
        gen_kwargs={"shards": _shards(len(plan.samples), 1024)},
    )
    dataset = dataset.shuffle(seed=0, buffer_size=STREAMING_SHUFFLE_BUFFER).with_format("torch")
    labels = np.stack([sample.vector for sample in plan.samples]).astype(np.float32)
    return MedicalImageDataset(
        dataset=dataset,
        label_names=plan.label_names,
        multi_label=plan.multi_label,
        skipped=list(plan.skipped),
        config=cfg,
        fingerprint=fingerprint,
        dropped=plan.dropped,
        read_from=plan.read,
        planned_labels=labels,
    )


def split_for_process(data: MedicalImageDataset, rank: int, world_size: int) -> Any:
    """This process's part of a streaming dataset (`datasets.distributed.split_dataset_by_node`).

    For loops that do not shard themselves; `accelerate`'s prepared DataLoader already
    shards a `datasets.IterableDataset` across processes, so do not split it twice.
    """
    from datasets.distributed import split_dataset_by_node

    if not data.streaming:
        raise ValueError("split_for_process splits streaming datasets (data.streaming: true)")
    return split_dataset_by_node(data.dataset, rank=rank, world_size=world_size)


def _fingerprint(cfg: DataConfig, plan: _Plan) -> str:
    config = cfg.to_dict()
    for name in NOT_IN_CACHE_KEY:
        config.pop(name)
    for name in KEY_ONLY_WHEN_SET:
        if not config[name]:
            config.pop(name)
    version = CACHE_VERSION + (f"+prompts{PROMPTS_VERSION}" if cfg.prompts else "")  # phrasings are stored text
    digest = hashlib.sha256(json.dumps({"version": version, "config": config}, sort_keys=True).encode())
    for name in plan.files:
        try:
            stat = os.stat(name)
            digest.update(f"{name}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
        except OSError:
            digest.update(f"{name}\0missing\n".encode())
    return f"medgen-{cfg.source}-{digest.hexdigest()[:32]}"


def _source_bits(meta: dict[str, Any]) -> int:
    """16 for sources with more than 8 bits per sample (DICOM, 16-bit PNG/TIFF, float TIFF), else 8."""
    return 16 if meta.get("format") == "dicom" or int(meta.get("bit_depth", 8)) > 8 else 8


def _decode(
    cfg: DataConfig, plan: _Plan, indices: range, skipped: list[tuple[str, str]], stored: bool
) -> Iterator[dict[str, Any]]:
    """Rows of the samples at `indices`; pixels as stored bytes, or (streaming) the same values in [-1, 1]."""
    options = {
        "resolution": cfg.resolution,
        "channels": cfg.channels,
        "resize_mode": cfg.resize_mode,
        "normalization": cfg.normalization,
        "clahe": cfg.clahe,
    }
    shape = (cfg.channels, cfg.resolution, cfg.resolution)

    def pixels(image: np.ndarray, bits: int) -> Any:
        stored_bytes = quantize(image, bits).astype("<u2" if bits == 16 else np.uint8).tobytes()
        return stored_bytes if stored else pixels_from_bytes([stored_bytes], shape)[0]

    for index in indices:
        sample = plan.samples[index]
        if plan.images is not None:
            bits = 8 if plan.images.dtype == np.uint8 else 16
            image = preprocess_unit(plan.images[index], value_range=(0.0, 255.0), **options)
            yield {"pixel_values": pixels(image, bits), "labels": sample.vector, "text": sample.text, "source": sample.key}
            continue
        try:
            frames, meta = read_frames(sample.key, keep_rgb=cfg.channels == 3, window=cfg.window)
            value_range = meta.get("value_range")
            processed = [preprocess_unit(frame, value_range=value_range, **options) for frame in frames]
        except FileNotFoundError as error:  # removed since planning
            if cfg.bad_files == "error":
                raise FileNotFoundError(f"{SKIP_MISSING}: {sample.key}{_listed(sample)}") from error
            skipped.append((sample.key, f"{SKIP_MISSING}: not found{_listed(sample)}"))
            continue
        except Exception as error:  # any unreadable file is either skipped or reported by name
            if cfg.bad_files == "error":
                raise ValueError(f"{SKIP_UNREADABLE}: {sample.key}{_listed(sample)}: {error}") from error
            skipped.append((sample.key, f"{SKIP_UNREADABLE}: {type(error).__name__}: {error}"))
            continue
        extra: dict[str, Any] = {}
        if sample.mask is not None:
            try:
                mask = _read_mask(cfg, sample, frames)
            except (FileNotFoundError, OSError) as error:  # missing or undecodable: the bad_files policy
                missing = isinstance(error, FileNotFoundError)
                reason = SKIP_MISSING_MASK if missing else SKIP_UNREADABLE_MASK
                if cfg.bad_files == "error":
                    raise (FileNotFoundError if missing else ValueError)(
                        f"{reason}: {sample.mask} of {sample.key}{_listed(sample)}: {error}"
                    ) from error
                skipped.append((sample.key, f"{reason}: {sample.mask}{_listed(sample)}: {type(error).__name__}: {error}"))
                continue
            extra["mask"] = mask.tobytes()
        bits = _source_bits(meta)
        for frame_index, image in enumerate(processed):
            source = f"{sample.key}#{frame_index}" if len(processed) > 1 else sample.key
            yield {
                "pixel_values": pixels(image, bits), "labels": sample.vector, "text": sample.text, "source": source,
                **extra,
            }


def _read_mask(cfg: DataConfig, sample: _Sample, frames: list[np.ndarray]) -> np.ndarray:
    """The sample's mask as class indices `(1, R, R)` uint8, through its image's geometry.

    Raises FileNotFoundError / OSError (missing, undecodable: the bad_files policy) or ValueError (another size
    than the image, values that are no class index: always an error naming the row)."""
    from PIL import Image

    if not os.path.isfile(sample.mask):
        raise FileNotFoundError(f"not found: {sample.mask}")
    with Image.open(sample.mask) as image:
        image.load()
        if image.mode == "1":
            array = np.array(image, dtype=np.uint8)
        elif image.mode in ("L", "P", "I", "I;16"):
            array = np.array(image)
        else:
            array = np.array(image.convert("L"))
    image_shape = tuple(frames[0].shape[:2])
    if tuple(array.shape[:2]) != image_shape:
        raise ValueError(
            f"the mask {sample.mask} is {array.shape[1]}x{array.shape[0]} (width x height) but its image "
            f"{sample.key} is {image_shape[1]}x{image_shape[0]}{_listed(sample)}"
        )
    try:
        return preprocess_mask(
            array, resolution=cfg.resolution, num_classes=len(cfg.mask_names), resize_mode=cfg.resize_mode
        )
    except ValueError as error:
        raise ValueError(f"the mask {sample.mask} of {sample.key}{_listed(sample)}: {error}") from None


def _listed(sample: _Sample) -> str:
    return f" (listed in {sample.origin})" if sample.origin else ""


def _plan(cfg: DataConfig) -> _Plan:
    if cfg.source == "medmnist":
        return _plan_medmnist(cfg)
    if cfg.source == "csv":
        return _plan_csv(cfg)
    files = [str(path) for path in iter_files(cfg.path, dicom_only=cfg.source == "dicom")]
    empty = np.zeros(0, dtype=np.float32)
    return _Plan([_Sample(name, empty, "") for name in files], [], False, files)


def _plan_medmnist(cfg: DataConfig) -> _Plan:
    images, vectors, names, multi_label = read_medmnist(cfg.path, cfg.split, cfg.labels)
    if cfg.multi_label is not None and cfg.multi_label != multi_label:
        kind = "multi-label" if multi_label else "single-label"
        raise ValueError(f"{cfg.path} is {kind}; set multi_label to {multi_label} or leave it unset (None)")
    count = len(images) if cfg.max_samples is None else min(len(images), cfg.max_samples)
    stem = Path(cfg.path).name
    prompts = [template_prompt(present_labels(vectors[i], names), cfg.prompt_template) for i in range(count)]
    samples = [_Sample(f"{stem}:{cfg.split}:{i}", vectors[i], prompts[i]) for i in range(count)]
    return _Plan(samples, names, multi_label, [str(Path(cfg.path).resolve())], images=images[:count])


def _plan_csv(cfg: DataConfig) -> _Plan:
    root, csv_path = locate_csv(cfg.path, cfg.csv_path)
    frame = read_table(csv_path)
    path_column = resolve_column(frame, csv_path, "path_column", cfg.path_column, PATH_COLUMNS)
    if path_column is None:
        raise ValueError(
            f"path_column: {csv_path} has none of the image path columns {list(PATH_COLUMNS)}; "
            f"its columns are {list(frame.columns)} (set path_column)"
        )
    split_column = resolve_column(frame, csv_path, "split_column", cfg.split_column, (SPLIT_COLUMN,))
    needed = {"label_columns": list(cfg.label_columns or [])}
    needed["findings_column"] = [cfg.findings_column] if cfg.findings_column else []
    needed["text_column"] = [cfg.text_column] if cfg.text_column else []
    needed["mask_column"] = [cfg.mask_column] if cfg.mask_column else []
    needed["stratify_columns"] = list(cfg.stratify_columns)
    needed["filters"] = list(cfg.filters)
    for option, columns in needed.items():
        missing = [column for column in columns if column not in frame.columns]
        if missing:
            raise ValueError(
                f"{option}: column(s) {missing} not in {csv_path}; its columns are {list(frame.columns)}"
            )

    if cfg.holdout_fraction is not None:
        if split_column is not None:
            raise ValueError(
                f"holdout_fraction: {csv_path} already has a split column {split_column!r}; "
                "remove holdout_fraction to use it"
            )
        frame = derive_split(
            frame, path_column, cfg.findings_column, cfg.holdout_fraction, cfg.holdout_order, cfg.holdout_seed,
            extra_columns=cfg.stratify_columns,
        )
        split_column = SPLIT_COLUMN
    if split_column is not None:
        frame = select_split(frame, csv_path, split_column, cfg.split)
    for column, values in cfg.filters.items():
        allowed = {normalize_name(value) for value in values}
        frame = frame[frame[column].map(normalize_name).isin(allowed)]
    numbers = [row_number(index) for index in frame.index]
    rows = frame.to_dict("records")
    dropped: dict[str, int] = {}
    blank: set[int] = set()

    if cfg.label_columns:
        if cfg.multi_label is False:
            raise ValueError("label_columns (CheXpert style) are multi-label; leave multi_label unset or True")
        names = match_label_names(cfg.labels, cfg.label_columns) if cfg.labels else list(cfg.label_columns)
        vectors: list[np.ndarray | None] = []
        for number, row in zip(numbers, rows):
            try:
                raw = np.array([parse_chexpert_value(row[name]) for name in names], dtype=np.float32)
            except ValueError as error:
                raise ValueError(f"{csv_path}, row {number} ({row[path_column]}): {error}") from None
            vectors.append(apply_uncertain_policy(raw, cfg.uncertain_policy))
        multi_label = True
        ignored = sum(vector is None for vector in vectors)
        if ignored:
            dropped["uncertain_policy='ignore': an uncertain (-1) selected label"] = ignored
    elif cfg.findings_column:
        findings = [parse_findings(row[cfg.findings_column], cfg.findings_separator) for row in rows]
        blank = {i for i, row_findings in enumerate(findings) if not row_findings}
        fill = _empty_findings_label(cfg, csv_path, [(numbers[i], rows[i][path_column]) for i in sorted(blank)])
        written = [row_findings for row_findings in findings if row_findings]
        if fill is not None:
            findings = [row_findings or [fill] for row_findings in findings]
            blank = set()
        several = next((f for f in findings if len(f) > 1), None)
        if cfg.multi_label is False and several is not None:
            raise ValueError(
                f"multi_label=False but {csv_path} has rows with several findings, e.g. {several}"
            )
        multi_label = cfg.multi_label if cfg.multi_label is not None else several is not None
        # The CSV's own names come first, so that they set the spelling of a name also used as `fill`.
        vocabulary_rows = written + ([[fill]] if fill is not None else [])
        every_name = findings_vocabulary(vocabulary_rows, multi_label=False)
        if cfg.labels:
            names = match_label_names(cfg.labels, every_name)
        else:
            names = findings_vocabulary(vocabulary_rows, multi_label=multi_label)
        vectors = []
        wanted = {normalize_name(name): i for i, name in enumerate(names)}
        for row_findings in findings:
            if not row_findings:
                vectors.append(None)
            elif multi_label:
                vectors.append(encode_findings(row_findings, names))
            else:
                position = wanted.get(normalize_name(row_findings[0]))
                vectors.append(None if position is None else one_hot(position, len(names)))
        unlisted = sum(vector is None for vector in vectors) - len(blank)
        if unlisted:
            dropped["single-label finding not in `labels`"] = unlisted
    else:
        if cfg.labels:
            raise ValueError("labels needs label_columns or findings_column for source='csv'")
        names, multi_label = [], False
        vectors = [np.zeros(0, dtype=np.float32)] * len(rows)

    samples, files, skipped, missing, missing_masks = [], [str(csv_path.resolve())], [], [], []
    for i, (number, row, vector) in enumerate(zip(numbers, rows, vectors)):
        path = Path(str(row[path_column]).strip())
        path = path if path.is_absolute() else root / path
        origin = f"{csv_path.name} row {number}"
        if i in blank:
            skipped.append((str(path), f"{SKIP_BLANK}: {cfg.findings_column!r} is empty in {origin}"))
            continue
        if vector is None:
            continue
        files.append(str(path))  # a missing file keys the cache too, so that adding it later re-decodes
        if not path.exists():
            missing.append((number, str(path)))
            skipped.append((str(path), f"{SKIP_MISSING}: not found (listed in {origin})"))
            continue
        mask = None
        if cfg.mask_column:
            cell = str(row[cfg.mask_column]).strip()
            if not cell:
                missing_masks.append((number, str(path)))
                skipped.append((str(path), f"{SKIP_MISSING_MASK}: {cfg.mask_column!r} is empty in {origin}"))
                continue
            mask_path = Path(cell) if Path(cell).is_absolute() else root / cell
            files.append(str(mask_path))
            if not mask_path.is_file():
                missing_masks.append((number, str(mask_path)))
                skipped.append((str(path), f"{SKIP_MISSING_MASK}: {mask_path} not found (listed in {origin})"))
                continue
            mask = str(mask_path)
        if cfg.prompts:  # phrasings of what the row says (medgen.data.prompts)
            try:
                text = row_prompt(cfg.prompts, row, str(row[path_column]))
            except ValueError as error:
                raise ValueError(f"{csv_path}, row {number} ({row[path_column]}): {error}") from None
        else:
            text = clean_report(row[cfg.text_column]) if cfg.text_column else ""
        if not text and names:
            text = template_prompt(present_labels(vector, names), cfg.prompt_template)
        samples.append(_Sample(str(path), vector, text, origin, mask))
    if missing and cfg.bad_files == "error":
        raise FileNotFoundError(
            f"{len(missing)} image file(s) not found: {describe_rows(csv_path, missing, limit=5)} "
            "(bad_files='skip' leaves them out)"
        )
    if missing_masks and cfg.bad_files == "error":
        raise FileNotFoundError(
            f"{len(missing_masks)} mask(s) ({cfg.mask_column!r}) missing or not found: "
            f"{describe_rows(csv_path, missing_masks, limit=5)} (bad_files='skip' leaves those images out)"
        )
    read = {"csv_path": str(csv_path), "path_column": path_column, "split_column": split_column}
    if cfg.mask_column:
        read["mask_column"] = cfg.mask_column
    return _Plan(samples, names, multi_label, files, dropped, skipped=skipped, read=read)


def _empty_findings_label(cfg: DataConfig, csv_path: Path, blank_rows: list[tuple[int, str]]) -> str | None:
    """The label given to blank findings cells, None to skip them; `empty_findings="error"` raises."""
    if cfg.empty_findings == "skip":
        return None
    if cfg.empty_findings != "error":
        return cfg.empty_findings
    if blank_rows:
        raise ValueError(
            f"findings_column {cfg.findings_column!r} is blank in {describe_rows(csv_path, blank_rows)}; "
            "say what a blank cell means with data.empty_findings: 'skip' (leave those images out) "
            "or a label name such as 'No Finding'"
        )
    return None
