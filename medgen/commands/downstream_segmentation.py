"""`medgen downstream --task segmentation`: the segmenter arms (real, real+synthetic, real+duplicated, synthetic pairs).

Examples::

    medgen downstream --task segmentation --pipeline chest-xray-lungs --config train_configs/lung_cxr_mask_128.yaml \\
        --output downstream/lungs --real-fraction 0.1,0.2,1.0 --seeds 5
    medgen downstream --task segmentation --synthetic pairs/ --data ../shared/data/busi-ultrasound-masks \\
        --label-column label --mask-column mask_file_name --output downstream/busi

The options are those of `medgen downstream` (see commands/downstream.py); synthetic pairs come from a
mask-conditioned pipeline with a mask generator, or from a `medgen generate --pairs` folder (metadata.csv with
file_name, mask_file_name, label).
"""

from __future__ import annotations

import argparse
import math
import sys


def _mask_pipeline(name: str, device: str):
    from medgen.evaluation.mask_faithfulness import is_mask_pipeline
    from medgen.pipelines import load_pipeline

    pipe = load_pipeline(name)
    if not is_mask_pipeline(pipe):
        raise ValueError(
            f"--task segmentation needs image + mask pairs, but pipeline {name} ({type(pipe).__name__}) is not "
            "mask-conditioned; give a mask-conditioned pipeline with a mask generator, or --synthetic FOLDER written "
            "by `medgen generate --pairs`"
        )
    if not pipe.has_mask_generator:
        raise ValueError(
            f"--task segmentation: pipeline {name} draws images from masks but has no mask generator to draw new masks; "
            "write pairs from your own masks with `medgen generate --pairs --masks DIR` and give that folder as --synthetic"
        )
    pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def run(args: argparse.Namespace) -> int:
    import dataclasses
    import json
    from pathlib import Path

    import numpy as np

    from medgen.commands.generate import _resolve_device
    from medgen.downstream.data import data_config_values, draw_subset
    from medgen.downstream.segmentation import as_labelled, run_segmentation_downstream
    from medgen.downstream.segmentation_report import store_in_pipeline_folder, summary_table, write_report
    from medgen.downstream.stats import seed_warnings
    from medgen.downstream.synthetic import check_pipeline_labels, peek_folder_geometry, pipeline_geometry
    from medgen.segmentation.data import load_pairs, relabel
    from medgen.segmentation.segmenter import QUICK, STANDARD

    if args.guidance_scale is not None and not (math.isfinite(args.guidance_scale) and args.guidance_scale >= 0):
        raise ValueError(f"--guidance-scale must be a finite number >= 0; got {args.guidance_scale}")
    if args.group_column is not None:
        raise ValueError("--group-column is not supported with --task segmentation yet; the subsets are drawn per label")
    values = data_config_values(args.data, args.config, args.label_column)
    if args.mask_column is not None:
        if values.get("source") != "csv":
            raise ValueError(f"--mask-column {args.mask_column!r} needs CSV data (a folder with metadata.csv or a CSV file)")
        values["mask_column"] = args.mask_column
    if not values.get("mask_column"):
        raise ValueError(
            "--task segmentation needs the real images' masks: give --mask-column (the CSV column with each image's "
            "mask, e.g. mask_file_name) or a --config whose data section sets mask_column"
        )
    device = _resolve_device(args.device)
    pipe = synthetic = None
    if args.pipeline is not None:
        pipe = _mask_pipeline(args.pipeline, device)
        channels, side = pipeline_geometry(pipe)
    else:
        channels, side = peek_folder_geometry(args.synthetic)
    train, mask_names = load_pairs(values, args.split, side, channels, args.max_real)
    test, _ = load_pairs(values, args.test_split, side, channels, args.max_real)
    shared = set(train.sources) & set(test.sources)
    if shared:
        raise ValueError(
            f"--split {args.split!r} and --test-split {args.test_split!r} share {len(shared)} pair(s) (e.g. {sorted(shared)[0]}); "
            "give data whose splits are disjoint (a split column, or a training config with holdout_fraction)"
        )
    if pipe is not None:
        check_pipeline_labels(pipe, train.label_names, args.pipeline)
        if len(pipe.mask_classes) != len(mask_names):
            raise ValueError(
                f"pipeline {args.pipeline} draws masks of {len(pipe.mask_classes)} class(es) ({', '.join(pipe.mask_classes)}); "
                f"the real masks have {len(mask_names)} ({', '.join(mask_names)})"
            )
    else:
        folder_values = {"source": "csv", "path": str(args.synthetic), "mask_column": "mask_file_name", "findings_column": "label"}
        if values.get("mask_classes"):
            folder_values["mask_classes"] = values["mask_classes"]
        synthetic, _ = load_pairs(folder_values, None, side, channels)
        synthetic = relabel(synthetic, train.label_names, f"--synthetic {args.synthetic}")
    n_train_read = len(train)
    if args.max_train is not None and args.max_train < len(train):
        pool_rng = np.random.default_rng([args.seed, 0x7261696E])  # fixed by the run seed, apart from the cells' draws
        train = train.subset(draw_subset(as_labelled(train), args.max_train / len(train), pool_rng))
    for warning in seed_warnings(args.seeds):
        print(f"medgen downstream: warning: {warning}", file=sys.stderr)
    recipe = QUICK if args.quick else STANDARD
    if args.classifier_size is not None or args.classifier_steps is not None:
        recipe = dataclasses.replace(
            recipe,
            steps=args.classifier_steps or recipe.steps,
            image_size=args.classifier_size if args.classifier_size is not None else recipe.image_size,
        )
    report = run_segmentation_downstream(
        train,
        test,
        pipeline=pipe,
        synthetic_pairs=synthetic,
        synthetic_folder=args.synthetic,
        real_fractions=args.real_fraction,
        synthetic_ratio=args.synthetic_ratio,
        seeds=args.seeds,
        seed=args.seed,
        rare_label=args.rare_label,
        recipe=recipe,
        num_inference_steps=args.num_inference_steps,
        guidance_scale=args.guidance_scale,
        sample_batch_size=args.batch_size,
        device=device,
        progress=True,
    )
    report = {
        "command": "medgen downstream --task segmentation",
        "pipeline": args.pipeline,
        "data": args.data or f"{args.config} (data section)",
        "split": args.split,
        "test_split": args.test_split,
        "mask_column": values["mask_column"],
        "mask_classes": mask_names,
        "quick": args.quick,
        "n_train_read": n_train_read,
        "max_train": args.max_train,
        **report,
    }
    write_report(report, args.output)
    print(summary_table(report))
    print(f"report: {args.output}/report.html", file=sys.stderr)
    if args.pipeline is not None and not args.no_store and not args.quick:
        written = json.loads((Path(args.output) / "report.json").read_text())
        print(store_in_pipeline_folder(args.pipeline, written), file=sys.stderr)
    return 0
