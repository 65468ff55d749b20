"""Generating a request's images in small batched pipeline calls, reporting every step, cancellable within one.

Gradio stops a generator only between two of its yields, and a diffusers call cannot yield.
:func:`stream_generation` therefore runs the pipeline in a worker thread and reports after every
denoising step; a ``threading.Event`` (set by the caller, or by closing the stream, which is what
gradio does on cancel) makes the step callback set ``pipe._interrupt``, so the worker stops before
the next UNet call and the device is free. Images reach the caller batch by batch, so a cancelled
run keeps every batch finished before the cancel.
"""

from __future__ import annotations

import copy
import queue
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from medgen.app.models import PipelineKind, pipeline_kind
from medgen.app.request import SAMPLERS, GenerationRequest

# Images per pipeline call. Small on CPU, so that images reach the gallery as they are finished and Cancel keeps
# them, at a small cost in total time (benchmarks/bench_app.py, docs/app.md). A GPU does a batch of 8 in about
# the time of 2, so there a run of up to 8 images stays one call.
DEFAULT_BATCH_SIZE = 2
DEFAULT_BATCH_SIZES = {"cpu": DEFAULT_BATCH_SIZE, "cuda": 8}


def default_batch_size(device: str) -> int:
    """Images per pipeline call on `device` when the caller does not choose: 2 on CPU, 8 on CUDA."""
    return DEFAULT_BATCH_SIZES.get(device, DEFAULT_BATCH_SIZE)


@dataclass
class GenerationUpdate:
    """One report from a running generation.

    `kind` is `"step"` after each denoising step, `"image"` when a batch of images is finished (they are
    then the last of `images`), and `"done"` once at the end, with `cancelled` telling why it ended.
    For mask models `masks` holds the mask (class indices `(H, W)`) each image followed, else it is empty.
    """

    kind: Literal["step", "image", "done"]
    steps_done: int
    steps_total: int
    images: list[np.ndarray] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)
    cancelled: bool = False
    masks: list[np.ndarray] = field(default_factory=list)


def pipeline_with_sampler(pipe, sampler: str):
    """A shallow copy of `pipe` with a fresh scheduler of the chosen kind.

    Models are shared, but the scheduler (which keeps per-run state, e.g. the multistep solver's
    history) and the interrupt flag belong to the copy, so concurrent runs cannot disturb each other.
    """
    from medgen.sampling import replacement_scheduler

    run_pipe = copy.copy(pipe)
    class_name = SAMPLERS[sampler]
    if class_name is None:  # the model's own
        run_pipe.scheduler = type(pipe.scheduler).from_config(pipe.scheduler.config)
    else:
        run_pipe.scheduler = replacement_scheduler(pipe.scheduler, class_name)  # an EDM model keeps its EDM form
    run_pipe._interrupt = False
    return run_pipe


def call_kwargs(kind: PipelineKind, request: GenerationRequest, batch_size: int) -> dict[str, Any]:
    """The pipeline call arguments for `batch_size` images of `request` (generators and output type aside)."""
    kwargs: dict[str, Any] = {"num_inference_steps": request.num_inference_steps}
    if kind == "mask":
        # One mask for every image (or, with none, one sampled per image); labels likewise, or the null label.
        kwargs.update(
            masks=None if request.mask is None else [request.mask] * batch_size,
            labels=None if request.condition is None else [request.condition] * batch_size,
            num_images_per_prompt=batch_size if request.condition is None and request.mask is None else 1,
            guidance_scale=request.guidance_scale,
        )
    elif kind == "label":
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
                    **call_kwargs(kind, request, len(batch_seeds)),
                    generator=[torch.Generator().manual_seed(seed) for seed in batch_seeds],
                    output_type="np",
                    callback_on_step_end=on_step_end,
                    # The callback needs no tensors; asking for none also keeps it cheap.
                    callback_on_step_end_tensor_inputs=[],
                )
                if run_pipe.interrupt:
                    break  # partially denoised: not images to show
                images = [apply_preset(np.asarray(image, dtype=np.float32), request.postprocess)[0] for image in output.images]
                masks = getattr(output, "masks", None)
                masks = [] if masks is None else [np.asarray(mask) for mask in masks]
                updates.put(("images", images, batch_seeds, masks))
        except BaseException as error:  # reported to the consumer, which re-raises it
            updates.put(("error", error))
        finally:
            free_device_memory()
            worker_done.set()
            updates.put(("end",))

    worker = threading.Thread(target=work, name="medgen-generation", daemon=True)
    images: list[np.ndarray] = []
    seeds: list[int] = []
    masks: list[np.ndarray] = []
    steps_before_batch = 0
    steps_done = 0
    worker.start()
    try:
        while True:
            message = updates.get()
            if message[0] == "step":
                steps_done = min(steps_before_batch + message[1], steps_total)
                yield GenerationUpdate("step", steps_done, steps_total, images, seeds, masks=masks)
            elif message[0] == "images":
                images = [*images, *message[1]]
                seeds = [*seeds, *message[2]]
                masks = [*masks, *message[3]]
                steps_before_batch += request.num_inference_steps
                steps_done = steps_before_batch
                yield GenerationUpdate("image", steps_done, steps_total, images, seeds, masks=masks)
            elif message[0] == "error":
                raise message[1]
            else:
                yield GenerationUpdate("done", steps_done, steps_total, images, seeds, cancel.is_set(), masks)
                return
    finally:
        # Closing the iterator (gradio's cancel, a closed browser tab) must stop the worker too.
        # No join here: close() may run on the server's event loop, and the worker stops on its own
        # within one step.
        cancel.set()
