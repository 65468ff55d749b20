"""Saving, loading and publishing medgen pipelines.

A saved medgen pipeline is a diffusers folder whose `model_index.json` names
`["pipeline", "<Class>"]` and which carries the pipeline's own source as `pipeline.py`,
so stock diffusers loads it with `trust_remote_code=True`. diffusers routes such a folder
to that remote code even from a subclass's `from_pretrained`, so medgen's classes load
their components themselves here: with medgen installed, no remote code runs.
"""

from __future__ import annotations

import importlib
import inspect
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

# Only these libraries may provide components of a pipeline folder; anything else in a
# model_index.json would mean importing arbitrary code named by a downloaded file.
COMPONENT_LIBRARIES = ("diffusers", "transformers")
SHIPPED_MODULE_PREFIX = "medgen.pipelines.pipeline_"


def resolve_pipeline_folder(name_or_path: str | os.PathLike, **download_kwargs: Any) -> Path:
    """A local pipeline folder, downloading `name_or_path` from the Hugging Face Hub when it is a repo id."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        if not (path / "model_index.json").is_file():
            raise ValueError(f"{path} is not a pipeline folder: it has no model_index.json.")
        return path
    if path.exists():
        raise ValueError(f"{path} is a file; a pipeline is a folder with a model_index.json.")
    looks_like_repo_id = str(name_or_path).count("/") == 1 and not str(name_or_path).startswith((".", "/", "~"))
    if not looks_like_repo_id:
        raise FileNotFoundError(f"Pipeline folder not found: {path}")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(str(name_or_path), **download_kwargs))
    except Exception as error:  # offline, unknown repo, no access: all mean "cannot get it"
        raise FileNotFoundError(
            f"{name_or_path} is not a local folder and could not be downloaded from the Hugging Face Hub "
            f"({type(error).__name__}: {error})."
        ) from error


def read_model_index(folder: Path) -> dict[str, Any]:
    try:
        return json.loads((folder / "model_index.json").read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{folder / 'model_index.json'} is not valid JSON: {error}") from error


def pipeline_class_name(model_index: dict[str, Any]) -> str:
    """`"LabelConditionedPipeline"` from either `"LabelConditionedPipeline"` or `["pipeline", "LabelConditionedPipeline"]`."""
    class_name = model_index.get("_class_name")
    if isinstance(class_name, (list, tuple)):
        class_name = class_name[-1]
    if not isinstance(class_name, str):
        raise ValueError(f"model_index.json has no pipeline class name (_class_name = {class_name!r}).")
    return class_name


def _is_component_entry(value: Any) -> bool:
    return isinstance(value, (list, tuple)) and len(value) == 2 and all(v is None or isinstance(v, str) for v in value)


def load_components(folder: Path, model_index: dict[str, Any], torch_dtype=None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Loads each component named in `model_index` from its subfolder (safetensors only) and returns
    `(components, config_kwargs)`."""
    import torch

    components: dict[str, Any] = {}
    config_kwargs: dict[str, Any] = {}
    for name, value in model_index.items():
        if name.startswith("_"):
            continue
        if not _is_component_entry(value):
            config_kwargs[name] = value
            continue
        library, class_name = value
        if library is None or class_name is None:
            components[name] = None
            continue
        if library not in COMPONENT_LIBRARIES:
            raise ValueError(
                f"Component {name!r} of {folder} comes from {library!r}; medgen loads components from "
                f"{', '.join(COMPONENT_LIBRARIES)} only."
            )
        component_class = getattr(importlib.import_module(library), class_name, None)
        if component_class is None:
            raise ValueError(f"Component {name!r} of {folder}: {library} has no class {class_name!r}.")
        load_kwargs: dict[str, Any] = {}
        if issubclass(component_class, torch.nn.Module):
            load_kwargs["use_safetensors"] = True
            if torch_dtype is not None:
                load_kwargs["torch_dtype"] = torch_dtype
        components[name] = component_class.from_pretrained(folder / name, **load_kwargs)
    return components, config_kwargs


