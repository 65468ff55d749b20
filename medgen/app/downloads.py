"""The ZIP download of a run: PNG + synthetic DICOM at true size, and `params.json` with every setting."""

from __future__ import annotations

import json
import os
import shutil
import time
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medgen.app.models import PipelineInfo
from medgen.app.request import SAMPLERS, GenerationRequest
from medgen.app.status import NOTICE


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
        "scheduler": SAMPLERS[request.sampler] or info.sampler,
        "postprocess": get_preset(request.postprocess).record(),
        "synthetic": True,
        "notice": NOTICE,
    }
    if info.kind == "label" or (info.kind == "mask" and request.condition is not None):
        params["labels"] = request.condition if isinstance(request.condition, list) else [request.condition]
    if info.kind == "mask":
        params["mask_classes"] = list(info.mask_classes)
        params["mask"] = "given" if request.mask is not None else "sampled by the model's mask generator"
    elif info.kind == "text":
        params["prompt"] = request.prompt
        params["negative_prompt"] = request.negative_prompt
    return params


def write_mask_png(mask: np.ndarray, path: str | os.PathLike, num_classes: int) -> Path:
    """Writes a class-index mask `(H, W)` as an 8-bit PNG: black and white (0/255) for a one-class model, else the
    class indices themselves (0, 1, 2, ...); both are what mask pipelines and `medgen` data folders read back."""
    from medgen.export import write_png

    scale = 255 if num_classes == 1 else 1
    # write_png takes [0, 1] floats; k / 255 rounds back to exactly k.
    return write_png(np.asarray(mask, dtype=np.float32) * scale / 255.0, path)


class RunDownload:
    """The ZIP of one run, grown batch by batch: each batch's PNG + DICOM files are written once (at true size)
    and a new ZIP of every image so far, plus `params.json`, is made after it, so the download always matches
    the gallery, also after Cancel. Building a ZIP of 16 small images takes milliseconds; writing DICOM is
    what costs, and that happens once per image.

    Each ZIP is written under a temporary name and renamed when complete, so a full disk never leaves a
    truncated download; the failure is a `medgen.files.OutputError` naming the file, the run's folder is
    removed, and every later `add` raises the same error (the images themselves are still shown).
    """

    def __init__(self, params: Mapping[str, Any], output_dir: str | os.PathLike, mask_classes: int = 0):
        from medgen.export import RunWriter, new_run_dir

        self.run_dir = new_run_dir(output_dir, prefix="download")
        self.files_dir = self.run_dir / "medgen-images"
        self._writer = RunWriter(self.files_dir, formats=("png", "dcm"), params=params, prefix="medgen")
        self._mask_classes = mask_classes
        self._seeds: list[int] = []
        self._mask_files: list[Path] = []
        self._error: BaseException | None = None
        self.archive: Path | None = None

    def add(
        self, images: Sequence[np.ndarray], seeds: Sequence[int], complete: bool = False,
        masks: Sequence[np.ndarray] | None = None,
    ) -> Path:
        """Writes `images` (made from `seeds`) and returns the path of a new ZIP holding every image so far.
        `masks` (mask models): the class-index mask each image followed, written beside it as
        `medgen_<index>_mask.png` (8-bit: 0/255 for one class, else pixel value = class index) and named in its
        `params.json` record."""
        from medgen.files import atomic_write

        if self._error is not None:
            raise self._error
        try:
            start = len(self._seeds)
            image_params = [{"seed": int(seed)} for seed in seeds]
            if masks:
                for offset, (mask, record) in enumerate(zip(masks, image_params)):
                    path = self.files_dir / f"medgen_{start + offset:05d}_mask.png"
                    write_mask_png(mask, path, self._mask_classes)
                    self._mask_files.append(path)
                    record["mask"] = path.name
            self._writer.write(list(images), image_params)
            self._seeds += [int(seed) for seed in seeds]
            document = {**self._writer.document(complete), "seeds": list(self._seeds)}
            archive = self.run_dir / f"part-{len(self._seeds):02d}" / "medgen-images.zip"
            archive.parent.mkdir()
            with atomic_write(archive, overwrite=False) as file, zipfile.ZipFile(file, "w", zipfile.ZIP_DEFLATED) as zip_file:
                for path in sorted([*self._writer.written, *self._mask_files]):
                    zip_file.write(path, arcname=f"medgen-images/{path.name}")
                zip_file.writestr("medgen-images/params.json", json.dumps(document, indent=2, default=str) + "\n")
        except BaseException as error:
            self._error = error
            shutil.rmtree(self.run_dir, ignore_errors=True)  # no half-made download stays behind
            raise
        if self.archive is not None:
            # Superseded by the ZIP holding one more batch (the UI already took its copy of the old one).
            shutil.rmtree(self.archive.parent, ignore_errors=True)
        self.archive = archive
        return archive


def export_zip(
    images: Sequence[np.ndarray], seeds: Sequence[int], params: Mapping[str, Any], output_dir: str | os.PathLike
) -> Path:
    """Writes the images as PNG and synthetic DICOM plus `params.json` (via `medgen.export`) into a ZIP under
    `output_dir` and returns its path (see `RunDownload`)."""
    if len(images) == 0:
        raise ValueError("There are no images to download yet: generate some first.")
    return RunDownload(params, output_dir).add(images, seeds, complete=True)


def prune_downloads(workdir: str | os.PathLike, max_age_s: float = 3600.0) -> None:
    """Deletes downloads (and sampled masks) older than `max_age_s` so a long-running Space does not fill its disk."""
    now = time.time()
    for path in [*Path(workdir).glob("download-*"), *Path(workdir).glob("mask-*")]:
        if now - path.stat().st_mtime > max_age_s:
            shutil.rmtree(path, ignore_errors=True)
