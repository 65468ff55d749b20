"""Report and stored result of `medgen downstream --task segmentation`: `report.json`, `report.html`, `dice.svg`;
with a local pipeline also `downstream_segmentation.json`, `downstream_dice.svg` and a "Downstream:
segmentation" section of its model card (beside, not instead of, the classification result)."""

from __future__ import annotations

import html
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from medgen.downstream.arms import ARMS
from medgen.downstream.report import _mean_ci, _table, auroc_plot_svg, interval_note
from medgen.downstream.report import summary_table as metric_summary_table
from medgen.evaluation.report import to_jsonable

STORED_FILE = "downstream_segmentation.json"
PLOT_FILE = "downstream_dice.svg"
SECTION_START = "<!-- medgen-downstream-segmentation:start -->"
SECTION_END = "<!-- medgen-downstream-segmentation:end -->"
SUMMARY_FORMAT = 1


def dice_plot_svg(report: dict) -> str:
    return auroc_plot_svg(report, metric="dice", axis_label="test Dice")


SEGMENTATION_METRICS = (("dice", "Dice mean [95% CI]"), ("dice_nonempty", "Dice, non-empty masks [95% CI]"))


def summary_table(report: dict) -> str:
    """Markdown table: one row per (fraction, arm), Dice (all test pairs; non-empty masks) with 95% CIs, and the
    control difference; then how the intervals were computed and any warning."""
    return metric_summary_table(report, SEGMENTATION_METRICS)


