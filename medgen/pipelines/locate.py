"""Where the pipeline a user names lives: a built-in name, a local folder, or a Hugging Face Hub repo id.

The bottom of `medgen.pipelines`: it imports nothing else of medgen, so loading (`hub`), the stored
evaluation and the publishing gate (`publishing`) can all ask it which folder a name means.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

# Pipelines shipped inside the medgen package (build artifacts of `medgen models ship`, all under
# medgen/pretrained/), by the name users pass instead of a path (`medgen.load_pipeline("chest-xray")`,
# `medgen generate --pipeline brain-mri`). `default` is the chest X-ray model. `medgen models` lists them.
BUILTIN_PIPELINES: dict[str, str] = {
    "default": "pretrained/chest-xray",
    "chest-xray": "pretrained/chest-xray",
    "brain-mri": "pretrained/brain-mri",
    "breast-ultrasound": "pretrained/breast-ultrasound",
    "lung-ct": "pretrained/lung-ct",
    "medical-text": "pretrained/medical-text",
    "chest-xray-lungs": "pretrained/chest-xray-lungs",
    "breast-ultrasound-lesions": "pretrained/breast-ultrasound-lesions",
    "pneumoniamnist-32": "pretrained/pneumoniamnist-32",
}


def builtin_pipeline_path(name: str) -> Path:
    """The folder of the built-in pipeline `name` inside the medgen package (it may be absent from an install)."""
    return Path(__file__).resolve().parent.parent / BUILTIN_PIPELINES[name.lower()]


def accepted_sources() -> str:
    names = ", ".join(repr(name) for name in BUILTIN_PIPELINES)
    return (
        f"medgen loads a built-in pipeline name ({names}), a local folder holding model_index.json, "
        "or a Hugging Face Hub repo id like 'org/name'"
    )


def looks_like_a_path(name_or_path: str | os.PathLike) -> bool:
    """Whether `name_or_path` can only mean a local folder: a `Path`, a name starting with `.`, `/` or `~`,
    one with a backslash or more (or fewer) than one `/`, or `first/second` whose `first/` is a local folder
    (`outputs/tiny` where `outputs/` exists). Anything else of the form `org/name` may be a Hub repo id."""
    if not isinstance(name_or_path, str):
        return True
    name = name_or_path
    if name.startswith((".", "/", "~")) or "\\" in name or (os.sep != "/" and os.sep in name):
        return True
    if name.count("/") != 1 or name.endswith("/"):
        return True
    return Path(name.split("/", 1)[0]).is_dir()


def _download_failure(error: Exception) -> str:
    """One short reason for a failed Hub download (huggingface_hub's own messages run to several lines)."""
    from huggingface_hub.errors import LocalEntryNotFoundError, OfflineModeIsEnabled, RepositoryNotFoundError

    if isinstance(error, RepositoryNotFoundError):
        return "the Hub has no such repo, or it is private"
    if isinstance(error, (LocalEntryNotFoundError, OfflineModeIsEnabled)):
        return "the Hub could not be reached and no copy is cached"
    first_line = (str(error).strip().splitlines() or [""])[0]
    return f"{type(error).__name__}: {first_line}"


def resolve_pipeline_folder(name_or_path: str | os.PathLike, **download_kwargs: Any) -> Path:
    """
    A local pipeline folder for `name_or_path`: a built-in name (`"default"`, case-insensitive), a local folder,
    or a Hub repo id (downloaded). A built-in name given as a string wins over a folder of the same name;
    write `./default` (or pass a `Path`) for the folder. A missing folder is a `FileNotFoundError` saying
    "no such folder", without trying the Hub when the name can only be a path (`looks_like_a_path`).
    """
    name = str(name_or_path)
    if isinstance(name_or_path, str) and name.lower() in BUILTIN_PIPELINES:
        folder = builtin_pipeline_path(name)
        if not (folder / "model_index.json").is_file():
            raise FileNotFoundError(
                f"The built-in pipeline {name!r} is not part of this medgen install (no {folder}); "
                "reinstall medgen from its repository, or pass a pipeline folder or Hub repo id."
            )
        return folder
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        if not (path / "model_index.json").is_file():
            raise ValueError(f"{path} is not a pipeline folder: it has no model_index.json. {accepted_sources()}.")
        return path
    if path.exists():
        raise ValueError(f"{path} is a file; a pipeline is a folder with a model_index.json. {accepted_sources()}.")
    if looks_like_a_path(name_or_path):
        if "/" not in name and "\\" not in name and isinstance(name_or_path, str):
            import difflib

            close = difflib.get_close_matches(name.lower(), list(BUILTIN_PIPELINES), n=1)
            suggestion = f" (did you mean {close[0]!r}?)" if close else ""
            raise FileNotFoundError(
                f"no such folder or built-in pipeline: {name}{suggestion}. {accepted_sources()}."
            )
        raise FileNotFoundError(f"no such folder: {name} ({path.absolute()} does not exist). {accepted_sources()}.")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(name, **download_kwargs))
    except Exception as error:  # offline, unknown repo, no access: all mean "cannot get it"
        raise FileNotFoundError(
            f"no such folder: {name}, and no Hugging Face Hub repo {name} could be downloaded "
            f"({_download_failure(error)})"
        ) from error
