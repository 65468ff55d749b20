"""`report.json` (every number) and `report.html` (tables, a metric-vs-fraction plot, how to read them).

The writers are shared by both tasks, given the task's metric columns and wording (`write_report_files`,
`fraction_sections`, `html_page`, `summary_table`); `write_report` is the classification report, with the AUROC
plot also saved as `auroc.svg` (segmentation: `segmentation_report`). The plot is a hand-written SVG (no
plotting library needed).
"""

from __future__ import annotations

import html
import json
import math
from pathlib import Path
from typing import Any, Callable

from medgen.downstream.arms import ARMS
from medgen.evaluation.report import to_jsonable

COLOURS = {"real": "#1f77b4", "real+synthetic": "#d62728", "real+duplicated": "#2ca02c", "synthetic": "#9467bd"}


def _mean_ci(summary: dict | None, digits: int = 3) -> str:
    if not summary or summary.get("mean") is None:
        return "n/a"
    text = f"{summary['mean']:.{digits}f}"
    if summary.get("ci95"):
        low, high = summary["ci95"]
        text += f" [{low:.{digits}f}, {high:.{digits}f}]"
    return text


def auroc_plot_svg(report: dict, width: int = 560, height: int = 340, metric: str = "auroc", axis_label: str = "test AUROC") -> str:
    """AUROC (mean, 95% CI bars) against real fraction (log axis when the fractions span a factor > 4), one line per arm.

    `metric` / `axis_label` plot another metric of the arms instead (segmentation: "dice", "test Dice")."""
    left, right, top, bottom = 56, 150, 20, 44
    fractions = [result["real_fraction"] for result in report["results"]]
    values = [
        value
        for result in report["results"]
        for arm in ARMS
        for value in [result["arms"][arm][metric]["mean"], *(result["arms"][arm][metric]["ci95"] or [])]
        if value is not None
    ]
    low, high = (min(values), max(values)) if values else (0.5, 1.0)
    low, high = max(0.0, math.floor(low * 20) / 20), min(1.0, math.ceil(high * 20) / 20)
    if high - low < 0.05:
        low, high = max(0.0, low - 0.05), min(1.0, high + 0.05)
    use_log = min(fractions) > 0 and max(fractions) / min(fractions) > 4
    scale = math.log10 if use_log else (lambda value: value)
    x_low, x_high = scale(min(fractions)), scale(max(fractions))
    span = (x_high - x_low) or 1.0
    plot_width, plot_height = width - left - right, height - top - bottom

    def x(fraction: float) -> float:
        inner = plot_width - 40  # keep the first and last points off the axes
        return left + 20 + (scale(fraction) - x_low) / span * inner if len(set(fractions)) > 1 else left + plot_width / 2

    def y(value: float) -> float:
        return top + (high - value) / (high - low) * plot_height

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="11">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + plot_height}" stroke="black"/>',
        f'<line x1="{left}" y1="{top + plot_height}" x2="{left + plot_width}" y2="{top + plot_height}" stroke="black"/>',
        f'<text x="{left + plot_width / 2}" y="{height - 8}" text-anchor="middle">real fraction{" (log scale)" if use_log else ""}</text>',
        f'<text x="14" y="{top + plot_height / 2}" text-anchor="middle" transform="rotate(-90 14 {top + plot_height / 2})">{html.escape(axis_label)}</text>',
    ]
    for step in range(5):
        value = low + (high - low) * step / 4
        parts.append(f'<text x="{left - 6}" y="{y(value) + 4:.1f}" text-anchor="end">{value:.2f}</text>')
        parts.append(f'<line x1="{left}" y1="{y(value):.1f}" x2="{left + plot_width}" y2="{y(value):.1f}" stroke="#ddd"/>')
    for fraction in sorted(set(fractions)):
        parts.append(f'<text x="{x(fraction):.1f}" y="{top + plot_height + 16}" text-anchor="middle">{fraction:g}</text>')
    for offset, arm in enumerate(ARMS):
        colour = COLOURS[arm]
        dodge = (offset - 1.5) * 3  # keep the CI bars of the four arms apart
        points = []
        for result in sorted(report["results"], key=lambda r: r["real_fraction"]):
            summary = result["arms"][arm][metric]
            if summary["mean"] is None:
                continue
            px = x(result["real_fraction"]) + dodge
            points.append(f"{px:.1f},{y(summary['mean']):.1f}")
            if summary["ci95"]:
                ci_low, ci_high = (min(max(v, low), high) for v in summary["ci95"])
                parts.append(f'<line x1="{px:.1f}" y1="{y(ci_low):.1f}" x2="{px:.1f}" y2="{y(ci_high):.1f}" stroke="{colour}"/>')
            parts.append(f'<circle cx="{px:.1f}" cy="{y(summary["mean"]):.1f}" r="3" fill="{colour}"/>')
        if len(points) > 1:
            parts.append(f'<polyline points="{" ".join(points)}" fill="none" stroke="{colour}" stroke-width="2"/>')
        legend_y = top + 14 + offset * 18
        parts.append(f'<line x1="{width - right + 12}" y1="{legend_y - 4}" x2="{width - right + 32}" y2="{legend_y - 4}" stroke="{colour}" stroke-width="2"/>')
        parts.append(f'<text x="{width - right + 38}" y="{legend_y}">{html.escape(arm)}</text>')
    parts.append("</svg>")
    return "\n".join(parts)


