"""`medgen models`: list the pretrained pipelines shipped with medgen, and ship a training run as one.

    medgen models                       # name, modality, resolution, labels, size, training data, evaluation
    medgen models --json
    medgen models ship outputs/chest_xray_128 --name chest-xray --modality "chest X-ray" \\
        --training-data "Kermany pediatric CXR, train split (5,216 images)"
"""

from __future__ import annotations

import argparse
import json


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "models",
        help="list the pretrained pipelines shipped with medgen (or ship a training run as one)",
        description="List the built-in pretrained pipelines: name, modality, resolution, labels, size, "
        "training data and stored evaluation figures.",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    actions = parser.add_subparsers(dest="models_action", metavar="ACTION")
    ship = actions.add_parser(
        "ship",
        help="turn a training output into a shipped pipeline folder (fp16, current pipeline.py, model card)",
        description="Re-save the pipeline trained in RUN_DIR as a shipped folder (default medgen/pretrained/NAME): "
        "current pipeline.py, fp16 safetensors, training config and samples, medgen_model.json. Then store its "
        "evaluation with `medgen evaluate --pipeline <folder> --config RUN_DIR/training_config.yaml --split test`.",
    )
    ship.add_argument("run_dir", help="training output folder (holds model_index.json)")
    ship.add_argument("--name", required=True, help="model name, e.g. chest-xray")
    ship.add_argument("--modality", required=True, help="imaging modality, e.g. 'chest X-ray'")
    ship.add_argument("--training-data", required=True, help="what it was trained on (set, split, image count)")
    ship.add_argument("--output", help="shipped folder (default medgen/pretrained/NAME)")
    ship.add_argument("--overwrite", action="store_true", help="replace an existing shipped folder")
    parser.set_defaults(run=run)
    return parser


def run(args: argparse.Namespace) -> int:
    if getattr(args, "models_action", None) == "ship":
        from medgen.pipelines.catalog import ship

        folder = ship(args.run_dir, args.name, args.modality, args.training_data, args.output, args.overwrite)
        print(f"Shipped {args.name} to {folder}")
        print(
            f"Next: medgen evaluate --pipeline {folder} --config {args.run_dir}/training_config.yaml "
            f"--split test --num-samples 256 --output <report folder>"
        )
        return 0
    descriptions = list_models()
    if args.json:
        print(json.dumps([description.to_dict() for description in descriptions], indent=2))
    else:
        print(format_table(descriptions))
    return 0


def list_models():
    from medgen.pipelines.catalog import describe
    from medgen.pipelines.hub import BUILTIN_PIPELINES, builtin_pipeline_path

    seen, descriptions = set(), []
    for name in BUILTIN_PIPELINES:
        folder = builtin_pipeline_path(name)
        if folder in seen or not (folder / "model_index.json").is_file():
            continue
        seen.add(folder)
        aliases = [other for other, path in BUILTIN_PIPELINES.items() if builtin_pipeline_path(other) == folder]
        description = describe(folder, name=" = ".join(aliases))
        descriptions.append(description)
    return descriptions


def format_table(descriptions) -> str:
    header = ("name", "modality", "px", "labels", "MB", "FID (real floor)", "recall per label", "label acc", "TSTR/TRTR", "training data")
    rows = [header]
    for d in descriptions:
        e = d.evaluation
        fid = f"{e['fid']:.1f} ({e['fid_real_baseline']:.1f})" if "fid" in e and "fid_real_baseline" in e else "-"
        recall = ", ".join(f"{k} {v:.2f}" for k, v in (e.get("recall_per_label") or {}).items()) or "-"
        accuracy = f"{e['label_accuracy']:.2f}" if "label_accuracy" in e else "-"
        tstr = f"{e['tstr_auc']:.3f}/{e['trtr_auc']:.3f}" if e.get("tstr_auc") is not None and e.get("trtr_auc") else "-"
        kind = f"{d.resolution}{' latent' if d.latent else ''}"
        rows.append((d.name, d.modality, kind, ", ".join(d.labels), f"{d.size_mb:.1f}", fid, recall, accuracy, tstr, d.training_data))
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(header))]
    return "\n".join("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows)
