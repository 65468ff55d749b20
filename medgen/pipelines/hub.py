"""Saving, loading and publishing medgen pipelines.

A saved medgen pipeline is a diffusers folder whose `model_index.json` names
`["pipeline", "<Class>"]` and which carries the pipeline's own source as `pipeline.py`,
so stock diffusers loads it with `trust_remote_code=True`. diffusers routes such a folder
to that remote code even from a subclass's `from_pretrained`, so medgen's classes load
their components themselves here: only the components the pipeline class takes, each from an
allow-listed diffusers/transformers class with `trust_remote_code=False`. With medgen installed,
no code from a pipeline folder runs.
"""

from __future__ import annotations

import importlib
import inspect
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from medgen.pipelines.locate import (  # noqa: F401  (also imported from here by the commands and the app)
    BUILTIN_PIPELINES,
    builtin_pipeline_path,
    resolve_pipeline_folder,
)
from medgen.text_encoders import (
    TEXT_ENCODER_CLASSES,
    TEXT_ENCODER_REFERENCE_KEY,
    TOKENIZER_CLASSES,
    load_referenced_text_encoder,
)

logger = logging.getLogger(__name__)

SHIPPED_MODULE_PREFIX = "medgen.pipelines.pipeline_"

# The only classes each pipeline component may be, by library. Anything else named in a
# model_index.json (an Auto* class whose config points at the folder's own Python, a module,
# another library) is refused before it is imported: loading a folder must never run its code.
# Schedulers hold no weights and read a JSON config only: any diffusers scheduler class is allowed.
SCHEDULER_CLASSES = "any diffusers scheduler"
ALLOWED_COMPONENTS: dict[str, tuple[str, tuple[str, ...] | str]] = {
    "unet": ("diffusers", ("UNet2DModel", "UNet2DConditionModel")),
    "vae": ("diffusers", ("AutoencoderKL",)),
    "scheduler": ("diffusers", SCHEDULER_CLASSES),
    "text_encoder": ("transformers", TEXT_ENCODER_CLASSES),
    "tokenizer": ("transformers", TOKENIZER_CLASSES),
    # MaskConditionedPipeline's optional mask generator
    "mask_unet": ("diffusers", ("UNet2DConditionModel",)),
    "mask_scheduler": ("diffusers", SCHEDULER_CLASSES),
}


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


def allowed_component_class(folder: Path, name: str, entry: list) -> type:
    """The class to load component `name` with, if `entry` (`[library, class]`) is on the allow-list;
    otherwise a `ValueError` naming the component and the class, before anything is imported."""
    library, class_name = entry
    allowed_library, allowed_classes = ALLOWED_COMPONENTS.get(name, (None, ()))
    allowed_text = allowed_classes if isinstance(allowed_classes, str) else ", ".join(allowed_classes)
    allowed = (
        f"allowed for {name!r}: {allowed_library} {allowed_text}" if allowed_library
        else f"medgen pipelines have no {name!r} component"
    )
    refusal = (
        f"Component {name!r} of {folder} is {library}.{class_name}, which medgen refuses to load ({allowed}); "
        "another class could run code shipped in the folder."
    )
    if library != allowed_library or not isinstance(class_name, str) or not class_name.isidentifier():
        raise ValueError(refusal)
    if not isinstance(allowed_classes, str) and class_name not in allowed_classes:
        raise ValueError(refusal)
    component_class = getattr(importlib.import_module(library), class_name, None)
    if not isinstance(component_class, type):
        raise ValueError(f"Component {name!r} of {folder}: {library} has no class {class_name!r}.")
    if isinstance(allowed_classes, str):
        from diffusers import SchedulerMixin

        if not issubclass(component_class, SchedulerMixin) or component_class is SchedulerMixin:
            raise ValueError(refusal)
    return component_class


