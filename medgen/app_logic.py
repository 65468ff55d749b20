"""What the Gradio app does, as plain functions and small classes that tests can call directly.

`app.py` only lays out the UI and wires it to :class:`AppService`: the models it serves (listed
up front, loaded on first use, see `medgen.app_models`), validating what a user typed, generating
the requested images in batched pipeline calls, cancelling a run within one denoising step, and
packing the shown images into a ZIP of PNG + DICOM + ``params.json``.
Nothing here imports gradio, so the logic runs (and is tested) without a web server.

Cancellation: gradio stops a generator only between two of its yields, and a diffusers call
cannot yield. :meth:`AppService.stream` therefore runs the pipeline in a worker thread and
reports after every denoising step; a ``threading.Event`` (set by the caller, or by closing
the stream, which is what gradio does on cancel) makes the step callback set
``pipe._interrupt``, so the worker stops before the next UNet call and the device is free.
"""

from __future__ import annotations

import contextlib
import copy
import os
import queue
import secrets
import shutil
import tempfile
import threading
import time
import zipfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from medgen.app_models import (
    ModelCatalog,
    PipelineInfo,
    PipelineKind,
    builtin_models,
    model_name,
    pipeline_kind,
    split_sources,
)
from medgen.sampling import DEFAULT_INFERENCE_STEPS

NOTICE = (
    "Synthetic images, for research and teaching only: not for diagnosis. "
    "They show what a model learned, not a real patient."
)
ENV_PIPELINE = "MEDGEN_PIPELINE"
MAX_IMAGES = 16
MAX_STEPS = 250
MAX_GUIDANCE = 20.0
MAX_SEED = 2**32 - 1
RANDOM_SEED = -1
# Display name -> diffusers scheduler class. The first is the default: a multistep solver that
# gives good samples in 20-30 steps; DDPM needs its full training schedule to look right.
SAMPLERS: dict[str, str] = {
    "DPM-Solver++ (fast)": "DPMSolverMultistepScheduler",
    "DDIM": "DDIMScheduler",
    "DDPM": "DDPMScheduler",
}
DEFAULT_SAMPLER = next(iter(SAMPLERS))
EXAMPLE_PROMPTS = (
    "frontal chest x-ray, no acute cardiopulmonary abnormality",
    "right lower lobe pneumonia with consolidation",
    "small left pleural effusion",
    "cardiomegaly with mild pulmonary edema",
)
# Images per pipeline call: a run of up to MAX_IMAGES is one batched call unless the service caps it lower
# (e.g. to fit GPU memory).
DEFAULT_BATCH_SIZE = MAX_IMAGES


# ----------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------


def default_pipeline_dir() -> Path:
    """The built-in `default` pipeline shipped inside the medgen package (`medgen/pretrained/chest-xray`)."""
    from medgen.pipelines.hub import builtin_pipeline_path

    return builtin_pipeline_path("default")


def resolve_pipeline_source(cli_value: str | None = None, environ: Mapping[str, str] | None = None) -> str:
    """Where to load the pipeline from: `--pipeline`, else `$MEDGEN_PIPELINE`, else the embedded default."""
    environ = os.environ if environ is None else environ
    if cli_value:
        return str(cli_value)
    if environ.get(ENV_PIPELINE):
        return environ[ENV_PIPELINE]
    return str(default_pipeline_dir())


