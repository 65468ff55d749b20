"""The pretrained pipelines shipped inside the package: what each is, and how a training run becomes one.

Shipped folders are build artifacts kept together in `medgen/pretrained/<name>/`. `ship()` turns a training
output into one: the pipeline saved again by medgen (so its `pipeline.py` is the current source), weights in
fp16 safetensors (loaded back as float32), the training config and samples, and `medgen_model.json` saying
what the model is (modality, training data). `medgen evaluate --pipeline <name> ...` then stores the
evaluation in the folder and its model card; `describe()` reads all of it back for `medgen models`.
"""

from __future__ import annotations

import inspect
import json
import math
import os
import shutil
import tempfile
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

from medgen.sampling import (
    DEFAULT_INFERENCE_STEPS,
    SCHEDULERS,
    effective_mask_generator_guidance_scale,
    effective_mask_guidance_scale,
    replacement_scheduler,
    sampler_text,
    with_timestep_spacing,
)

PRETRAINED_DIR = Path(__file__).resolve().parent.parent / "pretrained"
MODEL_INFO_FILE = "medgen_model.json"
CARRIED_FILES = ("training_config.yaml", "training_summary.json", "data_summary.json")


@dataclass
class ModelDescription:
    """One line of `medgen models`."""

    name: str
    modality: str
    resolution: int
    labels: list[str]
    size_mb: float
    training_data: str
    latent: bool
    evaluation: dict[str, Any] = field(default_factory=dict)
    folder: str = ""  # where it lies: stock diffusers loads it from there (`DiffusionPipeline.from_pretrained`)
    aliases: list[str] = field(default_factory=list)  # other built-in names of the same folder (`default`)
    example_prompts: list[str] = field(default_factory=list)  # a text model's trained prompts (empty: not a text model)
    default_guidance: float | None = None  # a label model's stored default guidance scale (None: the pipelines' 2.0)
    default_guidance_interval: list[float] | None = None  # its stored guided steps (None: every step)
    default_mask_guidance: float | None = None  # a mask model's stored mask guidance (None: 1.0, none)
    default_mask_generator_guidance: float | None = None  # its mask generator's stored label guidance (None: 1.0)
    sampler: str = ""  # its saved scheduler (`sampling.sampler_text`)
    default_steps: int = DEFAULT_INFERENCE_STEPS  # the step count a call without one samples with

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def folder_size_mb(folder: Path) -> float:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file()) / 2**20


def describe(folder: str | Path, name: str | None = None) -> ModelDescription:
    """What the pipeline in `folder` is: read from its model_index.json, component configs, `medgen_model.json`
    and stored evaluation (absent parts read as unknown)."""
    from medgen.pipelines.publishing import read_evaluation

    folder = Path(folder)
    index = json.loads((folder / "model_index.json").read_text())
    info = _read_json(folder / MODEL_INFO_FILE)
    unet = _read_json(folder / "unet" / "config.json")
    vae = _read_json(folder / "vae" / "config.json") if (folder / "vae" / "config.json").is_file() else None
    side = unet.get("sample_size", 0)
    if vae is not None:
        side *= 2 ** (len(vae.get("block_out_channels", [0])) - 1)
    id2label = index.get("id2label") or {}
    evaluation = read_evaluation(folder) or {}
    figures = {
        key: evaluation.get(key)
        for key in ("fid", "fid_real_baseline", "precision", "recall", "recall_per_label", "label_accuracy", "n_generated")
        if evaluation.get(key) is not None
    }
    if evaluation.get("intervals"):  # how far the figures move with the draw of generated images
        figures["intervals"] = evaluation["intervals"]
    if evaluation.get("modality_accuracy") is not None:  # a text model scored per prompt group
        figures["modality_accuracy"] = evaluation["modality_accuracy"]
        figures["per_modality"] = evaluation.get("per_modality") or {}
        figures["finding_accuracy"] = {name: entry.get("label_accuracy") for name, entry in (evaluation.get("per_set") or {}).items()}
    tstr = evaluation.get("tstr") or {}
    if tstr.get("synthetic_trained_auc") is not None:
        figures["tstr_auc"] = tstr["synthetic_trained_auc"]
        figures["trtr_auc"] = tstr.get("real_trained_same_size_auc", tstr.get("real_trained_auc"))
    faithfulness = evaluation.get("mask_faithfulness") or {}
    if faithfulness.get("ratio") is not None:
        figures["mask_dice_ratio"] = faithfulness["ratio"]
    if evaluation.get("memorization") is not None:
        figures["memorization_alarm"] = bool(evaluation["memorization"].get("alarm"))
    sampler, default_steps = saved_sampling(folder, index)
    return ModelDescription(
        name=name or info.get("name") or folder.name,
        modality=info.get("modality", "unknown"),
        resolution=int(side),
        labels=[id2label[key] for key in sorted(id2label, key=int)],
        size_mb=round(folder_size_mb(folder), 1),
        training_data=info.get("training_data", "unknown"),
        latent=vae is not None,
        evaluation=figures,
        folder=str(folder.resolve()),
        example_prompts=list(index.get("example_prompts") or []) if "tokenizer" in index else [],
        default_guidance=index.get("default_guidance_scale"),
        default_guidance_interval=_stored_interval(index.get("default_guidance_interval")),
        default_mask_guidance=index.get("default_mask_guidance_scale"),
        default_mask_generator_guidance=index.get("default_mask_generator_guidance_scale"),
        sampler=sampler,
        default_steps=default_steps,
    )


