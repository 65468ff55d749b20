"""`medgen evaluate`: score a pipeline (or a folder of generated images) against real data.

Examples::

    medgen evaluate --pipeline runs/pneumonia/pipeline --data ../shared/data/pneumoniamnist/pneumoniamnist.npz \\
        --split test --num-samples 1000 --num-inference-steps 15 --output eval/pneumonia
    medgen evaluate --generated out/ --data data/pneumoniamnist.npz --output eval/folder --feature-extractor pixel
    medgen evaluate --pipeline runs/cxr/pipeline --config configs/cxr.yaml --output eval/cxr
    medgen evaluate --pipeline runs/kermany/pipeline --data ../shared/data/kermany-cxr-224 --label-column label \
        --group-column patient_id --output eval/kermany

With --pipeline naming a local folder (or a built-in name whose folder is writable), a summary of the report
is stored as evaluation.json in the pipeline folder and shown in its model card: `push_to_hub` and
`medgen space build` read it (see medgen.pipelines.publishing). --no-store skips that.
"""

from __future__ import annotations

import argparse

from medgen.arguments import positive_int
from medgen.sampling import DEFAULT_INFERENCE_STEPS


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "evaluate",
        help="measure realism, diversity, label fidelity, usefulness and memorization of synthetic images",
        description=(
            "Sample a pipeline (or read a folder of generated images) and compare with real data: FID/KID, "
            "precision/recall, MS-SSIM diversity, image statistics, memorization, label accuracy and TSTR. "
            "Writes OUTPUT/report.json and OUTPUT/report.html."
        ),
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--pipeline", help="built-in pipeline name (default), pipeline folder (with model_index.json) or Hub repo id to sample from")
    source.add_argument(
        "--generated",
        help="folder of generated PNGs to score instead of sampling: one sub-folder per label, or medgen generate outputs",
    )
    real = parser.add_mutually_exclusive_group(required=True)
    real.add_argument("--data", help="real data: MedMNIST .npz, image folder with metadata.csv, a CSV, or DICOM")
    real.add_argument(
        "--config",
        help="training config (YAML): read the real data exactly as that run read its training data "
        "(same normalization, resizing, label mapping and filters)",
    )
    parser.add_argument("--split", default="test", help="real reference split: MedMNIST split or value of the CSV's split column (default test)")
    parser.add_argument(
        "--train-split",
        help="real training split for memorization and the classifier (default: train, or the training config's split)",
    )
    parser.add_argument(
        "--label-column", "--findings-column", dest="label_column",
        help="CSV column with the label(s) of each image (folder + CSV data; e.g. label, or 'Finding Labels')",
    )
    parser.add_argument(
        "--filter", action="append", default=[], metavar="COLUMN=VALUE[,VALUE]",
        help="keep only CSV rows whose COLUMN is one of the values (repeatable), e.g. --filter view=PA,AP",
    )
    parser.add_argument("--split-column", help="CSV column naming each row's split (default: split, when present)")
    parser.add_argument("--path-column", help="CSV column with each image's path (default: file_name or Path)")
    parser.add_argument(
        "--group-column",
        help="CSV column grouping images, e.g. patient_id: the training / held-out split used by memorization "
        "and TSTR never puts one group on both sides",
    )
    parser.add_argument("--num-samples", type=positive_int, default=1000, help="images to sample in all, split evenly over labels (default 1000)")
    parser.add_argument("--num-inference-steps", type=positive_int, default=DEFAULT_INFERENCE_STEPS,
                        help=f"denoising steps (default {DEFAULT_INFERENCE_STEPS})")
    parser.add_argument("--guidance-scale", type=float, help="classifier-free guidance (default: the pipeline's)")
    parser.add_argument("--labels", nargs="+", help="labels to sample (default: all of the pipeline's labels)")
    parser.add_argument(
        "--prompt-template", default="chest x-ray, {labels}",
        help="text-to-image pipelines: prompt for each label, as in the training config (default 'chest x-ray, {labels}')",
    )
    parser.add_argument("--output", required=True, help="report folder (report.json, report.html, figures/)")
    parser.add_argument(
        "--feature-extractor", choices=("inception", "pixel"), default="inception",
        help="inception: standard FID features (default); pixel: fast, non-standard quick check",
    )
    parser.add_argument("--batch-size", type=positive_int, default=32, help="feature extraction batch size (default 32)")
    parser.add_argument("--sample-batch-size", type=positive_int, default=16, help="images per pipeline call (default 16)")
    parser.add_argument("--seed", type=int, default=0, help="seed of image 0 (image i uses seed+i) and of the metrics (default 0)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda", "mps"), default="auto", help="sampling device (default auto)")
    parser.add_argument("--cache-dir", help="cache for real features and classifier weights (default ~/.cache/medgen/evaluation)")
    parser.add_argument("--no-cache", action="store_true", help="do not read or write the cache")
    parser.add_argument("--no-classifier", action="store_true", help="skip label accuracy and TSTR")
    parser.add_argument(
        "--no-feature-memorization", action="store_true",
        help="search nearest training images in pixel space only (skips embedding the training split)",
    )
    parser.add_argument(
        "--memorization-train-images", type=int, default=1000, metavar="N",
        help="feature-space memorization searches a seeded subset of N training images (0: all; pixel space "
        "always searches all; default 1000)",
    )
    parser.add_argument("--max-real", type=positive_int, help="read at most this many real images per split (quick runs)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument(
        "--no-store", action="store_true",
        help="do not store the summary (evaluation.json) and the model card's Evaluation section in the pipeline "
        "folder (stored by default when --pipeline is a local folder; push_to_hub and medgen space build need it)",
    )
    parser.set_defaults(run=run)
    return parser