def _table(rows: list[list[str]], header: list[str]) -> str:
    head = "".join(f"<th>{html.escape(cell)}</th>" for cell in header)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def interval_note(report: dict) -> str:
    """One sentence: how the intervals were computed (older reports without `interval_method` used t-intervals)."""
    method = report.get("interval_method")
    if not method:
        return "95% CIs: mean +/- t(0.975, n-1) x standard error over seeds (an older report)."
    return (
        f"95% CIs: {method['name']} ({method['replicates']} replicates; paired for differences), "
        "inside each metric's range."
    )


CLASSIFICATION_METRICS = (("auroc", "AUROC mean [95% CI]"), ("balanced_accuracy", "balanced accuracy mean [95% CI]"))


def summary_table(report: dict, metrics: tuple[tuple[str, str], ...] = CLASSIFICATION_METRICS) -> str:
    """Markdown table: one row per (fraction, arm), each metric (key, column heading) with its 95% CI, and the
    control difference; then how the intervals were computed and any warning (e.g. too few seeds)."""
    lines = [
        "| real fraction | arm | n train | " + " | ".join(heading for _, heading in metrics) + " |",
        "|---|---|---|" + "---|" * len(metrics),
    ]
    for result in report["results"]:
        for arm in ARMS:
            values = result["arms"][arm]
            cells = " | ".join(_mean_ci(values[key]) for key, _ in metrics)
            lines.append(f"| {result['real_fraction']:g} | {arm} | {values['n_train']['mean']:.0f} | {cells} |")
        difference = result["synthetic_minus_duplicated"]
        cells = " | ".join(_mean_ci(difference[key]) for key, _ in metrics)
        lines.append(f"| {result['real_fraction']:g} | **synthetic - duplicated** | | {cells} |")
    lines += ["", interval_note(report)]
    lines += [f"**Warning:** {warning}" for warning in report.get("warnings", [])]
    return "\n".join(lines)


def _per_seed(summary: dict) -> str:
    return ", ".join("n/a" if v is None else f"{v:.3f}" for v in summary["values"])


def fraction_sections(
    report: dict,
    columns: tuple[tuple[str, str], ...],
    metric_name: str,
    noun: str,
    label_headings: list[str],
    label_cells: Callable[[dict, str | None], list[str]],
) -> str:
    """One HTML table per real fraction: a row per arm and one for the control difference, with each metric of
    `columns` (key, heading), the label columns (`label_cells(result, arm)`; arm None: the difference row) and
    the first metric per seed; then the verdict on the first metric."""
    primary = columns[0][0]
    sections = []
    for result in report["results"]:
        rows = []
        for arm in ARMS:
            values = result["arms"][arm]
            rows.append(
                [f"<b>{html.escape(arm)}</b>", f"{values['n_train']['mean']:.0f}", *(_mean_ci(values[key]) for key, _ in columns)]
                + label_cells(result, arm)
                + [_per_seed(values[primary])]
            )
        difference = result["synthetic_minus_duplicated"]
        rows.append(
            ["<b>real+synthetic minus real+duplicated</b>", "", *(_mean_ci(difference[key]) for key, _ in columns)]
            + label_cells(result, None)
            + [_per_seed(difference[primary])]
        )
        table = _table(rows, ["arm", "n train", *(heading for _, heading in columns), *label_headings, f"{metric_name} per seed"])
        sections.append(
            f"<h2>real fraction {result['real_fraction']:g} ({min(result['n_real'])}-{max(result['n_real'])} real {noun})</h2>"
            f"{table}<p><b>Verdict ({metric_name}):</b> {html.escape(difference['verdict_' + primary])}.</p>"
        )
    return "".join(sections)


