"""Benchmark the Fréchet Radiomics Distance of `medgen evaluate` on real chest X-rays: cost per image, and
whether it orders known shifts (real < noised < blurred) above its real-vs-real floor.

Usage::

    python benchmarks/bench_frd.py                                  # 64 Kermany images at 128 px, every core
    python benchmarks/bench_frd.py --num-images 256 --size 64 --workers 2
    python benchmarks/bench_frd.py --data path/to/kermany-cxr-224

Needs `pip install 'medgen[frd]'`. The reference set is N test images, the compared sets N training images
as they are, with Gaussian noise (sd 0.05) and blurred (Gaussian, sigma 1.5 px). The first row extracts both
sets (cold cache); the others reuse the cached reference features, as re-evaluating a checkpoint does, so
their time is the cost of N images alone.
"""

from __future__ import annotations

import argparse
import csv
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image
from scipy.ndimage import gaussian_filter

from medgen.evaluation import ImageSet
from medgen.evaluation.frd import default_num_workers, frd_report, missing_packages

DEFAULT_DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "kermany-cxr-224"


def load_split(folder: Path, split: str, count: int, size: int) -> np.ndarray:
    """`count` images of `split`, evenly spaced through metadata.csv, as `(N, 1, size, size)` float in [0, 1]."""
    with open(folder / "metadata.csv", newline="") as handle:
        rows = [row for row in csv.DictReader(handle) if row["split"] == split]
    chosen = rows[:: max(1, len(rows) // count)][:count]
    images = [
        np.asarray(Image.open(folder / row["file_name"]).convert("L").resize((size, size), Image.BILINEAR)) for row in chosen
    ]
    return np.stack(images).astype(np.float32)[:, None] / 255


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="a kermany-cxr-224 folder (metadata.csv with a split column)")
    parser.add_argument("--num-images", type=int, default=64)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--workers", type=int, default=None, help=f"processes (default: every core, here {default_num_workers()})")
    args = parser.parse_args()
    if missing_packages():
        raise SystemExit(f"FRD needs {', '.join(missing_packages())}: pip install 'medgen[frd]'")

    reference = ImageSet(load_split(args.data, "test", args.num_images, args.size), source="test")
    train = load_split(args.data, "train", args.num_images, args.size)
    compared = {
        "real (training images)": train,
        "noised (sd 0.05)": np.clip(train + np.random.default_rng(0).normal(0, 0.05, train.shape), 0, 1).astype(np.float32),
        "blurred (sigma 1.5 px)": gaussian_filter(train, sigma=(0, 0, 1.5, 1.5)),
    }
    workers = args.workers or default_num_workers()
    print(f"{args.num_images} reference and {args.num_images} compared images, {args.size} px, {workers} process(es)")
    print(f"{'compared set':24} {'FRD':>8} {'floor':>8} {'features':>9} {'time s':>8} {'s/image/process':>16}")
    with tempfile.TemporaryDirectory() as cache:
        for index, (name, images) in enumerate(compared.items()):
            started = time.perf_counter()
            entry = frd_report(reference, ImageSet(images, source=name), cache_dir=cache, num_workers=workers)
            seconds = time.perf_counter() - started
            extracted = len(images) * (2 if index == 0 else 1)  # the first row also extracts the reference set
            print(
                f"{name:24} {entry['frd']:8.3f} {entry['frd_real_baseline']['frd']:8.3f} {entry['n_features']:9d} "
                f"{seconds:8.1f} {seconds * workers / extracted:16.2f}"
            )


if __name__ == "__main__":
    main()