def resolve_pipeline_sources(cli_values: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> list[str]:
    """The `--pipeline` sources (repeatable, or comma lists), else those in `$MEDGEN_PIPELINE`; may be empty."""
    environ = os.environ if environ is None else environ
    return split_sources(cli_values) or split_sources([environ.get(ENV_PIPELINE, "")])


def select_device(device: str | None = None) -> tuple[str, Any]:
    """`("cuda", float16)` when a GPU is available (or asked for), else `("cpu", float32)`."""
    import torch

    if device in (None, "auto"):
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda'; got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was requested but torch sees no CUDA GPU; use --device cpu")
    return device, torch.float16 if device == "cuda" else torch.float32


def load_app_pipeline(source: str | os.PathLike, device: str | None = None):
    """
    Loads a medgen pipeline for serving, with a start-up error that says what to do when it is missing.

    Returns `(pipe, device)`; the pipeline is moved to the device in fp16 on CUDA, fp32 on CPU.
    """
    from medgen.pipelines import load_pipeline

    device, dtype = select_device(device)
    path = Path(source).expanduser()
    if path == default_pipeline_dir() and not path.is_dir():
        raise FileNotFoundError(
            f"No pipeline found: the embedded default pipeline {path} does not exist in this install. "
            f"Pass --pipeline DIR (a saved medgen pipeline folder or a Hub repo id) or set {ENV_PIPELINE}."
        )
    try:
        pipe = load_pipeline(str(source), torch_dtype=dtype)
    except (ValueError, FileNotFoundError) as error:
        raise type(error)(f"Cannot start the app with pipeline {source!s}: {error}") from error
    pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    return pipe, device


def zero_gpu(fn: Callable, duration: int = 120) -> Callable:
    """Wraps `fn` with `spaces.GPU` on Hugging Face ZeroGPU hardware; returns `fn` unchanged elsewhere."""
    try:
        import spaces  # only present on Hugging Face Spaces
    except ImportError:
        return fn
    return spaces.GPU(duration=duration)(fn)


# ----------------------------------------------------------------------------------------------
# Requests
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GenerationRequest:
    """One validated click on Generate. `seed` is the resolved first seed; image i uses `seed + i`."""

    condition: str | list[str] | None
    prompt: str | None
    negative_prompt: str | None
    count: int
    num_inference_steps: int
    guidance_scale: float
    seed: int
    sampler: str
    postprocess: str
    model: str = ""

    @property
    def seeds(self) -> list[int]:
        return [(self.seed + index) % (MAX_SEED + 1) for index in range(self.count)]


def _as_int(value: Any, name: str, low: int, high: int) -> int:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a whole number from {low} to {high}; got {value!r}") from None
    if not number.is_integer() or not low <= number <= high:
        raise ValueError(f"{name} must be a whole number from {low} to {high}; got {value!r}")
    return int(number)


def make_request(
    info: PipelineInfo,
    condition: str | Sequence[str] | None = None,
    prompt: str | None = None,
    negative_prompt: str | None = None,
    count: int = 4,
    num_inference_steps: int = DEFAULT_INFERENCE_STEPS,
    guidance_scale: float | None = None,
    seed: int = RANDOM_SEED,
    sampler: str = DEFAULT_SAMPLER,
    postprocess: str = "none",
    model: str = "",
) -> GenerationRequest:
    """Checks every user input against the pipeline and ranges; raises `ValueError` naming the bad one."""
    from medgen.postprocess import list_presets

    count = _as_int(count, "count", 1, MAX_IMAGES)
    steps = _as_int(num_inference_steps, "num_inference_steps", 1, MAX_STEPS)
    guidance = info.default_guidance if guidance_scale is None else guidance_scale
    try:
        guidance = float(guidance)
    except (TypeError, ValueError):
        raise ValueError(f"guidance_scale must be a number from 0 to {MAX_GUIDANCE}; got {guidance_scale!r}") from None
    if not 0.0 <= guidance <= MAX_GUIDANCE:
        raise ValueError(f"guidance_scale must be a number from 0 to {MAX_GUIDANCE}; got {guidance_scale!r}")
    seed = _as_int(RANDOM_SEED if seed is None else seed, "seed", RANDOM_SEED, MAX_SEED)
    if seed == RANDOM_SEED:
        seed = secrets.randbelow(2**31)
    if not isinstance(sampler, str) or sampler not in SAMPLERS:
        raise ValueError(f"Unknown sampler {sampler!r}; choose one of: {', '.join(SAMPLERS)}")
    if not isinstance(postprocess, str) or postprocess not in list_presets():
        raise ValueError(f"Unknown post-processing preset {postprocess!r}; choose one of: {', '.join(list_presets())}")

    resolved_condition: str | list[str] | None = None
    if info.kind == "label":
        resolved_condition = _check_condition(info, condition)
    prompt_text = negative_text = None
    if info.kind == "text":
        for name, text in (("prompt", prompt), ("negative_prompt", negative_prompt)):
            if text is not None and not isinstance(text, str):
                raise ValueError(f"{name} must be text; got {text!r}")
        prompt_text = (prompt or "").strip()
        negative_text = (negative_prompt or "").strip() or None
    return GenerationRequest(
        condition=resolved_condition,
        prompt=prompt_text,
        negative_prompt=negative_text,
        count=count,
        num_inference_steps=steps,
        guidance_scale=guidance,
        seed=seed,
        sampler=sampler,
        postprocess=postprocess,
        model=model,
    )


def _check_condition(info: PipelineInfo, condition: str | Sequence[str] | None) -> str | list[str]:
    lookup = {name.lower(): name for name in info.labels}
    names = [condition] if isinstance(condition, str) or condition is None else list(condition)
    if not info.multi_label and len(names) != 1:
        raise ValueError(f"Choose exactly one condition from: {', '.join(info.labels)}; got {condition!r}")
    resolved = []
    for name in names:
        if not isinstance(name, str) or name.strip().lower() not in lookup:
            raise ValueError(f"Unknown condition {name!r}; choose from: {', '.join(info.labels)}")
        resolved.append(lookup[name.strip().lower()])
    # A multi-label model takes a set of findings (possibly none: "no finding"); a single-label one a name.
    return resolved if info.multi_label else resolved[0]


def describe_condition(request: GenerationRequest) -> str:
    if request.prompt is not None:
        return request.prompt or "(empty prompt)"
    if isinstance(request.condition, list):
        return " + ".join(request.condition) or "no finding"
    return request.condition or "unconditional"


# ----------------------------------------------------------------------------------------------
# Generation
# ----------------------------------------------------------------------------------------------


@dataclass
class GenerationUpdate:
    """One report from a running generation.

    `kind` is `"step"` after each denoising step, `"image"` when a batch of images is finished (they are
    then the last of `images`), and `"done"` once at the end, with `cancelled` telling why it ended.
    """

    kind: Literal["step", "image", "done"]
    steps_done: int
    steps_total: int
    images: list[np.ndarray] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)
    cancelled: bool = False


