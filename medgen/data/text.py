"""Report text for text-conditioned models: cleaning, templated prompts, IU X-ray reports."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

DEFAULT_TEMPLATE = "chest x-ray, {labels}"
_EMPTY_SECTIONS = {"", "none", "none.", "n/a", "na", "nan", "null", "-"}
_PLACEHOLDER = "XXXX"


def _as_text(value: object) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value)


def remove_placeholders(text: str) -> str:
    """Drop words holding a de-identification placeholder (`XXXX` in IU X-ray).

    The whole word goes ("x-XXXX." -> "."), since a half word ("x-") reads worse than none.
    """
    words = []
    for word in text.split():
        if _PLACEHOLDER in word:
            trailing = re.search(r"[.,;:!?]+$", word)
            if trailing:
                words.append(trailing.group(0))
            continue
        words.append(word)
    text = " ".join(words)
    text = re.sub(r"\s+([.,;:!?])", r"\1", text)  # "no ." -> "no."
    text = re.sub(r"([.,;:!?])(?:\s*[.,;:!?])+", r"\1", text)  # ". ." / ",." -> "."
    text = re.sub(r"^[\s.,;:!?]+", "", text)
    return text.strip()


def clean_report(findings: object, impression: object = None) -> str:
    """One clean prompt from a report's findings and impression sections.

    Removes `XXXX` placeholders, drops empty or "None." sections, joins the rest with a
    space and normalises whitespace. Returns "" when nothing is left.
    """
    sections = []
    for value in (findings, impression):
        text = " ".join(_as_text(value).split())
        if text.lower() in _EMPTY_SECTIONS:
            continue
        text = remove_placeholders(text)
        if text.lower() in _EMPTY_SECTIONS or not re.search(r"\w", text):
            continue
        if text[-1] not in ".!?":
            text += "."
        sections.append(text)
    return " ".join(sections)


def template_prompt(label_names_present: Sequence[str], template: str = DEFAULT_TEMPLATE) -> str:
    """`["Pneumonia"]` -> "chest x-ray, pneumonia"; `[]` -> "chest x-ray, no finding"."""
    names = [" ".join(str(name).replace("_", " ").split()).lower() for name in label_names_present]
    names = [name for name in names if name != "no finding"]
    return template.format(labels=", ".join(names) if names else "no finding")


def load_iu_xray_reports(directory: str | Path) -> pd.DataFrame:
    """IU X-ray (Open-i) reports, one row per image: uid, filename, projection, text, problems.

    Reads `indiana_reports.csv` and `indiana_projections.csv` from `directory`; `text` is
    `clean_report(findings, impression)`, `problems` the list from the `Problems` column
    (`["normal"]`, `["Cardiomegaly", "Pulmonary Artery"]`, ...). Images are not read.
    """
    import pandas as pd

    directory = Path(directory)
    reports_path, projections_path = directory / "indiana_reports.csv", directory / "indiana_projections.csv"
    for path in (reports_path, projections_path):
        if not path.exists():
            raise FileNotFoundError(f"IU X-ray file not found: {path}")
    reports = pd.read_csv(reports_path, dtype=str, keep_default_na=False)
    projections = pd.read_csv(projections_path, dtype=str, keep_default_na=False)
    for frame, path, columns in (
        (reports, reports_path, ("uid", "findings", "impression", "Problems")),
        (projections, projections_path, ("uid", "filename", "projection")),
    ):
        missing = [column for column in columns if column not in frame.columns]
        if missing:
            raise ValueError(f"{path} lacks columns {missing}; it has {list(frame.columns)}")
    reports["text"] = [clean_report(f, i) for f, i in zip(reports["findings"], reports["impression"])]
    reports["problems"] = [[p.strip() for p in cell.split(";") if p.strip()] for cell in reports["Problems"]]
    merged = projections.merge(reports[["uid", "text", "problems"]], on="uid", how="inner")
    return merged[["uid", "filename", "projection", "text", "problems"]].reset_index(drop=True)
