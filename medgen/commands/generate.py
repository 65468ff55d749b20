"""`medgen generate`: sample images from a saved pipeline and export them with their parameters.

Examples::

    medgen generate --pipeline runs/pneumonia/pipeline --labels pneumonia --count 16 \\
        --num-inference-steps 15 --guidance-scale 2 --seed 42 --output out/pneumonia --format png,dcm
    medgen generate --pipeline runs/chexpert/pipeline --labels "effusion=1,edema=0.5" --count 4 --output out/mix
    accelerate launch --num_processes 8 -m medgen generate --pipeline runs/pneumonia/pipeline \
        --labels pneumonia --count 10000 --seed 0 --output out/pneumonia-10k      # 8 GPUs
    torchrun --nproc_per_node 2 -m medgen generate --pipeline default --labels pneumonia --count 64 \
        --seed 0 --output out/cpu                                                  # 2 CPU processes
    medgen generate --pipeline runs/lungs --labels tuberculosis --pairs --count 16 --output out/pairs
    medgen generate --pipeline runs/lungs --labels normal --masks my_masks/ --count 40 --output out/mine

Mask-conditioned pipelines write image + mask pairs: ``--pairs`` draws each mask with the pipeline's mask
generator, ``--masks DIR`` uses the user's masks (image ``i`` gets the ``i``-th file of DIR in natural name order,
cycling when ``--count`` is larger). Each mask is written as ``masks/image_XXXXX.png`` at the image size (class
``c`` stored as ``c * 255 // K``: 0/255 for one class), named in ``metadata.csv``'s ``mask_file_name`` column.

Image ``i`` of a run is drawn with its own ``torch.Generator`` seeded ``seed + i`` (on the CPU,
so seeds mean the same on every device): any single image can be regenerated alone with
``--seed <seed + i> --count 1``, whatever the batch size (up to floating-point rounding).

Under a launcher, the run's batches (images ``[0, B)``, ``[B, 2B)``, ... for ``--batch-size B``) are
shared between the processes with ``accelerate``'s ``split_between_processes``: a batch holds the same
images whatever the number of processes, so on one kind of device the files are identical, with the
same names, whether one process or many made them. Checks of the output folder, ``metadata.csv``,
``params.json`` and the Hub upload happen on the main process; a failure on any process stops all of
them at the next step instead of leaving the others waiting.
"""

from __future__ import annotations

import argparse
import inspect
import math
import secrets
import sys
import time
from pathlib import Path
from typing import Any

from medgen.sampling import (
    DEFAULT_INFERENCE_STEPS,
    SCHEDULERS,
    effective_guidance_interval,
    effective_guidance_scale,
    effective_inference_steps,
    effective_mask_generator_guidance_scale,
    effective_mask_guidance_scale,
    sampler_text,
)

