"""`medgen evaluate`: score a pipeline (or a folder of generated images) against real data.

Examples::

    medgen evaluate --pipeline runs/pneumonia/pipeline --data ../shared/data/pneumoniamnist/pneumoniamnist.npz \\
        --split test --num-samples 1000 --num-inference-steps 15 --output eval/pneumonia
    medgen evaluate --generated out/ --data data/pneumoniamnist.npz --output eval/folder --feature-extractor pixel
    medgen evaluate --pipeline runs/cxr/pipeline --config configs/cxr.yaml --output eval/cxr
    medgen evaluate --pipeline runs/kermany/pipeline --data ../shared/data/kermany-cxr-224 --label-column label \
        --group-column patient_id --output eval/kermany

Nothing is written into a pipeline folder unless asked: --store-in-pipeline stores a summary of the report as
evaluation.json in the (local) pipeline folder and shows it in its model card, where `push_to_hub` and
`medgen space build` read it (see medgen.pipelines.publishing); where it will go is said before sampling.
A built-in pipeline's folder is written only by the maintainers' shipping step (--store-in-builtin, after
`medgen models ship`).

When the pipeline folder records its training config, the real images are read with its preprocessing, and
reference images that are training images (same pixels) are refused unless --exclude-training-overlap
(leave them out, score the rest) or --allow-training-overlap (score them, marked 'not held out').
Data options a training config takes are accepted as `data.KEY=VALUE` (e.g. data.empty_findings=skip).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from medgen.arguments import int_in_range, positive_int
from medgen.evaluation.uncertainty import DEFAULT_RESAMPLES
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
    parser.add_argument(
        "--split", default="test",
        help="real reference split: MedMNIST split or value of the CSV's split column (default test); a split the "
        "data does not have is an error; 'all' scores against every row of data without splits, deliberately",
    )
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
    parser.add_argument("--mask-column", help="CSV column with each image's mask (e.g. mask_file_name): mask faithfulness of a mask pipeline")
    parser.add_argument(
        "--group-column",
        help="CSV column grouping images, e.g. patient_id: the training / held-out split used by memorization "
        "and TSTR never puts one group on both sides",
    )
    parser.add_argument("--num-samples", type=positive_int, default=1000, help="images to sample in all, split evenly over labels (default 1000)")
    parser.add_argument("--num-inference-steps", type=positive_int, default=None,
                        help=f"denoising steps (default: the model's own, {DEFAULT_INFERENCE_STEPS} unless it stores another)")
    parser.add_argument("--guidance-scale", type=float, help="classifier-free guidance (default: the pipeline's)")
    parser.add_argument(
        "--guidance-interval", type=float, nargs=2, metavar=("START", "STOP"),
        help="label pipelines: guide only the sampling steps from START to STOP, fractions of the steps from the "
        "noisiest (0) to the last (1); default: the pipeline's own (every step when it stores none)",
    )
    parser.add_argument("--labels", nargs="+", help="labels to sample (default: all of the pipeline's labels)")
    parser.add_argument(
        "--prompt-template", default="chest x-ray, {labels}",
        help="text-to-image pipelines: prompt for each label, as in the training config (default 'chest x-ray, {labels}')",
    )
    parser.add_argument(
        "--prompt-groups", action="store_true",
        help="text pipelines trained on sets with prompt sets (data.prompts): sample every prompt group (modality + "
        "finding) with its prompts and score it against its held-out images, per set and per modality "
        "(OUTPUT/prompt_groups.json; medgen.evaluation.prompt_groups)",
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
        "--bootstrap", type=int_in_range(0), default=DEFAULT_RESAMPLES, metavar="N",
        help="resample the generated images N times for the 95%% intervals of FID, precision and recall, overall and "
        f"per label: how far they move with the draw alone (default {DEFAULT_RESAMPLES}; 0: none)",
    )
    parser.add_argument(
        "--no-frd", action="store_true",
        help="skip the Fréchet Radiomics Distance (medgen[frd]; about 1.3 s per 128 px image per core)",
    )
    parser.add_argument("--no-mask-faithfulness", action="store_true", help="mask pipelines: skip the segmenter's Dice on images drawn from the test masks")
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
    store = parser.add_mutually_exclusive_group()
    store.add_argument(
        "--store-in-pipeline", action="store_true",
        help="store the summary (evaluation.json) and the model card's Evaluation section in the --pipeline folder "
        "(a local folder, not a built-in); push_to_hub and medgen space build need it",
    )
    store.add_argument(
        "--store-in-builtin", action="store_true",
        help="maintainers, after `medgen models ship`: store the evaluation in a built-in pipeline's folder inside "
        "the medgen package",
    )
    store.add_argument("--no-store", action="store_true", help=argparse.SUPPRESS)  # the default now; kept for scripts
    overlap = parser.add_mutually_exclusive_group()
    overlap.add_argument(
        "--exclude-training-overlap", action="store_true",
        help="leave out reference images that are images the pipeline was trained on (a data set with the same image "
        "in two splits) and score the rest; the report says how many were left out",
    )
    overlap.add_argument(
        "--allow-training-overlap", action="store_true",
        help="score even when reference images are images the pipeline was trained on (found by content hash when "
        "the pipeline folder records its training config); the report and any stored evaluation are marked "
        "'not held out', and publishing refuses them",
    )
    parser.add_argument(
        "--no-autoencoder-ceiling", action="store_true",
        help="latent pipelines: skip scoring reference images passed through the pipeline's autoencoder",
    )
    parser.add_argument(
        "overrides", nargs="*", metavar="data.KEY=VALUE",
        help="data options as a training config takes them, e.g. data.empty_findings=skip data.resize_mode=pad "
        "(values read as YAML)",
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


# set by evaluate itself: the split flags and the pipeline's image geometry
NOT_OVERRIDABLE = {
    "split": "--split / --train-split", "resolution": "the pipeline's image size", "channels": "the pipeline's images",
    "streaming": "evaluate (it reads whole splits)",
}


def _data_overrides(items: list[str]) -> dict[str, object]:
    """`data.KEY=VALUE` arguments as DataConfig fields (values parsed as YAML, as training overrides are)."""
    import dataclasses
    import difflib

    import yaml

    from medgen.data import DataConfig

    known = [field.name for field in dataclasses.fields(DataConfig)]
    overrides: dict[str, object] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        section, dot, name = key.strip().partition(".")
        if not sep or section != "data" or not dot or not name:
            raise ValueError(
                f"{item!r}: medgen evaluate takes data options as data.KEY=VALUE (e.g. data.empty_findings=skip); "
                "other arguments start with --"
            )
        if name in NOT_OVERRIDABLE:
            raise ValueError(f"{item!r}: data.{name} is set by {NOT_OVERRIDABLE[name]}")
        if name not in known:
            close = difflib.get_close_matches(name, known, n=1)
            hint = f"; did you mean data.{close[0]}?" if close else f"; data options are {known}"
            raise ValueError(f"{item!r}: unknown data option {name!r}{hint}")
        try:
            overrides[name] = yaml.safe_load(raw)
        except yaml.YAMLError as error:
            raise ValueError(f"{item!r}: the value is not valid YAML ({error})") from error
    return overrides


def _real_data(args: argparse.Namespace) -> tuple[object, dict, str]:
    """(data, extra DataConfig fields, training split) from --config or --data, the CSV options and the
    data.KEY=VALUE overrides."""
    options = {
        "findings_column": args.label_column,
        "filters": _filters(args.filter) or None,
        "split_column": args.split_column,
        "path_column": args.path_column,
        "mask_column": args.mask_column,
    }
    options = {name: value for name, value in options.items() if value is not None}
    overrides = _data_overrides(args.overrides)
    if args.config is None:
        return args.data, {**options, **overrides}, args.train_split or "train"
    if options:
        flags = ", ".join("--" + name.replace("_", "-").replace("findings", "label") for name in options)
        raise ValueError(
            f"{flags}: these describe --data; with --config the training config's data section is read as it is "
            "(change it with data.KEY=VALUE, as for training)"
        )
    from medgen.config import load_config

    data = load_config(args.config, list(args.overrides)).data
    return data, {}, args.train_split or data.split


def run(args: argparse.Namespace) -> int:
    from medgen.evaluation.api import evaluate

    if args.memorization_train_images < 0:
        raise ValueError(f"--memorization-train-images must be >= 0 (0: all), got {args.memorization_train_images}")
    data, data_options, train_split = _real_data(args)
    if args.prompt_groups:  # a text model across sets, scored per prompt group
        if args.guidance_interval is not None:
            raise ValueError("--guidance-interval applies to label pipelines; --prompt-groups scores a text pipeline")
        return _run_prompt_groups(args, data, data_options, train_split)
    store_folder = _store_target(args)
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
        guidance_interval=args.guidance_interval,
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
        frd=not args.no_frd,
        bootstrap_resamples=args.bootstrap,
        mask_faithfulness=not args.no_mask_faithfulness,
        memorization_features=not args.no_feature_memorization,
        memorization_train_images=args.memorization_train_images or None,
        allow_training_overlap=args.allow_training_overlap,
        exclude_training_overlap=args.exclude_training_overlap,
        autoencoder_ceiling=not args.no_autoencoder_ceiling,
    )
    for line in summary_lines(report):
        print(line)
    faithfulness = report.get("mask_faithfulness") or {}
    if faithfulness.get("ratio") is not None:
        print(
            f"mask faithfulness: Dice {faithfulness['dice_generated']:.3f} on images drawn from the test masks, "
            f"{faithfulness['dice_real_test']:.3f} on the real test images (ratio {faithfulness['ratio']:.3f})"
        )
    if (report.get("mask_generator") or {}).get("per_label"):
        from medgen.pipelines.evaluation_record import describe_mask_generator

        print(f"mask generator: {describe_mask_generator(report['mask_generator'])}")
    print(f"report: {args.output}/report.html")
    if store_folder is not None:
        print(_store(store_folder, report))
    return 0


def _run_prompt_groups(args: Any, data: Any, data_options: dict[str, Any], train_split: str | None) -> int:
    """`medgen evaluate --prompt-groups`: the sets from `--config` (data and extra_data) or `--data` with
    `data.prompts=NAME`; `--num-samples` images in all, shared evenly by the groups."""
    from medgen.data import DataConfig
    from medgen.evaluation.prompt_groups import REPORT_FILE, evaluate_prompt_groups, plan_groups, summary_lines

    if args.pipeline is None:
        raise ValueError("--prompt-groups samples a text pipeline: give --pipeline, not --generated")
    if args.config is not None:
        from medgen.config import load_config

        config = load_config(args.config, list(args.overrides))
        sets = [config.data, *config.extra_data]
    else:
        values = {"source": "csv", "path": str(data), "findings_column": "label", **data_options}
        if not values.get("prompts"):
            raise ValueError("--prompt-groups with --data needs the set's prompt set: data.prompts=NAME (medgen.data.prompts)")
        sets = [DataConfig.from_dict(values)]
    count = len(plan_groups(sets))
    store_folder = _store_target(args)
    summary = evaluate_prompt_groups(
        args.pipeline, sets, args.output, samples_per_group=max(2, args.num_samples // max(count, 1)), split=args.split,
        train_split=train_split if args.config is None else (args.train_split or "train"),
        num_inference_steps=DEFAULT_INFERENCE_STEPS if args.num_inference_steps is None else args.num_inference_steps,
        guidance_scale=args.guidance_scale, seed=args.seed,
        sample_batch_size=args.sample_batch_size, device=args.device, max_real=args.max_real, progress=not args.no_progress,
        feature_extractor=args.feature_extractor, batch_size=args.batch_size, cache_dir=args.cache_dir,
        use_cache=not args.no_cache, classifier=not args.no_classifier, memorization_features=not args.no_feature_memorization,
        memorization_train_images=args.memorization_train_images or None, frd=not args.no_frd,
        allow_training_overlap=args.allow_training_overlap, exclude_training_overlap=args.exclude_training_overlap,
    )
    for line in summary_lines(summary):
        print(line)
    print(f"report: {Path(args.output) / REPORT_FILE}")
    if store_folder is not None:
        print(_store(store_folder, summary))
    return 0


def summary_lines(report: dict) -> list[str]:
    """The console summary: the model's fidelity figures beside the floors and the autoencoder ceiling, the
    memorization verdict and whether the reference images were held out."""
    baselines = report.get("baselines") or {}
    columns = [("model", report)] + [
        (name, baselines.get(key) or {})
        for key, name in (("real_halves", "floor: real halves"), ("training", "floor: training"), ("autoencoder", "ceiling: autoencoder"))
    ]

    def value(entry: dict, metric: str) -> str:
        number = (entry.get("kid") or {}).get("mean") if metric == "KID" else entry.get(metric.lower())
        return "-" if number is None else f"{number:.4g}"

    lines = [f"{'':10}" + "".join(f"{name:>22}" for name, _ in columns)]
    for metric in ("FID", "KID", "Precision", "Recall"):
        lines.append(f"{metric:10}" + "".join(f"{value(entry, metric):>22}" for _, entry in columns))
    interval = interval_text(report)
    if interval:
        lines.append(interval)
    for name, entry in columns[1:]:
        if entry.get("skipped"):
            lines.append(f"{name}: {entry['skipped']}")
    frd = report.get("frd") or {}
    if frd.get("frd") is not None:
        floor = (frd.get("frd_real_baseline") or {}).get("frd")
        lines.append(f"FRD (radiomics): {frd['frd']:.4g}" + (f", real floor {floor:.4g}" if floor is not None else ""))
    elif frd.get("skipped"):
        lines.append(f"FRD: {frd['skipped']}")
    alarm = report["memorization"]["alarm"]
    lines.append(f"features: {report['feature_extractor']['name']}; memorization alarm: {'YES' if alarm else 'no'}")
    overlap = report.get("training_overlap") or {}
    if overlap.get("held_out") is False:
        lines.append(f"NOT HELD OUT: {overlap['n_overlap']} of {overlap['n_reference']} reference images are training images")
    elif overlap.get("n_excluded"):
        lines.append(
            f"reference images checked against {overlap['n_training']} training images: {overlap['n_excluded']} of "
            f"{overlap['n_reference']} are training images and were left out"
        )
    elif overlap.get("held_out"):
        lines.append(f"reference images checked against {overlap['n_training']} training images: none is a training image")
    elif overlap.get("why_not"):
        lines.append(f"reference images not checked against training images: {overlap['why_not']}")
    return lines


def interval_text(report: dict) -> str:
    """One line: the bootstrap intervals of FID, precision and recall (`report["uncertainty"]`); "" without them."""
    from medgen.evaluation.report import interval_cell

    cell = interval_cell(report.get("uncertainty"))
    return f"interval over the draw of generated images (bootstrap, reference images fixed): {cell}" if cell else ""


def _store_target(args: argparse.Namespace):
    """The pipeline folder the evaluation will be stored in (said before sampling), or None; a request that
    cannot be honoured is an error now, not after sampling."""
    if not (args.store_in_pipeline or args.store_in_builtin):
        return None
    flag = "--store-in-pipeline" if args.store_in_pipeline else "--store-in-builtin"
    if args.pipeline is None:
        raise ValueError(f"{flag} stores the evaluation in the --pipeline folder; with --generated there is none")
    from medgen.evaluation.provenance import is_builtin_folder
    from medgen.pipelines.hub import BUILTIN_PIPELINES
    from medgen.pipelines.publishing import local_pipeline_folder

    folder, problem = local_pipeline_folder(args.pipeline)
    builtin = args.pipeline.lower() in BUILTIN_PIPELINES or (folder is not None and is_builtin_folder(folder))
    if args.store_in_pipeline and builtin:
        raise ValueError(
            f"--store-in-pipeline: {args.pipeline} is a built-in pipeline shipped inside medgen"
            + (f" ({folder})" if folder else "")
            + "; its stored evaluation is written only when it is shipped (medgen models ship, then "
            "--store-in-builtin). To keep an evaluation of your own, copy the folder and evaluate the copy"
        )
    if args.store_in_builtin and not builtin:
        raise ValueError(
            f"--store-in-builtin is for the built-in pipelines inside medgen; {args.pipeline} is not one "
            "(use --store-in-pipeline)"
        )
    if args.store_in_builtin and args.allow_training_overlap:
        raise ValueError("--store-in-builtin with --allow-training-overlap: a built-in's evaluation must be on held-out images")
    if folder is None:
        raise ValueError(f"{flag}: {problem}")
    print(
        f"The evaluation will be stored in {folder} ({flag}): evaluation.json and the Evaluation section of its README.md",
        flush=True,
    )
    return folder


def _store(folder, report: dict) -> str:
    """Stores the report's summary in the pipeline folder; returns a line saying where it went, or why not."""
    from medgen.files import OutputError
    from medgen.pipelines.publishing import store_evaluation

    try:
        path = store_evaluation(folder, report)
    except OutputError as error:
        return f"note: evaluation not stored in the pipeline folder ({error}); the report above is complete"
    return f"evaluation stored: {path} (and the Evaluation section of {folder / 'README.md'})"
