"""The downstream result of a pipeline, stored next to its weights: `downstream.json`, the AUROC plot and a
"Downstream" section of its model card.

Like the stored evaluation, the summary names the weights it was measured with (SHA-256 per safetensors
file), so a reader can tell a result about these weights from one about earlier ones.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from medgen.downstream.arms import ARMS
from medgen.downstream.report import auroc_plot_svg, summary_table

DOWNSTREAM_FILE = "downstream.json"
PLOT_FILE = "downstream_auroc.svg"
DOWNSTREAM_START = "<!-- medgen-downstream:start -->"
DOWNSTREAM_END = "<!-- medgen-downstream:end -->"
SUMMARY_FORMAT = 1


def _mean_ci(summary: dict) -> dict:
    return {"mean": summary.get("mean"), "ci95": summary.get("ci95"), "n": summary.get("n")}


def downstream_summary(report: dict[str, Any], folder: str | Path) -> dict[str, Any]:
    """The parts of a `medgen downstream` report a model card needs: per fraction and arm, AUROC and balanced
    accuracy (mean, 95% CI), and the synthetic-minus-duplicated difference with its verdict."""
    from medgen import __version__
    from medgen.pipelines.publishing import weights_sha256

    results = []
    for result in report["results"]:
        arms = {
            arm: {
                "n_train": result["arms"][arm]["n_train"]["mean"],
                "auroc": _mean_ci(result["arms"][arm]["auroc"]),
                "balanced_accuracy": _mean_ci(result["arms"][arm]["balanced_accuracy"]),
            }
            for arm in ARMS
        }
        difference = result["synthetic_minus_duplicated"]
        results.append({
            "real_fraction": result["real_fraction"],
            "arms": arms,
            "synthetic_minus_duplicated": {
                "auroc": _mean_ci(difference["auroc"]),
                "balanced_accuracy": _mean_ci(difference["balanced_accuracy"]),
                "verdict_auroc": difference["verdict_auroc"],
            },
        })
    return {
        "format": SUMMARY_FORMAT,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "medgen_version": __version__,
        "weights_sha256": weights_sha256(folder),
        "data": report.get("data"),
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
        "quick": report.get("quick", False),
        "results": results,
        "table_markdown": summary_table(report),
    }


def downstream_section(summary: dict[str, Any]) -> str:
    """The card's "Downstream" section (between markers): the table, the plot and the verdict per fraction."""
    verdicts = [
        f"- {result['real_fraction']:g} of the real training images: {result['synthetic_minus_duplicated']['verdict_auroc']}."
        for result in summary["results"]
    ]
    lines = [
        "## Downstream: do these images help a classifier?",
        "",
        f"`medgen downstream` on {summary.get('data')} ({summary['n_real_train']} real training images, "
        f"{summary['n_real_test']} held-out test images; {summary['seeds']} seeds, synthetic ratio "
        f"{summary['synthetic_ratio']:g}{', rare label ' + summary['rare_label'] if summary.get('rare_label') else ''}"
        f"{'; --quick: a smoke test, not a result' if summary.get('quick') else ''}). Test AUROC, mean [95% CI]:",
        "",
        summary["table_markdown"],
        "",
        f"![test AUROC against the real fraction, per arm]({PLOT_FILE})",
        "",
        "Synthetic images count as helping only where real+synthetic beats real+duplicated (the same number of "
        "extra, re-sampled real images):",
        "",
        *verdicts,
        "",
        f"Classifier: {summary['recipe'].get('model')}, {summary['recipe'].get('steps')} steps; "
        f"{summary['recipe'].get('input')}. The summary is `{DOWNSTREAM_FILE}` in this folder.",
    ]
    return "\n".join([DOWNSTREAM_START, *lines, DOWNSTREAM_END])


def store_downstream(folder: str | Path, report: dict[str, Any]) -> Path:
    """Writes `folder/downstream.json` and the plot (atomically) and the card's "Downstream" section; returns
    the JSON path."""
    from medgen.files import atomic_write
    from medgen.pipelines.model_card import replace_card_section

    folder = Path(folder)
    summary = downstream_summary(report, folder)
    path = folder / DOWNSTREAM_FILE
    with atomic_write(folder / PLOT_FILE, "w") as file:
        file.write(auroc_plot_svg(report) + "\n")
    with atomic_write(path, "w") as file:
        json.dump(summary, file, indent=2)
        file.write("\n")
    replace_card_section(folder, DOWNSTREAM_START, DOWNSTREAM_END, downstream_section(summary))
    return path


def store_in_pipeline_folder(pipeline: str, report: dict[str, Any]) -> str:
    """Stores the result with the pipeline when it is a local, writable folder; a line saying where, or why not."""
    from medgen.files import OutputError
    from medgen.pipelines.publishing import local_pipeline_folder

    folder, problem = local_pipeline_folder(pipeline)
    if folder is None:
        return f"note: result not stored in the pipeline folder: {problem}; the report above is complete"
    try:
        path = store_downstream(folder, report)
    except OutputError as error:
        return f"note: result not stored in the pipeline folder ({error}); the report above is complete"
    return f"downstream result stored: {path} (and the Downstream section of {folder / 'README.md'})"
