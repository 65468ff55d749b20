"""`medgen evaluate --prompt-groups`: a text pipeline trained across sets, scored per prompt group.

A text model trained on sets read with prompt sets (`DataConfig.prompts`, `medgen.data.prompts`) is asked for
each group those sets describe (modality + finding, e.g. "chest x-ray / viral pneumonia") with the group's
prompts: the canonical one and seeded paraphrases, each for an equal share of the group's images. Then:

- per set: the images asked for that set's groups against the set's held-out test images, labelled with the
  set's own labels: FID/KID/precision/recall per set and per label, and label accuracy of a classifier trained on
  the set's real training split (does the image show the finding asked for?), via `evaluate_image_sets`;
- across sets: every image labelled with its modality, against the test images of every set: FID per modality
  and modality accuracy of a classifier trained on the real training splits (does it make the modality asked for?).

Every group gets `samples_per_group` images whatever its share of the test split, so a set's or a modality's
FID compares an even mix of its groups with the test images' own mix (as `medgen evaluate` splits evenly over
labels). `OUTPUT/prompt_groups.json` lists every group: its set, modality, finding, the label its real images carry, the
CSV filters selecting them, the prompts it was scored with and how many images each, and its figures; groups
without held-out images are listed as skipped. Each set's and the modality report are in their own sub-folders.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medgen.sampling import DEFAULT_INFERENCE_STEPS

REPORT_FILE = "prompt_groups.json"
MODALITY_FOLDER = "modality"


@dataclass
class PromptGroup:
    """One group of one set: what is asked (prompts) and which real images show it (filters on the set's CSV)."""

    set_name: str
    name: str  # "chest x-ray / viral pneumonia"
    modality: str  # "chest x-ray"
    label: str  # the set's label of its real images ("pneumonia")
    filters: dict[str, list[str]]
    prompts: list[str]
    num_real_test: int = 0
    prompt_counts: dict[str, int] = field(default_factory=dict)


def sets_from_training_config(path: str | Path) -> list[Any]:
    """The `DataConfig`s a training config reads (`data`, then `extra_data`)."""
    from medgen.config import load_config

    config = load_config(path)
    return [config.data, *config.extra_data]


def plan_groups(sets: Sequence[Any], prompts_per_group: int = 3) -> list[PromptGroup]:
    """Every group of every set read with a prompt set, in order; a set without `prompts` is an error."""
    from medgen.data.prompts import MODALITY_NAMES, get_prompt_set, group_prompts

    groups = []
    for data in sets:
        name = Path(data.path).name
        if not data.prompts:
            raise ValueError(
                f"{name} is read without a prompt set (data.prompts): prompt groups come from the sets' prompt sets "
                "(medgen.data.prompts); score a text model trained on free text with --labels and --prompt-template"
            )
        if not data.findings_column:
            raise ValueError(f"{name}: prompt groups need the set's labels (data.findings_column)")
        for facts, filters in get_prompt_set(data.prompts).groups:
            label = filters.get(data.findings_column, [None])[0]
            if label is None:
                raise ValueError(f"{name}: the group {facts.group} of prompt set {data.prompts!r} names no {data.findings_column!r}")
            groups.append(PromptGroup(name, facts.group, MODALITY_NAMES[facts.modality], label, dict(filters),
                                      group_prompts(facts, prompts_per_group)))
    return groups


def _read(data: Any, split: str, resolution: int, channels: int, filters: dict[str, list[str]] | None, max_real: int | None):
    """An ImageSet of one split of a set (with extra row filters), or None when no row is left."""
    from medgen.data import DataConfig
    from medgen.evaluation.images import read_image_set

    values = {**data.to_dict(), "split": split, "streaming": False, "resolution": resolution, "channels": channels,
              "max_samples": max_real}
    if filters:
        values["filters"] = {**values.get("filters", {}), **filters}
    try:
        return read_image_set(DataConfig.from_dict(values))
    except ValueError as error:
        if "no samples" in str(error):
            return None
        raise


def _sample(pipe: Any, prompts: list[str], seed: int, steps: int, guidance_scale: float | None, batch_size: int) -> np.ndarray:
    """One image per prompt; image i uses `torch.Generator('cpu').manual_seed(seed + i)` (as `medgen generate`)."""
    import inspect

    import torch

    takes_guidance = "guidance_scale" in inspect.signature(pipe.__call__).parameters
    images = []
    for start in range(0, len(prompts), batch_size):
        batch = prompts[start : start + batch_size]
        kwargs: dict[str, Any] = {
            "prompt": batch, "num_images_per_prompt": 1, "num_inference_steps": steps, "output_type": "np",
            "generator": [torch.Generator("cpu").manual_seed(seed + start + i) for i in range(len(batch))],
        }
        if guidance_scale is not None and takes_guidance:
            kwargs["guidance_scale"] = guidance_scale
        with torch.inference_mode():
            images.append(np.asarray(pipe(**kwargs).images, dtype=np.float32))
    return np.concatenate(images)


def _labelled(images: np.ndarray, labels: list[str], names: list[str], source: str):
    from medgen.evaluation.images import ImageSet

    vectors = np.zeros((len(images), len(names)), dtype=np.float32)
    for row, label in enumerate(labels):
        vectors[row, names.index(label)] = 1.0
    return ImageSet(images, vectors, list(names), False, source)


def _relabelled(image_set: Any, label: str, names: list[str]):
    return _labelled(image_set.images, [label] * len(image_set), names, image_set.source)


def _concatenate(parts: list[Any], names: list[str], source: str):
    from medgen.evaluation.images import ImageSet

    return ImageSet(np.concatenate([p.images for p in parts]), np.concatenate([p.labels for p in parts]), list(names), False, source)


def evaluate_prompt_groups(
    pipeline: str | Path | Any,
    sets: Sequence[Any],
    output: str | Path | None = None,
    *,
    samples_per_group: int = 64,
    prompts_per_group: int = 3,
    split: str = "test",
    train_split: str | None = "train",
    num_inference_steps: int = DEFAULT_INFERENCE_STEPS,
    guidance_scale: float | None = None,
    seed: int = 0,
    sample_batch_size: int = 16,
    device: str = "auto",
    max_real: int | None = None,
    modality: bool = True,
    progress: bool = False,
    allow_training_overlap: bool = False,
    exclude_training_overlap: bool = False,
    **metric_options: Any,
) -> dict[str, Any]:
    """Samples every prompt group of `sets` and scores it against the group's held-out real images.

    Args:
        pipeline: a text-to-image pipeline, or its folder / Hub id.
        sets: the `DataConfig`s the model was trained on (each with `prompts` and `findings_column`), e.g.
            `sets_from_training_config("train_configs/medical_text_128.yaml")`; their `split` is replaced by
            `split` (reference) and `train_split` (classifier, memorization).
        samples_per_group: images per group, shared evenly by its prompts.
        prompts_per_group: the canonical prompt and seeded paraphrases (`medgen.data.prompts.group_prompts`).
        modality: also score all images labelled by modality (FID per modality, modality accuracy).
        allow_training_overlap, exclude_training_overlap: what to do with test images whose pixels are those of a
            training image of their set (as `evaluate`): by default a `TrainingOverlapError` naming the group;
            `exclude_training_overlap` leaves them out (counted per set), `allow_training_overlap` scores them and
            marks the set not held out.
        metric_options: passed on to `evaluate_image_sets` (feature_extractor, classifier, use_cache, ...).

    Returns the summary written to `output/prompt_groups.json` (when `output` is given).
    """
    from medgen.evaluation.api import _resolve_device, evaluate_image_sets, pipeline_image_geometry

    if allow_training_overlap and exclude_training_overlap:
        raise ValueError("give at most one of allow_training_overlap (score overlapping images) and exclude_training_overlap (drop them)")
    if samples_per_group < 2:
        raise ValueError(f"samples_per_group must be >= 2 (FID needs two images), got {samples_per_group}")
    if isinstance(pipeline, (str, Path)):
        from medgen.pipelines import load_pipeline

        pipe, pipeline_name = load_pipeline(pipeline), str(pipeline)
    else:
        pipe, pipeline_name = pipeline, type(pipeline).__name__
    import inspect

    if "prompt" not in inspect.signature(pipe.__call__).parameters:
        raise ValueError(f"{pipeline_name} takes no prompt: prompt groups score text-to-image pipelines")
    channels, resolution = pipeline_image_geometry(pipe)
    groups = plan_groups(sets, prompts_per_group)  # a set without prompts fails before anything is read
    started = time.perf_counter()
    pipe.to(_resolve_device(device))
    pipe.set_progress_bar_config(disable=True)

    output_dir = Path(output) if output is not None else None
    summary: dict[str, Any] = {
        "pipeline": pipeline_name, "split": split, "train_split": train_split, "samples_per_group": samples_per_group,
        "sampling": {"num_inference_steps": num_inference_steps, "guidance_scale": guidance_scale, "seed": seed,
                     "seed_rule": "image i of the whole run uses torch.Generator('cpu').manual_seed(seed + i)"},
        "groups": [], "skipped_groups": [], "sets": {},
    }
    modality_parts: dict[str, list[tuple[Any, Any, Any]]] = {}  # modality -> (generated, real test, real train) parts
    index = 0
    for data in sets:
        set_name = Path(data.path).name
        own = [group for group in groups if group.set_name == set_name]
        generated, generated_labels, kept, real_parts, train_parts, sampled_prompts = [], [], [], [], [], []
        # each group's own rows (its filters on the set's CSV), so that every group has its images
        read = [
            (
                _read(data, split, resolution, channels, group.filters, max_real),
                _read(data, train_split, resolution, channels, group.filters, max_real) if train_split else None,
            )
            for group in own
        ]
        train_hashes = np.concatenate([train.image_hashes() for _, train in read if train is not None] or [np.array([])])
        overlap = {"n_reference": 0, "n_overlap": 0, "n_excluded": 0, "n_training": len(train_hashes)}
        for group, (group_real, group_train) in zip(own, read):
            if group_real is not None and len(train_hashes):
                group_real = _held_out(group_real, train_hashes, f"{set_name} / {group.name}", overlap,
                                       allow_training_overlap, exclude_training_overlap)
            group.num_real_test = 0 if group_real is None else len(group_real)
            if group_real is None:
                summary["skipped_groups"].append({"set": set_name, "group": group.name, "why": f"no {split} image"})
                continue
            prompts = [group.prompts[i % len(group.prompts)] for i in range(samples_per_group)]
            group.prompt_counts = {prompt: prompts.count(prompt) for prompt in group.prompts if prompt in prompts}
            if progress:
                print(f"sampling {samples_per_group} images: {set_name} / {group.name}", flush=True)
            images = _sample(pipe, prompts, seed + index, num_inference_steps, guidance_scale, sample_batch_size)
            index += len(prompts)
            generated.append(images)
            generated_labels += [group.label] * len(images)
            kept.append(group)
            sampled_prompts.append(prompts)
            real_parts.append((group_real, group.label))
            if group_train is not None:
                train_parts.append((group_train, group.label))
            modality_parts.setdefault(group.modality, []).append((images, group_real, group_train))
        if not kept:
            continue
        label_names = list(dict.fromkeys(group.label for group in kept))  # the labels of groups with test images
        real_parts = [_relabelled(part, label, label_names) for part, label in real_parts]
        train_parts = [_relabelled(part, label, label_names) for part, label in train_parts]
        generated_set = _labelled(np.concatenate(generated), generated_labels, label_names, f"pipeline {pipeline_name}: {set_name} prompts")
        real = _concatenate(real_parts, label_names, f"{set_name} [{split}]")
        train = _concatenate(train_parts, label_names, f"{set_name} [{train_split}]") if train_parts else None
        report = evaluate_image_sets(
            generated_set, real, train, output_dir=None if output_dir is None else output_dir / set_name, seed=seed,
            progress=progress, extra={"pipeline": pipeline_name, "prompt_groups": [_entry(g) for g in kept]}, **metric_options,
        )
        summary["sets"][set_name] = {**_figures(report), "training_overlap": {
            **overlap, "checked": bool(train_split), "held_out": overlap["n_overlap"] == overlap["n_excluded"]}}
        correct = iter((report.get("label_accuracy") or {}).get("per_image_correct") or [])
        for group, prompts in zip(kept, sampled_prompts):
            matches = [next(correct, None) for _ in prompts]
            summary["groups"].append({**_entry(group), "set_figures": summary["sets"][set_name],
                                      "label_figures": _label_figures(report, group.label),
                                      "prompt_accuracy": _prompt_accuracy(prompts, matches)})
    if modality and len(modality_parts) >= 1:
        names = sorted(modality_parts)
        generated_parts, real_parts, train_parts = [], [], []
        for name in names:
            for images, group_real, group_train in modality_parts[name]:
                generated_parts.append(_labelled(images, [name] * len(images), names, "generated"))
                real_parts.append(_relabelled(group_real, name, names))
                if group_train is not None:
                    train_parts.append(_relabelled(group_train, name, names))
        report = evaluate_image_sets(
            _concatenate(generated_parts, names, f"pipeline {pipeline_name}"),
            _concatenate(real_parts, names, f"{split} images of every set, labelled by modality"),
            _concatenate(train_parts, names, f"{train_split} images of every set, labelled by modality") if train_parts else None,
            output_dir=None if output_dir is None else output_dir / MODALITY_FOLDER, seed=seed, progress=progress,
            extra={"pipeline": pipeline_name, "labels": "modality"},
            # one modality: nothing for a modality classifier to tell apart
            **{**metric_options, **({"classifier": False} if len(names) < 2 else {})},
        )
        summary["modality"] = {**_figures(report), "per_modality": {name: _label_figures(report, name) for name in names}}
    summary["paraphrases"] = _paraphrase_figures(summary["groups"])
    summary["duration_s"] = round(time.perf_counter() - started, 3)
    if output_dir is not None:
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / REPORT_FILE).write_text(json.dumps(summary, indent=2, default=_plain) + "\n")
    return summary


