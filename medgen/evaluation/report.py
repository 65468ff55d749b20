"""Writes `report.json` (every number) and `report.html` (a metric table, figures and how to read them)."""

from __future__ import annotations

import html
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from medgen.files import atomic_write


def to_jsonable(value: Any) -> Any:
    """Drops private keys (leading `_`, e.g. raw distance arrays) and turns numpy scalars into floats; NaN -> None."""
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items() if not str(k).startswith("_")}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist())
    if isinstance(value, (np.floating, float)):
        value = float(value)
        return None if math.isnan(value) or math.isinf(value) else value
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


def write_json(report: dict, path: str | Path) -> Path:
    path = Path(path)
    with atomic_write(path, "w") as file:  # complete or absent, never truncated
        file.write(json.dumps(to_jsonable(report), indent=2) + "\n")
    return path


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    return html.escape(str(value))


# (label, how to get the value from the report, what a good value looks like)
SUMMARY_ROWS = (
    ("FID", lambda r: r.get("fid"), "lower is better; read it between the floors and the ceiling below"),
    ("FID real baseline (two real subsets)", lambda r: (r.get("fid_real_baseline") or {}).get("fid"), "the floor at this N"),
    ("KID mean", lambda r: (r.get("kid") or {}).get("mean"), "lower is better; ~0 for matching distributions"),
    ("KID std", lambda r: (r.get("kid") or {}).get("std"), ""),
    ("Precision", lambda r: r.get("precision"), "realism: share of generated images inside the real manifold"),
    ("Recall", lambda r: r.get("recall"), "coverage: share of real images inside the generated manifold"),
    ("FID, precision, recall: intervals", lambda r: interval_cell(r.get("uncertainty")),
     "how far each figure moves with the draw of generated images alone (bootstrap); a smaller difference between two "
     "models is not told apart"),
    ("FRD (radiomics)", lambda r: (r.get("frd") or {}).get("frd", (r.get("frd") or {}).get("skipped")),
     "Fréchet Radiomics Distance, log scale: lower is better; compare with its real baseline below"),
    ("FRD real baseline (two real subsets)", lambda r: ((r.get("frd") or {}).get("frd_real_baseline") or {}).get("frd"), "the floor at this N"),
    ("Intensity Wasserstein", lambda r: (r.get("statistics") or {}).get("intensity_wasserstein"), "pixel intensity distribution gap, [0, 1] units"),
    ("Memorization alarm", lambda r: (r.get("memorization") or {}).get("alarm"), "should be 'no'"),
    ("Near copies (pixel)", lambda r: ((r.get("memorization") or {}).get("pixel") or {}).get("near_copy_fraction"), "compare with real test rate (~1%)"),
    ("Near copies (feature)", lambda r: ((r.get("memorization") or {}).get("feature") or {}).get("near_copy_fraction"), "compare with real test rate (~1%)"),
    ("Label accuracy", lambda r: (r.get("label_accuracy") or {}).get("accuracy"), "compare with the classifier's real test accuracy"),
    ("Classifier real test accuracy", lambda r: (r.get("label_accuracy") or {}).get("real_test_accuracy"), "ceiling for label accuracy"),
    ("TSTR AUC (trained on synthetic)", lambda r: (r.get("tstr") or {}).get("synthetic_trained_auc"), "compare with the real-trained AUCs"),
    ("Real-trained AUC", lambda r: (r.get("tstr") or {}).get("real_trained_auc"), ""),
    ("Real-trained AUC, same N", lambda r: (r.get("tstr") or {}).get("real_trained_same_size_auc"), ""),
    ("Mask faithfulness: Dice on generated images", lambda r: (r.get("mask_faithfulness") or {}).get("dice_generated"),
     "segmenter trained on real pairs, images drawn from the test masks, Dice against those masks"),
    ("Mask faithfulness: Dice on real test images", lambda r: (r.get("mask_faithfulness") or {}).get("dice_real_test"), "the same segmenter's ceiling"),
    ("Mask faithfulness: ratio", lambda r: (r.get("mask_faithfulness") or {}).get("ratio"), "near 1: the images follow their masks as real images do"),
    ("Mask generator: area distance", lambda r: (r.get("mask_generator") or {}).get("area_distance_mean"),
     "Wasserstein distance between real and generated mask areas per label, mean over labels: 0 is the same sizes"),
    ("Mask generator: empty-mask gap", lambda r: (r.get("mask_generator") or {}).get("empty_gap_max"),
     "largest difference, over labels, in the fraction of empty masks (real BUSI normal masks are all empty)"),
)


