"""Decoding, resizing and caching a data config in several processes (`medgen prepare-data` runs it)."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any


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
