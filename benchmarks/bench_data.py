"""Data preparation benchmark: images/s with 1 and N processes, cache bytes per image, read speed.

Side by side in one run, on real chest X-rays (`../shared/data/kermany-cxr-224`, JPEG, split `train`):

1. `build_dataset(cfg, num_proc=P)` (what `medgen prepare-data --num-proc P` runs) for each P in
   `--num-proc`, each into a fresh temporary cache: decode + resize + quantize + write, in images/s.
2. Cache bytes per image: the uint8 cache just written, and the float32 layout caches used before
   (the same images written by `datasets` as float32 `Array3D`, as `CACHE_VERSION` 2 stored them).
3. Read speed of each layout through `dataset[i : i + batch]`, the DataLoader's access pattern:
   uint8 bytes + the read transform to [-1, 1], versus float32 arrays in torch format.
4. Decode + preprocess time of one image by source size (`--source-sizes`, one process): a real
   X-ray of the set enlarged to the side of CheXpert-small (~390 px), NIH (1024 px PNG) or
   CheXpert / MIMIC-CXR JPEGs (~2500 px), for projecting preparation times of those sets.

    python benchmarks/bench_data.py                                 # 128 px, 1000 images, 1 vs 2 processes
    python benchmarks/bench_data.py --max-samples 0 --num-proc 1 2 4  # every training image
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from medgen.data import DataConfig, build_dataset

DEFAULT_DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "kermany-cxr-224"


def cache_bytes(dataset) -> int:
    return sum(Path(item["filename"]).stat().st_size for item in dataset.cache_files)


def read_rate(dataset, batch: int = 64, limit: int = 512) -> float:
    count = min(limit, len(dataset))
    start = time.perf_counter()
    for first in range(0, count, batch):
        dataset[first : min(first + batch, count)]["pixel_values"]
    return count / (time.perf_counter() - start)


def float32_layout(built, cache_dir: str):
    """The same images as the float32 cache stored them before (`Array3D` float32 rows plus labels/text/source)."""
    from datasets import Array3D, Dataset, Features, List, Value

    cfg = built.config
    shape = (cfg.channels, cfg.resolution, cfg.resolution)
    features = Features(
        {
            "pixel_values": Array3D(shape=shape, dtype="float32"),
            "labels": List(Value("float32")),
            "text": Value("string"),
            "source": Value("string"),
        }
    )

    def rows():
        for first in range(0, len(built), 256):
            batch = built.dataset[first : first + 256]
            for index in range(len(batch["source"])):
                yield {
                    "pixel_values": batch["pixel_values"][index].numpy(),
                    "labels": batch["labels"][index].numpy(),
                    "text": batch["text"][index],
                    "source": batch["source"][index],
                }

    return Dataset.from_generator(rows, features=features, cache_dir=cache_dir).with_format("torch")


def decode_seconds(image_path: Path, side: int, suffix: str, resolution: int, scratch: Path, repeats: int = 10) -> float:
    """Median seconds to read, preprocess and quantize one `side` x `side` file (what a decoding process does)."""
    import statistics

    from PIL import Image

    from medgen.data.readers import read_frames
    from medgen.data.transforms import preprocess_unit, quantize

    target = scratch / f"source-{side}{suffix}"
    Image.open(image_path).convert("L").resize((side, side), Image.Resampling.BICUBIC).save(target)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        frames, meta = read_frames(target, keep_rgb=False)
        quantize(preprocess_unit(frames[0], resolution=resolution, value_range=meta.get("value_range")))
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="an image folder with metadata.csv")
    parser.add_argument("--resolution", type=int, default=128)
    parser.add_argument("--max-samples", type=int, default=1000, help="first N training images; 0 = all")
    parser.add_argument("--num-proc", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--source-sizes", nargs="*", default=["224.jpeg", "390.jpeg", "1024.png", "2500.jpeg"],
                        help="SIDE.SUFFIX source files to time decoding of (4.)")  # fmt: skip
    args = parser.parse_args()
    if not args.data.exists():
        raise SystemExit(f"data not found: {args.data}")

    print(f"data: {args.data} (split train), {args.resolution} px, "
          f"{'all images' if not args.max_samples else f'first {args.max_samples} images'}")  # fmt: skip
    print(f"{'processes':>9} {'images':>7} {'seconds':>8} {'images/s':>9} {'cache bytes/image':>18}")
    built = None
    with tempfile.TemporaryDirectory() as scratch:
        for num_proc in args.num_proc:
            cfg = DataConfig(
                source="csv", path=str(args.data), findings_column="label", resolution=args.resolution,
                max_samples=args.max_samples or None, cache_dir=str(Path(scratch) / f"cache-{num_proc}"),
            )  # fmt: skip
            start = time.perf_counter()
            built = build_dataset(cfg, num_proc=num_proc)
            seconds = time.perf_counter() - start
            print(f"{num_proc:>9} {len(built):>7} {seconds:>8.1f} {len(built) / seconds:>9.1f} "
                  f"{cache_bytes(built.dataset) / len(built):>18.0f}", flush=True)  # fmt: skip
        old = float32_layout(built, str(Path(scratch) / "float32"))
        side = args.resolution
        print(f"\ncache bytes per image at {side} px ({side}x{side} = {side * side} pixels):")
        print(f"  before (float32 Array3D): {cache_bytes(old) / len(old):>9.0f}")
        print(f"  after  (uint8 bytes):     {cache_bytes(built.dataset) / len(built):>9.0f}")
        print("\nread speed, dataset[i : i + 64] (the DataLoader's access), images/s:")
        print(f"  before (float32, torch format):       {read_rate(old):>9.0f}")
        print(f"  after  (uint8 + transform to [-1,1]): {read_rate(built.dataset):>9.0f}")
        if args.source_sizes:
            example = built.dataset[0]["source"]
            print(f"\ndecode + preprocess to {args.resolution} px + quantize, one process, ms per image (median of 10):")
            for item in args.source_sizes:
                side, suffix = item.split(".")
                seconds = decode_seconds(Path(example), int(side), "." + suffix, args.resolution, Path(scratch))
                print(f"  {side:>5} px {suffix:<4}: {seconds * 1000:7.1f}")


if __name__ == "__main__":
    main()