def pipeline_with_sampler(pipe, sampler: str):
    """A shallow copy of `pipe` with a fresh scheduler of the chosen kind.

    Models are shared, but the scheduler (which keeps per-run state, e.g. the multistep solver's
    history) and the interrupt flag belong to the copy, so concurrent runs cannot disturb each other.
    """
    import diffusers

    scheduler_class = getattr(diffusers, SAMPLERS[sampler])
    run_pipe = copy.copy(pipe)
    run_pipe.scheduler = scheduler_class.from_config(pipe.scheduler.config)
    run_pipe._interrupt = False
    return run_pipe


def _call_kwargs(kind: PipelineKind, request: GenerationRequest, batch_size: int) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"num_inference_steps": request.num_inference_steps}
    if kind == "label":
        kwargs.update(labels=[request.condition] * batch_size, num_images_per_prompt=1, guidance_scale=request.guidance_scale)
    elif kind == "text":
        kwargs.update(
            prompt=request.prompt, negative_prompt=request.negative_prompt, num_images_per_prompt=batch_size,
            guidance_scale=request.guidance_scale,
        )
    else:
        kwargs.update(num_images_per_prompt=batch_size)
    return kwargs


def seed_batches(seeds: Sequence[int], batch_size: int) -> list[list[int]]:
    """`seeds` in consecutive batches of at most `batch_size`."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1; got {batch_size}")
    return [list(seeds[start:start + batch_size]) for start in range(0, len(seeds), batch_size)]


def free_device_memory() -> None:
    """Returns cached GPU memory after a run so that the next user (or another process) gets it."""
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def stream_generation(
    pipe,
    request: GenerationRequest,
    cancel: threading.Event | None = None,
    worker_done: threading.Event | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> Iterator[GenerationUpdate]:
    """
    Generates `request.count` images in batched pipeline calls of at most `batch_size` images and reports
    after every denoising step and every finished batch.

    Every image has its own generator (image i from seed `request.seeds[i]`, a list of generators per
    call), so an image comes out the same whether it is made alone or in a batch of any size, and can
    be regenerated alone from its seed.

    Setting `cancel` (or closing this iterator) stops the pipeline before its next UNet call. Images of
    finished batches are kept and reported in the final `"done"` update; the batch in progress is
    dropped (its images are only partly denoised). `worker_done` is set once the worker thread has
    really stopped using the device.
    """
    import torch

    from medgen.postprocess import apply_preset

    cancel = cancel or threading.Event()
    worker_done = worker_done or threading.Event()
    kind = pipeline_kind(pipe)
    run_pipe = pipeline_with_sampler(pipe, request.sampler)
    batches = seed_batches(request.seeds, batch_size)
    updates: queue.Queue = queue.Queue()
    steps_total = len(batches) * request.num_inference_steps

    def on_step_end(step_pipe, step: int, timestep, callback_kwargs: dict) -> dict:
        updates.put(("step", step + 1))
        if cancel.is_set():
            step_pipe._interrupt = True
        return {}

    def work() -> None:
        try:
            for batch_seeds in batches:
                if cancel.is_set():
                    break
                output = run_pipe(
                    **_call_kwargs(kind, request, len(batch_seeds)),
                    generator=[torch.Generator().manual_seed(seed) for seed in batch_seeds],
                    output_type="np",
                    callback_on_step_end=on_step_end,
                    # The callback needs no tensors; asking for none also keeps it cheap.
                    callback_on_step_end_tensor_inputs=[],
                )
                if run_pipe.interrupt:
                    break  # partially denoised: not images to show
                images = [apply_preset(np.asarray(image, dtype=np.float32), request.postprocess)[0] for image in output.images]
                updates.put(("images", images, batch_seeds))
        except BaseException as error:  # reported to the consumer, which re-raises it
            updates.put(("error", error))
        finally:
            free_device_memory()
            worker_done.set()
            updates.put(("end",))

    worker = threading.Thread(target=work, name="medgen-generation", daemon=True)
    images: list[np.ndarray] = []
    seeds: list[int] = []
    steps_before_batch = 0
    steps_done = 0
    worker.start()
    try:
        while True:
            message = updates.get()
            if message[0] == "step":
                steps_done = min(steps_before_batch + message[1], steps_total)
                yield GenerationUpdate("step", steps_done, steps_total, images, seeds)
            elif message[0] == "images":
                images = [*images, *message[1]]
                seeds = [*seeds, *message[2]]
                steps_before_batch += request.num_inference_steps
                steps_done = steps_before_batch
                yield GenerationUpdate("image", steps_done, steps_total, images, seeds)
            elif message[0] == "error":
                raise message[1]
            else:
                yield GenerationUpdate("done", steps_done, steps_total, images, seeds, cancelled=cancel.is_set())
                return
    finally:
        # Closing the iterator (gradio's cancel, a closed browser tab) must stop the worker too.
        # No join here: close() may run on the server's event loop, and the worker stops on its own
        # within one step.
        cancel.set()


# ----------------------------------------------------------------------------------------------
# Downloads
# ----------------------------------------------------------------------------------------------


def run_parameters(info: PipelineInfo, request: GenerationRequest, seeds: Sequence[int]) -> dict[str, Any]:
    """The JSON-friendly record of a run, stored in `params.json` and in every DICOM file."""
    from medgen.postprocess import get_preset

    params: dict[str, Any] = {
        "model": request.model or None,
        "pipeline": info.source,
        "pipeline_class": info.class_name,
        "num_inference_steps": request.num_inference_steps,
        "guidance_scale": request.guidance_scale if info.kind != "unconditional" else None,
        "seed": request.seed,
        "seeds": list(seeds),
        "scheduler": SAMPLERS[request.sampler],
        "postprocess": get_preset(request.postprocess).record(),
        "synthetic": True,
        "notice": NOTICE,
    }
    if info.kind == "label":
        params["labels"] = request.condition if isinstance(request.condition, list) else [request.condition]
    elif info.kind == "text":
        params["prompt"] = request.prompt
        params["negative_prompt"] = request.negative_prompt
    return params


def export_zip(
    images: Sequence[np.ndarray], seeds: Sequence[int], params: Mapping[str, Any], output_dir: str | os.PathLike
) -> Path:
    """Writes the images as PNG and synthetic DICOM plus `params.json` (via `medgen.export`) and zips them.

    The ZIP is written under a temporary name and renamed when complete, so a full disk never
    leaves a truncated download; the failure is a `medgen.files.OutputError` naming the file.
    """
    from medgen.export import export_images, new_run_dir
    from medgen.files import atomic_write

    if len(images) == 0:
        raise ValueError("There are no images to download yet: generate some first.")
    run_dir = new_run_dir(output_dir, prefix="download")
    files_dir = run_dir / "medgen-images"
    archive = run_dir / "medgen-images.zip"
    try:
        export_images(
            list(images), files_dir, formats=("png", "dcm"), params=params,
            image_params=[{"seed": int(seed)} for seed in seeds], prefix="medgen",
        )
        with atomic_write(archive, overwrite=False) as file, zipfile.ZipFile(file, "w", zipfile.ZIP_DEFLATED) as zip_file:
            for path in sorted(files_dir.iterdir()):
                zip_file.write(path, arcname=f"medgen-images/{path.name}")
    except BaseException:
        shutil.rmtree(run_dir, ignore_errors=True)  # no half-made download stays behind
        raise
    shutil.rmtree(files_dir)
    return archive


def display_image(image: np.ndarray) -> np.ndarray:
    """8-bit `(H, W)` (grayscale) or `(H, W, 3)` image for the gallery."""
    from medgen.export import quantize

    image = np.asarray(image)
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    return quantize(image, 8)


# ----------------------------------------------------------------------------------------------
# The service the app wires its UI to
# ----------------------------------------------------------------------------------------------


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


def _loader(device: str) -> Callable[[str], Any]:
    def load(source: str):
        return load_app_pipeline(source, device)[0]

    return load


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
        batch_size: int = DEFAULT_BATCH_SIZE,
    ):
        if (pipe is None) == (catalog is None):
            raise ValueError("AppService needs either a loaded pipeline or a catalog of models")
        if catalog is None:
            catalog = ModelCatalog({model_name(source) if source else "model": source}, loader=_loader(device))
            catalog.add_loaded(catalog.names[0], pipe)
        self.catalog = catalog
        self.device = device
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
    ) -> "AppService":
        """
        Serves `sources` (folders, Hub ids or built-in names; the first is selected at start) and, unless
        `include_builtins` is False, every built-in pipeline. Each is described now from its configs (a
        missing or foreign folder is an error naming it) and loaded on its first run.
        """
        from medgen.app_models import MAX_LOADED_MODELS

        device, _ = select_device(device)
        from medgen.pipelines.hub import BUILTIN_PIPELINES, builtin_pipeline_path

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
            raise FileNotFoundError(
                f"No pipeline found: the embedded default pipeline {default_pipeline_dir()} does not exist in this "
                f"install. Pass --pipeline DIR (a saved medgen pipeline folder or a Hub repo id) or set {ENV_PIPELINE}."
            )
        catalog = ModelCatalog(models, loader=_loader(device), max_loaded=max_loaded or MAX_LOADED_MODELS)
        for name in catalog.names:
            try:
                catalog.info(name)
            except (ValueError, FileNotFoundError) as error:
                raise type(error)(f"Cannot start the app with pipeline {models[name]}: {error}") from error
        return cls(catalog=catalog, device=device, **kwargs)

    @classmethod
    def from_source(cls, source: str | None = None, device: str | None = None, **kwargs: Any) -> "AppService":
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

    def request(self, model: str | None = None, **inputs: Any) -> GenerationRequest:
        """A validated request for `model` (default: the model selected at start); `ValueError` names a bad input."""
        name = self.catalog.check_name(model)
        return make_request(self.catalog.info(name), model=name, **inputs)

    def stream(self, request: GenerationRequest, cancel: threading.Event | None = None, **kwargs: Any) -> Iterator[GenerationUpdate]:
        kwargs.setdefault("batch_size", self.batch_size)
        return stream_generation(self.catalog.pipeline(request.model or None), request, cancel=cancel, **kwargs)

    def run(self, request: GenerationRequest, cancel: threading.Event | None = None) -> Iterator[RunResult]:
        """`stream` turned into what the UI shows; a new ZIP is written whenever images are added."""
        from medgen.files import OutputError

        started = time.perf_counter()
        info = self.catalog.info(request.model or None)
        label = describe_condition(request)
        download: Path | None = None
        download_error = ""
        if not self.catalog.is_loaded(request.model or self.default_model):
            yield RunResult([], None, f"Loading model {request.model or self.default_model}...", request.seed, 0, 0, False)
        # closing(): closing this iterator early closes the stream, which stops the worker.
        with contextlib.closing(self.stream(request, cancel=cancel)) as updates:
            for update in updates:
                gallery = [
                    (display_image(image), f"{label} · seed {seed}") for image, seed in zip(update.images, update.seeds)
                ]
                if update.kind == "image":
                    params = run_parameters(info, request, update.seeds)
                    try:
                        download = export_zip(update.images, update.seeds, params, self.workdir)
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
            dropped = " (the batch in progress was dropped)" if update.steps_done % request.num_inference_steps else ""
            return (
                f"Cancelled after {elapsed:.1f} s: kept {shown} of {request.count} images{dropped} "
                f"(first seed {request.seed})."
            )
        if update.kind == "done":
            return f"Done: {shown} images in {elapsed:.1f} s (seeds {request.seed} to {request.seeds[-1]})."
        return (
            f"Generating {request.count} images: step {update.steps_done} of {update.steps_total}, "
            f"{elapsed:.1f} s (first seed {request.seed})..."
        )

    def prune_downloads(self, max_age_s: float = 3600.0) -> None:
        """Deletes ZIPs older than `max_age_s` so a long-running Space does not fill its disk."""
        now = time.time()
        for path in self.workdir.glob("download-*"):
            if now - path.stat().st_mtime > max_age_s:
                shutil.rmtree(path, ignore_errors=True)