def interval_cell(uncertainty: dict | None, keys: tuple[str, ...] = ("fid", "precision", "recall")) -> str | None:
    """The bootstrap intervals of an `uncertainty` section as text, e.g. "FID 52.1 to 59.4, recall 0.15 to 0.21 (95%, 100 resamples)"."""
    if not uncertainty:
        return None
    names = {"fid": "FID", "precision": "precision", "recall": "recall"}
    parts = [f"{names[key]} {uncertainty[key]['low']:.4g} to {uncertainty[key]['high']:.4g}" for key in keys if key in uncertainty]
    return f"{', '.join(parts)} ({uncertainty['level']:.0%}, {uncertainty['resamples']} resamples)" if parts else None


# (column title, report.baselines key) beside the model's own figures
BASELINE_COLUMNS = (
    ("floor: two real halves", "real_halves"),
    ("floor: real training images", "training"),
    ("ceiling: autoencoder", "autoencoder"),
)
FIDELITY_METRICS = (
    ("FID", lambda e: e.get("fid"), "lower is better"),
    ("KID mean", lambda e: (e.get("kid") or {}).get("mean"), "lower is better"),
    ("Precision", lambda e: e.get("precision"), "higher is better"),
    ("Recall", lambda e: e.get("recall"), "higher is better"),
)
BASELINES_EXPLAINED = (
    "<p>Each figure of the model stands beside sets whose answer is known, scored against the same reference "
    "images with the same features. <b>Floors</b> are what real images reach at this N: two disjoint halves of "
    "the reference images, and real <i>training</i> images (the data the model learnt from) against the reference "
    "images. No model is expected to beat them; the training floor also shows how far the reference split differs "
    "from the training data. The <b>autoencoder ceiling</b> (latent pipelines) scores reference images passed "
    "through the pipeline's own autoencoder: a latent model decodes every image with it, so its FID cannot "
    "fall much below this value, however well the denoiser is trained. Read the model between them: close to the "
    "ceiling, the autoencoder limits the images (a better autoencoder is the way on); far above it, the denoiser "
    "does (more or better training).</p>"
)


def _baselines_table(report: dict) -> str:
    baselines = report.get("baselines") or {}
    rows = []
    for name, get, hint in FIDELITY_METRICS:
        cells = [html.escape(name), f"<b>{_fmt(get(report))}</b>"]
        cells += [_fmt(get(baselines.get(key) or {})) for _, key in BASELINE_COLUMNS]
        rows.append(cells + [html.escape(hint)])
    skipped = "".join(
        f"<li>{html.escape(title)}: {html.escape(str((baselines.get(key) or {}).get('skipped')))}</li>"
        for title, key in BASELINE_COLUMNS if (baselines.get(key) or {}).get("skipped")
    )
    sizes = "; ".join(
        f"{title}: {_fmt(entry['n_per_set'])} images each" if "n_per_set" in entry else f"{title}: {_fmt(entry.get('n'))} images"
        for title, entry in ((title, baselines.get(key) or {}) for title, key in BASELINE_COLUMNS)
        if entry and not entry.get("skipped")
    )
    table = _table(rows, ["metric", "model", *(title for title, _ in BASELINE_COLUMNS), "how to read"])
    return (
        table + (f"<p>Set sizes: {html.escape(sizes)}.</p>" if sizes else "")
        + (f"<ul>{skipped}</ul>" if skipped else "") + BASELINES_EXPLAINED
    )


def _held_out(report: dict) -> str:
    overlap = report.get("training_overlap") or {}
    if overlap.get("held_out") is False:
        return (
            f'<p class="warning">NOT HELD OUT: {_fmt(overlap.get("n_overlap"))} of the {_fmt(overlap.get("n_reference"))} '
            "reference images are images the model was trained on. These figures do not measure how the model "
            "generalises; publishing refuses an evaluation marked so.</p>"
        )
    if overlap.get("n_excluded"):
        return (
            f"<p>Reference images checked against the {_fmt(overlap.get('n_training'))} training images the pipeline "
            f"records (content hashes): {_fmt(overlap.get('n_excluded'))} of the {_fmt(overlap.get('n_reference'))} are "
            "training images and were left out; the figures are on the others.</p>"
        )
    if overlap.get("held_out"):
        return (
            f"<p>Reference images checked against the {_fmt(overlap.get('n_training'))} training images the pipeline "
            "records (content hashes): none of them is a training image.</p>"
        )
    if overlap.get("why_not"):
        return f"<p>Reference images not checked against training images: {_fmt(overlap.get('why_not'))}.</p>"
    return ""