MAX_COUNT = 10_000
MAX_STEPS = 1_000
def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    from medgen.export import DICOM_MODALITIES, EXPORT_FORMATS
    from medgen.postprocess import list_presets

    parser = subparsers.add_parser(
        "generate",
        help="generate synthetic images from a pipeline and write PNG / DICOM / NPY files",
        description=(
            "Generate synthetic images with a saved medgen pipeline and write them, with params.json, "
            "into OUTPUT. Files are never overwritten: an OUTPUT that already holds any file of this run "
            "(e.g. a previous run's params.json) is refused before anything is generated. "
            "OUTPUT is checked for being writable before sampling; every file is written under a temporary "
            "name and renamed when complete, so a full disk never leaves a partial file. "
            "Image i uses seed SEED+i. Research and teaching only, not for diagnosis."
        ),
    )
    parser.add_argument("--pipeline", required=True, help="built-in pipeline name (default), pipeline folder (with model_index.json) or Hub repo id")
    parser.add_argument(
        "--labels",
        help=(
            "findings for every image: one name ('pneumonia'), several at once for multi-label models "
            "('effusion,pneumonia'), or name=value in [0, 1] ('effusion=1,edema=0.5'); case-insensitive"
        ),
    )
    parser.add_argument(
        "--pairs", action="store_true",
        help="mask-conditioned pipelines: draw a mask per image with the pipeline's mask generator and write "
        "image + mask pairs (masks/*.png, mask_file_name in metadata.csv)",
    )
    parser.add_argument(
        "--masks", metavar="DIR",
        help="mask-conditioned pipelines: condition on the masks (PNG ...) in DIR, image i on the i-th file in name "
        "order (cycling), and write them beside the images as pairs",
    )
    parser.add_argument("--prompt", help="text prompt (text-to-image pipelines)")
    parser.add_argument("--negative-prompt", help="negative text prompt (text-to-image pipelines)")
    parser.add_argument("--count", type=int, default=1, help=f"number of images, 1-{MAX_COUNT} (default 1)")
    parser.add_argument("--num-inference-steps", type=int, default=None,
                        help=f"denoising steps (default: the model's own, {DEFAULT_INFERENCE_STEPS} unless it stores another)")
    parser.add_argument("--guidance-scale", type=float, default=None,
                        help="classifier-free guidance (default: the model's own, 2.0 for label models that store none)")
    parser.add_argument("--guidance-interval", type=float, nargs=2, metavar=("START", "STOP"), default=None,
                        help="label models: guide only the sampling steps from START to STOP, fractions of the steps "
                        "from the noisiest (0) to the last (1) (default: the model's own, every step when it stores none)")
    parser.add_argument("--mask-guidance-scale", type=float, default=None,
                        help="mask models: how closely images follow their masks; > 1 extrapolates away from the "
                        "image drawn without the mask, one more model pass per step (default: the model's own, 1.0 "
                        "when it stores none)")
    parser.add_argument("--mask-generator-guidance-scale", type=float, default=None,
                        help="with --pairs: the label guidance the mask generator draws the masks with (default: the "
                        "model's own, 1.0 when it stores none)")
    parser.add_argument("--seed", type=int, help="seed of image 0; image i uses SEED+i (default: random, recorded)")
    parser.add_argument("--output", required=True, help="output folder; created if missing")
    parser.add_argument(
        "--format", default="png", help=f"comma-separated formats among {', '.join(EXPORT_FORMATS)} (default png)"
    )
    parser.add_argument(
        "--scheduler", choices=sorted(SCHEDULERS), help="replace the pipeline's saved scheduler (default: keep it)"
    )
    parser.add_argument(
        "--postprocess", default="none", help=f"post-processing preset: {', '.join(list_presets())} (default none)"
    )
    parser.add_argument("--bit-depth", type=int, choices=(8, 16), default=8, help="PNG / DICOM bit depth (default 8)")
    parser.add_argument(
        "--dicom-modality", default="OT", choices=DICOM_MODALITIES, help="DICOM Modality tag (default OT, 'other')"
    )
    parser.add_argument(
        "--batch-size", type=int, default=8, help="images per pipeline call, in each process (default 8)"
    )
    parser.add_argument("--device", choices=("auto", "cpu", "cuda", "mps"), default="auto", help="default auto")
    parser.add_argument(
        "--push-to-hub", metavar="REPO_ID",
        help="upload the finished folder as a (private) Hugging Face Hub dataset repo, e.g. user/synthetic-cxr",
    )
    parser.add_argument(
        "--allow-unevaluated", action="store_true",
        help="with --push-to-hub: upload images of a pipeline without a clean stored evaluation "
        "(medgen evaluate --pipeline DIR), or whose evaluation raised the memorization alarm",
    )
    parser.add_argument(
        "--verbose", action="store_true", help="on a file system error, show the full traceback instead of one line"
    )
    parser.set_defaults(run=run)
    return parser


def parse_labels(text: str) -> dict[str, float]:
    """``"pneumonia"`` / ``"effusion,pneumonia"`` / ``"effusion=1,edema=0.5"`` -> ``{name: value}``."""
    labels: dict[str, float] = {}
    for item in text.split(","):
        name, has_value, value_text = (part.strip() for part in item.partition("="))
        if not name:
            raise ValueError(f"--labels {text!r}: empty label name; expected e.g. 'pneumonia' or 'effusion=1,edema=0.5'")
        value = 1.0
        if has_value:
            try:
                value = float(value_text)
            except ValueError:
                raise ValueError(f"--labels {text!r}: value {value_text!r} of {name!r} is not a number") from None
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"--labels {text!r}: value {value} of {name!r} must lie in [0, 1]")
        if name.lower() in (known.lower() for known in labels):
            raise ValueError(f"--labels {text!r}: label {name!r} is given twice")
        labels[name] = value
    return labels


