"""The models the app serves: which there are, what the UI needs to know about each, and which are loaded.

The app lists every built-in pipeline plus the folders (or Hub repo ids) given with `--pipeline`.
What the page shows for a model (its kind, labels, resolution) is read from the folder's JSON
configs, so listing models and switching between them in the UI loads no weights. A model's
weights are loaded on its first Generate and kept in a small least-recently-used cache.
Nothing here imports gradio or torch at import time.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from medgen.sampling import DEFAULT_INFERENCE_STEPS, effective_inference_steps, sampler_text

logger = logging.getLogger(__name__)

PipelineKind = Literal["label", "text", "unconditional", "mask"]
DEFAULT_BUILTIN = "default"
MAX_LOADED_MODELS = 4


@dataclass(frozen=True)
class PipelineInfo:
    """What the UI needs to know to lay itself out for a pipeline."""

    kind: PipelineKind
    labels: list[str]
    multi_label: bool
    image_size: int
    default_guidance: float
    class_name: str
    source: str
    # The model's own sampler (its saved scheduler, `sampling.sampler_text`) and step count (its stored
    # `default_num_inference_steps`, else medgen's default): what "The model's own" sampler runs.
    sampler: str = "DPMSolverMultistepScheduler"
    default_steps: int = DEFAULT_INFERENCE_STEPS
    # Mask models: the mask class names (class indices 1, 2, ...; 0 is the background), and whether the model
    # can sample a mask itself (its mask generator), so that a run needs no mask from the user.
    mask_classes: tuple[str, ...] = ()
    mask_generator: bool = False
    # Mask models: the example masks stored in the folder (real masks of the held-out split), as (name, label)
    # pairs; the label is "" for a model without labels.
    example_masks: tuple[tuple[str, str], ...] = ()
    # Text models: the prompts saved with the pipeline (what it was trained to follow); none for older pipelines.
    example_prompts: tuple[str, ...] = ()


def _default_guidance(kind: PipelineKind, stored: Any = None) -> float:
    """The model's own default (`default_guidance_scale` in its model_index.json), else the kind's."""
    if stored is not None:
        return float(stored)
    return {"label": 2.0, "text": 3.0, "mask": 2.0}.get(kind, 1.0)


def pipeline_kind(pipe) -> PipelineKind:
    """`"mask"` for mask-conditioned pipelines, `"text"` for prompt pipelines (they have a tokenizer), `"label"` for
    finding labels, else `"unconditional"`."""
    if hasattr(pipe, "mask_classes"):
        return "mask"
    if hasattr(pipe, "tokenizer") or type(pipe).__name__ == "TextToImagePipeline":
        return "text"
    if getattr(pipe, "labels", None):
        return "label"
    return "unconditional"


def example_mask_choices(folder: str | Path | None) -> tuple[tuple[str, str], ...]:
    """(name, label) of the example masks listed in `folder/example_masks/index.json` (their PNGs need not be
    here yet: a Hub repo's are downloaded with its weights). A corrupt index is logged and offers none: it must
    not keep the model itself from being served."""
    from medgen.pipelines.example_masks import read_example_masks

    if folder is None:
        return ()
    try:
        examples = read_example_masks(folder, check_files=False)
    except (ValueError, FileNotFoundError) as error:
        logger.warning("no example masks offered for %s: %s", folder, error)
        return ()
    return tuple((example.name, example.label or "") for example in examples)


def describe_pipeline(pipe, source: str = "") -> PipelineInfo:
    """The UI description of a loaded pipeline."""
    kind = pipeline_kind(pipe)
    sample_size = pipe.unet.config.sample_size
    size = sample_size if isinstance(sample_size, int) else sample_size[0]
    if getattr(pipe, "vae", None) is not None:
        size *= 2 ** (len(pipe.vae.config.block_out_channels) - 1)
    return PipelineInfo(
        kind=kind,
        labels=list(pipe.labels) if kind in ("label", "mask") else [],
        multi_label=bool(getattr(pipe.config, "multi_label", False)),
        image_size=int(size),
        default_guidance=_default_guidance(kind, pipe.config.get("default_guidance_scale")),
        class_name=type(pipe).__name__,
        source=str(source),
        sampler=sampler_text(pipe.scheduler),
        default_steps=effective_inference_steps(pipe),
        mask_classes=tuple(pipe.mask_classes) if kind == "mask" else (),
        mask_generator=kind == "mask" and bool(pipe.has_mask_generator),
        example_masks=example_mask_choices(getattr(pipe, "_medgen_source_folder", None)) if kind == "mask" else (),
        example_prompts=tuple(getattr(pipe.config, "example_prompts", None) or ()) if kind == "text" else (),
    )


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} is missing: not a complete pipeline folder") from None
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON: {error}") from error


def describe_pipeline_folder(folder: str | Path, source: str = "") -> PipelineInfo:
    """The same description as `describe_pipeline`, read from a saved folder's JSON configs (no weights loaded)."""
    from medgen.pipelines.catalog import saved_sampling
    from medgen.pipelines.hub import pipeline_class_name, read_model_index

    folder = Path(folder)
    index = read_model_index(folder)
    class_name = pipeline_class_name(index)
    sample_size = _read_json(folder / "unet" / "config.json")["sample_size"]
    size = sample_size if isinstance(sample_size, int) else sample_size[0]
    vae = index.get("vae")
    if isinstance(vae, list) and vae and vae[0] is not None:
        size *= 2 ** (len(_read_json(folder / "vae" / "config.json")["block_out_channels"]) - 1)
    id2label = index.get("id2label") or {}
    labels = [id2label[key] for key in sorted(id2label, key=int)]
    id2mask_class = index.get("id2mask_class") or {}
    if class_name == "MaskConditionedPipeline":
        kind: PipelineKind = "mask"
    elif class_name == "TextToImagePipeline" or "tokenizer" in index:
        kind = "text"
    else:
        kind = "label" if labels else "unconditional"
    sampler, default_steps = saved_sampling(folder, index)
    mask_unet = index.get("mask_unet")
    return PipelineInfo(
        kind=kind,
        labels=labels if kind in ("label", "mask") else [],
        multi_label=bool(index.get("multi_label", False)),
        image_size=int(size),
        default_guidance=_default_guidance(kind, index.get("default_guidance_scale")),
        class_name=class_name,
        source=str(source or folder),
        sampler=sampler,
        default_steps=default_steps,
        mask_classes=tuple(id2mask_class[key] for key in sorted(id2mask_class, key=int)) if kind == "mask" else (),
        mask_generator=kind == "mask" and isinstance(mask_unet, list) and bool(mask_unet) and mask_unet[0] is not None,
        example_masks=example_mask_choices(folder) if kind == "mask" else (),
        example_prompts=tuple(index.get("example_prompts") or ()) if kind == "text" else (),
    )


def builtin_models() -> dict[str, str]:
    """
    Display name -> built-in name, for each built-in pipeline present in this install.

    Names that point at the same folder (`default` is an alias of one of the others) are listed once,
    under their first name other than `default`, the default one first. A built-in whose folder is absent
    is left out with a warning.
    """
    from medgen.pipelines.hub import BUILTIN_PIPELINES, builtin_pipeline_path

    by_folder: dict[Path, list[str]] = {}
    for name in BUILTIN_PIPELINES:
        by_folder.setdefault(builtin_pipeline_path(name), []).append(name)
    models: dict[str, str] = {}
    # The group holding `default` comes first: it is the model the app selects when no --pipeline is given.
    for folder, names in sorted(by_folder.items(), key=lambda item: DEFAULT_BUILTIN not in item[1]):
        if not (folder / "model_index.json").is_file():
            logger.warning("built-in pipeline %s is not part of this install (no %s); not listed", names[0], folder)
            continue
        display = next((name for name in names if name != DEFAULT_BUILTIN), names[0])
        models[display] = DEFAULT_BUILTIN if DEFAULT_BUILTIN in names else display
    return models


def model_name(source: str) -> str:
    """How the model dropdown calls a `--pipeline` source: a folder's name, or the Hub repo id."""
    path = Path(source).expanduser()
    return path.resolve().name if path.is_dir() else source


def split_sources(values: Sequence[str] | None) -> list[str]:
    """`--pipeline A --pipeline B,C` -> `[A, B, C]` (empty items dropped, order kept, repeats once)."""
    sources: list[str] = []
    for value in values or []:
        for item in str(value).split(","):
            item = item.strip()
            if item and item not in sources:
                sources.append(item)
    return sources


class ModelCatalog:
    """The app's models by display name, each described up front and loaded on first use (LRU of `max_loaded`)."""

    def __init__(self, sources: dict[str, str], loader: Callable[[str], Any], max_loaded: int = MAX_LOADED_MODELS):
        if not sources:
            raise ValueError("the app needs at least one model")
        if max_loaded < 1:
            raise ValueError(f"max_loaded must be >= 1; got {max_loaded}")
        self.sources = dict(sources)
        self.max_loaded = max_loaded
        self._loader = loader
        self._infos: dict[str, PipelineInfo] = {}
        self._loaded: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.Lock()
        self._loading: dict[str, threading.Lock] = {name: threading.Lock() for name in self.sources}

    @property
    def names(self) -> list[str]:
        return list(self.sources)

    def check_name(self, name: str | None) -> str:
        """`name` itself (or the first model for None/empty); an unknown name is a `ValueError` listing the choices."""
        if name is None or name == "":
            return self.names[0]
        if not isinstance(name, str) or name not in self.sources:
            raise ValueError(f"Unknown model {name!r}; choose one of: {', '.join(self.names)}")
        return name

    def add_loaded(self, name: str, pipe, info: PipelineInfo | None = None) -> None:
        """Registers an already loaded pipeline (it counts towards the cache like any other)."""
        self._infos[name] = info or describe_pipeline(pipe, self.sources[name])
        with self._lock:
            self._loaded[name] = pipe
            self._evict()

    def info(self, name: str | None = None) -> PipelineInfo:
        name = self.check_name(name)
        if name not in self._infos:
            from medgen.pipelines.hub import resolve_pipeline_folder

            source = self.sources[name]
            # A Hub repo id: its JSON configs are enough to lay out the page; weights come on first use.
            folder = resolve_pipeline_folder(source, allow_patterns=["*.json"])
            self._infos[name] = describe_pipeline_folder(folder, source=source)
        return self._infos[name]

    def is_loaded(self, name: str) -> bool:
        with self._lock:
            return name in self._loaded

    def loaded_names(self) -> list[str]:
        """Loaded models, least recently used first."""
        with self._lock:
            return list(self._loaded)

    def pipeline(self, name: str | None = None):
        """The loaded pipeline of `name`, loading it on first use; the least recently used beyond `max_loaded` is dropped."""
        name = self.check_name(name)
        with self._lock:
            if name in self._loaded:
                self._loaded.move_to_end(name)
                return self._loaded[name]
        # One load per model at a time; other models stay usable while this one loads.
        with self._loading[name]:
            with self._lock:
                if name in self._loaded:
                    return self._loaded[name]
            pipe = self._loader(self.sources[name])
            with self._lock:
                self._loaded[name] = pipe
                self._evict()
        return pipe

    def _evict(self) -> None:
        while len(self._loaded) > self.max_loaded:
            dropped, _ = self._loaded.popitem(last=False)
            logger.info("unloaded model %s (keeping the %d most recently used)", dropped, self.max_loaded)
