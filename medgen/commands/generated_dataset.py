"""A `medgen generate` output folder as a Hugging Face `imagefolder` dataset, and its upload to the Hub.

The folder holds the images and one ``metadata.csv`` whose ``file_name`` column names each PNG
(the `datasets` imagefolder convention), so ``datasets.load_dataset("imagefolder", data_dir=OUTPUT)``
loads the images with how each was made. Columns, in this order:

- ``file_name``: the PNG (or, without PNG among the formats, the image's first file);
- ``mask_file_name`` (image + mask pairs of a mask-conditioned pipeline, ``--pairs`` / ``--masks``): the image's
  mask, ``masks/image_XXXXX.png`` (``datasets`` loads it as a second image column, ``mask``; medgen reads it
  with ``mask_column: mask_file_name``), and with ``--masks`` ``mask_source``, the user's mask file it came from;
- the condition: ``label`` (the finding's name) for single-label pipelines; one column per label of
  the pipeline, named after it and holding the value given to it in ``[0, 1]`` (0 when not given),
  for multi-label pipelines (medgen's ``label_columns`` reads them back); ``prompt`` (and
  ``negative_prompt`` when given) for text pipelines; nothing for unconditional ones;
- ``seed``, ``num_inference_steps``, ``guidance_scale`` (empty for unconditional pipelines),
  ``scheduler``, ``postprocess`` and ``pipeline`` (the name, folder or Hub id given to ``--pipeline``).

DICOM and NPY files of the same image sit beside the PNG; the imagefolder loader skips their
extensions.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

METADATA_FILE = "metadata.csv"
RUN_COLUMNS = ("seed", "num_inference_steps", "guidance_scale", "scheduler", "postprocess", "pipeline")


def condition_columns(kind: str, condition: Mapping[str, Any], pipeline_labels: Sequence[str], multi_label: bool) -> dict[str, Any]:
    """The metadata columns that say what every image of the run shows (see the module docstring)."""
    if kind == "label":
        labels = condition["labels"]
        if not multi_label:
            (name,) = labels
            return {"label": name}
        clashes = [name for name in pipeline_labels if name.lower() in ("file_name", "label", *RUN_COLUMNS)]
        if clashes:
            raise ValueError(
                f"pipeline label {clashes[0]!r} has the name of a {METADATA_FILE} column; "
                "rename the label to generate a dataset"
            )
        return {name: float(labels.get(name, 0.0)) for name in pipeline_labels}
    if kind == "text":
        columns = {"prompt": condition["prompt"]}
        if condition.get("negative_prompt") is not None:
            columns["negative_prompt"] = condition["negative_prompt"]
        return columns
    return {}


def metadata_rows(records: Iterable[Mapping[str, Any]], condition: Mapping[str, Any], run: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per written image (records as in ``params.json``: ``index``, ``files``, ``seed``), in index order."""
    rows = []
    for record in sorted(records, key=lambda record: record["index"]):
        files = record["files"]
        image = next((name for name in files if name.endswith(".png")), files[0])
        pair = {name: record[name] for name in ("mask_file_name", "mask_source") if name in record}
        rows.append({"file_name": image, **pair, **condition, "seed": record["seed"], **run})
    return rows


def write_metadata(output: str | Path, rows: Sequence[Mapping[str, Any]]) -> Path:
    """Write ``OUTPUT/metadata.csv`` atomically, never replacing an existing one."""
    from medgen.files import atomic_write

    path = Path(output) / METADATA_FILE
    with atomic_write(path, "w", overwrite=False) as file:
        writer = csv.DictWriter(file, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return path


def check_repo_id(repo_id: str) -> None:
    """``--push-to-hub`` names a dataset repo ``user/name`` or ``org/name``."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as error:
        raise ValueError(f"--push-to-hub {repo_id!r} is not a Hub repo id (expected user/name): {error}") from None
    if repo_id.count("/") != 1:
        raise ValueError(f"--push-to-hub {repo_id!r} is not a Hub repo id: expected user/name or org/name")


def _one_line(error: BaseException) -> str:
    return " ".join(f"{type(error).__name__}: {error}".split())


def create_dataset_repo(repo_id: str, private: bool = True) -> str:
    """Create (or find) the dataset repo before sampling, so that no network, no login or no write access
    is found out before the images are made, not after; returns the repo URL."""
    from huggingface_hub import HfApi

    try:
        return str(HfApi().create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True))
    except Exception as error:  # offline mode, no network, no token, no rights: all mean "cannot publish"
        raise ConnectionError(
            f"cannot create the Hugging Face Hub dataset repo {repo_id!r} ({_one_line(error)}); nothing was generated. "
            "Check the network (HF_HUB_OFFLINE must be unset) and log in with `hf auth login`, or leave out --push-to-hub"
        ) from error


def push_dataset(output: str | Path, repo_id: str, commit_message: str = "Upload synthetic images (medgen generate)") -> str:
    """Upload the finished folder to the dataset repo ``repo_id``; returns the commit URL.

    Raises ``ConnectionError`` (one line naming the repo, and saying the images stay in ``output``)
    when the Hub cannot be reached or refuses the upload.
    """
    from huggingface_hub import HfApi

    try:
        commit = HfApi().upload_folder(
            repo_id=repo_id, repo_type="dataset", folder_path=os.fspath(output), commit_message=commit_message,
            ignore_patterns=[".*"],  # temporary files of an interrupted write
        )
    except Exception as error:
        raise ConnectionError(
            f"could not upload to the Hugging Face Hub dataset repo {repo_id!r} ({_one_line(error)}); "
            f"the images are kept in {output}: upload them later with `hf upload {repo_id} {output} --repo-type dataset`"
        ) from error
    return str(commit)
