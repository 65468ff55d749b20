"""Metadata tables of folder datasets: CheXpert / NIH CSVs and the `datasets` imagefolder layout.

The imagefolder convention (huggingface `datasets`): a folder holds the images and a
`metadata.csv` whose `file_name` column gives each image's path relative to the folder,
next to any label, split or text columns. CheXpert's `train.csv` names the image in `Path`,
NIH's `Data_Entry_2017.csv` in `Image Index` (set `path_column`).

Rows are numbered as a spreadsheet shows them: the header is row 1, the first image row 2.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from medgen.data.labels import normalize_name

METADATA_FILE = "metadata.csv"
PATH_COLUMNS = ("file_name", "Path")  # imagefolder, then CheXpert
SPLIT_COLUMN = "split"
_OTHER_DELIMITERS = {";": "semicolon", "\t": "tab", "|": "vertical bar"}


def locate_csv(path: str | Path, csv_path: str | Path | None) -> tuple[Path, Path]:
    """`(image folder, CSV file)` from `DataConfig.path` (a folder or the CSV itself) and `csv_path`.

    Raises:
        FileNotFoundError: the folder or the CSV does not exist (names it).
    """
    path = Path(path)
    if path.is_file() and path.suffix.lower() == ".csv" and csv_path is None:
        return path.parent, path
    if not path.is_dir():
        raise FileNotFoundError(f"image folder not found: {path}")
    csv_file = Path(csv_path) if csv_path else path / METADATA_FILE
    if not csv_file.is_file():
        hint = "" if csv_path else f" (a folder dataset needs {METADATA_FILE}, or set csv_path)"
        raise FileNotFoundError(f"CSV file not found: {csv_file}{hint}")
    return path, csv_file


def read_table(csv_path: Path) -> Any:
    """The CSV as a pandas DataFrame of strings (blank cells stay "").

    Raises:
        ValueError: unparsable file, or one written with another delimiter (e.g. `;` by a
            spreadsheet in a comma-decimal locale), which would otherwise read as one column.
    """
    import pandas as pd

    try:
        frame = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise ValueError(f"cannot parse CSV {csv_path}: {str(error).strip()}{_delimiter_hint(csv_path)}") from error
    if len(frame.columns) == 1 and _delimiter_hint(csv_path):
        raise ValueError(
            f"CSV {csv_path} reads as one column {frame.columns[0]!r} with ',' as the delimiter"
            f"{_delimiter_hint(csv_path)}"
        )
    return frame


def _delimiter_hint(csv_path: Path) -> str:
    try:
        with open(csv_path, encoding="utf-8", errors="replace") as handle:
            header = handle.readline()
    except OSError:
        return ""
    if "," in header:
        return ""
    for delimiter, name in _OTHER_DELIMITERS.items():
        if delimiter in header:
            return f"; its header is separated by {name}s ({delimiter!r}): save it comma-separated"
    return ""


def resolve_column(
    frame: Any, csv_path: Path, option: str, given: str | None, defaults: tuple[str, ...]
) -> str | None:
    """The column named by `option`, or the first of `defaults` the CSV has (None when none is there)."""
    if given is not None:
        if given not in frame.columns:
            raise ValueError(f"{option}: column {given!r} not in {csv_path}; its columns are {list(frame.columns)}")
        return given
    return next((column for column in defaults if column in frame.columns), None)


def select_split(frame: Any, csv_path: Path, column: str, split: str) -> Any:
    """Rows whose `column` equals `split` (case-insensitive); an absent split lists those present."""
    values = frame[column].map(normalize_name)
    selected = frame[values == normalize_name(split)]
    if selected.empty:
        present = sorted({value for value in frame[column] if value.strip()})
        raise ValueError(f"split {split!r} not in column {column!r} of {csv_path}; its splits are {present}")
    return selected


def natural_key(name: str) -> list[Any]:
    """Sort key reading digit runs as numbers: `case_2` before `case_10`."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def derive_split(
    frame: Any, path_column: str, stratify_column: str | None, fraction: float, order: str, seed: int,
    extra_columns: list[str] | tuple[str, ...] = (),
) -> Any:
    """`frame` with a `split` column (`train` / `test`) for a table that has none.

    Within each value of `stratify_column` (each class), `fraction` of the rows go to `test`:
    the last ones in natural file-name order (`order="last"`: sets whose numbered files run through
    patients or cases in order, where neighbouring slices are near-identical and a random split leaks)
    or a seeded random choice (`order="random"`). The same arguments always give the same split.
    `extra_columns` stratify further: `fraction` of every (class, extra column values) group is held out
    (e.g. per label and per hospital).
    """
    import numpy as np

    frame = frame.copy()
    frame[SPLIT_COLUMN] = "train"
    columns = [column for column in [stratify_column, *extra_columns] if column]
    groups = frame.groupby(columns if len(columns) > 1 else columns[0], sort=True).groups if columns else {None: frame.index}
    rng = np.random.default_rng(seed)
    for _, index in groups.items():
        names = frame.loc[index, path_column]
        if order == "last":
            ordered = sorted(index, key=lambda row: natural_key(names[row]))
        else:
            ordered = [index[i] for i in rng.permutation(len(index))]
        count = int(round(len(ordered) * fraction))
        frame.loc[ordered[len(ordered) - count :], SPLIT_COLUMN] = "test"
    return frame


def row_number(index: int) -> int:
    """Spreadsheet row of the DataFrame row `index` (header = row 1)."""
    return int(index) + 2


def describe_rows(csv_path: Path, rows: list[tuple[int, str]], limit: int = 10) -> str:
    """`"rows 3 (a.png), 7 (b.png) of metadata.csv"`, shortened after `limit` rows."""
    shown = ", ".join(f"{number} ({name})" for number, name in rows[:limit])
    more = f" and {len(rows) - limit} more" if len(rows) > limit else ""
    return f"row{'s' if len(rows) > 1 else ''} {shown}{more} of {csv_path}"
