"""The model card (`README.md` with Hub metadata) written into every saved medgen pipeline."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medgen.sampling import effective_inference_steps, guidance_interval_text, sampler_text

# The "Evaluation" section lies between these markers, so that storing a new evaluation replaces it in place
# and keeps the rest of the card (training details known only when the pipeline was saved).
EVALUATION_START = "<!-- medgen-evaluation:start -->"
EVALUATION_END = "<!-- medgen-evaluation:end -->"
LIMITATIONS_HEADING = "## Intended use and limitations"

CARD_TEMPLATE = """
# {title}

A **{class_name}** trained with [medgen](https://pypi.org/project/medgen/): synthetic medical images from a
diffusion model.

> **Research and teaching only. Not for diagnosis.** Every image this model makes is synthetic. It must not be
> used for clinical decisions, and it must be labelled as synthetic wherever it is shared.

## Usage

```python
# with medgen installed (no remote code runs)
import medgen
pipe = medgen.load_pipeline("{repo_or_path}")

# or with stock diffusers only
from diffusers import DiffusionPipeline
pipe = DiffusionPipeline.from_pretrained("{repo_or_path}", trust_remote_code=True)

images = pipe({call_example}).images
```

## Model

| | |
|---|---|
| Pipeline | `{class_name}` |
| Resolution | {resolution} px, {channels} channel(s) |
| Space | {space} |
| Conditioning | {conditioning} |
| Default sampler | {scheduler} |
| Parameters (denoiser) | {num_parameters} |

## Training

| | |
|---|---|
| Data | {dataset} |
| Training images | {num_train_images} |
| Optimisation steps | {train_steps} |
| Noise schedule | {noise_schedule} |
| Prediction type | {prediction_type} |
| Weights | {weights} |

{extra}

{evaluation}

## Intended use and limitations

- Intended for research: augmenting scarce or imbalanced training sets (rare findings), sharing data
  without patients in it, method development, and teaching.
- Not a medical device. Images can look plausible and still be anatomically or pathologically wrong.
- The model reflects its training data: its population, scanners, views and label noise. Labels of public
  chest X-ray sets are mined from reports and are noisy; uncertain labels were handled as noted above.
- Check synthetic data before use (`medgen evaluate`: FID/KID, precision/recall, diversity, memorization,
  label faithfulness), and never present it as real.
"""


def hub_pipeline_tag(pipeline: Any) -> str | None:
    """The Hub task of the pipeline's kind: `text-to-image` for text pipelines, `image-to-image` for pipelines
    drawn from a mask, `unconditional-image-generation` for unconditional ones, and none for label-conditioned
    ones (the Hub has no class-conditional task; their tags say `class-conditional-image-generation`)."""
    if getattr(pipeline, "text_encoder", None) is not None:
        return "text-to-image"
    if "mask" in type(pipeline).__name__.lower():
        return "image-to-image"
    if list(getattr(pipeline, "labels", []) or []):
        return None
    return "unconditional-image-generation"


def steps_line(steps: int, record: dict | None, batch: str) -> str:
    """The model card's "Optimisation steps" value: `steps (batch)`, and for a fine-tuned model where it started
    (the batch is this run's: the model it started from may have trained at another)."""
    if not record:
        return f"{steps} ({batch})"
    before = record.get("steps")
    if before is None:
        return f"{steps} ({batch}), fine-tuning `{record['init_from']}` (its steps not recorded)"
    return f"{steps + before} in all: {before} of `{record['init_from']}`, then {steps} fine-tuning from its weights ({batch})"


def write_model_card(folder: str | Path, pipeline: Any, info: dict[str, Any]) -> Path:
    """Writes `folder/README.md`. `info` may hold: title, repo_id, license, dataset, datasets (Hub ids),
    num_train_images, train_steps, noise_schedule, prediction_type, ema (bool), tags, extra (markdown)."""
    from huggingface_hub import ModelCard, ModelCardData

    unet = pipeline.unet
    sample_size = unet.config.sample_size
    labels = list(getattr(pipeline, "labels", []) or [])
    has_vae = getattr(pipeline, "vae", None) is not None
    latent_factor = 2 ** (len(pipeline.vae.config.block_out_channels) - 1) if has_vae else 1
    resolution = sample_size * latent_factor if isinstance(sample_size, int) else sample_size
    channels = pipeline.vae.config.in_channels if has_vae else unet.config.in_channels
    class_name = type(pipeline).__name__
    text_encoder = getattr(pipeline, "text_encoder", None)

    if text_encoder is not None:
        conditioning = f"free text through `{text_encoder.config._name_or_path or type(text_encoder).__name__}`"
        call_example = 'prompt="chest x-ray, right lower lobe pneumonia"'
    elif labels:
        kind = "multi-label" if pipeline.config.get("multi_label") else "single-label"
        conditioning = f"{kind} findings: {', '.join(labels)} (classifier-free guidance)"
        call_example = f'labels="{labels[-1]}", num_images_per_prompt=4'
    else:
        conditioning = "none (unconditional)"
        call_example = "batch_size=4"

    repo_or_path = info.get("repo_id") or "path/to/this/folder"
    card_data = ModelCardData(
        license=info.get("license", "apache-2.0"),
        library_name="diffusers",
        tags=sorted({
            "medgen", "medical-imaging", "synthetic-data", "diffusers", *info.get("tags", []),
            *(["class-conditional-image-generation"] if labels and text_encoder is None else []),
        }),
        datasets=info.get("datasets") or None,
        pipeline_tag=hub_pipeline_tag(pipeline),
    )
    content = CARD_TEMPLATE.format(
        title=info.get("title", f"medgen {class_name}"),
        class_name=class_name,
        repo_or_path=repo_or_path,
        call_example=call_example,
        resolution=resolution,
        channels=channels,
        space=f"latent ({unet.config.in_channels} channels, VAE factor {latent_factor})" if has_vae else "pixel",
        conditioning=conditioning,
        scheduler=f"`{sampler_text(pipeline.scheduler)}`, "
        f"{effective_inference_steps(pipeline)} steps",
        num_parameters=f"{sum(p.numel() for p in unet.parameters()) / 1e6:.2f} M",
        dataset=info.get("dataset", "not recorded"),
        num_train_images=info.get("num_train_images", "not recorded"),
        train_steps=info.get("train_steps", "not recorded"),
        noise_schedule=info.get("noise_schedule", "not recorded"),
        prediction_type=info.get("prediction_type", getattr(pipeline.scheduler.config, "prediction_type", "epsilon")),
        weights="exponential moving average (EMA)" if info.get("ema") else "final training weights",
        extra=info.get("extra", ""),
        evaluation=evaluation_section(folder),
    )
    card = ModelCard(f"---\n{card_data.to_yaml()}\n---\n{content}")
    path = Path(folder) / "README.md"
    card.save(path)
    return path


def _number(value: Any, digits: int = 3) -> str:
    return "not measured" if value is None else f"{value:.{digits}f}"


def _interval(bounds: list[float]) -> str:
    return f"{_number(bounds[0])} to {_number(bounds[1])}"


def _held_out_text(data: dict[str, Any]) -> str:
    """Whether the reference images were checked against the training images, and what was found."""
    held_out, excluded = data.get("held_out"), data.get("n_excluded_as_training") or 0
    if held_out is False:
        return "**NO**: reference images include images the model was trained on; these figures do not measure unseen data"
    if held_out is None:
        return "not checked (the training data was not recorded or not found)"
    checked = "yes: reference images checked against the training images (content hashes)"
    return checked + (f"; {excluded} that are training images were left out" if excluded else "")


def _generated_text(summary: dict[str, Any]) -> str:
    """How many images were scored, and the sampler settings they were drawn with (when recorded)."""
    sampling = summary.get("sampling") or {}
    settings = [f"{sampling['num_inference_steps']} steps"] if sampling.get("num_inference_steps") else []
    if sampling.get("sampler"):
        settings.insert(0, sampling["sampler"])
    if sampling.get("guidance_scale") is not None:
        settings.append(f"guidance {_number(sampling['guidance_scale'], 2)}")
    if sampling.get("guidance_interval") not in (None, [0.0, 1.0]):  # every step guided is the usual case, left unsaid
        settings.append(f"guided on steps {guidance_interval_text(sampling['guidance_interval'])} of the way")
    if sampling.get("mask_guidance_scale") is not None:
        settings.append(f"mask guidance {_number(sampling['mask_guidance_scale'], 2)}")
    if sampling.get("mask_generator_guidance_scale") is not None:
        settings.append(f"masks drawn at label guidance {_number(sampling['mask_generator_guidance_scale'], 2)}")
    return f"{summary.get('n_generated')}" + (f" ({', '.join(settings)})" if settings else "")


def _fid_references(summary: dict[str, Any]) -> str:
    """What the FID is read against: the floors (real images at the same N) and the autoencoder's ceiling."""
    references = [
        ("training floor", summary.get("fid_training_floor")),
        ("real-vs-real baseline", summary.get("fid_real_baseline")),
        ("autoencoder ceiling", summary.get("fid_autoencoder_ceiling")),
    ]
    return "; ".join(f"{name} {_number(value)}" for name, value in references if value is not None) or "no baseline"


def _interval_row(intervals: dict[str, Any]) -> tuple[str, str]:
    """The card row of a stored evaluation's bootstrap intervals (FID, precision, recall)."""
    shown = [f"{name} {_interval(intervals[key])}" for key, name in (("fid", "FID"), ("precision", "precision"), ("recall", "recall")) if key in intervals]
    return f"{intervals['level']:.0%} intervals over the draw of generated images (bootstrap)", ", ".join(shown)


def _prompt_groups_lines(summary: dict[str, Any]) -> list[str]:
    """The Evaluation section of a text model scored per prompt group (`medgen evaluate --prompt-groups`)."""
    from medgen.pipelines.evaluation_record import EVALUATION_FILE, describe_memorization

    data = summary.get("data") or {}
    sampling = summary.get("sampling") or {}
    memorization = summary["memorization"]
    rows = [
        ("Date", summary.get("date", "not recorded")),
        ("medgen version", summary.get("medgen_version", "not recorded")),
        ("Real reference data", f"`{data.get('split')}` split of {data.get('source')} ({data.get('n_real')} images)"),
        ("Held out", _held_out_text(data)),
        ("Generated images", f"{summary.get('n_generated')} ({sampling.get('num_inference_steps')} steps, guidance "
                             f"{sampling.get('guidance_scale') or 'the pipeline default'})"),
        (f"FID, all modalities ({summary.get('feature_extractor')} features)",
         f"{_number(summary.get('fid'))} (real-vs-real baseline {_number(summary.get('fid_real_baseline'))})"),
        ("Precision / recall", f"{_number(summary.get('precision'))} / {_number(summary.get('recall'))}"),
        ("Modality accuracy (real-trained modality classifier)", _number(summary.get("modality_accuracy"))),
    ]
    intervals = summary.get("intervals") or {}
    if intervals:
        rows.append(_interval_row(intervals))
    for name, figures in (summary.get("per_modality") or {}).items():
        fid_interval = (intervals.get("fid_per_modality") or {}).get(name)
        rows.append((f"Modality {name}: FID / modality accuracy",
                     f"{_number(figures.get('fid'))}" + (f" ({_interval(fid_interval)})" if fid_interval else "")
                     + f" / {_number(figures.get('modality_accuracy'))}"))
    for name, figures in (summary.get("per_set") or {}).items():
        rows.append((f"Set {name}: FID / finding accuracy (classifier trained on its real images)",
                     f"{_number(figures.get('fid'))} / {_number(figures.get('label_accuracy'))}"))
    paraphrases = summary.get("paraphrases") or {}
    if paraphrases.get("finding_accuracy_canonical") is not None:
        rows.append(("Finding accuracy: canonical prompts / paraphrases",
                     f"{_number(paraphrases['finding_accuracy_canonical'])} ({paraphrases.get('n_canonical')} images) / "
                     f"{_number(paraphrases.get('finding_accuracy_paraphrases'))} ({paraphrases.get('n_paraphrases')} images)"))
    verdict = "**ALARM**" if memorization.get("alarm") else "no alarm"
    rows.append(("Memorization", f"{verdict}: {describe_memorization(memorization)}"))
    prompts = [
        f"- {group}: " + "; ".join(f"`{prompt}` x{count}" for prompt, count in counts.items())
        for group, counts in (summary.get("prompts") or {}).items()
    ]
    return [
        "| | |", "|---|---|", *(f"| {name} | {value} |" for name, value in rows), "",
        "Scored per prompt group with these prompts (the canonical prompt and paraphrases, images each):", "",
        *prompts, "",
        f"Measured with `medgen evaluate --prompt-groups`; the summary is `{EVALUATION_FILE}` in this folder.",
    ]


def evaluation_section(folder: str | Path) -> str:
    """The card's "Evaluation" section (between markers), rendered from `folder/evaluation.json` when it holds
    an evaluation of the folder's weights."""
    from medgen.pipelines.evaluation_record import EVALUATION_FILE, describe_mask_generator, describe_memorization, stored_evaluation

    summary, problem = stored_evaluation(folder, "this pipeline")
    lines = ["## Evaluation", ""]
    if summary is None:
        reason = "" if not (Path(folder) / EVALUATION_FILE).is_file() else f" ({problem})"
        lines.append(
            f"No stored evaluation of these weights{reason}. `medgen evaluate --pipeline <this folder> --data <real data> --store-in-pipeline` "
            f"stores one in `{EVALUATION_FILE}`; `push_to_hub` and `medgen space build` require it."
        )
    elif summary.get("kind") == "prompt_groups":
        lines += _prompt_groups_lines(summary)
    else:
        data = summary.get("data") or {}
        memorization = summary["memorization"]
        rows = [
            ("Date", summary.get("date", "not recorded")),
            ("medgen version", summary.get("medgen_version", "not recorded")),
            ("Real reference data", f"{data.get('source') or 'not recorded'} ({data.get('n_real')} images)"),
            ("Real training split (memorization search)",
             f"`{data['train_split']}` ({data.get('n_train')} images)" if data.get("train_split") else "halves of the reference data"),
            ("Held out", _held_out_text(data)),
            ("Generated images", _generated_text(summary)),
            (f"FID ({summary.get('feature_extractor')} features)", f"{_number(summary.get('fid'))} ({_fid_references(summary)})"),
            ("Precision / recall", f"{_number(summary.get('precision'))} / {_number(summary.get('recall'))}"),
        ]
        intervals = summary.get("intervals") or {}
        if intervals:
            rows.append(_interval_row(intervals))
        for name, recall in (summary.get("recall_per_label") or {}).items():
            label_interval = (intervals.get("recall_per_label") or {}).get(name)
            rows.append((f"Recall: {name}", _number(recall) + (f" ({_interval(label_interval)})" if label_interval else "")))
        if "label_accuracy" in summary:
            rows.append(("Label accuracy (real-trained classifier)", _number(summary["label_accuracy"])))
        for name, accuracy in (summary.get("label_accuracy_per_label") or {}).items():
            real = accuracy.get("real_test")
            rows.append((f"Label accuracy: {name}", _number(accuracy.get("generated"))
                         + ("" if real is None else f" (the classifier on real test images of {name}: {_number(real)})")))
        tstr = summary.get("tstr") or {}
        if "synthetic_trained_auc" in tstr:
            rows.append(("TSTR AUROC: synthetic-trained / real-trained",
                         f"{_number(tstr['synthetic_trained_auc'])} / {_number(tstr.get('real_trained_auc'))}"))
        faithfulness = summary.get("mask_faithfulness") or {}
        if "dice_generated" in faithfulness:
            rows.append(("Mask faithfulness: Dice of a real-trained segmenter on images drawn from the test masks / on the real test images",
                         f"{_number(faithfulness['dice_generated'])} / {_number(faithfulness.get('dice_real_test'))} "
                         f"(ratio {_number(faithfulness.get('ratio'), 2)})"))
        if (summary.get("mask_generator") or {}).get("per_label"):
            generator = summary["mask_generator"]
            rows.append((f"Mask generator (label guidance {_number(generator.get('guidance_scale'), 2)}), one mask per test mask's label",
                         describe_mask_generator(generator)))
        verdict = "**ALARM**" if memorization.get("alarm") else "no alarm"
        rows.append(("Memorization", f"{verdict}: {describe_memorization(memorization)}"))
        lines += ["| | |", "|---|---|", *(f"| {name} | {value} |" for name, value in rows), "",
                  f"Measured with `medgen evaluate`; the summary is `{EVALUATION_FILE}` in this folder."]
    return "\n".join([EVALUATION_START, *lines, EVALUATION_END])


def replace_card_section(folder: str | Path, start_marker: str, end_marker: str, section: str) -> Path | None:
    """Replaces the text between two markers of `folder/README.md` with `section` (which carries the markers),
    or adds it before the limitations (else at the end), leaving the rest of the card as it was; returns the
    card's path, None when the folder has no card."""
    from medgen.files import atomic_write

    path = Path(folder) / "README.md"
    if not path.is_file():
        return None
    card = path.read_text()
    start, end = card.find(start_marker), card.find(end_marker)
    if start != -1 and end > start:
        card = card[:start] + section + card[end + len(end_marker):]
    elif LIMITATIONS_HEADING in card:
        card = card.replace(LIMITATIONS_HEADING, f"{section}\n\n{LIMITATIONS_HEADING}", 1)
    else:
        card = card.rstrip("\n") + f"\n\n{section}\n"
    with atomic_write(path, "w") as file:
        file.write(card)
    return path


def update_evaluation_section(folder: str | Path) -> Path | None:
    """Replaces (or adds) the "Evaluation" section of `folder/README.md` from `folder/evaluation.json`,
    leaving the rest of the card as it was; returns the card's path, None when the folder has no card."""
    return replace_card_section(folder, EVALUATION_START, EVALUATION_END, evaluation_section(folder))
