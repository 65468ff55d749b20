"""The mask kinds: a mask-conditioned image model (`model.kind: mask`) and its mask generator (`mask_generator`).

`mask`: the latent UNet sees the noisy latent concatenated with the image's mask at latent resolution (one
channel per mask class, the fraction of each latent cell it covers, plus a "mask present" channel), and the
label through the class-embedding projection (`MaskConditionedPipeline.mask_condition` and
`condition_from_vectors`, shared with sampling). Classifier-free guidance needs both dropped: the label with
`diffusion.condition_dropout` (the loop's `drop_mask`), the mask independently with the same probability, so a
batch holds every combination (label only, mask only, both, neither).

`mask_generator`: a small pixel-space label-conditioned model over the masks themselves (`data.resolution`,
e.g. 64 px; one channel per class in [-1, 1]), saved as a `LabelConditionedPipeline`. `attach_mask_generator`
puts its UNet and scheduler into a mask pipeline folder as `mask_unet` / `mask_scheduler`:

    python -m medgen.training.mask_task attach runs/lung_cxr_mask_128 runs/lung_cxr_masks_64
    python -m medgen.training.mask_task preview runs/lung_cxr_mask_128 --output preview.png   # images over their masks
    python -m medgen.training.mask_task preview runs/lung_cxr_mask_128/checkpoints/checkpoint-200 --output p.png
    python -m medgen.training.mask_task examples runs/lung_cxr_mask_128 --per-label 2   # held-out example masks

`examples` stores a few real masks of the held-out (test) split in the pipeline folder (`example_masks/`, see
`medgen.pipelines.example_masks`), which the app offers beside upload and "Sample a mask".
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers import UNet2DConditionModel

from medgen.config import TrainConfig
from medgen.sample_grid import outlined_pairs, save_sample_grid
from medgen.training.task_base import DiffusionTask

SAMPLE_MASKS_PER_ROW = 1  # one real training mask per label row of the sample grid


def _require_masks(config: TrainConfig, kind: str) -> list[str]:
    if not config.data.mask_column:
        raise ValueError(
            f"model.kind {kind!r} trains on image + mask pairs: set data.mask_column (e.g. mask_file_name) "
            "and data.mask_classes"
        )
    return config.data.mask_names


class MaskTask(DiffusionTask):
    """Mask (+ label) conditioned latent (or pixel) diffusion: masks concatenated to the UNet input."""

    def __init__(self, config: TrainConfig, label_names: list[str], multi_label: bool):
        self.mask_names = _require_masks(config, "mask")
        super().__init__(config, label_names, multi_label)
        self._sample_masks: list[tuple[str, torch.Tensor]] | None = None

    def build_unet(self) -> UNet2DConditionModel:
        kwargs = self.unet_kwargs("AttnDownBlock2D", "AttnUpBlock2D")
        kwargs["in_channels"] += len(self.mask_names) + 1  # mask classes + "mask present"
        return UNet2DConditionModel(
            **kwargs,
            mid_block_type="UNetMidBlock2D",
            class_embed_type="projection",
            projection_class_embeddings_input_dim=len(self.label_names) + 1,
        )

    def unet_input(self, noisy: torch.Tensor, batch: dict[str, Any]) -> torch.Tensor:
        """The noisy sample with the mask channels appended; the mask is dropped with `condition_dropout`,
        drawn from the global RNG that the training loop seeds at every micro-step (so resuming replays it)."""
        from medgen.pipelines import MaskConditionedPipeline

        masks = batch["mask"].to(noisy.device)
        drop = torch.rand(masks.shape[0]) < self.config.diffusion.condition_dropout
        condition = MaskConditionedPipeline.mask_condition(masks, len(self.mask_names), tuple(noisy.shape[-2:]), drop)
        return torch.cat([noisy, condition.to(noisy.device, noisy.dtype)], dim=1)

    def condition_kwargs(self, batch, drop_mask):
        from medgen.pipelines import MaskConditionedPipeline

        labels = batch["labels"].float()
        return {
            "encoder_hidden_states": None,
            "class_labels": MaskConditionedPipeline.condition_from_vectors(labels, drop_mask),
        }

    def build_pipeline(self, unet, scheduler):
        from medgen.pipelines import MaskConditionedPipeline

        return MaskConditionedPipeline(
            unet=unet,
            scheduler=scheduler,
            vae=self.vae,
            id2label={str(i): name for i, name in enumerate(self.label_names)},
            multi_label=self.multi_label,
            id2mask_class={str(i + 1): name for i, name in enumerate(self.mask_names)},
        )

    def sample_masks(self) -> list[tuple[str, torch.Tensor]]:
        """(label, a real training mask of that label) for each label: the sample grids' fixed conditions."""
        if self._sample_masks is None:
            from medgen.data import build_dataset

            data = build_dataset(self.config.data)
            rows = data.dataset.with_format("numpy", columns=["labels"])["labels"]
            labels = np.asarray(rows, dtype=np.float32).reshape(len(data), -1)
            chosen = []
            for index, name in enumerate(self.label_names or ["samples"]):
                matches = np.flatnonzero(labels[:, index] > 0) if self.label_names else np.arange(len(data))
                # the row with the largest mask: an empty mask (a normal BUSI image) shows nothing of the conditioning
                areas = [int(data.dataset[int(i)]["mask"].sum()) for i in matches[:16]]
                pick = int(matches[int(np.argmax(areas))]) if len(matches) else 0
                chosen.append((name, data.dataset[pick]["mask"][0]))
            self._sample_masks = chosen
        return self._sample_masks

    def sample_requests(self):
        return [
            (name, {"labels": name if self.label_names else None, "masks": [mask]})
            for name, mask in self.sample_masks()
        ]


