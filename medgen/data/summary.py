"""What a dataset build read: images per label and every file left out, with why.

`summarize_dataset` gives a JSON-ready dict, `format_data_summary` a few lines for the
console, `write_data_summary` saves the dict as `data_summary.json` in a run's output
folder, so that a model can always be traced back to the images it saw.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

DATA_SUMMARY_FILE = "data_summary.json"
EXTRA_SUMMARY_PATTERN = "data_summary_extra*.json"  # a run with `extra_data`: one summary per further image set


def data_summary_name(index: int) -> str:
    """The summary file of a run's image set `index` (0: `data`, then each of `extra_data` in order)."""
    return DATA_SUMMARY_FILE if index == 0 else f"data_summary_extra{index}.json"


def recorded_image_count(folder: str | Path, num_sets: int) -> int | None:
    """How many training images a run in `folder` read over its `num_sets` image sets, from the summaries it wrote;
    None unless every set's summary is there and readable (a count of only some sets would be wrong)."""
    total = 0
    for index in range(num_sets):
        try:
            total += int(json.loads((Path(folder) / data_summary_name(index)).read_text())["num_images"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
    return total


def summarize_dataset(data: Any) -> dict[str, Any]:
    """The facts about a built `MedicalImageDataset`, as plain JSON-serialisable values.

    Keys: `source`, `path`, `split` (None when the data has no splits), `filters`,
    `max_samples`, `read_from` (CSV file and columns used), `num_images`, `image_shape`,
    `label_names`, `multi_label`, `images_per_label`, `dropped_rows` (reason -> count),
    `num_skipped`, `skipped_by_reason` ("missing file" / "unreadable file" / "blank
    finding" -> count), `skipped` (`{"path", "reason"}` per file) and `fingerprint`.
    """
    cfg = data.config
    read_from = dict(getattr(data, "read_from", {}) or {})
    has_splits = cfg.source == "medmnist" or read_from.get("split_column") is not None
    return {
        "source": cfg.source,
        "path": cfg.path,
        "split": cfg.split if has_splits else None,
        "filters": dict(cfg.filters),
        "max_samples": cfg.max_samples,
        "read_from": read_from,
        "num_images": len(data),
        "image_shape": [cfg.channels, cfg.resolution, cfg.resolution],
        "label_names": list(data.label_names),
        "multi_label": bool(data.multi_label),
        "images_per_label": data.label_counts(),
        "dropped_rows": dict(data.dropped),
        "num_skipped": len(data.skipped),
        "skipped_by_reason": dict(Counter(_category(reason) for _, reason in data.skipped)),
        "skipped": [{"path": str(path), "reason": str(reason)} for path, reason in data.skipped],
        "fingerprint": data.fingerprint,
    }


def _category(reason: str) -> str:
    return reason.split(":", 1)[0]


def format_data_summary(summary: dict[str, Any], max_files: int = 5) -> str:
    """A few human-readable lines: what was read, images per label, files left out and why."""
    where = f"{summary['source']} {summary['path']}"
    if summary["split"] is not None:
        where += f" (split {summary['split']})"
    elif summary["read_from"].get("csv_path"):
        where += " (no split column: every row)"
    channels, height, width = summary["image_shape"]
    lines = [f"{summary['num_images']} images of {channels}x{height}x{width} from {where}"]
    if summary["filters"]:
        lines.append(f"filters: {summary['filters']}")
    if summary["label_names"]:
        kind = "multi-label" if summary["multi_label"] else "single-label"
        counts = ", ".join(f"{name}: {count}" for name, count in summary["images_per_label"].items())
        lines.append(f"images per label ({kind}): {counts}")
    else:
        lines.append("unlabelled")
    for reason, count in summary["dropped_rows"].items():
        lines.append(f"dropped {count} rows: {reason}")
    by_reason = ", ".join(f"{count} {reason}" for reason, count in summary["skipped_by_reason"].items())
    lines.append(f"skipped files: {summary['num_skipped']}" + (f" ({by_reason})" if by_reason else ""))
    for item in summary["skipped"][:max_files]:
        lines.append(f"  {item['path']}: {item['reason']}")
    if summary["num_skipped"] > max_files:
        lines.append(f"  ... and {summary['num_skipped'] - max_files} more (all listed in {DATA_SUMMARY_FILE})")
    return "\n".join(lines)


def write_data_summary(data: Any, folder: str | Path, filename: str = DATA_SUMMARY_FILE) -> Path:
    """Writes `summarize_dataset(data)` as JSON into `folder` (created if needed); returns the file.

    Written to a temporary file and renamed, so a crash never leaves half a summary.
    """
    from medgen.files import atomic_write

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / filename
    with atomic_write(target, "w") as stream:
        json.dump(summarize_dataset(data), stream, indent=2)
        stream.write("\n")
    return target