def _held_out(real: Any, train_hashes: np.ndarray, where: str, overlap: dict[str, int], allow: bool, exclude: bool) -> Any:
    """`real` without the images whose pixels are those of a training image (`exclude`), or as it is (none, or
    `allow`); a `TrainingOverlapError` otherwise. Counts into `overlap`."""
    from medgen.evaluation.api import TrainingOverlapError

    found = np.isin(real.image_hashes(), train_hashes)
    overlap["n_reference"] += len(real)
    overlap["n_overlap"] += int(found.sum())
    if not found.any() or allow:
        return real
    if not exclude:
        raise TrainingOverlapError(
            f"{int(found.sum())} of the {len(real)} test images of {where} are training images (the same pixels as "
            "images of its training split): scores against them say nothing about unseen images. Pass "
            "--exclude-training-overlap to leave them out and score the rest, or --allow-training-overlap to score "
            "anyway (the evaluation is then marked not held out)"
        )
    if (~found).sum() < 2:
        raise TrainingOverlapError(f"{where}: fewer than two test images are left once its training images are left out")
    overlap["n_excluded"] += int(found.sum())
    print(f"Left out {int(found.sum())} of the {len(real)} test images of {where}: the same pixels as training images", flush=True)
    return real.subset(~found)


def _prompt_accuracy(prompts: list[str], matches: list[bool | None]) -> dict[str, dict[str, float | int]]:
    """Per prompt of a group: how many images, and the finding accuracy on them (none without a classifier)."""
    result: dict[str, dict[str, float | int]] = {}
    for prompt in dict.fromkeys(prompts):
        hits = [match for asked, match in zip(prompts, matches) if asked == prompt and match is not None]
        result[prompt] = {"n": prompts.count(prompt), **({"finding_accuracy": sum(hits) / len(hits)} if hits else {})}
    return result