class MaskGeneratorTask(DiffusionTask):
    """A label-conditioned pixel-space model over masks (one channel per class in [-1, 1]), no autoencoder; saved as
    a `LabelConditionedPipeline` whose UNet and scheduler become a mask pipeline's `mask_unet` / `mask_scheduler`."""

    def __init__(self, config: TrainConfig, label_names: list[str], multi_label: bool):
        self.mask_names = _require_masks(config, "mask_generator")
        if config.model.pretrained_vae:
            raise ValueError("model.kind 'mask_generator' works on mask pixels: remove model.pretrained_vae")
        super().__init__(config, label_names, multi_label)

    @property
    def sample_shape(self) -> tuple[int, int]:
        return len(self.mask_names), self.config.data.resolution

    def build_unet(self) -> UNet2DConditionModel:
        return UNet2DConditionModel(
            **self.unet_kwargs("AttnDownBlock2D", "AttnUpBlock2D"),
            mid_block_type="UNetMidBlock2D",
            class_embed_type="projection",
            projection_class_embeddings_input_dim=len(self.label_names) + 1,
        )

    def condition_kwargs(self, batch, drop_mask):
        from medgen.pipelines import LabelConditionedPipeline

        return {
            "encoder_hidden_states": None,
            "class_labels": LabelConditionedPipeline.condition_from_vectors(batch["labels"].float(), drop_mask),
        }

    def build_pipeline(self, unet, scheduler):
        from medgen.pipelines import LabelConditionedPipeline

        return LabelConditionedPipeline(
            unet=unet,
            scheduler=scheduler,
            id2label={str(i): name for i, name in enumerate(self.label_names)},
            multi_label=self.multi_label,
        )

    def sample_requests(self):
        return [(name, {"labels": name}) for name in self.label_names] or [("samples", {})]

    @torch.no_grad()
    def model_input(self, batch: dict[str, torch.Tensor], generator: torch.Generator | None = None) -> torch.Tensor:
        masks = batch["mask"][:, 0]
        classes = torch.arange(1, len(self.mask_names) + 1, device=masks.device).view(1, -1, 1, 1)
        return (masks.unsqueeze(1) == classes).float() * 2.0 - 1.0


def attach_mask_generator(pipeline_folder: str | Path, generator_folder: str | Path, output_folder: str | Path | None = None) -> Path:
    """Saves the mask pipeline of `pipeline_folder` with the mask generator trained in `generator_folder` (a
    `mask_generator` run) as its `mask_unet` / `mask_scheduler`, into `output_folder` (default: in place)."""
    import tempfile

    from medgen.pipelines import LabelConditionedPipeline, MaskConditionedPipeline

    generator = LabelConditionedPipeline.from_pretrained(generator_folder)
    pipeline = MaskConditionedPipeline.from_pretrained(pipeline_folder)
    if generator.labels != pipeline.labels:
        raise ValueError(
            f"The mask generator in {generator_folder} has labels {generator.labels}, the pipeline in "
            f"{pipeline_folder} {pipeline.labels}: train both on the same data."
        )
    pipeline = MaskConditionedPipeline.from_pretrained(
        pipeline_folder, mask_unet=generator.unet, mask_scheduler=generator.scheduler
    )
    output = Path(output_folder or pipeline_folder)
    if output.resolve() == Path(pipeline_folder).resolve():
        # written beside, then moved into place file by file: an interruption never leaves a half folder
        import shutil

        with tempfile.TemporaryDirectory(dir=output.parent) as temporary:
            saved = pipeline.save_pretrained(Path(temporary) / "pipeline")
            for item in saved.iterdir():
                target = output / item.name
                if target.is_dir():
                    shutil.rmtree(target)
                shutil.move(str(item), target)
        return output
    return pipeline.save_pretrained(output)