def html_page(report: dict, *, title: str, question: str, noun: str, about: str, how_to_read: str, svg: str, sections: str, model: str) -> str:
    """`report.html`: the question, what was compared (`about`), how to read it, the plot, the tables and the recipe."""
    recipe = "".join(f"<li><b>{html.escape(str(k))}</b>: {html.escape(str(v))}</li>" for k, v in report["recipe"].items())
    source = report.get("pipeline") or report["synthetic"].get("folder")
    warnings = "".join(
        f'<p style="background:#fff3cd;padding:6px"><b>Warning:</b> {html.escape(text)}</p>' for text in report.get("warnings", [])
    )
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>{title}</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}td:first-child{{text-align:left}}</style></head><body>
<h1>{question}</h1>
<p>Synthetic {noun} from <code>{html.escape(str(source))}</code>; real data <code>{html.escape(str(report.get('data', '')))}</code>:
{about}
{('of label ' + html.escape(report['rare_label']) + ' only') if report['rare_label'] else 'label-balanced'}.</p>
<p>How to read: {how_to_read}
{html.escape(interval_note(report))} {html.escape((report.get("interval_method") or {}).get("description", ""))}</p>
{warnings}{svg}
{sections}
<h2>{model} recipe (the same for every arm)</h2><ul>{recipe}</ul>
<p>Research and teaching only, not for diagnosis.</p></body></html>
"""


def write_report_files(report: dict[str, Any], output: str | Path, metric: str, axis_label: str, page: Callable[[dict, str], str]) -> Path:
    """Writes `report.json`, the plot of `metric` (`<metric>.svg`) and `report.html` (`page(report, svg)`), each
    whole or not at all; returns the folder."""
    from medgen.files import atomic_write

    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    report = to_jsonable(report)
    with atomic_write(output / "report.json", "w") as file:
        file.write(json.dumps(report, indent=2) + "\n")
    svg = auroc_plot_svg(report, metric=metric, axis_label=axis_label)
    with atomic_write(output / f"{metric}.svg", "w") as file:
        file.write(svg + "\n")
    with atomic_write(output / "report.html", "w") as file:
        file.write(page(report, svg))
    return output


CLASSIFICATION_COLUMNS = (("auroc", "AUROC [95% CI]"), ("balanced_accuracy", "balanced accuracy [95% CI]"))


def _classification_page(report: dict, svg: str) -> str:
    labels = report["label_names"]

    def sensitivity(result: dict, arm: str | None) -> list[str]:
        values = result["arms"][arm] if arm is not None else result["synthetic_minus_duplicated"]
        return [_mean_ci(values["sensitivity"][name]) for name in labels]

    sections = fraction_sections(report, CLASSIFICATION_COLUMNS, "AUROC", "images", [f"sensitivity {name}" for name in labels], sensitivity)
    about = (
        f"{report['n_real_train']} training images, {report['n_real_test']} held-out test images (never trained on).\n"
        f"{report['seeds']} seed(s) per real fraction; extra images: {report['synthetic_ratio']:g} x the real subset,"
    )
    how_to_read = """<b>real+duplicated</b> is the control. It adds exactly as many images, with the same labels, as
<b>real+synthetic</b> does, but they are re-sampled real images. Synthetic images are useful beyond "more images"
only where the difference <i>real+synthetic minus real+duplicated</i> has a 95% interval above 0."""
    return html_page(
        report, title="medgen downstream", question="Do the synthetic images help a classifier?", noun="images",
        about=about, how_to_read=how_to_read, svg=svg, sections=sections, model="Classifier",
    )


def write_report(report: dict[str, Any], output: str | Path) -> Path:
    """`report.json`, `auroc.svg` and `report.html` of a classification run; returns the folder."""
    return write_report_files(report, output, "auroc", "test AUROC", _classification_page)