def _paraphrase_figures(groups: list[dict[str, Any]]) -> dict[str, Any]:
    """Do paraphrases ask for the same finding as the canonical prompt? Finding accuracy on the images of every
    group's canonical prompt (its first) and on those of its paraphrases, pooled over the groups."""
    pooled = {"canonical": [0.0, 0], "paraphrases": [0.0, 0]}
    for group in groups:
        for position, entry in enumerate((group.get("prompt_accuracy") or {}).values()):
            if "finding_accuracy" in entry:
                bucket = pooled["canonical" if position == 0 else "paraphrases"]
                bucket[0] += entry["finding_accuracy"] * entry["n"]
                bucket[1] += entry["n"]
    return {
        f"finding_accuracy_{name}": (hits / count if count else None) for name, (hits, count) in pooled.items()
    } | {f"n_{name}": count for name, (_, count) in pooled.items()}


def _entry(group: PromptGroup) -> dict[str, Any]:
    return {"set": group.set_name, "group": group.name, "modality": group.modality, "label": group.label,
            "filters": group.filters, "prompts": group.prompt_counts, "num_real_test": group.num_real_test}


def _figures(report: dict[str, Any]) -> dict[str, Any]:
    accuracy = report.get("label_accuracy")
    return {
        "fid": report.get("fid"), "kid": (report.get("kid") or {}).get("mean"), "precision": report.get("precision"),
        "recall": report.get("recall"), "n_generated": report.get("n_generated"), "n_real": report.get("n_real"),
        "label_accuracy": accuracy.get("accuracy") if isinstance(accuracy, dict) else accuracy,
        "fid_real_baseline": (report.get("fid_real_baseline") or {}).get("fid"),
        "feature_extractor": (report.get("feature_extractor") or {}).get("name"),
        "memorization": report.get("memorization"),
        "uncertainty": report.get("uncertainty"),  # the bootstrap over the generated images, when drawn
    }