def pipeline_from_checkpoint(checkpoint: str | Path):
    """The pipeline a mask run would save from `checkpoint` (its EMA weights when trained with EMA): to look at a
    run while it trains. Returns `(pipeline, config)`."""
    from safetensors.torch import load_file

    from medgen.config import load_config
    from medgen.data import build_dataset
    from medgen.training.checkpoints import EMA_FILE
    from medgen.training.diffusion import build_noise_scheduler, build_sampler

    checkpoint = Path(checkpoint)
    config = load_config(checkpoint / "training_config.yaml")
    if config.model.kind not in ("mask", "mask_generator"):
        raise ValueError(f"{checkpoint} is a {config.model.kind!r} run, not a mask run")
    data = build_dataset(config.data)
    task = (MaskTask if config.model.kind == "mask" else MaskGeneratorTask)(config, data.label_names, data.multi_label)
    if (checkpoint / EMA_FILE).is_file():
        shadow = load_file(checkpoint / EMA_FILE)
        with torch.no_grad():
            for index, parameter in enumerate(task.unet.parameters()):
                parameter.copy_(shadow[f"shadow.{index}"])
    else:
        task.unet.load_state_dict(load_file(checkpoint / "model.safetensors"))
    scheduler = build_sampler(build_noise_scheduler(config.diffusion), config.diffusion.sampler)
    return task.build_pipeline(task.unet.eval(), scheduler), config


def _test_masks(config: Any, label: str | None, count: int) -> list[np.ndarray]:
    """The first `count` held-out (`split: test`) masks of `label`, class indices at the data resolution."""
    import dataclasses

    from medgen.data import build_dataset

    data = build_dataset(dataclasses.replace(config.data, split="test", max_samples=None))
    labels = np.asarray(data.dataset.with_format("numpy", columns=["labels"])["labels"], dtype=np.float32)
    labels = labels.reshape(len(data), -1)
    rows = np.flatnonzero(labels[:, data.label_names.index(label)] > 0) if label is not None else np.arange(len(data))
    return [data.dataset[int(i)]["mask"][0].numpy() for i in rows[:count]]


def preview(source: str | Path, output: str | Path, count: int = 4, seed: int = 0, steps: int = 15) -> Path:
    """A PNG, one row per label: `count` images with their mask outlined. `source` is a mask pipeline folder or a
    checkpoint of a mask run (`.../checkpoints/checkpoint-N`). Masks come from the mask generator when the pipeline
    has one, otherwise from the run's held-out test split (checkpoints); a mask generator's checkpoint shows its
    masks alone."""
    from medgen.pipelines import MaskConditionedPipeline

    source = Path(source)
    config = None
    if (source / "training_config.yaml").is_file() and not (source / "model_index.json").is_file():
        pipe, config = pipeline_from_checkpoint(source)
    else:
        pipe = MaskConditionedPipeline.from_pretrained(source)
    pipe.set_progress_bar_config(disable=True)
    rows = []
    for label in pipe.labels or [None]:
        generator = [torch.Generator().manual_seed(seed + i) for i in range(count)]
        labels = [label] * count if label is not None else None
        if not isinstance(pipe, MaskConditionedPipeline):  # a mask generator: its masks are the images
            tiles = pipe(labels=labels, num_inference_steps=steps, generator=generator, output_type="np").images
        else:
            if pipe.has_mask_generator or config is None:
                out = pipe(labels=labels, num_inference_steps=steps, generator=generator, output_type="np")
            else:
                masks = _test_masks(config, label, count)
                generator, labels = generator[: len(masks)], labels[: len(masks)] if labels else None
                out = pipe(masks=masks, labels=labels, num_inference_steps=steps, generator=generator, output_type="np")
            masks = out.masks if out.masks is not None else np.zeros(out.images.shape[:3], dtype=np.uint8)
            tiles = outlined_pairs(out.images, masks)
        rows.append(("" if label is None else str(label), tiles))
    return save_sample_grid(rows, output)


