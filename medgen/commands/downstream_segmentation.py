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
from typing import Any


def _check_mask_pipeline(pipe: Any, name: str) -> None:
    from medgen.evaluation.mask_faithfulness import is_mask_pipeline

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


def run(args: argparse.Namespace) -> int:
    from medgen.commands import downstream_steps as steps
    from medgen.commands.generate import _resolve_device
    from medgen.downstream.data import data_config_values
    from medgen.downstream.segmentation import as_labelled, run_segmentation_downstream
    from medgen.downstream.segmentation_report import SEGMENTATION, summary_table, write_report
    from medgen.downstream.synthetic import check_pipeline_labels
    from medgen.segmentation.data import load_pairs, relabel
    from medgen.segmentation.segmenter import QUICK, STANDARD

    steps.check_guidance(args)
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
    pipe, channels, side = steps.synthetic_source(args, device, _check_mask_pipeline)
    train, mask_names = load_pairs(values, args.split, side, channels, args.max_real)
    test, _ = load_pairs(values, args.test_split, side, channels, args.max_real)
    shared = set(train.sources) & set(test.sources)
    if shared:
        raise ValueError(
            f"--split {args.split!r} and --test-split {args.test_split!r} share {len(shared)} pair(s) (e.g. {sorted(shared)[0]}); "
            "give data whose splits are disjoint (a split column, or a training config with holdout_fraction)"
        )
    synthetic = None  # pairs read from a --synthetic folder; a --pipeline's are sampled in the experiment
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
    train = steps.training_pool(train, args, as_labelled)
    steps.warn_seeds(args.seeds)
    report = run_segmentation_downstream(
        train, test, pipeline=pipe, synthetic_pairs=synthetic, recipe=steps.model_recipe(args, QUICK, STANDARD),
        **steps.experiment_options(args, device),
    )
    return steps.finish(
        args, report, command="medgen downstream --task segmentation",
        task_fields={"mask_column": values["mask_column"], "mask_classes": mask_names}, n_train_read=n_train_read,
        write_report=write_report, summary_table=summary_table, stored=SEGMENTATION,
    )