def _match_labels(requested: dict[str, float], available: list[str], pipeline: str) -> dict[str, float]:
    """Map requested names onto the pipeline's own spelling, or fail naming the valid ones."""
    lookup = {name.lower(): name for name in available}
    unknown = [name for name in requested if name.lower() not in lookup]
    if unknown:
        raise ValueError(
            f"unknown label{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))} for pipeline "
            f"{pipeline}; valid labels: {', '.join(available)}"
        )
    return {lookup[name.lower()]: value for name, value in requested.items()}


def _check_arguments(args: argparse.Namespace) -> None:
    from medgen.export import parse_formats
    from medgen.postprocess import get_preset

    if not 1 <= args.count <= MAX_COUNT:
        raise ValueError(f"--count must be between 1 and {MAX_COUNT}; got {args.count}")
    if args.num_inference_steps is not None and not 1 <= args.num_inference_steps <= MAX_STEPS:
        raise ValueError(f"--num-inference-steps must be between 1 and {MAX_STEPS}; got {args.num_inference_steps}")
    if args.guidance_scale is not None and not (math.isfinite(args.guidance_scale) and args.guidance_scale >= 0):
        raise ValueError(f"--guidance-scale must be a finite number >= 0; got {args.guidance_scale}")
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1; got {args.batch_size}")
    if args.seed is not None and not 0 <= args.seed <= 2**63 - 1 - args.count:
        raise ValueError(f"--seed must be between 0 and 2**63 - 1 - count; got {args.seed}")
    parse_formats(args.format)
    get_preset(args.postprocess)
    if args.labels is not None and args.prompt is not None:
        raise ValueError("give either --labels (label-conditioned pipelines) or --prompt (text pipelines), not both")
    if args.pairs and args.masks is not None:
        raise ValueError("give either --pairs (masks from the pipeline's mask generator) or --masks DIR (your masks), not both")
    if args.masks is not None and not Path(args.masks).is_dir():
        raise ValueError(f"--masks {args.masks}: no such folder")
    if args.push_to_hub is not None:
        from medgen.commands.generated_dataset import check_repo_id

        check_repo_id(args.push_to_hub)


def _resolve_device(name: str) -> str:
    import torch

    if name == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was requested but torch sees no CUDA GPU; use --device cpu or auto")
    if name == "mps" and not torch.backends.mps.is_available():
        raise ValueError("--device mps was requested but the Apple MPS backend is not available")
    return name


def _pipeline_kind(pipe: Any) -> str:
    parameters = inspect.signature(pipe.__call__).parameters
    if "prompt" in parameters:
        return "text"
    return "label" if getattr(pipe, "labels", None) else "unconditional"


def _condition(args: argparse.Namespace, pipe: Any, kind: str) -> dict[str, Any]:
    """Check --labels / --prompt against the pipeline; return the pipeline keyword arguments they give."""
    if kind == "label":
        if args.labels is None:
            raise ValueError(f"pipeline {args.pipeline} is label-conditioned: give --labels, among {', '.join(pipe.labels)}")
        labels = _match_labels(parse_labels(args.labels), list(pipe.labels), args.pipeline)
        try:
            pipe.encode_labels(labels)  # the pipeline's own checks (e.g. one label for single-label models)
        except ValueError as error:
            raise ValueError(f"--labels {args.labels!r}: {error}") from None
        return {"labels": labels}
    if args.labels is not None:
        raise ValueError(f"pipeline {args.pipeline} is {kind}: it takes no --labels")
    if kind == "text":
        if not args.prompt:
            raise ValueError(f"pipeline {args.pipeline} is text-conditioned: give --prompt")
        return {"prompt": args.prompt, "negative_prompt": args.negative_prompt}
    if args.prompt is not None or args.negative_prompt is not None:
        raise ValueError(f"pipeline {args.pipeline} is unconditional: it takes no --prompt")
    return {}


