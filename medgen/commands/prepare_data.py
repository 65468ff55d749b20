"""`medgen prepare-data`: decode, resize and cache a training config's data in several processes.

    medgen prepare-data --config train_configs/chexpert_label.yaml --num-proc 16
    accelerate launch --multi_gpu --num_processes 8 medgen/train.py --config train_configs/chexpert_label.yaml

The cache is the one `build_dataset` (and so training and `medgen evaluate --config`) looks up:
same config, same files -> the run that follows decodes nothing. `--cache-dir DIR` is
`data.cache_dir=DIR`: give the run the same value.
"""

from __future__ import annotations

import argparse
import os

from medgen.data.prepare import prepare


def default_num_proc() -> int:
    """At most 4 processes: decoding is CPU-bound, and more rarely pay off against disk reads on a shared machine."""
    return max(1, min(4, os.cpu_count() or 1))


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "prepare-data",
        help="decode, resize and cache a training config's data in several processes (before a multi-GPU run)",
        description=__doc__.split("\n\n")[0],
    )
    parser.add_argument("--config", required=True, help="YAML training config; its data (and extra_data) are prepared.")
    parser.add_argument("--cache-dir", "--cache_dir", help="where the cache goes (same as data.cache_dir=DIR).")
    parser.add_argument(
        "--num-proc", "--num_proc", type=int, default=default_num_proc(),
        help=f"processes decoding at once (default min(4, CPU count) = {default_num_proc()}).",
    )
    parser.add_argument("overrides", nargs="*", help="key=value overrides of config fields, e.g. data.resolution=256")
    parser.set_defaults(run=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from medgen.config import load_config

    if args.num_proc < 1:
        raise ValueError(f"--num-proc must be at least 1, got {args.num_proc}")
    overrides = list(args.overrides)
    if args.cache_dir:
        overrides.append(f"data.cache_dir={args.cache_dir}")
    config = load_config(args.config, overrides)
    sources = [config.data, *config.extra_data]
    if args.cache_dir:
        for data in config.extra_data:
            data.cache_dir = args.cache_dir
    streamed = [str(data.path) for data in sources if data.streaming]
    if streamed:
        raise ValueError(f"data.streaming is true for {streamed}: streamed data is never cached (set data.streaming=false)")
    for data in sources:
        prepare(data, args.num_proc)
    return 0