def saved_sampling(folder: str | Path, index: dict[str, Any]) -> tuple[str, int]:
    """A saved folder's own sampler (its scheduler, named by `sampling.sampler_text`; "" when it names none) and the
    step count a call without one samples with, read from its configs without loading it (`index`: its
    model_index.json)."""
    scheduler = index.get("scheduler")
    name = scheduler[1] if isinstance(scheduler, list) and len(scheduler) == 2 and scheduler[1] else ""
    sampler = sampler_text(name, _read_json(Path(folder) / "scheduler" / "scheduler_config.json")) if name else ""
    return sampler, int(index.get("default_num_inference_steps") or DEFAULT_INFERENCE_STEPS)


def _stored_interval(value: Any) -> list[float] | None:
    """A model_index.json `default_guidance_interval` (`{"start", "stop"}`) as `[start, stop]`; None when absent."""
    return [float(value["start"]), float(value["stop"])] if isinstance(value, dict) else None


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def to_half_precision(folder: Path) -> None:
    """Rewrites every floating-point tensor of every safetensors file under `folder` as fp16 (medgen and
    diffusers load them back into float32 models unless asked for fp16)."""
    from safetensors.torch import load_file, save_file

    for path in folder.rglob("*.safetensors"):
        tensors = load_file(path)
        half = {name: t.half() if t.is_floating_point() else t for name, t in tensors.items()}
        save_file(half, path, metadata={"format": "pt"})


def card_info_from_run(run_dir: Path, training_data: str) -> dict[str, Any]:
    """The model card's Training lines for a shipped folder, read from what the run recorded (its config and
    summaries); lines the run did not record stay "not recorded"."""
    from medgen.data.summary import EXTRA_SUMMARY_PATTERN, recorded_image_count

    info: dict[str, Any] = {"dataset": training_data}
    training = _read_json(run_dir / "training_summary.json")
    config = None
    if (run_dir / "training_config.yaml").is_file():
        from medgen.config import load_config

        try:
            config = load_config(run_dir / "training_config.yaml")
        except ValueError as error:  # e.g. a config written by an older medgen: ship, with those lines not recorded
            warnings.warn(f"the model card's training lines are not recorded: {error}", stacklevel=2)
    # every image set the run read (its config says how many), or "not recorded": never the first set's alone
    num_sets = 1 + (len(config.extra_data) if config else len(list(run_dir.glob(EXTRA_SUMMARY_PATTERN))))
    count = recorded_image_count(run_dir, num_sets)
    if count is not None:
        info["num_train_images"] = count
    if config is None:
        return info
    if training.get("steps") is not None:
        from medgen.pipelines.model_card import steps_line

        batch = f"batch {config.train_batch_size} x {config.gradient_accumulation_steps} accumulation"
        info["train_steps"] = steps_line(training["steps"], training.get("init_from"), batch)
    info.update(config.diffusion.card_lines(), ema=config.ema.use_ema, license=config.license)
    from medgen.data.prompts import prompt_card_section

    prompts = prompt_card_section([config.data, *config.extra_data])  # a text model's Prompts section
    if prompts:
        info["extra"] = prompts
    if config.extra_data:
        names = ", ".join(f"`{Path(d.path).name}` ({d.split})" for d in [config.data, *config.extra_data])
        info["dataset"] = f"{training_data}; {len(config.extra_data) + 1} image sets: {names}"
    return info