def _table(rows: list[list[str]], header: list[str]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def write_html(report: dict, path: str | Path, figures: dict[str, str]) -> Path:
    """`figures` maps a caption to a PNG path relative to the report folder."""
    report = to_jsonable(report)
    extractor = report.get("feature_extractor", {})
    summary = _table(
        [[html.escape(name), _fmt(get(report)), html.escape(hint)] for name, get, hint in SUMMARY_ROWS],
        ["metric", "value", "how to read"],
    )
    per_label_rows = []
    accuracy = report.get("label_accuracy") or {}
    for label, values in (report.get("per_label") or {}).items():
        per_label_rows.append(
            [html.escape(label)]
            + [_fmt(values.get(key)) for key in ("n_generated", "n_real", "fid", "fid_real_baseline", "precision", "recall")]
            + [_fmt(interval_cell(values.get("uncertainty"), ("recall",)))]
            + [_fmt((values.get("ms_ssim") or {}).get("generated")), _fmt((values.get("ms_ssim") or {}).get("real"))]
            + [_fmt((accuracy.get("per_label") or {}).get(label)), _fmt((accuracy.get("real_test_per_label") or {}).get(label))]
        )
    per_label = _table(
        per_label_rows,
        ["label", "generated", "real", "FID", "FID real baseline", "precision", "recall", "recall interval", "MS-SSIM generated", "MS-SSIM real",
         "label accuracy", "classifier accuracy on real test images"],
    ) if per_label_rows else "<p>No labels.</p>"
    statistics = report.get("statistics") or {}
    statistic_rows = [
        [html.escape(name)] + [_fmt(values.get(k)) for k in ("real_mean", "generated_mean", "real_std", "generated_std", "wasserstein")]
        for name, values in statistics.items()
        if isinstance(values, dict)
    ]
    statistic_table = _table(statistic_rows, ["statistic", "real mean", "generated mean", "real spread", "generated spread", "Wasserstein"])
    if (report.get("mask_faithfulness") or {}).get("figure"):
        figures = {**figures, "mask faithfulness: conditioning mask (green), segmenter's mask (red)": report["mask_faithfulness"]["figure"]}
    figure_html = "".join(
        f'<figure><img src="{html.escape(src)}" alt="{html.escape(caption)}"><figcaption>{html.escape(caption)}</figcaption></figure>'
        for caption, src in figures.items()
    )
    notes = "".join(f"<li>{html.escape(str(note))}</li>" for note in report.get("notes", []))
    document = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>medgen evaluation</title>
<style>
body {{ font-family: sans-serif; margin: 2em; max-width: 1100px; }}
table {{ border-collapse: collapse; margin-bottom: 1.5em; }}
td, th {{ border: 1px solid #ccc; padding: 4px 8px; text-align: left; }}
figure {{ display: inline-block; margin: 0 1em 1em 0; vertical-align: top; }}
.warning {{ color: #a00; font-weight: bold; }}
</style></head><body>
<h1>medgen evaluation</h1>
<p>{_fmt(report.get('n_generated'))} generated images ({_fmt(report.get('generated_source'))}) against
{_fmt(report.get('n_real'))} real images ({_fmt(report.get('real_source'))}).
Feature extractor: <b>{_fmt(extractor.get('name'))}</b> ({_fmt(extractor.get('description'))}).
Synthetic images are for research and teaching only, not for diagnosis.</p>
{'<p class="warning">Memorization alarm: some generated images are closer to training images than real unseen images are. Inspect the nearest-neighbour pairs before sharing these images.</p>' if (report.get('memorization') or {}).get('alarm') else ''}
{_held_out(report)}
<h2>Summary</h2>{summary}
<h2>The model between floors and ceiling</h2>{_baselines_table(report)}
<h2>Per label</h2>{per_label}
<h2>Image statistics</h2>{statistic_table}
<h2>Figures</h2>{figure_html}
<h2>Notes</h2><ul>{notes}</ul>
<p>All numbers are in report.json. See docs/evaluation.md, "How to read the report".</p>
</body></html>
"""
    path = Path(path)
    with atomic_write(path, "w") as file:
        file.write(document)
    return path
