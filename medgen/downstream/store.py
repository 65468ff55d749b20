"""The downstream result of a pipeline, stored next to its weights: a summary JSON, the plot of the task's main
metric and a section of its model card. Classification stores `downstream.json`, `downstream_auroc.svg` and a
"Downstream" section; segmentation (`segmentation_report.SEGMENTATION`) its own files and section beside them.

Like the stored evaluation, the summary names the weights it was measured with (SHA-256 per safetensors
file), so a reader can tell a result about these weights from one about earlier ones.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from medgen.downstream.arms import ARMS
from medgen.downstream.report import CLASSIFICATION_METRICS, auroc_plot_svg, summary_table

SUMMARY_FORMAT = 1


@dataclass(frozen=True)
class StoredResult:
    """What one downstream task stores with a pipeline, and the words of its model card section."""

    file: str  # the summary JSON
    plot_file: str  # the plot of the first metric against the real fraction
    start: str  # the card section's markers
    end: str
    metrics: tuple[tuple[str, str], ...]  # (report key, table heading); the verdict is on the first
    axis_label: str  # the plot's metric axis
    heading: str  # the card section's heading
    intro: Callable[[dict], str]  # the sentence before the table, from the summary
    plot_alt: str
    noun: str  # what is trained on: "images", "pairs"
    model: str  # what is trained: "Classifier", "Segmenter"
    report_fields: tuple[tuple[str, Any], ...]  # report fields copied after the recipe, with their default
    task: str | None = None  # stored as the summary's "task" and named in the printed line; classification: None

    @property
    def verdict(self) -> str:
        return f"verdict_{self.metrics[0][0]}"


def _classification_intro(summary: dict) -> str:
    return (
        f"`medgen downstream` on {summary.get('data')} ({summary['n_real_train']} real training images, "
        f"{summary['n_real_test']} held-out test images; {summary['seeds']} seeds, synthetic ratio "
        f"{summary['synthetic_ratio']:g}{', rare label ' + summary['rare_label'] if summary.get('rare_label') else ''}"
        f"{'; --quick: a smoke test, not a result' if summary.get('quick') else ''}). Test AUROC, mean [95% CI]:"
    )


CLASSIFICATION = StoredResult(
    file="downstream.json",
    plot_file="downstream_auroc.svg",
    start="<!-- medgen-downstream:start -->",
    end="<!-- medgen-downstream:end -->",
    metrics=CLASSIFICATION_METRICS,
    axis_label="test AUROC",
    heading="## Downstream: do these images help a classifier?",
    intro=_classification_intro,
    plot_alt="test AUROC against the real fraction, per arm",
    noun="images",
    model="Classifier",
    report_fields=(("quick", False),),
)


def _mean_ci(summary: dict) -> dict:
    return {"mean": summary.get("mean"), "ci95": summary.get("ci95"), "n": summary.get("n")}


def _recorded_data(data: str | None) -> str | None:
    """The report's data source as a stored summary records it: a path relative to the working directory (the
    folder may be shipped; see `catalog.recorded_path`), also inside "CONFIG (data section)"."""
    from medgen.pipelines.catalog import recorded_path

    if not data:
        return data
    suffix = " (data section)"
    if data.endswith(suffix):
        return recorded_path(data[: -len(suffix)]) + suffix
    return recorded_path(data)


def stored_summary(report: dict[str, Any], folder: str | Path, kind: StoredResult = CLASSIFICATION) -> dict[str, Any]:
    """The parts of a `medgen downstream` report a model card needs: per fraction and arm, each metric (mean,
    95% CI), and the synthetic-minus-duplicated difference with its verdict."""
    from medgen import __version__
    from medgen.pipelines.publishing import weights_sha256

    keys = [key for key, _ in kind.metrics]
    results = []
    for result in report["results"]:
        arms = {
            arm: {"n_train": result["arms"][arm]["n_train"]["mean"], **{key: _mean_ci(result["arms"][arm][key]) for key in keys}}
            for arm in ARMS
        }
        difference = result["synthetic_minus_duplicated"]
        results.append({
            "real_fraction": result["real_fraction"],
            "arms": arms,
            "synthetic_minus_duplicated": {**{key: _mean_ci(difference[key]) for key in keys}, kind.verdict: difference[kind.verdict]},
        })
    return {
        "format": SUMMARY_FORMAT,
        **({"task": kind.task} if kind.task else {}),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "medgen_version": __version__,
        "weights_sha256": weights_sha256(folder),
        "data": _recorded_data(report.get("data")),
        "split": report.get("split"),
        "test_split": report.get("test_split"),
        "n_real_train": report["n_real_train"],
        "n_real_test": report["n_real_test"],
        "label_names": report["label_names"],
        "real_fractions": report["real_fractions"],
        "seeds": report["seeds"],
        "seed": report["seed"],
        "synthetic_ratio": report["synthetic_ratio"],
        "rare_label": report.get("rare_label"),
        "recipe": report["recipe"],
        **{key: report.get(key, default) for key, default in kind.report_fields},
        "interval_method": report.get("interval_method"),
        "warnings": report.get("warnings", []),
        "results": results,
        "table_markdown": summary_table(report, kind.metrics),
    }


def card_section(summary: dict[str, Any], kind: StoredResult = CLASSIFICATION) -> str:
    """The card's section (between markers): the table, the plot and the verdict per fraction."""
    verdicts = [
        f"- {result['real_fraction'] * 100:g}% of the real training {kind.noun}: {result['synthetic_minus_duplicated'][kind.verdict]}."
        for result in summary["results"]
    ]
    lines = [
        kind.heading,
        "",
        kind.intro(summary),
        "",
        summary["table_markdown"],
        "",
        f"![{kind.plot_alt}]({kind.plot_file})",
        "",
        f"Synthetic {kind.noun} count as helping only where real+synthetic beats real+duplicated (the same number of "
        f"extra, re-sampled real {kind.noun}):",
        "",
        *verdicts,
        "",
        f"{kind.model}: {summary['recipe'].get('model')}, {summary['recipe'].get('steps')} steps; "
        f"{summary['recipe'].get('input')}. The summary is `{kind.file}` in this folder.",
    ]
    return "\n".join([kind.start, *lines, kind.end])