def _label_figures(report: dict[str, Any], label: str) -> dict[str, Any]:
    entry = dict((report.get("per_label") or {}).get(label) or {})
    accuracy = report.get("label_accuracy")
    if isinstance(accuracy, dict):
        per_label = accuracy.get("per_label") or {}
        if label in per_label:
            entry["label_accuracy"] = per_label[label]
    return entry


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def summary_lines(summary: dict[str, Any]) -> list[str]:
    """One line per group (prompts, FID of its label, label accuracy), then per modality."""

    def number(value: Any) -> str:
        return "-" if value is None else f"{value:.4g}"

    lines = []
    for group in summary["groups"]:
        figures = group["label_figures"]
        prompts = "; ".join(f"{prompt!r} x{count}" for prompt, count in group["prompts"].items())
        lines.append(
            f"{group['set']} / {group['group']} (label {group['label']}, {group['num_real_test']} real): FID "
            f"{number(figures.get('fid'))}, label accuracy {number(figures.get('label_accuracy'))}; prompts {prompts}"
        )
    for entry in summary["skipped_groups"]:
        lines.append(f"skipped {entry['set']} / {entry['group']}: {entry['why']}")
    for name, figures in (summary.get("modality") or {}).get("per_modality", {}).items():
        lines.append(f"modality {name}: FID {number(figures.get('fid'))}, modality accuracy {number(figures.get('label_accuracy'))}")
    return lines