def _example_data_config(folder: Path, config: str | Path | None) -> tuple[Any, str]:
    """The data config to choose example masks from: `config` (a training config YAML) or the one the pipeline
    folder records (`training_config.yaml`), and where it was read."""
    from medgen.config import load_config
    from medgen.evaluation.provenance import recorded_training_data

    if config is not None:
        return load_config(config).data, str(config)
    data, where = recorded_training_data(folder)
    if data is None:
        raise ValueError(
            f"cannot choose held-out example masks: {where}. Give the run's training config with "
            "--config RUN/training_config.yaml"
        )
    return data, where


def _row_name(source: str, data_path: str | Path) -> str:
    """A data row's image path relative to the data folder (absolute paths of this machine are not stored)."""
    import os

    try:
        relative = os.path.relpath(source, data_path)
    except ValueError:  # another drive
        return source
    return source if relative.startswith("..") else Path(relative).as_posix()


def _raw_rows(dataset: Any) -> tuple[list[str], list[str]]:
    """(row sources, content hashes of the stored 8-bit/16-bit pixels) of a built dataset."""
    import hashlib

    raw = dataset.with_format(None)
    return list(raw["source"]), [hashlib.sha256(value).hexdigest() for value in raw["pixel_values"]]


def store_example_masks(
    pipeline_folder: str | Path,
    per_label: int = 2,
    seed: int = 0,
    config: str | Path | None = None,
    overwrite: bool = False,
) -> Path:
    """
    Stores `per_label` real masks per label of the held-out (`split: test`) rows of the pipeline's training data
    in `pipeline_folder/example_masks/` (PNG at the pipeline's image size + `index.json`), chosen with `seed`.

    The held-out rows are the ones evaluate scores against: the recorded data config read with `split: test`
    (its split column, or `holdout_fraction`). Every chosen row is checked against the training rows (the config
    as recorded, without `max_samples`): a row that is a training row refuses the whole choice with a
    `ValueError` naming it; a held-out row whose image has the same pixels as a training image is passed over
    with a note. An existing `example_masks/` is replaced only with `overwrite` (written beside, then swapped, so
    a failure keeps it).
    """
    import dataclasses
    import json
    import shutil
    import tempfile

    from PIL import Image

    from medgen.data import build_dataset
    from medgen.pipelines.catalog import describe
    from medgen.pipelines.example_masks import EXAMPLE_MASKS_DIR, INDEX_FILE, mask_png
    from medgen.pipelines.hub import pipeline_class_name, read_model_index

    folder = Path(pipeline_folder)
    if not (folder / "model_index.json").is_file():
        raise FileNotFoundError(f"{folder} holds no saved pipeline (no model_index.json)")
    index = read_model_index(folder)
    if pipeline_class_name(index) != "MaskConditionedPipeline":
        raise ValueError(f"{folder} holds a {pipeline_class_name(index)}, not a MaskConditionedPipeline: it takes no masks")
    if not isinstance(per_label, int) or per_label < 1:
        raise ValueError(f"per_label must be a whole number >= 1; got {per_label!r}")
    target = folder / EXAMPLE_MASKS_DIR
    if target.exists() and not overwrite:
        raise FileExistsError(f"{target} already exists; pass --overwrite to choose the example masks again")
    id2label = index.get("id2label") or {}
    labels = [id2label[key] for key in sorted(id2label, key=int)]
    num_classes = len(index.get("id2mask_class") or {})
    size = describe(folder).resolution

    data_config, where = _example_data_config(folder, config)
    if not data_config.mask_column:
        raise ValueError(f"the training data recorded in {where} has no masks (no data.mask_column)")
    if data_config.split == "test":
        raise ValueError(f"the training data recorded in {where} is split 'test' itself: it has no held-out split")
    held_out = build_dataset(dataclasses.replace(data_config, split="test", max_samples=None, streaming=False))
    training = build_dataset(dataclasses.replace(data_config, max_samples=None, streaming=False))
    if held_out.label_names != labels:
        raise ValueError(
            f"the data recorded in {where} has labels {held_out.label_names}, the pipeline in {folder} {labels}: "
            "give the training config of this pipeline with --config"
        )
    training_sources, training_hashes = _raw_rows(training.dataset)
    training_sources, training_hashes = set(training_sources), set(training_hashes)
    sources, hashes = _raw_rows(held_out.dataset)
    vectors = np.asarray(held_out.dataset.with_format("numpy", columns=["labels"])["labels"], dtype=np.float32)
    vectors = vectors.reshape(len(held_out), -1)

    rng = np.random.default_rng(seed)
    chosen: list[tuple[str | None, int]] = []
    for column, label in enumerate(labels or [None]):
        rows = np.flatnonzero(vectors[:, column] > 0) if label is not None else np.arange(len(held_out))
        picked = 0
        for row in rng.permutation(rows).tolist():
            if picked == per_label:
                break
            if sources[row] in training_sources:
                raise ValueError(
                    f"refusing example masks: held-out row {_row_name(sources[row], data_config.path)} of "
                    f"{data_config.path} is also a training row of the data recorded in {where}; its split has no "
                    "held-out part (set data.holdout_fraction or a split column)"
                )
            if hashes[row] in training_hashes:
                print(
                    f"note: held-out row {_row_name(sources[row], data_config.path)} passed over: its image has the "
                    "same pixels as a training image", flush=True,
                )
                continue
            chosen.append((label, row))
            picked += 1
        if picked < per_label:
            print(f"note: only {picked} held-out mask(s) of label {label or '(all)'} for {per_label} asked", flush=True)
    if not chosen:
        raise ValueError(f"no held-out rows in the data recorded in {where}: nothing to choose example masks from")

    entries = []
    staging = Path(tempfile.mkdtemp(prefix=f".{EXAMPLE_MASKS_DIR}-", dir=folder))
    try:
        counts: dict[str, int] = {}
        for label, row in chosen:
            stem = label if label is not None else "mask"
            file_name = f"{stem}_{counts.get(stem, 0)}.png"
            counts[stem] = counts.get(stem, 0) + 1
            image = Image.fromarray(mask_png(held_out.dataset[row]["mask"][0].numpy(), num_classes))
            if image.size != (size, size):
                image = image.resize((size, size), Image.Resampling.NEAREST)
            image.save(staging / file_name)
            entries.append(
                {"file": file_name, "label": label, "source": _row_name(sources[row], data_config.path), "split": "test"}
            )
        record = {"split": "test", "seed": seed, "per_label": per_label, "data": str(data_config.path), "examples": entries}
        (staging / INDEX_FILE).write_text(json.dumps(record, indent=2) + "\n")
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Mask pipelines: attach a mask generator, preview pairs, store example masks.")
    commands = parser.add_subparsers(dest="command", required=True)
    attach = commands.add_parser("attach", help="put a trained mask generator into a mask pipeline folder")
    attach.add_argument("pipeline")
    attach.add_argument("generator")
    attach.add_argument("--output", default=None)
    show = commands.add_parser("preview", help="images over their mask outlines, per label")
    show.add_argument("pipeline", help="a mask pipeline folder, or a checkpoint folder of a mask run")
    show.add_argument("--output", required=True)
    show.add_argument("--count", type=int, default=4)
    show.add_argument("--seed", type=int, default=0)
    show.add_argument("--steps", type=int, default=15)
    examples = commands.add_parser("examples", help="store a few held-out masks in a mask pipeline folder for the app")
    examples.add_argument("pipeline", help="a mask pipeline folder")
    examples.add_argument("--per-label", type=int, default=2, help="masks per label (default 2)")
    examples.add_argument("--seed", type=int, default=0, help="seed of the choice (default 0)")
    examples.add_argument(
        "--config", default=None,
        help="training config whose data to choose from (default: the folder's training_config.yaml)",
    )
    examples.add_argument("--overwrite", action="store_true", help="replace an existing example_masks folder")
    arguments = parser.parse_args(argv)
    if arguments.command == "attach":
        print(attach_mask_generator(arguments.pipeline, arguments.generator, arguments.output))
    elif arguments.command == "examples":
        try:
            folder = store_example_masks(
                arguments.pipeline, arguments.per_label, arguments.seed, arguments.config, arguments.overwrite
            )
        except (ValueError, FileNotFoundError, FileExistsError) as error:
            parser.exit(2, f"mask_task examples: error: {error}\n")
        print(folder)
    else:
        print(preview(arguments.pipeline, arguments.output, arguments.count, arguments.seed, arguments.steps))


if __name__ == "__main__":
    main()
