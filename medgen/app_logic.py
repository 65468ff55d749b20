"""What the Gradio app does, as plain functions and small classes that tests can call directly.

`app.py` only lays out the UI and wires it to :class:`AppService`: loading the pipeline,
validating what a user typed, streaming images as they finish, cancelling a run within one
denoising step, and packing the shown images into a ZIP of PNG + DICOM + ``params.json``.
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
PipelineKind = Literal["label", "text", "unconditional"]


# ----------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------


def default_pipeline_dir() -> Path:
    """The pipeline shipped inside the medgen package (`medgen/default_pipeline`)."""
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


def pipeline_kind(pipe) -> PipelineKind:
    """`"text"` for prompt pipelines (they have a tokenizer), `"label"` for finding labels, else `"unconditional"`."""
    if hasattr(pipe, "tokenizer") or type(pipe).__name__ == "TextToImagePipeline":
        return "text"
    if getattr(pipe, "labels", None):
        return "label"
    return "unconditional"


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


def describe_pipeline(pipe, source: str = "") -> PipelineInfo:
    kind = pipeline_kind(pipe)
    sample_size = pipe.unet.config.sample_size
    size = sample_size if isinstance(sample_size, int) else sample_size[0]
    if getattr(pipe, "vae", None) is not None:
        size *= 2 ** (len(pipe.vae.config.block_out_channels) - 1)
    return PipelineInfo(
        kind=kind,
        labels=list(pipe.labels) if kind == "label" else [],
        multi_label=bool(getattr(pipe.config, "multi_label", False)),
        image_size=int(size),
        default_guidance={"label": 2.0, "text": 3.0}.get(kind, 1.0),
        class_name=type(pipe).__name__,
        source=str(source),
    )


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
    num_inference_steps: int = 25,
    guidance_scale: float | None = None,
    seed: int = RANDOM_SEED,
    sampler: str = DEFAULT_SAMPLER,
    postprocess: str = "none",
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

    `kind` is `"step"` after each denoising step, `"image"` when an image is finished (it is then
    the last of `images`), and `"done"` once at the end, with `cancelled` telling why it ended.
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


def _call_kwargs(kind: PipelineKind, request: GenerationRequest) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"num_images_per_prompt": 1, "num_inference_steps": request.num_inference_steps}
    if kind == "label":
        kwargs.update(labels=[request.condition], guidance_scale=request.guidance_scale)
    elif kind == "text":
        kwargs.update(prompt=request.prompt, negative_prompt=request.negative_prompt, guidance_scale=request.guidance_scale)
    return kwargs


def free_device_memory() -> None:
    """Returns cached GPU memory after a run so that the next user (or another process) gets it."""
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def stream_generation(
    pipe, request: GenerationRequest, cancel: threading.Event | None = None, worker_done: threading.Event | None = None
) -> Iterator[GenerationUpdate]:
    """
    Generates `request.count` images one after another (image i from seed `request.seeds[i]`) and
    reports after every denoising step and every finished image.

    Setting `cancel` (or closing this iterator) stops the pipeline before its next UNet call; images
    finished before that are kept and reported in the final `"done"` update. `worker_done` is set
    once the worker thread has really stopped using the device.
    """
    import torch

    from medgen.postprocess import apply_preset

    cancel = cancel or threading.Event()
    worker_done = worker_done or threading.Event()
    kind = pipeline_kind(pipe)
    run_pipe = pipeline_with_sampler(pipe, request.sampler)
    kwargs = _call_kwargs(kind, request)
    updates: queue.Queue = queue.Queue()
    steps_total = request.count * request.num_inference_steps

    def on_step_end(step_pipe, step: int, timestep, callback_kwargs: dict) -> dict:
        updates.put(("step", step + 1))
        if cancel.is_set():
            step_pipe._interrupt = True
        return {}

    def work() -> None:
        try:
            for seed in request.seeds:
                if cancel.is_set():
                    break
                output = run_pipe(
                    **kwargs,
                    generator=torch.Generator().manual_seed(seed),
                    output_type="np",
                    callback_on_step_end=on_step_end,
                    # The callback needs no tensors; asking for none also keeps it cheap.
                    callback_on_step_end_tensor_inputs=[],
                )
                if run_pipe.interrupt:
                    break  # partially denoised: not an image to show
                image, _ = apply_preset(np.asarray(output.images[0], dtype=np.float32), request.postprocess)
                updates.put(("image", image, seed))
        except BaseException as error:  # reported to the consumer, which re-raises it
            updates.put(("error", error))
        finally:
            free_device_memory()
            worker_done.set()
            updates.put(("end",))

    worker = threading.Thread(target=work, name="medgen-generation", daemon=True)
    images: list[np.ndarray] = []
    seeds: list[int] = []
    steps_before_image = 0
    steps_done = 0
    worker.start()
    try:
        while True:
            message = updates.get()
            if message[0] == "step":
                steps_done = min(steps_before_image + message[1], steps_total)
                yield GenerationUpdate("step", steps_done, steps_total, images, seeds)
            elif message[0] == "image":
                images = [*images, message[1]]
                seeds = [*seeds, message[2]]
                steps_before_image = steps_done = len(images) * request.num_inference_steps
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


class AppService:
    """A loaded pipeline plus the per-run logic of the app (validation, streaming, downloads)."""

    def __init__(self, pipe, source: str = "", device: str = "cpu", workdir: str | os.PathLike | None = None):
        self.pipe = pipe
        self.device = device
        self.info = describe_pipeline(pipe, source)
        # One run at a time on CPU (parallel runs would only slow each other down); two on a GPU.
        self.concurrency_limit = 2 if device == "cuda" else 1
        self._tmp = None
        if workdir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="medgen-app-")
            workdir = self._tmp.name
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)

    @classmethod
    def from_source(cls, source: str | None = None, device: str | None = None, **kwargs: Any) -> "AppService":
        source = resolve_pipeline_source(source)
        pipe, device = load_app_pipeline(source, device)
        return cls(pipe, source=source, device=device, **kwargs)

    def request(self, **inputs: Any) -> GenerationRequest:
        return make_request(self.info, **inputs)

    def stream(self, request: GenerationRequest, cancel: threading.Event | None = None, **kwargs: Any) -> Iterator[GenerationUpdate]:
        return stream_generation(self.pipe, request, cancel=cancel, **kwargs)

    def run(self, request: GenerationRequest, cancel: threading.Event | None = None) -> Iterator[RunResult]:
        """`stream` turned into what the UI shows; a new ZIP is written whenever an image is added."""
        from medgen.files import OutputError

        label = describe_condition(request)
        download: Path | None = None
        download_error = ""
        # closing(): closing this iterator early closes the stream, which stops the worker.
        with contextlib.closing(self.stream(request, cancel=cancel)) as updates:
            for update in updates:
                gallery = [
                    (display_image(image), f"{label} · seed {seed}") for image, seed in zip(update.images, update.seeds)
                ]
                if update.kind == "image":
                    params = run_parameters(self.info, request, update.seeds)
                    try:
                        download = export_zip(update.images, update.seeds, params, self.workdir)
                        download_error = ""
                    except OutputError as error:
                        # The images are still worth showing; only the download is lost (e.g. a full disk).
                        download, download_error = None, f" No ZIP download: {error}."
                yield RunResult(
                    gallery=gallery,
                    download=download,
                    status=self._status(update, request) + download_error,
                    seed=request.seed,
                    steps_done=update.steps_done,
                    steps_total=update.steps_total,
                    finished=update.kind == "done",
                )

    @staticmethod
    def _status(update: GenerationUpdate, request: GenerationRequest) -> str:
        shown = len(update.images)
        if update.kind == "done" and update.cancelled and shown < request.count:
            return f"Cancelled: kept the {shown} of {request.count} images finished before the cancel (first seed {request.seed})."
        if update.kind == "done":
            return f"Done: {shown} images (seeds {request.seed} to {request.seeds[-1]})."
        return f"Generating image {min(shown + 1, request.count)} of {request.count} (first seed {request.seed})..."

    def prune_downloads(self, max_age_s: float = 3600.0) -> None:
        """Deletes ZIPs older than `max_age_s` so a long-running Space does not fill its disk."""
        now = time.time()
        for path in self.workdir.glob("download-*"):
            if now - path.stat().st_mtime > max_age_s:
                shutil.rmtree(path, ignore_errors=True)
