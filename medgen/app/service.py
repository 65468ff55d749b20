"""The service `app.py` wires its UI to: the models served, checked requests, streamed runs, downloads.

Nothing here imports gradio, so the logic runs (and is tested) without a web server.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

import medgen.app.status as status_text
from medgen.app.display import display_image, display_pair
from medgen.app.downloads import RunDownload, prune_downloads, run_parameters, write_mask_png
from medgen.app.loading import (
    default_pipeline_dir,
    missing_default_message,
    pipeline_loader,
    resolve_pipeline_sources,
    select_device,
)
from medgen.app.models import MAX_LOADED_MODELS, ModelCatalog, PipelineInfo, builtin_models, model_name
from medgen.app.request import RANDOM_SEED, GenerationRequest, describe_condition, make_request, read_mask
from medgen.app.streaming import GenerationUpdate, default_batch_size, stream_generation


@dataclass
class RunResult:
    """What the UI shows after an update: gallery items, the ZIP (when images changed), a status line."""

    gallery: list[tuple[np.ndarray, str]]
    download: Path | None
    status: str
    seed: int
    steps_done: int
    steps_total: int
    finished: bool
    elapsed_s: float = 0.0


class AppService:
    """
    The models the app serves plus the per-run logic (validation, batched streaming, downloads).

    `AppService(pipe, source=...)` serves one already loaded pipeline; `from_sources` lists the
    built-in pipelines and any `--pipeline` sources, and loads each on its first run.
    """

    def __init__(
        self,
        pipe=None,
        source: str = "",
        device: str = "cpu",
        workdir: str | os.PathLike | None = None,
        catalog: ModelCatalog | None = None,
        batch_size: int | None = None,
    ):
        if (pipe is None) == (catalog is None):
            raise ValueError("AppService needs either a loaded pipeline or a catalog of models")
        if catalog is None:
            catalog = ModelCatalog({model_name(source) if source else "model": source}, loader=pipeline_loader(device))
            catalog.add_loaded(catalog.names[0], pipe)
        self.catalog = catalog
        self.device = device
        batch_size = default_batch_size(device) if batch_size is None else batch_size
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1; got {batch_size}")
        self.batch_size = batch_size
        # One run at a time on CPU (parallel runs would only slow each other down); two on a GPU.
        self.concurrency_limit = 2 if device == "cuda" else 1
        self._tmp = None
        if workdir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="medgen-app-")
            workdir = self._tmp.name
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)

    @classmethod
    def from_sources(
        cls,
        sources: Sequence[str] = (),
        device: str | None = None,
        include_builtins: bool = True,
        max_loaded: int | None = None,
        **kwargs: Any,
    ) -> AppService:
        """
        Serves `sources` (folders, Hub ids or built-in names; the first is selected at start) and, unless
        `include_builtins` is False, every built-in pipeline. Each is described now from its configs (a
        missing or foreign folder is an error naming it) and loaded on its first run.
        """
        from medgen.pipelines.hub import BUILTIN_PIPELINES, builtin_pipeline_path

        device, _ = select_device(device)
        all_builtins = builtin_models()
        builtin_names = {builtin_pipeline_path(name): display for display, name in all_builtins.items()}
        models: dict[str, str] = {}
        for source in sources:
            is_builtin = source.lower() in BUILTIN_PIPELINES
            name = builtin_names.get(builtin_pipeline_path(source), source) if is_builtin else model_name(source)
            models[name if name not in models else source] = source
        builtins = all_builtins if include_builtins else {}
        for name, builtin in builtins.items():
            if name not in models:
                models[name] = builtin
        if not models:
            raise FileNotFoundError(missing_default_message(default_pipeline_dir()))
        catalog = ModelCatalog(models, loader=pipeline_loader(device), max_loaded=max_loaded or MAX_LOADED_MODELS)
        for name in catalog.names:
            try:
                catalog.info(name)
            except (ValueError, FileNotFoundError) as error:
                raise type(error)(f"Cannot start the app with pipeline {models[name]}: {error}") from error
        return cls(catalog=catalog, device=device, **kwargs)

    @classmethod
    def from_source(cls, source: str | None = None, device: str | None = None, **kwargs: Any) -> AppService:
        """One source (else `$MEDGEN_PIPELINE`) selected at start, listed before the built-in pipelines."""
        return cls.from_sources(resolve_pipeline_sources([source] if source else None), device=device, **kwargs)

    @property
    def default_model(self) -> str:
        return self.catalog.names[0]

    @property
    def info(self) -> PipelineInfo:
        """The description of the model selected at start."""
        return self.catalog.info(self.default_model)

    @property
    def pipe(self):
        """The pipeline of the model selected at start (loaded now if it was not yet)."""
        return self.catalog.pipeline(self.default_model)

    def model_details(self, name: str | None = None) -> str:
        """The page's details line for model `name` (default: the one selected at start)."""
        from medgen.pipelines.hub import BUILTIN_PIPELINES

        name = self.catalog.check_name(name)
        builtin = self.catalog.sources[name].lower() in BUILTIN_PIPELINES
        return status_text.model_details(name, self.catalog.info(name), self.device, builtin=builtin)

    def request(self, model: str | None = None, **inputs: Any) -> GenerationRequest:
        """A validated request for `model` (default: the model selected at start); `ValueError` names a bad input."""
        name = self.catalog.check_name(model)
        return make_request(self.catalog.info(name), model=name, **inputs)

    def sample_mask(
        self, model: str | None = None, condition: Any = None, seed: Any = RANDOM_SEED, num_inference_steps: Any = None
    ) -> tuple[Path, int]:
        """
        A new mask from a mask model's mask generator, for `condition` (the model's label, if it has labels) and
        `seed` (-1: random), written as a PNG (see `write_mask_png`) to hand to `request(mask=...)`. It is the
        mask the model would draw for an image of that seed. Returns (PNG path, seed used); a `ValueError` names
        a bad input or says that the model cannot sample masks.
        """
        import torch

        from medgen.export import new_run_dir

        name = self.catalog.check_name(model)
        info = self.catalog.info(name)
        if info.kind != "mask" or not info.mask_generator:
            raise ValueError(f"Model {name} cannot sample a mask: it has no mask generator")
        steps = {} if num_inference_steps is None else {"num_inference_steps": num_inference_steps}
        request = make_request(info, condition=condition, count=1, seed=seed, model=name, **steps)
        pipe = self.catalog.pipeline(name)
        labels = None if request.condition is None else [request.condition]
        mask = pipe.sample_masks(
            labels=labels, batch_size=1, num_inference_steps=request.num_inference_steps,
            generator=[torch.Generator().manual_seed(request.seed)],
        )[0]
        folder = new_run_dir(self.workdir, prefix="mask")
        return write_mask_png(mask.cpu().numpy(), folder / f"mask-seed-{request.seed}.png", len(info.mask_classes)), request.seed

    def example_mask(self, model: str | None = None, example: Any = None) -> tuple[Path, str | None]:
        """
        One of the example masks stored with a mask model (real masks of its held-out test split, see
        `medgen.pipelines.example_masks`), checked like an upload and written as a PNG (see `write_mask_png`) to
        hand to `request(mask=...)`. Returns (PNG path, the example's label or None); a `ValueError` names an
        unknown example or says that the model has none.
        """
        from medgen.export import new_run_dir
        from medgen.pipelines.example_masks import read_example_masks
        from medgen.pipelines.hub import resolve_pipeline_folder

        name = self.catalog.check_name(model)
        info = self.catalog.info(name)
        if info.kind != "mask" or not info.example_masks:
            raise ValueError(f"Model {name} has no example masks")
        names = [choice for choice, _ in info.example_masks]
        if not isinstance(example, str) or example not in names:
            raise ValueError(f"Unknown example mask {example!r} for model {name}; choose one of: {', '.join(names)}")
        pipe = self.catalog.pipeline(name) if self.catalog.is_loaded(name) else None
        folder = getattr(pipe, "_medgen_source_folder", None) or resolve_pipeline_folder(self.catalog.sources[name])
        try:
            stored = {item.name: item for item in read_example_masks(folder)}
        except FileNotFoundError as error:
            raise ValueError(str(error)) from None
        if example not in stored:
            raise ValueError(f"example mask {example!r} is not in {folder}")
        mask = read_mask(str(stored[example].path), info)
        output = new_run_dir(self.workdir, prefix="mask") / f"example-{example}.png"
        return write_mask_png(mask, output, len(info.mask_classes)), stored[example].label

    def stream(self, request: GenerationRequest, cancel: threading.Event | None = None, **kwargs: Any) -> Iterator[GenerationUpdate]:
        kwargs.setdefault("batch_size", self.batch_size)
        return stream_generation(self.catalog.pipeline(request.model or None), request, cancel=cancel, **kwargs)

    def run(self, request: GenerationRequest, cancel: threading.Event | None = None) -> Iterator[RunResult]:
        """`stream` turned into what the UI shows: images as each batch finishes (enlarged for display), a ZIP of
        the images so far (true size) after each batch, and the status line."""
        from medgen.files import OutputError

        started = time.perf_counter()
        name = request.model or self.default_model
        info = self.catalog.info(name)
        label = describe_condition(request)
        download: Path | None = None
        download_error = ""
        zip_download: RunDownload | None = None
        gallery: list[tuple[np.ndarray, str]] = []
        if not self.catalog.is_loaded(name):
            yield RunResult([], None, status_text.loading_status(name), request.seed, 0, 0, False)
        # closing(): closing this iterator early closes the stream, which stops the worker.
        with contextlib.closing(self.stream(request, cancel=cancel)) as updates:
            for update in updates:
                new_images, new_seeds = update.images[len(gallery):], update.seeds[len(gallery):]
                new_masks = update.masks[len(gallery):]
                # Only new images are converted for display; the ones shown before stay as they are. A mask model's
                # image is shown beside its mask's outline.
                shown = [display_pair(*pair) for pair in zip(new_images, new_masks)] if new_masks else [
                    display_image(image) for image in new_images
                ]
                gallery = gallery + [(image, f"{label} · seed {seed}") for image, seed in zip(shown, new_seeds)]
                if update.kind == "image":
                    try:
                        if zip_download is None:
                            zip_download = RunDownload(
                                run_parameters(info, request, request.seeds), self.workdir, len(info.mask_classes)
                            )
                        complete = len(update.images) == request.count
                        download = zip_download.add(new_images, new_seeds, complete, masks=new_masks)
                        download_error = ""
                    except OutputError as error:
                        # The images are still worth showing; only the download is lost (e.g. a full disk).
                        download, download_error = None, f" No ZIP download: {error}."
                elapsed = time.perf_counter() - started
                yield RunResult(
                    gallery=gallery,
                    download=download,
                    status=self._status(update, request, elapsed) + download_error,
                    seed=request.seed,
                    steps_done=update.steps_done,
                    steps_total=update.steps_total,
                    finished=update.kind == "done",
                    elapsed_s=elapsed,
                )

    @staticmethod
    def _status(update: GenerationUpdate, request: GenerationRequest, elapsed: float) -> str:
        shown = len(update.images)
        if update.kind == "done" and update.cancelled and shown < request.count:
            dropped = bool(update.steps_done % request.num_inference_steps)
            return status_text.cancelled_status(shown, request.count, dropped, elapsed)
        if update.kind == "done":
            return status_text.done_status(request, shown, elapsed)
        return status_text.progress_status(request, shown, update.steps_done, update.steps_total, elapsed)

    def prune_downloads(self, max_age_s: float = 3600.0) -> None:
        """Deletes ZIPs older than `max_age_s` so a long-running Space does not fill its disk."""
        prune_downloads(self.workdir, max_age_s)
