"""`medgen downstream`: train one classifier recipe on real, real+synthetic, real+duplicated and synthetic data.

Examples::

    medgen downstream --pipeline runs/pneumonia/pipeline --data ../shared/data/pneumoniamnist/pneumoniamnist.npz \\
        --output downstream/pneumonia --real-fraction 0.05,0.2,1.0 --seeds 5
    medgen downstream --synthetic out/ --data cxr/ --label-column finding --group-column patient_id \\
        --rare-label pneumonia --output downstream/rare
"""

from __future__ import annotations

import argparse
import math

from medgen.arguments import int_in_range, positive_int
from medgen.sampling import DEFAULT_INFERENCE_STEPS

MAX_SEEDS = 100


def _fractions(text: str) -> list[float]:
    try:
        values = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers in (0, 1], got {text!r}") from None
    if not values or any(not (math.isfinite(v) and 0 < v <= 1) for v in values):
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers in (0, 1], got {text!r}")
    if len(set(values)) != len(values):
        raise argparse.ArgumentTypeError(f"a real fraction is given twice in {text!r}")
    return values


def _ratio(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return value


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "downstream",
        help="do synthetic images help a classifier? real vs real+synthetic vs a count-matched real+duplicated control",
        description=(
            "For each real fraction and seed, train the same classifier on four training sets: the real subset, "
            "real+synthetic, real+duplicated (as many extra re-sampled real images as synthetic ones: the control) "
            "and synthetic only; test each on the held-out real test split. Writes OUTPUT/report.json, "
            "OUTPUT/report.html and OUTPUT/auroc.svg. Research and teaching only, not for diagnosis."
        ),
    )
    synthetic = parser.add_mutually_exclusive_group(required=True)
    synthetic.add_argument("--pipeline", help="label-conditioned pipeline folder or Hub repo id to sample synthetic images from")
    synthetic.add_argument("--synthetic", help="folder of `medgen generate` outputs, one sub-folder per label")
    data = parser.add_mutually_exclusive_group(required=True)
    data.add_argument("--data", help="real data: MedMNIST .npz, image folder with metadata.csv, or a CSV file")
    data.add_argument("--config", help="training config (YAML) whose data section describes the real data")
    parser.add_argument("--split", default="train", help="real training split (default train)")
    parser.add_argument("--test-split", default="test", help="held-out real test split, never trained on (default test)")
    parser.add_argument("--label-column", help="CSV column with each image's label (CSV data)")
    parser.add_argument("--group-column", help="CSV column grouping images (e.g. patient_id): a subset takes whole groups")
    parser.add_argument(
        "--task", choices=("classification", "segmentation"), default="classification",
        help="classification (default): a classifier per arm, AUROC; segmentation: a segmenter per arm on image + mask "
        "pairs from a mask-conditioned --pipeline or a `medgen generate --pairs` --synthetic folder, Dice (writes dice.svg)",
    )
    parser.add_argument("--mask-column", help="--task segmentation: CSV column with each image's mask (e.g. mask_file_name)")
    parser.add_argument("--output", required=True, help="report folder (report.json, report.html, auroc.svg)")
    parser.add_argument("--real-fraction", type=_fractions, default=[0.05, 0.2, 1.0], help="fractions of the real training split (default 0.05,0.2,1.0)")
    parser.add_argument("--synthetic-ratio", type=_ratio, default=1.0, help="extra images per real image in real+synthetic and real+duplicated (default 1.0)")
    parser.add_argument(
        "--seeds", type=int_in_range(1, MAX_SEEDS), default=5,
        help="seeds per real fraction (default 5; fewer give intervals that mean little, 10 give a firm verdict)",
    )
    parser.add_argument("--seed", type=int_in_range(0, 2**31 - 1), default=0, help="run seed: every subset, image and classifier seed derives from it (default 0)")
    parser.add_argument("--rare-label", help="add synthetic (and duplicated) images of this label only")
    parser.add_argument("--quick", action="store_true", help="tiny classifier, few steps: a smoke test, not a result")
    parser.add_argument("--max-real", type=positive_int, help="read at most this many real images per split (quick runs)")
    parser.add_argument(
        "--max-train", type=positive_int,
        help="draw a seeded random subset of this many training images (stratified by label, whole groups with "
        "--group-column) as the pool the real fractions are taken from; the test split stays whole",
    )
    parser.add_argument(
        "--classifier-size", type=int_in_range(8, 4096),
        help="side the classifier sees: images are area-downsampled to it (default: the synthetic images' size)",
    )
    parser.add_argument("--classifier-steps", type=int_in_range(1, 1_000_000), help="classifier optimiser steps (default 400)")
    parser.add_argument("--num-inference-steps", type=int_in_range(1, 1000), default=None,
                        help=f"denoising steps (default: the model's own, {DEFAULT_INFERENCE_STEPS} unless it stores another)")
    parser.add_argument("--guidance-scale", type=float, help="classifier-free guidance (default: the pipeline's)")
    parser.add_argument("--batch-size", type=positive_int, default=32, help="images per pipeline call (default 32)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda", "mps"), default="auto", help="device for sampling and the classifiers (default auto)")
    parser.add_argument(
        "--no-store", action="store_true",
        help="do not store the result with a local --pipeline (downstream.json, downstream_auroc.svg and the "
        "Downstream section of its model card; --quick runs are never stored)",
    )
    parser.set_defaults(run=run)
    return parser


def run(args: argparse.Namespace) -> int:
    if args.task == "segmentation":
        from medgen.commands.downstream_segmentation import run as run_segmentation

        return run_segmentation(args)
    if args.mask_column is not None:
        raise ValueError(f"--mask-column {args.mask_column!r} applies to --task segmentation")
    from medgen.commands import downstream_steps as steps
    from medgen.commands.generate import _resolve_device
    from medgen.downstream.classifier import QUICK, STANDARD
    from medgen.downstream.data import attach_groups, check_disjoint, data_config_values, load_split
    from medgen.downstream.experiment import run_downstream
    from medgen.downstream.report import summary_table, write_report
    from medgen.downstream.store import CLASSIFICATION
    from medgen.downstream.synthetic import check_pipeline_labels

    steps.check_guidance(args)
    values = data_config_values(args.data, args.config, args.label_column)
    if args.group_column is not None and values.get("source") != "csv":
        raise ValueError(f"--group-column {args.group_column!r} needs CSV data (a folder with metadata.csv or a CSV file)")
    device = _resolve_device(args.device)
    pipe, channels, side = steps.synthetic_source(args, device)
    train = load_split(values, args.split, side, channels, args.max_real)
    test = load_split(values, args.test_split, side, channels, args.max_real)
    if args.group_column is not None:
        attach_groups(train, values, args.group_column)
        attach_groups(test, values, args.group_column)
    check_disjoint(train, test, args.split, args.test_split)
    n_train_read = len(train)
    train = steps.training_pool(train, args)
    if pipe is not None:
        check_pipeline_labels(pipe, train.label_names, args.pipeline)
    steps.warn_seeds(args.seeds)
    report = run_downstream(
        train, test, pipeline=pipe, recipe=steps.model_recipe(args, QUICK, STANDARD), **steps.experiment_options(args, device)
    )
    return steps.finish(
        args, report, command="medgen downstream", task_fields={"group_column": args.group_column}, n_train_read=n_train_read,
        write_report=write_report, summary_table=summary_table, stored=CLASSIFICATION,
    )