# what makes two stored runs one experiment: the same weights, data, arms, seeds and classifier
SAME_EXPERIMENT_KEYS = (
    "format", "task", "weights_sha256", "data", "split", "test_split", "n_real_train", "n_real_test", "label_names",
    "seeds", "seed", "synthetic_ratio", "rare_label", "recipe", "quick",
)


def merge_with_stored(summary: dict[str, Any], path: Path) -> list[float]:
    """Adds to `summary` the results an earlier run of the same experiment stored at `path` for real fractions
    this run did not measure (a run at 0.05, then one at 0.2, store both); returns those fractions. A stored
    result of other weights or settings is not merged: the new one replaces it."""
    try:
        stored = json.loads(path.read_text())
    except (OSError, ValueError):
        return []
    if any(stored.get(key) != summary.get(key) for key in SAME_EXPERIMENT_KEYS):
        return []
    measured = {result["real_fraction"] for result in summary["results"]}
    kept = [result for result in stored.get("results", []) if result["real_fraction"] not in measured]
    if not kept:
        return []
    summary["results"] = sorted([*summary["results"], *kept], key=lambda result: result["real_fraction"])
    summary["real_fractions"] = [result["real_fraction"] for result in summary["results"]]
    summary["warnings"] = list(dict.fromkeys([*stored.get("warnings", []), *summary["warnings"]]))
    return [result["real_fraction"] for result in kept]


def report_view(summary: dict[str, Any]) -> dict[str, Any]:
    """The stored summary in the shape of a `medgen downstream` report, for its table and plot."""
    results = [
        {**result, "arms": {arm: {**values, "n_train": {"mean": values["n_train"]}} for arm, values in result["arms"].items()}}
        for result in summary["results"]
    ]
    return {"results": results, "interval_method": summary.get("interval_method"), "warnings": summary.get("warnings", [])}


def store_downstream(
    folder: str | Path, report: dict[str, Any], kind: StoredResult = CLASSIFICATION
) -> tuple[Path, list[float]]:
    """Writes the summary JSON and the plot into `folder` (atomically) and the card's section. Fractions an earlier
    run of the same experiment stored, and this one did not measure, are kept beside it. Returns the JSON path and
    those kept fractions."""
    from medgen.files import atomic_write
    from medgen.pipelines.model_card import replace_card_section

    folder = Path(folder)
    summary = stored_summary(report, folder, kind)
    path = folder / kind.file
    kept = merge_with_stored(summary, path)
    if kept:
        view = report_view(summary)
        summary["table_markdown"] = summary_table(view, kind.metrics)
    else:
        view = report
    with atomic_write(folder / kind.plot_file, "w") as file:
        file.write(auroc_plot_svg(view, metric=kind.metrics[0][0], axis_label=kind.axis_label) + "\n")
    with atomic_write(path, "w") as file:
        json.dump(summary, file, indent=2)
        file.write("\n")
    replace_card_section(folder, kind.start, kind.end, card_section(summary, kind))
    return path, kept


def store_in_pipeline_folder(pipeline: str, report: dict[str, Any], kind: StoredResult = CLASSIFICATION) -> str:
    """Stores the result with the pipeline when it is a local, writable folder; a line saying where, or why not."""
    from medgen.files import OutputError
    from medgen.pipelines.publishing import local_pipeline_folder

    folder, problem = local_pipeline_folder(pipeline)
    if folder is None:
        return f"note: result not stored in the pipeline folder: {problem}; the report above is complete"
    try:
        path, kept = store_downstream(folder, report, kind)
    except OutputError as error:
        return f"note: result not stored in the pipeline folder ({error}); the report above is complete"
    task = f"{kind.task} " if kind.task else ""
    also = f"; kept the stored fractions {', '.join(f'{f:g}' for f in kept)} of the same experiment" if kept else ""
    return f"{task}downstream result stored: {path} (and the {task}Downstream section of {Path(folder) / 'README.md'}){also}"