def load_components(
    folder: Path, model_index: dict[str, Any], expected: set[str], torch_dtype=None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """
    Loads the components in `expected` (the pipeline's `__init__` arguments) that `model_index` names, each
    from its subfolder with an allow-listed class, safetensors weights and no remote code; returns
    `(components, config_kwargs)`. Entries the pipeline does not expect are neither imported nor loaded.
    """
    import torch

    ignored = sorted(name for name in model_index if not name.startswith("_") and name not in expected)
    if ignored:
        logger.warning("%s: ignoring model_index.json entries that the pipeline does not take: %s", folder, ignored)
    components: dict[str, Any] = {}
    config_kwargs: dict[str, Any] = {}
    classes: dict[str, type] = {}
    # Every entry is checked before any is loaded: a refused folder loads nothing at all.
    for name in sorted(expected & set(model_index)):
        value = model_index[name]
        # An argument that is no component (`max_length`, `example_prompts`) is a plain value, never imported,
        # even when it looks like `[library, class]` (two example prompts)
        if name not in ALLOWED_COMPONENTS or not _is_component_entry(value):
            config_kwargs[name] = value
        elif value[0] is None or value[1] is None:
            components[name] = None
        else:
            classes[name] = allowed_component_class(folder, name, value)
    for name, component_class in classes.items():
        load_kwargs: dict[str, Any] = {}
        if component_class.__module__.startswith("transformers"):
            load_kwargs["trust_remote_code"] = False
        if issubclass(component_class, torch.nn.Module):
            load_kwargs["use_safetensors"] = True
            if torch_dtype is not None:
                load_kwargs["torch_dtype"] = torch_dtype
        check_saved_class(folder, name, component_class)
        components[name] = component = component_class.from_pretrained(folder / name, **load_kwargs)
        if isinstance(component, torch.nn.Module):
            unfilled = [key for key, tensor in component.state_dict().items() if tensor.is_meta]
            if unfilled:  # weights the class has but the folder lacks stay on torch's "meta" device, unusable
                raise ValueError(
                    f"Component {name!r} of {folder} is {component_class.__module__.split('.')[0]}.{component_class.__name__}, "
                    f"but {folder / name} holds no weights for {len(unfilled)} of its tensors (e.g. {unfilled[0]}): "
                    "the saved weights were made with another class or configuration"
                )
    return components, config_kwargs


def check_saved_class(folder: Path, name: str, component_class: type) -> None:
    """A `ValueError` in one line when `model_index.json` names a diffusers model class other than the one its
    weights were saved with (`<component>/config.json` `_class_name`): loading them into it would leave
    most of its tensors empty (the "Cannot copy out of meta tensor" error of the first `.to()`)."""
    config_path = folder / name / "config.json"
    if not component_class.__module__.startswith("diffusers") or not config_path.is_file():
        return
    try:
        saved_class = json.loads(config_path.read_text()).get("_class_name")
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as error:
        raise ValueError(f"{config_path} is not a valid diffusers config: {error}") from error
    if isinstance(saved_class, str) and saved_class != component_class.__name__:
        raise ValueError(
            f"Component {name!r} of {folder}: model_index.json names diffusers.{component_class.__name__}, but "
            f"{name}/ holds a {saved_class} (its config.json and weights); set \"{name}\": [\"diffusers\", "
            f"\"{saved_class}\"] in model_index.json if that is the right class for this pipeline"
        )


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
        Loads a saved pipeline from a built-in name, a local folder or a Hub repo id, without running any code
        from the folder (see `load_components`).

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
        parameters = inspect.signature(cls.shipped_class().__init__).parameters
        expected = set(parameters) - {"self"}
        unknown = set(kwargs) - expected
        if unknown:
            raise ValueError(f"Unknown arguments for {cls.__name__}: {sorted(unknown)}. Expected some of {sorted(expected)}.")
        # Components given as arguments replace the saved ones, which are then not loaded at all.
        saved_entries = {key: value for key, value in model_index.items() if key not in kwargs}
        components, config_kwargs = load_components(folder, saved_entries, expected, torch_dtype=torch_dtype)
        reference = model_index.get(TEXT_ENCODER_REFERENCE_KEY)
        if reference is not None and "text_encoder" in expected and components.get("text_encoder", 0) is None:
            # shipped without its frozen encoder's weights: they come from the installed encoder, checked by digest
            text_encoder = load_referenced_text_encoder(folder, reference)
            components["text_encoder"] = text_encoder.to(torch_dtype) if torch_dtype is not None else text_encoder
        init_kwargs = {**components, **config_kwargs, **kwargs}
        missing = [name for name in expected if name not in init_kwargs and parameters[name].default is inspect.Parameter.empty]
        if missing:
            raise ValueError(f"{folder / 'model_index.json'} names no {', '.join(sorted(missing))} for {cls.__name__}.")
        pipeline = cls(**init_kwargs)
        pipeline.register_to_config(_name_or_path=str(pretrained_model_name_or_path))
        # Remembered so that saving (and pushing) an unchanged pipeline carries the folder's stored evaluation.
        pipeline._medgen_source_folder = folder
        return pipeline

    def save_pretrained(
        self, save_directory: str | os.PathLike, model_card: dict[str, Any] | None = None, **kwargs: Any
    ) -> Path:
        """
        Saves safetensors weights, `model_index.json` (`_class_name = ["pipeline", "<Class>"]`), the pipeline's
        source as `pipeline.py`, and a model card `README.md` built from `model_card` (see `write_model_card`).

        A pipeline loaded from a folder holding `evaluation.json` (stored by `medgen evaluate`) carries it into
        `save_directory` when the saved weights are the ones evaluated; an `evaluation.json` already in
        `save_directory` is kept. The model card shows it in its "Evaluation" section. A mask pipeline's
        `example_masks/` (held-out example masks) is carried the same way, whatever the weights.
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
        from medgen.pipelines.example_masks import carry_example_masks
        from medgen.pipelines.model_card import write_model_card
        from medgen.pipelines.publishing import carry_evaluation

        carry_evaluation(getattr(self, "_medgen_source_folder", None), save_directory)
        carry_example_masks(getattr(self, "_medgen_source_folder", None), save_directory)

        write_model_card(save_directory, self, model_card or {})
        return save_directory

    def push_to_hub(
        self,
        repo_id: str,
        model_card: dict[str, Any] | None = None,
        private: bool = True,
        token: str | None = None,
        commit_message: str = "Upload medgen pipeline",
        allow_unevaluated: bool = False,
    ) -> str:
        """
        Saves the pipeline to a temporary folder and uploads it to `repo_id`; returns the commit URL.

        Privacy gate: the folder to upload must hold a stored evaluation of these weights (`evaluation.json`,
        written by `medgen evaluate --pipeline FOLDER` and carried by `save_pretrained` from the folder the
        pipeline was loaded from) that raised no memorization alarm; otherwise `PublishingRefused` (a
        `ValueError`) says which check failed, before anything is uploaded. `allow_unevaluated=True`
        publishes anyway (logged as a warning).
        """
        from huggingface_hub import HfApi

        from medgen.pipelines.publishing import check_before_publishing

        source = getattr(self, "_medgen_source_folder", None)
        with tempfile.TemporaryDirectory() as folder:
            self.save_pretrained(folder, model_card=model_card)
            check_before_publishing(
                folder, allow_unevaluated, action=f"push the pipeline to {repo_id!r}",
                name=f"the pipeline (loaded from {source})" if source is not None else (
                    "the pipeline (not loaded from a saved folder: save it with pipe.save_pretrained(FOLDER), "
                    "evaluate FOLDER, then push medgen.load_pipeline(FOLDER))"
                ),
                evaluate_target=str(source) if source is not None else "FOLDER",
            )
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
