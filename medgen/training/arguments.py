"""The arguments of `medgen train` and `medgen/train.py`, kept apart from the training code so that
`medgen --help` does not import torch, accelerate and diffusers."""

from __future__ import annotations

import argparse

from medgen.config import TrainConfig, load_config


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--config", required=True, help="YAML training config (see train_configs/).")
    parser.add_argument("--output_dir", "--output-dir", help="Where the pipeline, checkpoints and logs go.")
    parser.add_argument("--max_train_steps", "--max-train-steps", type=int, help="Optimiser updates in total.")
    parser.add_argument(
        "--resume_from_checkpoint", "--resume-from-checkpoint",
        help="'latest' (newest complete checkpoint in output_dir, or a fresh start if none) or a checkpoint folder.",
    )
    parser.add_argument(
        "--overwrite_output_dir", "--overwrite-output-dir", action="store_true",
        help="Remove the pipeline, checkpoints, samples and logs of an earlier run in output_dir before training "
        "(without it, a folder holding an earlier run is refused).",
    )
    parser.add_argument("overrides", nargs="*", help="key=value overrides of config fields, e.g. optim.learning_rate=1e-4")
    return parser


def resolve_config(args: argparse.Namespace) -> TrainConfig:
    overrides = list(args.overrides)
    if args.output_dir:
        overrides.append(f"output_dir={args.output_dir}")
    if args.max_train_steps is not None:
        overrides.append(f"max_train_steps={args.max_train_steps}")
    return load_config(args.config, overrides)