def _filters(items: list[str]) -> dict[str, list[str]]:
    filters: dict[str, list[str]] = {}
    for item in items:
        column, sep, values = item.partition("=")
        if not sep or not column.strip() or not values.strip():
            raise ValueError(f"--filter {item!r}: expected COLUMN=VALUE[,VALUE...], e.g. view=PA,AP")
        filters.setdefault(column.strip(), []).extend(value.strip() for value in values.split(","))
    return filters


def _real_data(args: argparse.Namespace) -> tuple[object, dict, str]:
    """(data, extra DataConfig fields, training split) from --config or --data and the CSV options."""
    options = {
        "findings_column": args.label_column,
        "filters": _filters(args.filter) or None,
        "split_column": args.split_column,
        "path_column": args.path_column,
    }
    options = {name: value for name, value in options.items() if value is not None}
    if args.config is None:
        return args.data, options, args.train_split or "train"
    if options:
        flags = ", ".join("--" + name.replace("_", "-").replace("findings", "label") for name in options)
        raise ValueError(f"{flags}: these describe --data; with --config the training config's data section is read as it is")
    from medgen.config import load_config

    data = load_config(args.config).data
    return data, {}, args.train_split or data.split


def run(args: argparse.Namespace) -> int:
    from medgen.evaluation.api import evaluate

    if args.memorization_train_images < 0:
        raise ValueError(f"--memorization-train-images must be >= 0 (0: all), got {args.memorization_train_images}")
    data, data_options, train_split = _real_data(args)
    report = evaluate(
        pipeline=args.pipeline,
        data=data,
        split=args.split,
        num_samples=args.num_samples,
        num_inference_steps=args.num_inference_steps,
        labels=args.labels,
        generated=args.generated,
        output=args.output,
        train_split=train_split,
        guidance_scale=args.guidance_scale,
        seed=args.seed,
        sample_batch_size=args.sample_batch_size,
        device=args.device,
        data_options=data_options,
        max_real=args.max_real,
        group_column=args.group_column,
        prompt_template=args.prompt_template,
        progress=not args.no_progress,
        feature_extractor=args.feature_extractor,
        batch_size=args.batch_size,
        cache_dir=args.cache_dir,
        use_cache=not args.no_cache,
        classifier=not args.no_classifier,
        memorization_features=not args.no_feature_memorization,
        memorization_train_images=args.memorization_train_images or None,
    )
    fid = report.get("fid")
    baseline = (report.get("fid_real_baseline") or {}).get("fid")
    alarm = report["memorization"]["alarm"]
    print(
        f"FID {fid:.3f} (real baseline {baseline:.3f}, {report['feature_extractor']['name']} features); "
        f"precision {report.get('precision', float('nan')):.3f}, recall {report.get('recall', float('nan')):.3f}; "
        f"memorization alarm: {'YES' if alarm else 'no'}"
        if fid is not None and baseline is not None
        else f"memorization alarm: {'YES' if alarm else 'no'}"
    )
    print(f"report: {args.output}/report.html")
    if args.pipeline is not None and not args.no_store:
        print(_store_in_pipeline_folder(args.pipeline, report))
    return 0


def _store_in_pipeline_folder(pipeline: str, report: dict) -> str:
    """Stores the report's summary in the evaluated pipeline's folder when it is local and writable;
    returns a line saying where it went, or why not."""
    from medgen.files import OutputError
    from medgen.pipelines.publishing import local_pipeline_folder, store_evaluation

    folder, problem = local_pipeline_folder(pipeline)
    if folder is None:
        return f"note: evaluation not stored in the pipeline folder: {problem}; the report above is complete"
    try:
        path = store_evaluation(folder, report)
    except OutputError as error:
        return f"note: evaluation not stored in the pipeline folder ({error}); the report above is complete"
    return f"evaluation stored: {path} (and the Evaluation section of {folder / 'README.md'})"