def write_report(report: dict[str, Any], output: str | Path) -> Path:
    from medgen.files import atomic_write

    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    report = to_jsonable(report)
    with atomic_write(output / "report.json", "w") as file:
        file.write(json.dumps(report, indent=2) + "\n")
    svg = dice_plot_svg(report)
    with atomic_write(output / "dice.svg", "w") as file:
        file.write(svg + "\n")
    labels = report["label_names"]
    sections = []
    for result in report["results"]:
        rows = []
        for arm in ARMS:
            values = result["arms"][arm]
            per_label = [
                sum(run["dice_per_label"].get(name, 0.0) for run in report["runs"]
                    if run["arm"] == arm and run["real_fraction"] == result["real_fraction"]) / max(1, len(values["dice"]["values"]))
                for name in labels
            ]
            rows.append(
                [f"<b>{html.escape(arm)}</b>", f"{values['n_train']['mean']:.0f}", _mean_ci(values["dice"]), _mean_ci(values["dice_nonempty"])]
                + [f"{value:.3f}" for value in per_label]
                + [", ".join("n/a" if v is None else f"{v:.3f}" for v in values["dice"]["values"])]
            )
        difference = result["synthetic_minus_duplicated"]
        rows.append(
            ["<b>real+synthetic minus real+duplicated</b>", "", _mean_ci(difference["dice"]), _mean_ci(difference["dice_nonempty"])]
            + [""] * len(labels)
            + [", ".join("n/a" if v is None else f"{v:.3f}" for v in difference["dice"]["values"])]
        )
        table = _table(
            rows,
            ["arm", "n train", "Dice [95% CI]", "Dice, non-empty masks [95% CI]"]
            + [f"Dice {name}" for name in labels]
            + ["Dice per seed"],
        )
        sections.append(
            f"<h2>real fraction {result['real_fraction']:g} ({min(result['n_real'])}-{max(result['n_real'])} real pairs)</h2>"
            f"{table}<p><b>Verdict (Dice):</b> {html.escape(difference['verdict_dice'])}.</p>"
        )
    recipe = "".join(f"<li><b>{html.escape(str(k))}</b>: {html.escape(str(v))}</li>" for k, v in report["recipe"].items())
    source = report.get("pipeline") or report["synthetic"].get("folder")
    warnings = "".join(
        f'<p style="background:#fff3cd;padding:6px"><b>Warning:</b> {html.escape(text)}</p>' for text in report.get("warnings", [])
    )
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>medgen downstream: segmentation</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}td:first-child{{text-align:left}}</style></head><body>
<h1>Do the synthetic image + mask pairs help a segmenter?</h1>
<p>Synthetic pairs from <code>{html.escape(str(source))}</code>; real data <code>{html.escape(str(report.get('data', '')))}</code>:
{report['n_real_train']} training pairs, {report['n_real_test']} held-out test pairs (never trained on;
{report['n_test_empty_masks']} with an empty mask). {report['seeds']} seed(s) per real fraction; extra pairs:
{report['synthetic_ratio']:g} x the real subset,
{('of label ' + html.escape(report['rare_label']) + ' only') if report['rare_label'] else 'label-balanced'}.</p>
<p>How to read: Dice is per test image and mask class, averaged (an empty reference mask scores 1 when nothing is
predicted, else 0); "non-empty masks" averages over the test pairs that hold a structure only. <b>real+duplicated</b>
is the control: it adds exactly as many pairs, with the same labels, as <b>real+synthetic</b> does, but they are
re-sampled real pairs. Synthetic pairs are useful beyond "more pairs" only where the difference
<i>real+synthetic minus real+duplicated</i> has a 95% interval above 0.
{html.escape(interval_note(report))} {html.escape((report.get("interval_method") or {}).get("description", ""))}</p>
{warnings}{svg}
{''.join(sections)}
<h2>Segmenter recipe (the same for every arm)</h2><ul>{recipe}</ul>
<p>Research and teaching only, not for diagnosis.</p></body></html>
"""
    with atomic_write(output / "report.html", "w") as file:
        file.write(page)
    return output


def _mean_interval(summary: dict) -> dict:
    return {"mean": summary.get("mean"), "ci95": summary.get("ci95"), "n": summary.get("n")}


def stored_summary(report: dict[str, Any], folder: str | Path) -> dict[str, Any]:
    """What a model card needs, naming the weights it was measured with (SHA-256 per safetensors file)."""
    from medgen import __version__
    from medgen.pipelines.publishing import weights_sha256

    results = []
    for result in report["results"]:
        difference = result["synthetic_minus_duplicated"]
        results.append({
            "real_fraction": result["real_fraction"],
            "arms": {
                arm: {
                    "n_train": result["arms"][arm]["n_train"]["mean"],
                    "dice": _mean_interval(result["arms"][arm]["dice"]),
                    "dice_nonempty": _mean_interval(result["arms"][arm]["dice_nonempty"]),
                }
                for arm in ARMS
            },
            "synthetic_minus_duplicated": {
                "dice": _mean_interval(difference["dice"]),
                "dice_nonempty": _mean_interval(difference["dice_nonempty"]),
                "verdict_dice": difference["verdict_dice"],
            },
        })
    return {
        "format": SUMMARY_FORMAT,
        "task": "segmentation",
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
        "interval_method": report.get("interval_method"),
        "results": results,
        "table_markdown": summary_table(report),
    }


def card_section(summary: dict[str, Any]) -> str:
    verdicts = [
        f"- {result['real_fraction']:g} of the real training pairs: {result['synthetic_minus_duplicated']['verdict_dice']}."
        for result in summary["results"]
    ]
    lines = [
        "## Downstream: do these image + mask pairs help a segmenter?",
        "",
        f"`medgen downstream --task segmentation` on {summary.get('data')} ({summary['n_real_train']} real training "
        f"pairs, {summary['n_real_test']} held-out test pairs; {summary['seeds']} seeds, synthetic ratio "
        f"{summary['synthetic_ratio']:g}), Dice on the real test pairs:",
        "",
        summary["table_markdown"],
        "",
        f"![Dice against the real fraction]({PLOT_FILE})",
        "",
        "Synthetic pairs count as helping only where real+synthetic beats real+duplicated (the same number of "
        "extra, re-sampled real pairs):",
        "",
        *verdicts,
        "",
        f"Segmenter: {summary['recipe'].get('model')}, {summary['recipe'].get('steps')} steps; "
        f"{summary['recipe'].get('input')}. The summary is `{STORED_FILE}` in this folder.",
    ]
    return "\n".join([SECTION_START, *lines, SECTION_END])


def store_in_pipeline_folder(pipeline: str, report: dict[str, Any]) -> str:
    """Stores the result with the pipeline when it is a local, writable folder; a line saying where, or why not."""
    from medgen.files import OutputError, atomic_write
    from medgen.pipelines.model_card import replace_card_section
    from medgen.pipelines.publishing import local_pipeline_folder

    folder, problem = local_pipeline_folder(pipeline)
    if folder is None:
        return f"note: result not stored in the pipeline folder: {problem}; the report above is complete"
    try:
        summary = stored_summary(report, folder)
        with atomic_write(Path(folder) / PLOT_FILE, "w") as file:
            file.write(dice_plot_svg(report) + "\n")
        path = Path(folder) / STORED_FILE
        with atomic_write(path, "w") as file:
            json.dump(summary, file, indent=2)
            file.write("\n")
        replace_card_section(folder, SECTION_START, SECTION_END, card_section(summary))
    except OutputError as error:
        return f"note: result not stored in the pipeline folder ({error}); the report above is complete"
    return f"segmentation downstream result stored: {path} (and the segmentation Downstream section of {Path(folder) / 'README.md'})"
