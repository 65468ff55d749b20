"""Where the app's models come from and how one is loaded for serving (device, precision, ZeroGPU)."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from medgen.app.models import split_sources

ENV_PIPELINE = "MEDGEN_PIPELINE"


def default_pipeline_dir() -> Path:
    """The built-in `default` pipeline shipped inside the medgen package (`medgen/pretrained/chest-xray`)."""
    from medgen.pipelines.hub import builtin_pipeline_path

    return builtin_pipeline_path("default")


def missing_default_message(path: Path) -> str:
    return (
        f"No pipeline found: the embedded default pipeline {path} does not exist in this install. "
        f"Pass --pipeline DIR (a saved medgen pipeline folder or a Hub repo id) or set {ENV_PIPELINE}."
    )


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
        raise FileNotFoundError(missing_default_message(path))
    try:
        pipe = load_pipeline(str(source), torch_dtype=dtype)
    except (ValueError, FileNotFoundError) as error:
        raise type(error)(f"Cannot start the app with pipeline {source!s}: {error}") from error
    pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    return pipe, device


def pipeline_loader(device: str) -> Callable[[str], Any]:
    """`source -> loaded pipeline` on `device`, the loader a `ModelCatalog` calls on a model's first use."""

    def load(source: str):
        return load_app_pipeline(source, device)[0]

    return load


def zero_gpu(fn: Callable, duration: int = 120) -> Callable:
    """Wraps `fn` with `spaces.GPU` on Hugging Face ZeroGPU hardware; returns `fn` unchanged elsewhere."""
    try:
        import spaces  # only present on Hugging Face Spaces
    except ImportError:
        return fn
    return spaces.GPU(duration=duration)(fn)
