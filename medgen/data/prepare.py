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
import sys
import time
from pathlib import Path
from typing import Any


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


def prepare(data: Any, num_proc: int) -> Any:
    """Builds (or finds) the cache of one `DataConfig` and prints what it holds; returns the dataset."""
    from medgen.data.dataset import build_dataset
    from medgen.data.summary import format_data_summary, summarize_dataset

    start = time.perf_counter()
    built = build_dataset(data, num_proc=num_proc)
    seconds = time.perf_counter() - start
    files = [Path(item["filename"]) for item in built.dataset.cache_files]
    size = sum(path.stat().st_size for path in files if path.exists())
    print(format_data_summary(summarize_dataset(built)))
    folder = files[0].parent if files else "memory"
    print(
        f"cache: {folder} ({size / 1e6:.1f} MB, {size / max(len(built), 1):.0f} bytes per image); "
        f"{len(built)} images in {seconds:.1f} s with {num_proc} process(es)",
        flush=True,
    )
    sys.stdout.flush()
    return built