def ship(
    run_dir: str | Path,
    name: str,
    modality: str,
    training_data: str,
    output: str | Path | None = None,
    overwrite: bool = False,
    text_encoder_from: str | None = None,
    guidance_scale: float | None = None,
    guidance_interval: Sequence[float] | None = None,
    scheduler: str | None = None,
    num_inference_steps: int | None = None,
    timestep_spacing: str | None = None,
    vae: str | Path | None = None,
    mask_guidance_scale: float | None = None,
    mask_generator_guidance_scale: float | None = None,
) -> Path:
    """Turns the pipeline saved by a training run in `run_dir` into a shipped folder (default
    `medgen/pretrained/<name>`): re-saved by the current medgen (current `pipeline.py`), fp16 weights, the run's
    config/summaries/samples, and `medgen_model.json`. Written to a temporary folder and moved into place, so
    a failure leaves any earlier folder as it was. The evaluation is stored afterwards by `medgen evaluate`.

    `text_encoder_from` (text pipelines, e.g. `"minilm-offline"`): leave the frozen text encoder's weights out
    and name that source in model_index.json instead; refused unless the pipeline's encoder holds exactly its
    weights. Loading fills them in from the installed encoder (see `medgen.text_encoders`).

    `guidance_scale` (label pipelines): stored as the model's `default_guidance_scale` in model_index.json, the
    scale a call without one samples with (the run's own when None). `guidance_interval` (label pipelines):
    stored as its `default_guidance_interval`, the guided fraction of the sampling steps (every step when None).
    `scheduler` (a name of `medgen.sampling.SCHEDULERS`, e.g. `"ddpm"`): the saved sampler, built from the model's
    own noise schedule (the run's when None). `num_inference_steps` (label pipelines): stored as its
    `default_num_inference_steps`, the step count a call without one samples with (15 when None).
    `timestep_spacing` (`"linspace"`, `"leading"` or `"trailing"`): where the saved sampler places its steps (the
    saved scheduler's when None; see `medgen.sampling.with_timestep_spacing`).
    `vae` (latent pipelines): a saved autoencoder to ship instead of the run's, e.g. one whose decoder was trained
    further (`vae.train_decoder_only`); refused unless it encodes to the same latent space (`matching_autoencoder`).
    `mask_guidance_scale` (mask pipelines): stored as the model's `default_mask_guidance_scale`, the mask guidance
    a call without one samples with (1.0, none, when never stored). `mask_generator_guidance_scale` (mask
    pipelines with a mask generator): stored as its `default_mask_generator_guidance_scale`, the label guidance the
    generator draws masks with when a call gives none (1.0 when never stored).

    RUN_DIR may be a shipped folder itself (`output` the same folder), to change its sampling defaults: its
    `medgen_model.json` keeps saying where it was trained; its stored evaluation and downstream results are not
    carried over (they were measured with the old defaults): store them again."""
    from medgen.data.summary import EXTRA_SUMMARY_PATTERN
    from medgen.pipelines import load_pipeline

    run_dir = Path(run_dir)
    if not (run_dir / "model_index.json").is_file():
        raise FileNotFoundError(f"{run_dir} holds no trained pipeline (no model_index.json): train it first")
    if not name or any(character in name for character in "/\\ ") or name.startswith("."):
        raise ValueError(f"model name {name!r} must be a plain name like 'chest-xray'")
    output = Path(output) if output else PRETRAINED_DIR / name
    if output.exists() and not overwrite:
        raise FileExistsError(f"{output} already exists; pass --overwrite to replace it")
    pipeline = load_pipeline(run_dir)
    if guidance_scale is not None:
        if "default_guidance_scale" not in inspect.signature(type(pipeline).__init__).parameters:
            raise ValueError(f"--guidance-scale: {run_dir} holds a {type(pipeline).__name__}, which stores no default guidance scale")
        if not (math.isfinite(guidance_scale) and guidance_scale >= 0):
            raise ValueError(f"--guidance-scale must be a finite number >= 0; got {guidance_scale}")
        pipeline.register_to_config(default_guidance_scale=float(guidance_scale))
    if mask_guidance_scale is not None:
        if "default_mask_guidance_scale" not in inspect.signature(type(pipeline).__init__).parameters:
            raise ValueError(
                f"--mask-guidance-scale: {run_dir} holds a {type(pipeline).__name__}, which takes no mask"
            )
        pipeline.register_to_config(default_mask_guidance_scale=effective_mask_guidance_scale(pipeline, mask_guidance_scale))
    if mask_generator_guidance_scale is not None:
        pipeline.register_to_config(
            default_mask_generator_guidance_scale=effective_mask_generator_guidance_scale(pipeline, mask_generator_guidance_scale)
        )
    if guidance_interval is not None:
        if "default_guidance_interval" not in inspect.signature(type(pipeline).__init__).parameters:
            raise ValueError(f"--guidance-interval: {run_dir} holds a {type(pipeline).__name__}, which stores no guidance interval")
        start, stop = pipeline.check_guidance_interval(guidance_interval, "--guidance-interval")
        pipeline.register_to_config(default_guidance_interval={"start": start, "stop": stop})
    if num_inference_steps is not None:
        if "default_num_inference_steps" not in inspect.signature(type(pipeline).__init__).parameters:
            raise ValueError(f"--num-inference-steps: {run_dir} holds a {type(pipeline).__name__}, which stores no default step count")
        steps = pipeline.check_num_inference_steps(num_inference_steps, "--num-inference-steps")
        pipeline.register_to_config(default_num_inference_steps=steps)
    if scheduler is not None:
        if scheduler not in SCHEDULERS:
            raise ValueError(f"--scheduler: unknown sampler {scheduler!r}; choose one of {', '.join(sorted(SCHEDULERS))}")
        pipeline.scheduler = replacement_scheduler(pipeline.scheduler, SCHEDULERS[scheduler])
    if timestep_spacing is not None:
        pipeline.scheduler = with_timestep_spacing(pipeline.scheduler, timestep_spacing)
    if vae is not None:
        pipeline.vae = matching_autoencoder(pipeline, vae)  # records the folder it was loaded from
    previous_info = _read_json(run_dir / MODEL_INFO_FILE)  # a shipped folder re-shipped keeps where it was trained
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=output.parent))
    try:
        card = card_info_from_run(run_dir, training_data)
        reference = None
        if text_encoder_from:
            reference = text_encoder_reference_of(pipeline, run_dir, text_encoder_from)
            card["extra"] = external_encoder_note(reference) + card.get("extra", "")
        for component_name, component in pipeline.components.items():  # each records the folder it was loaded from
            source = getattr(getattr(component, "config", None), "_name_or_path", None)
            if not source:
                continue
            if component_name == "text_encoder" and reference is not None:
                component.config._name_or_path = reference["weights"]  # its card line names the weights left out
                continue
            if previous_info and not (component_name == "vae" and vae is not None):
                # a shipped folder re-shipped: keep the run folder its components came from
                source = _read_json(run_dir / component_name / "config.json").get("_name_or_path") or source
            if hasattr(component, "register_to_config"):
                component.register_to_config(_name_or_path=recorded_path(source))
            else:  # a transformers model (the text encoder): its card line names it
                component.config._name_or_path = recorded_path(source)
        pipeline.save_pretrained(staging, model_card=card)
        if reference is not None:
            leave_out_text_encoder(staging, reference)
        to_half_precision(staging)
        for path in [*(run_dir / name for name in CARRIED_FILES), *sorted(run_dir.glob(EXTRA_SUMMARY_PATTERN))]:
            if path.is_file():
                shutil.copy2(path, staging / path.name)
        if (staging / "training_config.yaml").is_file():
            record_config_paths(staging / "training_config.yaml")
        samples = sorted(run_dir.glob("samples/*.png"))
        if any(value is not None for value in (guidance_scale, guidance_interval, scheduler, num_inference_steps,
                                               timestep_spacing, vae, mask_guidance_scale,
                                               mask_generator_guidance_scale)):
            draw_sample_grid(pipeline, run_dir, staging / "samples.png")  # the run's grids at the shipped defaults
        elif samples:
            shutil.copy2(samples[-1], staging / "samples.png")
        elif (run_dir / "samples.png").is_file():  # a shipped folder re-shipped
            shutil.copy2(run_dir / "samples.png", staging / "samples.png")
        trained_in = previous_info.get("trained_in") or recorded_path(run_dir)
        info = {"name": name, "modality": modality, "training_data": training_data, "trained_in": trained_in}
        (staging / MODEL_INFO_FILE).write_text(json.dumps(info, indent=2) + "\n")
        if output.exists():
            shutil.rmtree(output)
        staging.rename(output)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return output


