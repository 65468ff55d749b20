"""`medgen train`: train a pipeline in this process, or on several processes (GPUs) with `--num-processes`.

With `--num-processes N` the config and the output folder are checked here first (a typo is one line and
exit status 2, before any process starts), then `accelerate launch --quiet` starts the N processes of
`medgen/train.py`; a failing process is reported by its own line, without accelerate's traceback.
"""

from __future__ import annotations

import argparse

from medgen.arguments import positive_int
from medgen.training.arguments import add_arguments, resolve_config


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "train", help="train a pipeline in this process, or on several GPUs with --num-processes"
    )
    add_arguments(parser)
    parser.add_argument(
        "--num-processes", "--num_processes", type=positive_int, default=1,
        help="processes to train on, one per GPU (default 1: this process). More than 1 checks the config here, "
        "then starts them with `accelerate launch --quiet` (--multi_gpu when there are enough GPUs).",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """0 on success; 1 when training stopped (divergence), with one line naming the step; config errors raise."""
    import sys

    config = resolve_config(args)  # an error is the command's one line (exit 2), before anything starts
    if getattr(args, "num_processes", 1) > 1:
        import subprocess

        from medgen.training.run_folder import check_output_dir

        check_output_dir(config.output_dir, args.resume_from_checkpoint, args.overwrite_output_dir)
        return subprocess.run(launch_command(args, config)).returncode

    from medgen.train import main
    from medgen.training.divergence import TrainingStopped

    try:
        main(config, resume_from_checkpoint=args.resume_from_checkpoint, overwrite_output_dir=args.overwrite_output_dir)
    except TrainingStopped as error:
        print(f"medgen train: error: {error}", file=sys.stderr)
        return 1
    return 0


def launch_command(args: argparse.Namespace, config) -> list[str]:
    """`accelerate launch --quiet ... medgen/train.py ...` for `args` (the same config, flags and overrides)."""
    import sys
    from pathlib import Path

    import torch

    script = Path(__file__).resolve().parent.parent / "train.py"
    devices = ["--multi_gpu"] if torch.cuda.device_count() >= args.num_processes else ["--cpu"]
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--quiet", "--num_processes", str(args.num_processes),
        "--num_machines", "1", "--dynamo_backend", "no", "--mixed_precision", config.mixed_precision, *devices,
        str(script), "--config", str(args.config),
    ]
    if args.output_dir:
        command += ["--output_dir", str(args.output_dir)]
    if args.max_train_steps is not None:
        command += ["--max_train_steps", str(args.max_train_steps)]
    if args.resume_from_checkpoint:
        command += ["--resume_from_checkpoint", str(args.resume_from_checkpoint)]
    if args.overwrite_output_dir:
        command.append("--overwrite_output_dir")
    return [*command, *args.overrides]
