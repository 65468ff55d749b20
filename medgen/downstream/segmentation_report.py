"""Report and stored result of `medgen downstream --task segmentation`: `report.json`, `report.html`, `dice.svg`;
with a local pipeline also `downstream_segmentation.json`, `downstream_dice.svg` and a "Downstream:
segmentation" section of its model card (beside, not instead of, the classification result). The writers are
those of the classification report (`report`, `store`), given Dice columns and the segmentation wording."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medgen.downstream.report import fraction_sections, html_page, write_report_files
from medgen.downstream.report import summary_table as metric_summary_table
from medgen.downstream.store import StoredResult

SEGMENTATION_METRICS = (("dice", "Dice mean [95% CI]"), ("dice_nonempty", "Dice, non-empty masks [95% CI]"))


def summary_table(report: dict) -> str:
    """Markdown table: one row per (fraction, arm), Dice (all test pairs; non-empty masks) with 95% CIs, and the
    control difference; then how the intervals were computed and any warning."""
    return metric_summary_table(report, SEGMENTATION_METRICS)


SEGMENTATION_COLUMNS = (("dice", "Dice [95% CI]"), ("dice_nonempty", "Dice, non-empty masks [95% CI]"))


def _segmentation_page(report: dict, svg: str) -> str:
    labels = report["label_names"]

    def dice_per_label(result: dict, arm: str | None) -> list[str]:
        if arm is None:
            return [""] * len(labels)
        runs = [run for run in report["runs"] if run["arm"] == arm and run["real_fraction"] == result["real_fraction"]]
        seeds = max(1, len(result["arms"][arm]["dice"]["values"]))
        return [f"{sum(run['dice_per_label'].get(name, 0.0) for run in runs) / seeds:.3f}" for name in labels]

    sections = fraction_sections(report, SEGMENTATION_COLUMNS, "Dice", "pairs", [f"Dice {name}" for name in labels], dice_per_label)
    about = (
        f"{report['n_real_train']} training pairs, {report['n_real_test']} held-out test pairs (never trained on;\n"
        f"{report['n_test_empty_masks']} with an empty mask). {report['seeds']} seed(s) per real fraction; extra pairs:\n"
        f"{report['synthetic_ratio']:g} x the real subset,"
    )
    how_to_read = """Dice is per test image and mask class, averaged (an empty reference mask scores 1 when nothing is
predicted, else 0); "non-empty masks" averages over the test pairs that hold a structure only. <b>real+duplicated</b>
is the control: it adds exactly as many pairs, with the same labels, as <b>real+synthetic</b> does, but they are
re-sampled real pairs. Synthetic pairs are useful beyond "more pairs" only where the difference
<i>real+synthetic minus real+duplicated</i> has a 95% interval above 0."""
    return html_page(
        report, title="medgen downstream: segmentation", question="Do the synthetic image + mask pairs help a segmenter?",
        noun="pairs", about=about, how_to_read=how_to_read, svg=svg, sections=sections, model="Segmenter",
    )


def write_report(report: dict[str, Any], output: str | Path) -> Path:
    """`report.json`, `dice.svg` and `report.html` of a segmentation run; returns the folder."""
    return write_report_files(report, output, "dice", "test Dice", _segmentation_page)


def _card_intro(summary: dict) -> str:
    return (
        f"`medgen downstream --task segmentation` on {summary.get('data')} ({summary['n_real_train']} real training "
        f"pairs, {summary['n_real_test']} held-out test pairs; {summary['seeds']} seeds, synthetic ratio "
        f"{summary['synthetic_ratio']:g}), Dice on the real test pairs:"
    )


SEGMENTATION = StoredResult(
    file="downstream_segmentation.json",
    plot_file="downstream_dice.svg",
    start="<!-- medgen-downstream-segmentation:start -->",
    end="<!-- medgen-downstream-segmentation:end -->",
    metrics=SEGMENTATION_METRICS,
    axis_label="test Dice",
    heading="## Downstream: do these image + mask pairs help a segmenter?",
    intro=_card_intro,
    plot_alt="Dice against the real fraction",
    noun="pairs",
    model="Segmenter",
    report_fields=(("interval_method", None),),
    task="segmentation",
)