def matching_autoencoder(pipeline: Any, folder: str | Path) -> Any:
    """The autoencoder saved in `folder` (an autoencoder run's output or a pipeline's `vae/`), loaded to replace
    `pipeline.vae`. Refused with a `ValueError` naming what differs unless it maps images to the latent space the
    UNet was trained on: the same configuration (latent channels, scaling factor, ...) and the same encoder weights
    (to fp16 precision, as shipped weights are stored). Only the decoder may differ, as after a run with
    `vae.train_decoder_only`."""
    import torch
    from diffusers import AutoencoderKL

    current = getattr(pipeline, "vae", None)
    if current is None:
        raise ValueError(f"--vae: the pipeline is a {type(pipeline).__name__} without an autoencoder (it samples pixels)")
    folder = Path(folder)
    if (folder / "vae" / "config.json").is_file() and not (folder / "config.json").is_file():
        folder = folder / "vae"  # a pipeline folder: its autoencoder
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"--vae: {folder} holds no saved autoencoder (no config.json)")
    try:
        replacement = AutoencoderKL.from_pretrained(folder, use_safetensors=True)
    except (OSError, ValueError, TypeError) as error:
        raise ValueError(f"--vae: {folder} could not be loaded as an autoencoder: {error}") from error
    differing = sorted(
        key for key in set(current.config) | set(replacement.config)
        if not key.startswith("_") and current.config.get(key) != replacement.config.get(key)
    )
    if differing:
        details = ", ".join(f"{key} {current.config.get(key)!r} -> {replacement.config.get(key)!r}" for key in differing)
        raise ValueError(
            f"--vae: {folder} is configured unlike the pipeline's autoencoder ({details}); its UNet was trained on "
            "the latents of that autoencoder"
        )
    old, new = current.state_dict(), replacement.state_dict()
    changed = [
        key for key in old
        if key.startswith(("encoder.", "quant_conv.")) and not torch.equal(old[key].half(), new[key].half())
    ]
    if changed:
        raise ValueError(
            f"--vae: {folder} has another encoder than the pipeline's autoencoder ({len(changed)} tensors differ, "
            f"first {changed[0]}): the UNet was trained on the old encoder's latents. Only a decoder trained "
            "further (vae.train_decoder_only) can replace it without retraining the UNet"
        )
    return replacement.to(device=current.device, dtype=current.dtype)