class MedgenPipelineMixin:
    """Loading without remote code, saving with `pipeline.py` and a model card, and pushing to the Hub."""

    @classmethod
    def shipped_class(cls) -> type:
        """The self-contained class whose source file is saved as `pipeline.py`."""
        for klass in cls.__mro__:
            if klass.__module__.startswith(SHIPPED_MODULE_PREFIX):
                return klass
        raise TypeError(f"{cls.__name__} does not derive from a class in {SHIPPED_MODULE_PREFIX}*.")

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, torch_dtype=None, **kwargs: Any):
        """
        Loads a saved pipeline from a local folder or a Hub repo id, without running the folder's `pipeline.py`.

        Keyword arguments replace components or config values (e.g. `scheduler=DDIMScheduler(...)`); the
        Hub download options `revision`, `token` and `cache_dir` are passed to `huggingface_hub.snapshot_download`.
        """
        download_kwargs = {key: kwargs.pop(key) for key in ("revision", "token", "cache_dir") if key in kwargs}
        folder = resolve_pipeline_folder(pretrained_model_name_or_path, **download_kwargs)
        model_index = read_model_index(folder)
        saved_class = pipeline_class_name(model_index)
        if saved_class != cls.__name__:
            raise ValueError(
                f"{folder} holds a {saved_class}, not a {cls.__name__}; load it with "
                f"medgen.{saved_class}.from_pretrained or medgen.load_pipeline."
            )
        components, config_kwargs = load_components(folder, model_index, torch_dtype=torch_dtype)
        expected = set(inspect.signature(cls.shipped_class().__init__).parameters) - {"self"}
        unknown = set(kwargs) - expected
        if unknown:
            raise ValueError(f"Unknown arguments for {cls.__name__}: {sorted(unknown)}. Expected some of {sorted(expected)}.")
        init_kwargs = {key: value for key, value in {**components, **config_kwargs}.items() if key in expected}
        pipeline = cls(**{**init_kwargs, **kwargs})
        pipeline.register_to_config(_name_or_path=str(pretrained_model_name_or_path))
        return pipeline

    def save_pretrained(
        self, save_directory: str | os.PathLike, model_card: dict[str, Any] | None = None, **kwargs: Any
    ) -> Path:
        """
        Saves safetensors weights, `model_index.json` (`_class_name = ["pipeline", "<Class>"]`), the pipeline's
        source as `pipeline.py`, and a model card `README.md` built from `model_card` (see `write_model_card`).
        """
        if kwargs.pop("push_to_hub", False):
            raise ValueError("Use pipe.push_to_hub(repo_id) to publish a medgen pipeline.")
        kwargs["safe_serialization"] = True
        save_directory = Path(save_directory)
        super().save_pretrained(save_directory, **kwargs)
        index_path = save_directory / "model_index.json"
        model_index = json.loads(index_path.read_text())
        shipped = self.shipped_class()
        model_index["_class_name"] = ["pipeline", shipped.__name__]
        model_index.pop("_name_or_path", None)
        index_path.write_text(json.dumps(model_index, indent=2, sort_keys=True) + "\n")
        shutil.copyfile(inspect.getsourcefile(shipped), save_directory / "pipeline.py")
        from medgen.pipelines.model_card import write_model_card

        write_model_card(save_directory, self, model_card or {})
        return save_directory

    def push_to_hub(
        self,
        repo_id: str,
        model_card: dict[str, Any] | None = None,
        private: bool = True,
        token: str | None = None,
        commit_message: str = "Upload medgen pipeline",
    ) -> str:
        """Saves the pipeline to a temporary folder and uploads it to `repo_id`; returns the commit URL."""
        from huggingface_hub import HfApi

        with tempfile.TemporaryDirectory() as folder:
            self.save_pretrained(folder, model_card=model_card)
            api = HfApi(token=token)
            try:
                api.create_repo(repo_id, private=private, exist_ok=True)
                commit = api.upload_folder(repo_id=repo_id, folder_path=folder, commit_message=commit_message)
            except Exception as error:  # offline mode, no network, no token, no rights
                raise RuntimeError(
                    f"Could not push the pipeline to the Hugging Face Hub repo {repo_id!r} "
                    f"({type(error).__name__}: {error}). Check the network (HF_HUB_OFFLINE must be unset) and "
                    "log in with `hf auth login`; save_pretrained(folder) keeps a local copy meanwhile."
                ) from error
        return str(commit)
