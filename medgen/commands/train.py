"""`medgen train`: train a pipeline in this process (`accelerate launch medgen/train.py` for several GPUs)."""

from __future__ import annotations

import argparse

from medgen.training.arguments import add_arguments, resolve_config


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "train", help="train a pipeline in this process (`accelerate launch medgen/train.py` for several GPUs)"
    )
    add_arguments(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """0 on success; 1 when training stopped (divergence), with one line naming the step; config errors raise."""
    import sys

    from medgen.train import main
    from medgen.training.divergence import TrainingStopped

    try:
        main(
            resolve_config(args), resume_from_checkpoint=args.resume_from_checkpoint,
            overwrite_output_dir=args.overwrite_output_dir,
        )
    except TrainingStopped as error:
        print(f"medgen train: error: {error}", file=sys.stderr)
        return 1
    return 0