def recorded_path(path: str | Path) -> str:
    """`path` as a shipped folder records it: relative to the working directory, so the package carries no
    machine's absolute paths (a path on another drive is named by its last part)."""
    path = Path(path)
    if not path.is_absolute():
        return path.as_posix()
    try:
        return Path(os.path.relpath(path)).as_posix()
    except ValueError:
        return path.name


def record_config_paths(config_path: Path) -> None:
    """Rewrites the absolute paths of a shipped copy of a run's training config (its output folder, the
    autoencoder and the weights it started from) with `recorded_path`; every other value is left as written."""
    import yaml

    config = yaml.safe_load(config_path.read_text()) or {}
    model = config.get("model") or {}
    changed = False
    for section, key in ((config, "output_dir"), (model, "pretrained_vae"), (model, "init_from")):
        value = section.get(key)
        if isinstance(value, str) and Path(value).is_absolute():
            section[key] = recorded_path(value)
            changed = True
    if changed:
        config_path.write_text(yaml.safe_dump(config, sort_keys=False))


def draw_sample_grid(pipeline: Any, run_dir: Path, path: Path) -> Path:
    """`samples.png` drawn as training draws its grids (one row per label, or per sample prompt of a text model,
    every row from the run's seed, its image count and step count), at the pipeline's own default sampler, guidance
    scale and interval (and its stored step count, when it stores one). A mask pipeline's rows show its image + mask
    pairs with the mask outlined."""
    import torch
    import yaml

    from medgen.sample_grid import outlined_pairs, save_sample_grid

    config_path = run_dir / "training_config.yaml"
    config = (yaml.safe_load(config_path.read_text()) if config_path.is_file() else None) or {}
    seed, count = int(config.get("seed", 0)), int(config.get("num_sample_images", 4))
    steps = pipeline.config.get("default_num_inference_steps") or int(
        (config.get("diffusion") or {}).get("num_inference_steps", DEFAULT_INFERENCE_STEPS)
    )
    pipeline.set_progress_bar_config(disable=True)
    rows = []
    for title, request in sample_grid_rows(pipeline, config):
        output = pipeline(num_images_per_prompt=count, num_inference_steps=steps,
                          generator=torch.Generator("cpu").manual_seed(seed), output_type="np", **request)
        images = output.images
        if getattr(output, "masks", None) is not None:
            images = outlined_pairs(images, output.masks)
        rows.append((title, images))
    return save_sample_grid(rows, path)


