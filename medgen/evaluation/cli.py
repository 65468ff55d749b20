"""`medgen evaluate`: score a pipeline (or a folder of generated images) against real data.

Examples::

    medgen evaluate --pipeline runs/pneumonia/pipeline --data ../shared/data/pneumoniamnist/pneumoniamnist.npz \\
        --split test --num-samples 1000 --num-inference-steps 25 --output eval/pneumonia
    medgen evaluate --generated out/ --data data/pneumoniamnist.npz --output eval/folder --feature-extractor pixel
"""

from __future__ import annotations

import argparse


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


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
    source.add_argument("--pipeline", help="pipeline folder (with model_index.json) or Hub repo id to sample from")
    source.add_argument(
        "--generated",
        help="folder of generated PNGs to score instead of sampling: one sub-folder per label, or medgen generate outputs",
    )
    parser.add_argument("--data", required=True, help="real data: MedMNIST .npz, image folder with metadata.csv, or DICOM")
    parser.add_argument("--split", default="test", help="real reference split (MedMNIST; default test)")
    parser.add_argument("--train-split", default="train", help="real training split for memorization and the classifier (default train)")
    parser.add_argument("--num-samples", type=_positive_int, default=1000, help="images to sample in all, split evenly over labels (default 1000)")
    parser.add_argument("--num-inference-steps", type=_positive_int, default=25, help="denoising steps (default 25)")
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
    parser.add_argument("--batch-size", type=_positive_int, default=32, help="feature extraction batch size (default 32)")
    parser.add_argument("--sample-batch-size", type=_positive_int, default=16, help="images per pipeline call (default 16)")
    parser.add_argument("--seed", type=int, default=0, help="seed of image 0 (image i uses seed+i) and of the metrics (default 0)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda", "mps"), default="auto", help="sampling device (default auto)")
    parser.add_argument("--cache-dir", help="cache for real features and classifier weights (default ~/.cache/medgen/evaluation)")
    parser.add_argument("--no-cache", action="store_true", help="do not read or write the cache")
    parser.add_argument("--no-classifier", action="store_true", help="skip label accuracy and TSTR")
    parser.add_argument(
        "--no-feature-memorization", action="store_true",
        help="search nearest training images in pixel space only (skips embedding the training split)",
    )
    parser.add_argument("--max-real", type=_positive_int, help="read at most this many real images per split (quick runs)")
    parser.add_argument("--findings-column", help="CSV column with the label of each image (folder + CSV data)")
    parser.set_defaults(run=run)
    return parser


def run(args: argparse.Namespace) -> int:
    import sys

    from medgen.evaluation.api import evaluate

    data_options = {"findings_column": args.findings_column} if args.findings_column else {}
    report = evaluate(
        pipeline=args.pipeline,
        data=args.data,
        split=args.split,
        num_samples=args.num_samples,
        num_inference_steps=args.num_inference_steps,
        labels=args.labels,
        generated=args.generated,
        output=args.output,
        train_split=args.train_split,
        guidance_scale=args.guidance_scale,
        seed=args.seed,
        sample_batch_size=args.sample_batch_size,
        device=args.device,
        data_options=data_options,
        max_real=args.max_real,
        prompt_template=args.prompt_template,
        progress=sys.stderr.isatty(),
        feature_extractor=args.feature_extractor,
        batch_size=args.batch_size,
        cache_dir=args.cache_dir,
        use_cache=not args.no_cache,
        classifier=not args.no_classifier,
        memorization_features=not args.no_feature_memorization,
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
    return 0
