"""The stored evaluation of a saved pipeline (`evaluation.json`): reading it, checking that it vouches for the
folder's current weights, and describing its memorization verdict in one line.

`medgen evaluate` writes it (`medgen.pipelines.publishing.store_evaluation`); the model card shows it
(`medgen.pipelines.model_card`) and the publishing gate reads it (`medgen.pipelines.publishing`). This module
imports neither, so the card and the gate both build on it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

EVALUATION_FILE = "evaluation.json"


def weights_sha256(folder: str | Path) -> dict[str, str]:
    """SHA-256 of every `*.safetensors` file under `folder`, by relative path: what an evaluation vouches for."""
    folder = Path(folder)
    digests = {}
    for path in sorted(folder.rglob("*.safetensors")):
        digest = hashlib.sha256()
        with path.open("rb") as file:
            for block in iter(lambda: file.read(1 << 20), b""):
                digest.update(block)
        digests[path.relative_to(folder).as_posix()] = digest.hexdigest()
    return digests


def read_evaluation(folder: str | Path) -> dict[str, Any] | None:
    """`folder/evaluation.json` as a dict, None when absent; `ValueError` naming the file when unreadable."""
    path = Path(folder) / EVALUATION_FILE
    if not path.is_file():
        return None
    try:
        summary = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} is not valid JSON: {error}") from error
    if not isinstance(summary, dict) or not isinstance(summary.get("memorization"), dict):
        raise ValueError(f"{path} is not a medgen evaluation summary (no 'memorization' section)")
    return summary


def stored_evaluation(folder: str | Path, name: str | None = None) -> tuple[dict[str, Any] | None, str | None]:
    """`(summary, None)` when `folder` holds an evaluation of its current weights, else `(None, why not)`;
    the reason calls the pipeline `name` (default: the folder's path)."""
    folder = Path(folder)
    name = name or str(folder)
    try:
        summary = read_evaluation(folder)
    except ValueError as error:
        return None, str(error)
    if summary is None:
        return None, f"{name} has no stored evaluation ({EVALUATION_FILE})"
    if summary.get("weights_sha256") != weights_sha256(folder):
        return None, (
            f"the stored evaluation ({EVALUATION_FILE}) of {name} was made for other weights "
            "(the pipeline changed since it was evaluated)"
        )
    return summary, None


def describe_memorization(memorization: dict[str, Any]) -> str:
    """One line: the memorization verdict per searched space, e.g. "pixel space: 3/200 near copies ..."."""
    if "per_set" in memorization:  # a text model across sets: searched per set
        return "; ".join(f"{name}: {describe_memorization(entry)}" for name, entry in memorization["per_set"].items())
    parts = []
    for space in ("pixel", "feature"):
        entry = memorization.get(space)
        if not entry:
            continue
        searched = f" among {entry['n_train_searched']} training images" if "n_train_searched" in entry else ""
        fraction = entry.get("near_copy_fraction")
        reference = entry.get("real_test_near_copy_fraction")
        detail = (
            f"{fraction:.1%} of generated images are near copies{searched} (held-out real images: {reference:.1%})"
            if fraction is not None and reference is not None else f"searched{searched}"
        )
        verdict = "ALARM" if entry.get("alarm") else "no alarm"
        parts.append(f"{space} space: {verdict}, {detail}" + (f", p = {entry['p_value']:.3g}" if "p_value" in entry else ""))
    return "; ".join(parts) or "no memorization search recorded"


def describe_mask_generator(section: dict[str, Any]) -> str:
    """A `mask_generator` section (or its stored summary) in one line: per label (and class, where there are several)
    the fraction of empty masks and the mean area, real / generated."""
    parts = []
    for label, classes in (section.get("per_label") or {}).items():
        for class_name, entry in classes.items():
            real, generated = entry["real"], entry["generated"]
            name = label if len(classes) == 1 else f"{label} {class_name}"
            parts.append(f"{name}: empty {real['empty']:.2f} / {generated['empty']:.2f}, "
                         f"area {real['area_mean']:.3f} / {generated['area_mean']:.3f}")
    return "; ".join(parts) + " (real test masks / generated)"