MASK_SUFFIXES = (".png", ".bmp", ".tif", ".tiff", ".gif")


def _mask_source(args: argparse.Namespace, pipe: Any) -> list[Path] | None:
    """The mask files of ``--masks`` (checked against the pipeline now, naming a bad file), ``[]`` for ``--pairs``,
    None for images without masks."""
    takes_masks = "masks" in inspect.signature(pipe.__call__).parameters
    if not takes_masks:
        if args.pairs or args.masks is not None:
            raise ValueError(
                f"pipeline {args.pipeline} is a {type(pipe).__name__}, not mask-conditioned: --pairs and --masks need a "
                "MaskConditionedPipeline"
            )
        return None
    if args.mask_generator_guidance_scale is not None and not args.pairs:
        raise ValueError(
            "--mask-generator-guidance-scale: only with --pairs (it sets how the model's mask generator draws the masks)"
        )
    if args.pairs:
        if not pipe.has_mask_generator:
            raise ValueError(
                f"pipeline {args.pipeline} has no mask generator (mask_unet) to draw masks for --pairs; give your own "
                "masks with --masks DIR"
            )
        return []
    if args.masks is None:
        return None
    from medgen.data.tables import natural_key

    files = sorted(
        (path for path in Path(args.masks).iterdir() if path.is_file() and path.suffix.lower() in MASK_SUFFIXES),
        key=lambda path: natural_key(path.name),
    )
    if not files:
        raise ValueError(f"--masks {args.masks}: no mask image ({', '.join(MASK_SUFFIXES)}) in the folder")
    for path in files[: args.count]:  # the ones this run uses, each read and checked before anything is sampled
        try:
            pipe.prepare_masks([path])
        except (ValueError, OSError) as error:
            raise ValueError(f"--masks: {path}: {error}") from None
    return files


def _mask_path(output: str | Path, index: int) -> Path:
    return Path(output) / "masks" / f"image_{index:05d}.png"


def _write_mask(mask_png: Any, path: Path) -> None:
    import io

    from medgen.files import atomic_write

    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    mask_png.save(buffer, format="PNG")
    with atomic_write(path, "wb", overwrite=False) as file:
        file.write(buffer.getvalue())


def _set_scheduler(pipe: Any, name: str | None) -> str:
    if name is not None:
        from medgen.sampling import replacement_scheduler

        pipe.scheduler = replacement_scheduler(pipe.scheduler, SCHEDULERS[name])  # an EDM model keeps its EDM form
    return sampler_text(pipe.scheduler)


def _call_pipeline(
    pipe: Any, kind: str, condition: dict[str, Any], seeds: list[int], args: argparse.Namespace,
    masks: list[Path] | None = None, indices: list[int] | None = None,
):
    """The batch's images, and (mask pipelines with --pairs / --masks) their masks as PIL images."""
    import torch

    generators = [torch.Generator("cpu").manual_seed(seed) for seed in seeds]
    kwargs: dict[str, Any] = {
        "num_inference_steps": args.num_inference_steps,
        "generator": generators,
        "output_type": "np",
    }
    takes_masks = "masks" in inspect.signature(pipe.__call__).parameters
    if kind == "label":
        kwargs["labels"] = [condition["labels"]] * len(seeds)
    elif kind == "text":
        kwargs.update(prompt=[condition["prompt"]] * len(seeds), num_images_per_prompt=1)
        if condition["negative_prompt"] is not None:
            kwargs["negative_prompt"] = [condition["negative_prompt"]] * len(seeds)
    elif not (takes_masks and masks):
        kwargs["num_images_per_prompt"] = len(seeds)
    if takes_masks and masks:  # --masks: image i on file i (cycling)
        kwargs["masks"] = [masks[index % len(masks)] for index in indices]
    elif takes_masks and masks is None:  # no pairs asked for: images only, no mask drawn
        kwargs["generate_masks"] = False
    guidance = effective_guidance_scale(pipe, args.guidance_scale)
    if guidance is not None:
        kwargs["guidance_scale"] = guidance
    interval = effective_guidance_interval(pipe, args.guidance_interval)
    if interval is not None:
        kwargs["guidance_interval"] = interval
    mask_guidance = effective_mask_guidance_scale(pipe, args.mask_guidance_scale)
    if mask_guidance is not None:
        kwargs["mask_guidance_scale"] = mask_guidance
    if takes_masks and masks == []:  # --pairs: the masks come from the mask generator
        kwargs["mask_generator_guidance_scale"] = effective_mask_generator_guidance_scale(
            pipe, args.mask_generator_guidance_scale
        )
    if not takes_masks:
        return pipe(**kwargs).images, None
    output = pipe(**kwargs)
    written_masks = pipe.masks_to_output(torch.as_tensor(output.masks), "pil") if output.masks is not None else None
    return output.images, written_masks


