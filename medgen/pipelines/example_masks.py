"""Example masks stored in a mask pipeline folder: a few real masks of the held-out (test) split to start from.

`python -m medgen.training.mask_task examples FOLDER` chooses them from the pipeline's recorded training data and
writes `FOLDER/example_masks/<label>_<k>.png` (8-bit, at the pipeline's image size: 0/255 for a one-class model,
else the class indices 0..K) and `FOLDER/example_masks/index.json`:

    {"split": "test", "seed": 0, "per_label": 2, "data": "<recorded data path>",
     "examples": [{"file": "tuberculosis_0.png", "label": "tuberculosis", "source": "images/CHNCXR_0327_1.png",
                   "split": "test"}, ...]}

`source` names the data row (its image path relative to the data folder). The folder travels with the pipeline:
`save_pretrained` carries it from the folder a pipeline was loaded from (so `medgen models ship` and
`push_to_hub` include it), and the app offers the examples beside upload and "Sample a mask".
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

EXAMPLE_MASKS_DIR = "example_masks"
INDEX_FILE = "index.json"


@dataclass(frozen=True)
class ExampleMask:
    """One stored example mask: `name` is its file name without `.png` (what the app lists)."""

    name: str
    path: Path
    label: str | None
    source: str
    split: str


def mask_png(mask: np.ndarray, num_classes: int) -> np.ndarray:
    """Class indices `(H, W)` as the 8-bit pixels medgen writes masks with: 0/255 for one class, else the indices."""
    mask = np.asarray(mask)
    if mask.min(initial=0) < 0 or mask.max(initial=0) > num_classes:
        raise ValueError(f"mask values {mask.min()}..{mask.max()} are no class indices 0..{num_classes}")
    return (mask * (255 if num_classes == 1 else 1)).astype(np.uint8)


def read_example_masks(folder: str | Path, check_files: bool = True) -> list[ExampleMask]:
    """The example masks stored in pipeline `folder` (`[]` when it has none), in the order of `index.json`.
    A corrupt index, an entry naming a file outside the folder, or (with `check_files`) a listed file that is
    missing is an error naming it."""
    directory = Path(folder) / EXAMPLE_MASKS_DIR
    index_path = directory / INDEX_FILE
    if not directory.is_dir():
        return []
    if not index_path.is_file():
        raise FileNotFoundError(f"{directory} holds no {INDEX_FILE}: store the examples with `python -m "
                                "medgen.training.mask_task examples FOLDER --overwrite`")
    try:
        index = json.loads(index_path.read_text())
        entries = index["examples"]
        if not isinstance(entries, list):
            raise TypeError("'examples' is not a list")
        examples = []
        for entry in entries:
            file_name = str(entry["file"])
            path = directory / file_name
            # only plain file names: an odd index must never point the app at another file of the machine
            if Path(file_name).name != file_name or not file_name.endswith(".png"):
                raise ValueError(f"file {file_name!r} is not a PNG file name inside {directory}")
            if check_files and not path.is_file():
                raise FileNotFoundError(f"{path} (listed in {index_path}) is missing")
            label = entry.get("label")
            examples.append(ExampleMask(
                name=file_name.removesuffix(".png"), path=path, label=None if label is None else str(label),
                source=str(entry.get("source", "")), split=str(entry.get("split", "")),
            ))
    except FileNotFoundError:
        raise
    except (OSError, json.JSONDecodeError, KeyError, TypeError, AttributeError, ValueError) as error:
        raise ValueError(f"{index_path} is not a readable example mask index ({type(error).__name__}: {error})") from None
    return examples


def carry_example_masks(source: str | Path | None, destination: str | Path) -> bool:
    """Copies `source/example_masks` into a freshly saved `destination` that has none; returns whether it did.
    The examples belong to the data the pipeline was trained on, not to its weights, so they travel with every
    re-save (a shipped built-in, a Hub push, an attached mask generator)."""
    if source is None or not (Path(source) / EXAMPLE_MASKS_DIR).is_dir():
        return False
    source, destination = Path(source), Path(destination)
    target = destination / EXAMPLE_MASKS_DIR
    if source.resolve() == destination.resolve() or target.exists():
        return False
    shutil.copytree(source / EXAMPLE_MASKS_DIR, target)
    return True
