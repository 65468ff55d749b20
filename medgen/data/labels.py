"""Label parsing and encoding: CheXpert 1/0/-1/blank columns, NIH delimited findings, one-hot.

Everything ends as float32 vectors: one-hot for single-label data, multi-hot (with the
uncertainty value where chosen) for multi-label data, length 0 for unlabelled data.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np

NO_FINDING = "no finding"
_BLANKS = {"", "nan", "none", "null"}


def normalize_name(name: str) -> str:
    """Case- and space-insensitive key: `" Pleural  Effusion"` -> `"pleural effusion"`."""
    return " ".join(str(name).replace("_", " ").split()).lower()


def match_label_names(requested: Sequence[str], available: Sequence[str], *, what: str = "label") -> list[str]:
    """Resolve user-given names against the data's names, case-insensitively, keeping the request order.

    Raises:
        ValueError: a requested name is not available (lists the valid ones), or repeated.
    """
    lookup = {normalize_name(name): name for name in available}
    resolved: list[str] = []
    for name in requested:
        key = normalize_name(name)
        if key not in lookup:
            raise ValueError(f"unknown {what} {name!r}; valid {what}s are {sorted(available)}")
        if lookup[key] in resolved:
            raise ValueError(f"{what} {name!r} is listed twice")
        resolved.append(lookup[key])
    return resolved


def parse_chexpert_value(value: object) -> float:
    """CheXpert cell -> 1.0 positive, 0.0 negative, -1.0 uncertain; blank (not mentioned) -> 0.0."""
    if is_blank(value):
        return 0.0
    text = str(value).strip()
    try:
        number = float(text)
    except ValueError as error:
        raise ValueError(f"CheXpert label value must be 1, 0, -1 or blank, got {value!r}") from error
    if number not in (1.0, 0.0, -1.0):
        raise ValueError(f"CheXpert label value must be 1, 0, -1 or blank, got {value!r}")
    return number


def apply_uncertain_policy(values: np.ndarray, policy: str | float) -> np.ndarray | None:
    """Replace uncertain entries (-1) following `policy`.

    `"ones"` -> 1 (U-Ones), `"zeros"` -> 0 (U-Zeros), a number -> that value (e.g. 0.5),
    `"ignore"` -> None when any entry is uncertain (the caller drops the row).
    """
    values = np.asarray(values, dtype=np.float32)
    uncertain = values == -1.0
    if not uncertain.any():
        return values
    if policy == "ignore":
        return None
    if policy == "ones":
        replacement = 1.0
    elif policy == "zeros":
        replacement = 0.0
    elif isinstance(policy, (int, float)) and not isinstance(policy, bool):
        replacement = float(policy)
    else:
        raise ValueError(f"uncertain_policy must be 'ones', 'zeros', 'ignore' or a number, got {policy!r}")
    return np.where(uncertain, np.float32(replacement), values).astype(np.float32)


def is_blank(value: object) -> bool:
    """True for an empty cell: None, NaN, "", or a spelled-out null ("nan", "none", "null")."""
    return value is None or (isinstance(value, float) and math.isnan(value)) or str(value).strip().lower() in _BLANKS


def parse_findings(text: object, separator: str = "|") -> list[str]:
    """NIH `Finding Labels` cell -> names: `"Effusion|Pneumonia"` -> `["Effusion", "Pneumonia"]`.

    Names keep the cell's spelling. A blank cell gives `[]`: what it means is the dataset's
    `empty_findings` policy, never a silent "No Finding".
    """
    if is_blank(text):
        return []
    names = [part.strip() for part in str(text).split(separator)]
    return [name for name in names if name]


def findings_vocabulary(rows: Iterable[list[str]], *, multi_label: bool) -> list[str]:
    """Sorted distinct names; "No Finding" is a class for single-label data only.

    In multi-label data "No Finding" means "none of the others", i.e. an all-zero vector.
    """
    names: dict[str, str] = {}
    for row in rows:
        for name in row:
            names.setdefault(normalize_name(name), name)
    if multi_label:
        names.pop(NO_FINDING, None)
    return sorted(names.values(), key=normalize_name)


def encode_findings(findings: list[str], label_names: Sequence[str]) -> np.ndarray:
    """Multi-hot vector over `label_names` (names not listed are ignored)."""
    index = {normalize_name(name): i for i, name in enumerate(label_names)}
    vector = np.zeros(len(label_names), dtype=np.float32)
    for name in findings:
        position = index.get(normalize_name(name))
        if position is not None:
            vector[position] = 1.0
    return vector


def one_hot(index: int, num_labels: int) -> np.ndarray:
    vector = np.zeros(num_labels, dtype=np.float32)
    vector[index] = 1.0
    return vector


def present_labels(vector: np.ndarray, label_names: Sequence[str], threshold: float = 0.5) -> list[str]:
    """Names whose value is >= `threshold` (uncertain 0.5 counts as present by default)."""
    return [name for name, value in zip(label_names, np.asarray(vector).tolist()) if value >= threshold]


def label_counts(vectors: np.ndarray, label_names: Sequence[str]) -> dict[str, int]:
    """Images per label (value > 0), for class-balance reports.

    Multi-label data also gets "(no label set)": images with an all-zero vector.
    """
    vectors = np.asarray(vectors, dtype=np.float32).reshape(len(vectors), len(label_names))
    counts = {name: int((vectors[:, i] > 0).sum()) for i, name in enumerate(label_names)}
    unset = int((vectors <= 0).all(axis=1).sum()) if len(label_names) else 0
    if unset:
        counts["(no label set)"] = unset
    return counts