class _StoppedByAnotherProcess(Exception):
    """Another process of the run failed (and reports why); this one stops too."""


def _agree(error: Exception | None) -> None:
    """Every process learns whether any process failed the step just run: the one that failed raises its
    error, the others stop quietly, so no process is left waiting at the next collective step."""
    from accelerate.utils import gather_object

    failed = gather_object([error is not None])
    if error is not None:
        raise error
    if any(failed):
        raise _StoppedByAnotherProcess


def _step(function, run_here: bool = True) -> Any:
    """Run ``function`` (where ``run_here``), then `_agree` on the outcome; returns its result."""
    result, error = None, None
    if run_here:
        try:
            result = function()
        except Exception as exception:  # noqa: BLE001 - shared with the other processes, then raised again
            error = exception
    _agree(error)
    return result


def _broadcast(value: Any) -> Any:
    from accelerate.utils import broadcast_object_list

    return broadcast_object_list([value])[0]


def _start_processes(device: str):
    """The `accelerate` process state; on a CPU the processes a launcher started only join with ``cpu=True``."""
    import os

    from accelerate import PartialState

    state = PartialState(cpu=device == "cpu")
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if launched != state.num_processes:
        raise ValueError(
            f"the launcher started {launched} processes but they cannot work together on --device {device}; "
            "use CUDA GPUs or --device cpu"
        )
    return state


def _close_processes(state: Any, wait: bool) -> None:
    """Closes the process group, after every process has finished when ``wait``. A process leaving while
    another still talks to it can abort at exit ("terminate called without an active exception")."""
    if wait and state.num_processes > 1:
        state.wait_for_everyone()
    state.destroy_process_group()


def run(args: argparse.Namespace) -> int:
    """Load the pipeline, sample ``--count`` images batch by batch, post-process, export.

    Launched as several processes (``accelerate launch`` / ``torchrun``), each samples its share of
    the batches; the main process checks the output folder, writes ``metadata.csv`` and
    ``params.json`` once all have finished, and uploads the folder with ``--push-to-hub``.

    A file system error (full disk, unusable ``--output``) ends the command with one line naming
    the path, exit code 2, and no traceback unless ``--verbose`` (see `medgen.cli.main`).
    """
    _check_arguments(args)
    device = _resolve_device(args.device)
    state = _start_processes(device)
    interrupted = False
    try:
        return _run(args, state, device)
    except _StoppedByAnotherProcess:
        return 2  # the failing process printed the reason
    except (KeyboardInterrupt, SystemExit):
        interrupted = True  # the others may be inside any collective step: waiting for them could hang
        raise
    finally:
        # Every failure short of an interruption is agreed on (`_step`) or comes after the last collective
        # step, so all processes get here and may wait for each other.
        _close_processes(state, wait=not interrupted)