def sample_grid_rows(pipeline: Any, config: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The rows of a shipped model's sample grid, `(title, pipeline arguments)`: its labels; a text model's sample
    prompts (the run's `text.sample_prompts`, else the prompts it offers as examples); one untitled row otherwise."""
    labels = getattr(pipeline, "labels", None)
    if labels:
        return [(label, {"labels": label}) for label in labels]
    if hasattr(pipeline, "tokenizer"):
        prompts = list((config.get("text") or {}).get("sample_prompts") or pipeline.config.get("example_prompts") or [])
        if not prompts:
            raise ValueError("the text pipeline names no prompt to draw samples.png with (text.sample_prompts or example_prompts)")
        return [(prompt, {"prompt": prompt}) for prompt in prompts]
    return [("samples", {})]


def text_encoder_reference_of(pipeline: Any, run_dir: Path, source: str) -> dict[str, str]:
    from medgen.text_encoders import text_encoder_reference

    if getattr(pipeline, "text_encoder", None) is None:
        raise ValueError(f"{run_dir} holds a {type(pipeline).__name__}, which has no text encoder to leave out")
    return text_encoder_reference(pipeline.text_encoder, source)


def external_encoder_note(reference: dict[str, str]) -> str:
    """The model card's paragraph for a folder shipped without its text encoder's weights."""
    return (
        f"**Text encoder weights not included.** This folder leaves out the weights of its frozen text encoder "
        f"(`{reference['weights']}`, sha256 `{reference['sha256'][:16]}...`); medgen fills them in from "
        f"`{reference['name']}` when it loads the folder and checks that they are the weights it was trained "
        "with. With stock diffusers, pass them yourself: `DiffusionPipeline.from_pretrained(folder, "
        f"trust_remote_code=True, text_encoder=transformers.AutoModel.from_pretrained(\"{reference['weights']}\"))`.\n\n"
    )


def leave_out_text_encoder(folder: Path, reference: dict[str, str]) -> None:
    """Removes `folder/text_encoder/` and names `reference` in its place in model_index.json."""
    from medgen.text_encoders import TEXT_ENCODER_REFERENCE_KEY

    shutil.rmtree(folder / "text_encoder")
    index_path = folder / "model_index.json"
    index = json.loads(index_path.read_text())
    index["text_encoder"] = [None, None]
    index[TEXT_ENCODER_REFERENCE_KEY] = reference
    index_path.write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
