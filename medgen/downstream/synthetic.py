"""Synthetic image pools, one per label: sampled from a pipeline with seeds derived from the run seed, or read
from a `medgen generate` output folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def pool_seed(run_seed: int, label_index: int) -> int:
    """Seed of image 0 of a label's pool (image i uses this + i): fixed by the run seed, distinct per label."""
    return int(np.random.SeedSequence([run_seed, label_index]).generate_state(1)[0] & 0x3FFFFFFF)


def pipeline_geometry(pipe: Any) -> tuple[int, int]:
    """(channels, side) of the images a pipeline returns, read from its configs (no sampling)."""
    unet = pipe.unet.config
    side = unet.sample_size if isinstance(unet.sample_size, int) else unet.sample_size[0]
    vae = getattr(pipe, "vae", None)
    if vae is not None:
        side *= 2 ** (len(vae.config.block_out_channels) - 1)
        return int(vae.config.out_channels), int(side)
    return int(unet.out_channels if hasattr(unet, "out_channels") else unet.in_channels), int(side)


def check_pipeline_labels(pipe: Any, label_names: list[str], pipeline: str) -> None:
    """Every label of the real data must be one the pipeline can draw (names match case-insensitively)."""
    pipeline_labels = list(getattr(pipe, "labels", None) or [])
    if not pipeline_labels:
        raise ValueError(f"pipeline {pipeline} is not label-conditioned; medgen downstream needs one that draws each label")
    known = {name.lower() for name in pipeline_labels}
    missing = [name for name in label_names if name.lower() not in known]
    if missing:
        raise ValueError(
            f"pipeline {pipeline} cannot draw label(s) {missing} of the real data; its labels are {pipeline_labels}"
        )


def sample_pools(
    pipe: Any,
    label_names: list[str],
    needs: np.ndarray,
    run_seed: int,
    num_inference_steps: int,
    guidance_scale: float | None,
    batch_size: int,
    progress: bool,
) -> tuple[list[np.ndarray], list[dict]]:
    """`needs[label]` images of each label, `(M, C, H, W)` in [0, 1]; and one record per label for the report."""
    import torch

    from medgen.evaluation.api import sample_pipeline

    pools, records = [], []
    channels, side = pipeline_geometry(pipe)
    for index, (name, count) in enumerate(zip(label_names, needs)):
        seed = pool_seed(run_seed, index)
        if count == 0:
            pools.append(np.zeros((0, channels, side, side), dtype=np.float32))
        else:
            with torch.inference_mode():
                images, _ = sample_pipeline(
                    pipe, int(count), [name], num_inference_steps, guidance_scale, batch_size, seed, progress=progress
                )
            pools.append(np.ascontiguousarray(np.transpose(images, (0, 3, 1, 2)), dtype=np.float32))
        records.append({"label": name, "count": int(count), "seed": seed})
    return pools, records


def peek_folder_geometry(folder: str | Path) -> tuple[int, int]:
    """(channels, side) of the first image of a generated folder; the real data is read at that size."""
    from PIL import Image

    from medgen.evaluation.images import IMAGE_SUFFIXES

    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"--synthetic {folder}: folder not found")
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
            with Image.open(path) as image:
                if image.width != image.height:
                    raise ValueError(f"--synthetic {folder}: {path.name} is {image.width}x{image.height}; square images expected")
                return (3 if image.mode in ("RGB", "RGBA") else 1), image.width
    raise ValueError(f"--synthetic {folder}: no images found in the folder or its sub-folders")


def folder_pools(folder: str | Path, label_names: list[str], needs: np.ndarray) -> tuple[list[np.ndarray], list[dict]]:
    """Pools from a folder of `medgen generate` outputs (one sub-folder per label, each with its params.json)."""
    from medgen.evaluation.images import load_generated_folder

    images = load_generated_folder(folder, label_names)
    if images.labels is None:
        raise ValueError(
            f"--synthetic {folder}: the images carry no labels; put each label's `medgen generate` output in its own "
            "sub-folder (its params.json names the label)"
        )
    if images.multi_label:
        raise ValueError(f"--synthetic {folder}: some images carry several labels; single-label images expected")
    targets = images.labels.argmax(axis=1)
    pools, records = [], []
    for index, name in enumerate(label_names):
        pool = images.images[targets == index]
        if len(pool) < needs[index]:
            raise ValueError(
                f"--synthetic {folder}: {int(needs[index])} images of label {name!r} are needed, the folder has {len(pool)}"
            )
        pools.append(pool)
        records.append({"label": name, "count": int(len(pool))})
    return pools, records