def _run(args: argparse.Namespace, state: Any, device: str) -> int:
    import contextlib

    from medgen.files import check_writable_dir

    main = state.is_main_process
    # Before the pipeline is loaded and anything is sampled.
    _step(lambda: check_writable_dir(args.output), run_here=main)
    import torch
    from tqdm.auto import tqdm

    from medgen import __version__
    from medgen.export import RunWriter
    from medgen.commands.generated_dataset import METADATA_FILE, condition_columns, metadata_rows, write_metadata
    from medgen.pipelines import load_pipeline
    from medgen.postprocess import apply_preset, get_preset

    def load():
        pipe = load_pipeline(args.pipeline)
        kind = _pipeline_kind(pipe)
        condition = _condition(args, pipe, kind)
        masks = _mask_source(args, pipe)
        scheduler = _set_scheduler(pipe, args.scheduler)
        effective_guidance_interval(pipe, args.guidance_interval)  # a bad --guidance-interval fails before any image
        effective_mask_guidance_scale(pipe, args.mask_guidance_scale)  # so does a bad --mask-guidance-scale
        effective_mask_generator_guidance_scale(pipe, args.mask_generator_guidance_scale)  # and its generator's
        args.num_inference_steps = effective_inference_steps(pipe, args.num_inference_steps)  # the model's own unless given
        columns = condition_columns(kind, condition, list(getattr(pipe, "labels", None) or []), _multi_label(pipe))
        pipe.to(state.device if device == "cuda" else device)
        pipe.set_progress_bar_config(disable=True)
        return pipe, kind, condition, scheduler, columns, masks

    pipe, kind, condition, scheduler, columns, masks = _step(load)
    seed = _broadcast(args.seed if args.seed is not None else secrets.randbelow(2**31))

    guidance_interval = effective_guidance_interval(pipe, args.guidance_interval)
    mask_guidance = effective_mask_guidance_scale(pipe, args.mask_guidance_scale)
    # --pairs: the masks come from the mask generator, at this label guidance
    mask_generator_guidance = (
        effective_mask_generator_guidance_scale(pipe, args.mask_generator_guidance_scale) if masks == [] else None
    )
    params: dict[str, Any] = {
        "command": "medgen generate",
        "pipeline": str(args.pipeline),
        "pipeline_class": type(pipe).__name__,
        **({"labels": condition["labels"]} if kind == "label" else {}),
        **({"prompt": args.prompt, "negative_prompt": args.negative_prompt} if kind == "text" else {}),
        "seed": seed,
        "seed_rule": "image i uses torch.Generator('cpu').manual_seed(seed + i)",
        "num_inference_steps": args.num_inference_steps,
        "guidance_scale": effective_guidance_scale(pipe, args.guidance_scale) if kind != "unconditional" else None,
        **({"guidance_interval": guidance_interval} if guidance_interval is not None else {}),
        **({"mask_guidance_scale": mask_guidance} if mask_guidance is not None else {}),
        **({"masks": "mask generator (--pairs)" if masks == [] else str(args.masks)} if masks is not None else {}),
        **({"mask_generator_guidance_scale": mask_generator_guidance} if mask_generator_guidance is not None else {}),
        "scheduler": scheduler,
        "postprocess": get_preset(args.postprocess).record(),
        "batch_size": args.batch_size,
        "num_processes": state.num_processes,
        "device": device,
        "medgen_version": __version__,
        "torch_version": torch.__version__,
    }

    def open_run(shared=None):
        if shared is None:  # the main process: every check that refuses the run, before anything is written
            if (Path(args.output) / METADATA_FILE).exists():
                raise ValueError(
                    f"output folder {args.output} already holds {METADATA_FILE}; medgen never overwrites files: "
                    "choose a new folder"
                )
            if args.push_to_hub is not None:
                _check_publishing(args)
            if masks is not None:
                clashes = [path.name for index in range(args.count) if (path := _mask_path(args.output, index)).exists()]
                if clashes:
                    raise ValueError(
                        f"output folder {args.output} already holds masks/{clashes[0]}; medgen never overwrites files: "
                        "choose a new folder"
                    )
        elif not Path(args.output).is_dir():
            raise ValueError(
                f"--output {args.output} made by the main process is not visible from process {state.process_index}: "
                "processes on several machines need an output folder on a shared file system"
            )
        writer = RunWriter(
            args.output, formats=args.format, params=shared[0] if shared else params, bit_depth=args.bit_depth,
            modality=args.dicom_modality, count=args.count, study=shared[1] if shared else None,
        )
        if shared is None and args.push_to_hub is not None:
            from medgen.commands.generated_dataset import create_dataset_repo

            try:
                create_dataset_repo(args.push_to_hub)
            except BaseException:
                writer.__exit__(*sys.exc_info())  # removes the folder it created, still empty
                raise
        return writer

    writer = _step(open_run, run_here=main)
    # The other processes write into the folder the main process checked, with its parameters and DICOM study.
    shared = _broadcast((writer.params, writer.study) if main else None)
    try:
        writer = _step(lambda: writer if main else open_run(shared))
    except _StoppedByAnotherProcess:
        if main:
            writer.__exit__(*sys.exc_info())  # removes the folder it created, still empty
        raise

    started = time.perf_counter()
    starts = list(range(0, args.count, args.batch_size))
    error: Exception | None = None
    with contextlib.ExitStack() as stack:
        if main:
            stack.enter_context(writer)  # params.json on exit; an empty new folder removed after a failure
        with state.split_between_processes(starts) as my_starts:
            try:
                progress = tqdm(
                    my_starts, desc="medgen generate", unit="batch", file=sys.stderr,
                    disable=not main or len(my_starts) < 2,
                )
                for start in progress:
                    indices = list(range(start, min(start + args.batch_size, args.count)))
                    seeds = [seed + index for index in indices]
                    images, batch_masks = _call_pipeline(pipe, kind, condition, seeds, args, masks, indices)
                    images, _ = apply_preset(images, args.postprocess)
                    image_params = [{"seed": image_seed} for image_seed in seeds]
                    if batch_masks is not None:  # pairs: the mask first, so that no listed image lacks its mask
                        for offset, (index, mask) in enumerate(zip(indices, batch_masks)):
                            _write_mask(mask, _mask_path(args.output, index))
                            image_params[offset]["mask_file_name"] = f"masks/{_mask_path(args.output, index).name}"
                            if masks:
                                image_params[offset]["mask_source"] = masks[index % len(masks)].name
                    writer.write(images, image_params, indices=indices)
            except Exception as exception:  # noqa: BLE001 - reported after every process has finished
                error = exception
        from accelerate.utils import gather_object

        outcomes = gather_object([(state.process_index, writer.records, error is not None)])
        if main:
            writer.merge_records(record for index, records, _ in outcomes if index != 0 for record in records)
            if writer.records:
                run_columns = {
                    "num_inference_steps": args.num_inference_steps,
                    "guidance_scale": params["guidance_scale"],
                    "scheduler": scheduler,
                    "postprocess": args.postprocess,
                    "pipeline": str(args.pipeline),
                }
                write_metadata(args.output, metadata_rows(writer.records, columns, run_columns))
            writer.params["duration_s"] = round(time.perf_counter() - started, 3)
        if error is not None:
            raise error
        if any(failed for _, _, failed in outcomes):
            raise _StoppedByAnotherProcess
    if main:
        print(f"wrote {args.count} image(s) to {Path(args.output)} (seeds {seed}..{seed + args.count - 1})")
        if args.push_to_hub is not None:
            from medgen.commands.generated_dataset import push_dataset

            push_dataset(args.output, args.push_to_hub)
            print(f"uploaded {Path(args.output)} to https://huggingface.co/datasets/{args.push_to_hub}")
    return 0


def _multi_label(pipe: Any) -> bool:
    return bool(getattr(pipe, "config", {}).get("multi_label", False))


def _check_publishing(args: argparse.Namespace) -> None:
    """The privacy gate of `push_to_hub` and `medgen space build`, for images of the pipeline: refuse one
    without a stored evaluation of its weights, or whose evaluation raised the memorization alarm."""
    from medgen.pipelines.hub import resolve_pipeline_folder
    from medgen.pipelines.publishing import check_before_publishing

    check_before_publishing(
        resolve_pipeline_folder(args.pipeline), args.allow_unevaluated,
        action=f"push images generated by --pipeline {args.pipeline} to {args.push_to_hub!r}",
        override="--allow-unevaluated", name=f"--pipeline {args.pipeline}", evaluate_target=str(args.pipeline),
    )
