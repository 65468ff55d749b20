"""The steps both tasks of `medgen downstream` take around their experiment (commands/downstream.py runs the
classification task, commands/downstream_segmentation.py the segmentation one): the synthetic source, the
training pool, the recipe and experiment options from the arguments, and writing, printing and storing the report.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any, Callable

import numpy as np


def check_guidance(args: argparse.Namespace) -> None:
    if args.guidance_scale is not None and not (math.isfinite(args.guidance_scale) and args.guidance_scale >= 0):
        raise ValueError(f"--guidance-scale must be a finite number >= 0; got {args.guidance_scale}")


def synthetic_source(args: argparse.Namespace, device: str, check: Callable[[Any, str], None] | None = None) -> tuple[Any, int, int]:
    """The loaded `--pipeline` (checked by `check(pipe, name)`, moved to `device`) or None for a `--synthetic`
    folder, and the (channels, side) of its images: the real data is read at that size."""
    from medgen.downstream.synthetic import peek_folder_geometry, pipeline_geometry

    if args.pipeline is None:
        return (None, *peek_folder_geometry(args.synthetic))
    from medgen.pipelines import load_pipeline

    pipe = load_pipeline(args.pipeline)
    if check is not None:
        check(pipe, args.pipeline)
    pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    return (pipe, *pipeline_geometry(pipe))


def training_pool(train: Any, args: argparse.Namespace, labelled: Callable[[Any], Any] = lambda items: items) -> Any:
    """With `--max-train`, a seeded random pool of that many training items (stratified by label; `labelled(train)`
    gives the `LabelledImages` view the draw needs) that the real fractions are taken from; else `train`."""
    from medgen.downstream.data import draw_subset

    if args.max_train is None or args.max_train >= len(train):
        return train
    pool_rng = np.random.default_rng([args.seed, 0x7261696E])  # fixed by the run seed, apart from the cells' draws
    return train.subset(draw_subset(labelled(train), args.max_train / len(train), pool_rng))


def warn_seeds(seeds: int) -> None:
    from medgen.downstream.stats import seed_warnings

    for warning in seed_warnings(seeds):  # said before the run, not only in the report an hour later
        print(f"medgen downstream: warning: {warning}", file=sys.stderr)


def model_recipe(args: argparse.Namespace, quick: Any, standard: Any) -> Any:
    """The model recipe: `quick` with --quick, else `standard`; --classifier-steps / --classifier-size override it."""
    import dataclasses

    chosen = quick if args.quick else standard
    if args.classifier_size is None and args.classifier_steps is None:
        return chosen
    return dataclasses.replace(
        chosen,
        steps=args.classifier_steps or chosen.steps,
        image_size=args.classifier_size if args.classifier_size is not None else chosen.image_size,
    )


def experiment_options(args: argparse.Namespace, device: str) -> dict[str, Any]:
    """The keyword arguments both experiments (`run_downstream`, `run_segmentation_downstream`) take from the command."""
    return {
        "synthetic_folder": args.synthetic,
        "real_fractions": args.real_fraction,
        "synthetic_ratio": args.synthetic_ratio,
        "seeds": args.seeds,
        "seed": args.seed,
        "rare_label": args.rare_label,
        "num_inference_steps": args.num_inference_steps,
        "guidance_scale": args.guidance_scale,
        "sample_batch_size": args.batch_size,
        "device": device,
        "progress": True,
    }


def finish(
    args: argparse.Namespace,
    report: dict[str, Any],
    *,
    command: str,
    task_fields: dict[str, Any],
    n_train_read: int,
    write_report: Callable[[dict, str], Any],
    summary_table: Callable[[dict], str],
    stored: Any,
) -> int:
    """Heads the report with the command's arguments (`task_fields` after the splits), writes it to --output,
    prints its summary table and, for a local --pipeline (not --quick, not --no-store), stores the result with it
    as `stored` (a `store.StoredResult`) says."""
    report = {
        "command": command,
        "pipeline": args.pipeline,
        "data": args.data or f"{args.config} (data section)",
        "split": args.split,
        "test_split": args.test_split,
        **task_fields,
        "quick": args.quick,
        "n_train_read": n_train_read,
        "max_train": args.max_train,
        **report,
    }
    write_report(report, args.output)
    print(summary_table(report))
    print(f"report: {args.output}/report.html", file=sys.stderr)
    if args.pipeline is not None and not args.no_store and not args.quick:
        from medgen.downstream.store import store_in_pipeline_folder

        written = json.loads((Path(args.output) / "report.json").read_text())  # the report as JSON holds it
        print(store_in_pipeline_folder(args.pipeline, written, stored), file=sys.stderr)
    return 0
