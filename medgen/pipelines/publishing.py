"""The stored evaluation of a saved pipeline, and the privacy gate that reads it before publishing.

`medgen evaluate --pipeline DIR` stores a compact summary of its report as `DIR/evaluation.json`
(`store_evaluation`). The summary names the weights it was made with (a SHA-256 per `*.safetensors`
file), so an evaluation never vouches for other weights: a pipeline trained further, or a folder whose
weights were replaced, counts as unevaluated. Reading the summary back and checking it against the
weights is `medgen.pipelines.evaluation_record` (re-exported here).

`check_before_publishing` is the one gate used by `push_to_hub` and `medgen space build`: a pipeline
folder without a stored evaluation of its weights, or whose evaluation raised the memorization alarm
(generated images closer to training images than held-out real images are), is refused unless the
caller passes the explicit override (`allow_unevaluated=True`, `--allow-unevaluated`).
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from medgen.pipelines.evaluation_record import (  # noqa: F401  (the stored evaluation, read and described there)
    EVALUATION_FILE,
    describe_memorization,
    read_evaluation,
    stored_evaluation,
    weights_sha256,
)
from medgen.pipelines.model_card import update_evaluation_section

logger = logging.getLogger(__name__)

SUMMARY_FORMAT = 1
MEMORIZATION_FIELDS = ("alarm", "n_train_searched", "near_copies", "near_copy_fraction", "real_test_near_copy_fraction", "p_value")


def number(value: Any) -> float | None:
    return None if value is None else float(value)


class PublishingRefused(ValueError):
    """A pipeline may not be published: no stored evaluation of its weights, or a memorization alarm."""


def evaluation_summary(report: dict[str, Any], folder: str | Path) -> dict[str, Any]:
    """The compact summary of a `medgen evaluate` report stored in a pipeline folder: when, with what data,
    how many images, FID against its real-vs-real baseline, recall (per label), label accuracy / TSTR when
    measured, and the memorization verdict with what it searched."""
    from medgen import __version__

    summary: dict[str, Any] = {
        "format": SUMMARY_FORMAT,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "medgen_version": __version__,
        "weights_sha256": weights_sha256(folder),
        "data": {
            "source": report.get("real_source"),
            "split": report.get("split"),
            "train_split": report.get("train_split"),
            "n_real": report.get("n_real"),
            "n_train": report.get("n_train"),
            # False: reference images were training images (evaluate --allow-training-overlap); the gate refuses it
            "held_out": (report.get("training_overlap") or {}).get("held_out"),
            # reference images left out because they are training images (evaluate --exclude-training-overlap)
            "n_excluded_as_training": (report.get("training_overlap") or {}).get("n_excluded", 0),
        },
        "n_generated": report.get("n_generated"),
        "feature_extractor": (report.get("feature_extractor") or {}).get("name"),
        "fid": number(report.get("fid")),
        "fid_real_baseline": number((report.get("fid_real_baseline") or {}).get("fid")),
        "precision": number(report.get("precision")),
        "recall": number(report.get("recall")),
        "fid_training_floor": number(((report.get("baselines") or {}).get("training") or {}).get("fid")),
        "fid_autoencoder_ceiling": number(((report.get("baselines") or {}).get("autoencoder") or {}).get("fid")),
        "memorization": _memorization(report["memorization"]),
    }
    if "sampling" in report:
        summary["sampling"] = {key: report["sampling"].get(key) for key in ("num_inference_steps", "guidance_scale", "seed")}
        if report["sampling"].get("guidance_interval") is not None:  # recorded where not every step was guided
            summary["sampling"]["guidance_interval"] = report["sampling"]["guidance_interval"]
        if report["sampling"].get("sampler"):  # the scheduler the images were drawn with
            summary["sampling"]["sampler"] = report["sampling"]["sampler"]
        for key in ("mask_guidance_scale", "mask_generator_guidance_scale"):  # a mask model: its masks and images
            if report["sampling"].get(key) is not None:
                summary["sampling"][key] = report["sampling"][key]
    recall_per_label = {name: entry["recall"] for name, entry in (report.get("per_label") or {}).items() if "recall" in entry}
    if recall_per_label:
        summary["recall_per_label"] = recall_per_label
    intervals = _intervals(report)
    if intervals:  # how far the figures move with the draw of generated images (evaluate's bootstrap)
        summary["intervals"] = intervals
    if "label_accuracy" in report:
        accuracy = report["label_accuracy"]
        summary["label_accuracy"] = accuracy.get("accuracy")
        if accuracy.get("per_label"):  # each label beside the same classifier on real test images of that label
            real = accuracy.get("real_test_per_label") or {}
            summary["label_accuracy_per_label"] = {
                name: {"generated": number(value), "real_test": number(real.get(name))}
                for name, value in accuracy["per_label"].items()
            }
    if "tstr" in report:
        keys = ("synthetic_trained_auc", "real_trained_auc", "real_trained_same_size_auc", "skipped")
        summary["tstr"] = {key: report["tstr"][key] for key in keys if key in report["tstr"]}
    faithfulness = report.get("mask_faithfulness") or {}
    if "dice_generated" in faithfulness:  # a mask pipeline: do its images follow their masks?
        keys = ("dice_generated", "dice_real_test", "ratio", "dice_generated_nonempty", "dice_real_test_nonempty",
                "ratio_nonempty", "n_test_masks")
        summary["mask_faithfulness"] = {key: faithfulness[key] for key in keys if key in faithfulness}
    generator = report.get("mask_generator") or {}
    if "per_label" in generator:  # its mask generator's masks against the test masks
        keys = ("per_label", "area_distance_mean", "empty_gap_max", "n_masks")
        summary["mask_generator"] = {key: generator[key] for key in keys if key in generator}
        summary["mask_generator"]["guidance_scale"] = generator["sampling"]["guidance_scale"]
    return summary


def _intervals(report: dict[str, Any], per_label_figure: str = "recall") -> dict[str, Any] | None:
    """`{"level", "resamples", "fid": [low, high], "precision": ..., "recall": ..., "recall_per_label": {name: [low,
    high]}}` from the report's bootstrap sections (`per_label_figure`: the per-label figure kept, e.g. "fid" for
    `fid_per_label`); None when the evaluation drew none."""
    uncertainty = report.get("uncertainty") or {}
    if not uncertainty:
        return None
    intervals: dict[str, Any] = {"level": uncertainty["level"], "resamples": uncertainty["resamples"]}
    for key in ("fid", "precision", "recall"):
        if key in uncertainty:
            intervals[key] = [number(uncertainty[key]["low"]), number(uncertainty[key]["high"])]
    per_label = {
        name: [number(entry["uncertainty"][per_label_figure]["low"]), number(entry["uncertainty"][per_label_figure]["high"])]
        for name, entry in (report.get("per_label") or {}).items()
        if per_label_figure in (entry.get("uncertainty") or {})
    }
    if per_label:
        intervals[f"{per_label_figure}_per_label"] = per_label
    return intervals


def prompt_groups_summary(report: dict[str, Any], folder: str | Path) -> dict[str, Any]:
    """The compact summary of a `medgen evaluate --prompt-groups` report (a text model across sets): the
    modality figures (FID per modality against every set's test images, modality accuracy), each set's FID and
    finding accuracy, the prompts each group was scored with, and the memorization verdict of every set (the
    alarm is raised when any set raised it)."""
    from medgen import __version__

    sets = report.get("sets") or {}
    modality = report.get("modality") or {}
    overlaps = [figures.get("training_overlap") or {} for figures in sets.values()]
    unsearched = [name for name, figures in sets.items() if not figures.get("memorization")]
    if unsearched:  # the publishing gate must never read a missing search as "no alarm"
        raise ValueError(f"the prompt-group report has no memorization search for {', '.join(unsearched)}")
    per_set_memorization = {name: _memorization(figures["memorization"]) for name, figures in sets.items()}
    # how far the modality figures move with the draw of generated images: overall, and each modality's FID
    intervals = _intervals({"uncertainty": modality.get("uncertainty"), "per_label": modality.get("per_modality")}, "fid")
    if intervals and "fid_per_label" in intervals:
        intervals["fid_per_modality"] = intervals.pop("fid_per_label")
    summary = {
        "format": SUMMARY_FORMAT,
        "kind": "prompt_groups",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "medgen_version": __version__,
        "weights_sha256": weights_sha256(folder),
        "data": {
            "source": f"{len(sets)} sets: " + ", ".join(sets),
            "split": report.get("split"),
            "train_split": report.get("train_split"),
            "n_real": sum(figures.get("n_real") or 0 for figures in sets.values()),
            "n_train": sum(overlap.get("n_training", 0) for overlap in overlaps),
            "held_out": all(overlap.get("held_out") for overlap in overlaps) if overlaps else None,
            "n_excluded_as_training": sum(overlap.get("n_excluded", 0) for overlap in overlaps),
        },
        "n_generated": sum(figures.get("n_generated") or 0 for figures in sets.values()),
        "feature_extractor": modality.get("feature_extractor"),
        "fid": modality.get("fid"),
        "fid_real_baseline": modality.get("fid_real_baseline"),
        "precision": modality.get("precision"),
        "recall": modality.get("recall"),
        "modality_accuracy": modality.get("label_accuracy"),
        "per_modality": {
            name: {"fid": figures.get("fid"), "modality_accuracy": figures.get("label_accuracy")}
            for name, figures in (modality.get("per_modality") or {}).items()
        },
        "per_set": {
            name: {key: figures.get(key) for key in ("fid", "fid_real_baseline", "precision", "recall", "label_accuracy", "n_real")}
            for name, figures in sets.items()
        },
        "prompts": {f"{group['set']} / {group['group']}": group["prompts"] for group in report.get("groups") or []},
        "paraphrases": dict(report.get("paraphrases") or {}),
        "sampling": dict(report.get("sampling") or {}),
        "memorization": {
            "alarm": any(entry["alarm"] for entry in per_set_memorization.values()),
            "per_set": per_set_memorization,
        },
    }
    if intervals:
        summary["intervals"] = intervals
    return summary


def _memorization(memorization: dict[str, Any]) -> dict[str, Any]:
    """The verdict and, per searched space, the figures kept in a stored summary."""
    return {
        "alarm": bool(memorization["alarm"]),
        **{
            space: {key: memorization[space][key] for key in MEMORIZATION_FIELDS if key in memorization[space]}
            for space in ("pixel", "feature") if space in memorization
        },
    }


def _json_scalar(value: Any) -> Any:
    # Metrics arrive as NumPy scalars from some code paths; JSON wants plain numbers.
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def store_evaluation(folder: str | Path, report: dict[str, Any]) -> Path:
    """Writes `folder/evaluation.json` (atomically) from a `medgen evaluate` report (or a `--prompt-groups`
    summary) and adds its
    "Evaluation" section to the folder's model card; returns the JSON path."""
    from medgen.files import atomic_write

    folder = Path(folder)
    path = folder / EVALUATION_FILE
    with atomic_write(path, "w") as file:
        summary = prompt_groups_summary(report, folder) if "groups" in report else evaluation_summary(report, folder)
        json.dump(summary, file, indent=2, default=_json_scalar)
        file.write("\n")
    update_evaluation_section(folder)
    return path


def carry_evaluation(source: str | Path | None, destination: str | Path) -> bool:
    """Copies `source/evaluation.json` into a freshly saved `destination` when it vouches for the weights
    saved there (an unchanged pipeline re-saved elsewhere); returns whether it did."""
    if source is None or not (Path(source) / EVALUATION_FILE).is_file():
        return False
    source, destination = Path(source), Path(destination)
    if source.resolve() == destination.resolve():
        return False
    try:
        summary = read_evaluation(source)
    except ValueError as error:
        logger.warning("not carrying the stored evaluation into %s: %s", destination, error)
        return False
    if summary.get("weights_sha256") != weights_sha256(destination):
        logger.warning(
            "not carrying %s into %s: it was made for other weights (the pipeline changed since it was evaluated)",
            source / EVALUATION_FILE, destination,
        )
        return False
    from medgen.files import atomic_write

    with atomic_write(destination / EVALUATION_FILE, "w") as file:
        json.dump(summary, file, indent=2)
        file.write("\n")
    return True


def local_pipeline_folder(pipeline: str) -> tuple[Path | None, str | None]:
    """`(folder, None)` for a built-in name or a local pipeline folder that can be written to, else
    `(None, why not)`: results about a pipeline are stored next to its weights only where that is possible."""
    from medgen.files import OutputError, check_writable_dir
    from medgen.pipelines.locate import BUILTIN_PIPELINES, builtin_pipeline_path, looks_like_a_path

    # The same precedence as loading: a built-in name wins over a folder of that name.
    folder = builtin_pipeline_path(pipeline) if pipeline.lower() in BUILTIN_PIPELINES else Path(pipeline).expanduser()
    if not folder.is_dir() and looks_like_a_path(pipeline):
        return None, f"no such folder: {pipeline} ({folder.absolute()} does not exist)"
    if not folder.is_dir():
        return None, (
            f"{pipeline} is a Hub repo, not a local folder; to store results with it, download it "
            f"(hf download {pipeline} --local-dir DIR) and pass DIR"
        )
    try:
        check_writable_dir(folder)
    except OutputError as error:
        return None, str(error)
    return folder, None


def check_before_publishing(
    folder: str | Path,
    allow_unevaluated: bool = False,
    *,
    action: str = "publish",
    override: str = "allow_unevaluated=True",
    name: str | None = None,
    evaluate_target: str | None = None,
) -> str:
    """
    The privacy gate before `push_to_hub` and `medgen space build`. Passes (returning a one-line note of
    what it found) when `folder` holds an evaluation of its current weights without a memorization alarm,
    or when `allow_unevaluated` is set; otherwise raises `PublishingRefused` saying which check failed,
    how to store an evaluation, and the `override` that publishes anyway.

    `name` is how messages call the pipeline (default: the folder's path); `evaluate_target` is the pipeline
    to name in the suggested `medgen evaluate` command (default `folder`).
    """
    summary, problem = stored_evaluation(folder, name)
    if summary is not None and summary["memorization"].get("alarm"):
        problem = (
            f"the stored evaluation of {name or folder} ({summary.get('date', 'undated')}) raised the memorization alarm: "
            f"{describe_memorization(summary['memorization'])}. Generated images that copy training images can "
            "leak patient data"
        )
    if summary is not None and problem is None and (summary.get("data") or {}).get("held_out") is False:
        problem = (
            f"the stored evaluation of {name or folder} ({summary.get('date', 'undated')}) was scored against images "
            "the model was trained on (not held out), so its figures do not vouch for unseen data"
        )
    if problem is None:
        return f"stored evaluation of {summary.get('date', 'undated')}: no memorization alarm ({describe_memorization(summary['memorization'])})"
    if allow_unevaluated:
        note = f"{action} without a clean stored evaluation ({override}): {problem}"
        logger.warning(note)
        return note
    pretrained = Path(__file__).resolve().parent.parent / "pretrained"  # built-ins are stored by their shipping step
    flag = "--store-in-builtin" if Path(folder).resolve().is_relative_to(pretrained) else "--store-in-pipeline"
    command = f"medgen evaluate --pipeline {evaluate_target or folder} --data REAL_DATA --output EVAL_DIR {flag}"
    raise PublishingRefused(
        f"refusing to {action}: {problem}. Store an evaluation with `{command}` (it writes {EVALUATION_FILE} into "
        f"the pipeline folder), or pass {override} to {action} anyway."
    )
