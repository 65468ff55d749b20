"""Benchmark `medgen evaluate`: feature extraction speed and whole-evaluation wall time on PneumoniaMNIST.

Usage::

    python benchmarks/bench_evaluation.py                      # N = 1000, Inception features
    python benchmarks/bench_evaluation.py --num-images 64 --feature-extractor pixel
    python benchmarks/bench_evaluation.py --data path/to/pneumoniamnist.npz --device cuda
    python benchmarks/bench_evaluation.py --pipeline pneumoniamnist-32 --num-images 64   # as `medgen evaluate`

The "generated" set is N real validation images written as PNGs (a stand-in for a model's samples, so
the benchmark measures the evaluation, not sampling), or, with --pipeline, N images sampled from that
pipeline as `medgen evaluate --num-samples N` does. The evaluation runs twice: cold (empty cache: real
features and the classifier are computed) and warm (cached: only the generated images are embedded).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from medgen.evaluation import ImageSet, evaluate, save_generated_folder
from medgen.evaluation.features import extract_features, get_feature_extractor

DEFAULT_DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "pneumoniamnist" / "pneumoniamnist.npz"


def feature_throughput(name: str, images: np.ndarray, batch_size: int, device: str) -> float:
    """Images per second of feature extraction (after one warm-up batch)."""
    extractor = get_feature_extractor(name).to(device)

    class OnDevice(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = extractor

        def forward(self, batch: torch.Tensor) -> torch.Tensor:
            return self.inner(batch.to(device))

    module = OnDevice()
    extract_features(module, images[:batch_size], batch_size)
    started = time.perf_counter()
    extract_features(module, images, batch_size)
    return len(images) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="PneumoniaMNIST .npz")
    parser.add_argument("--num-images", type=int, default=1000, help="generated images N (default 1000)")
    parser.add_argument("--feature-extractor", choices=("inception", "pixel"), default="inception")
    parser.add_argument("--throughput-images", type=int, default=32, help="images timed for features/s (default 32)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", default="cpu", help="device for the feature throughput line (default cpu)")
    parser.add_argument("--no-feature-memorization", action="store_true", help="skip embedding the training split")
    parser.add_argument("--pipeline", help="sample N images from this pipeline instead of scoring real PNGs")
    parser.add_argument("--num-inference-steps", type=int, default=25, help="with --pipeline (default 25)")
    args = parser.parse_args()
    if not Path(args.data).is_file():
        raise SystemExit(f"PneumoniaMNIST not found at {args.data}; pass --data")

    arrays = np.load(args.data)
    rows: list[tuple[str, str]] = [("torch threads", str(torch.get_num_threads()))]
    sample = arrays["test_images"][: args.throughput_images, None].astype(np.float32) / 255
    for name in ("pixel", args.feature_extractor) if args.feature_extractor != "pixel" else ("pixel",):
        rate = feature_throughput(name, sample, args.batch_size, args.device)
        rows.append((f"{name} features, images/s ({args.device})", f"{rate:.1f}"))

    count = min(args.num_images, len(arrays["val_images"]) + len(arrays["test_images"]))
    pool_images = np.concatenate([arrays["val_images"], arrays["test_images"]])[:count]
    pool_labels = np.concatenate([arrays["val_labels"], arrays["test_labels"]])[:count, 0]
    generated = ImageSet(pool_images, np.eye(2, dtype=np.float32)[pool_labels], ["normal", "pneumonia"], False, "bench")
    with tempfile.TemporaryDirectory() as tmp:
        save_generated_folder(generated, Path(tmp) / "generated")
        for phase in ("cold", "warm"):
            started = time.perf_counter()
            source = (
                {"pipeline": args.pipeline, "num_samples": count, "num_inference_steps": args.num_inference_steps, "device": args.device}
                if args.pipeline else {"generated": Path(tmp) / "generated"}
            )
            report = evaluate(
                **source, data=args.data, split="test", output=Path(tmp) / phase,
                feature_extractor=args.feature_extractor, cache_dir=Path(tmp) / "cache", batch_size=args.batch_size,
                memorization_features=not args.no_feature_memorization,
            )
            rows.append((f"evaluate N={count}, {phase} cache, wall s", f"{time.perf_counter() - started:.1f}"))
            if phase == "cold":
                rows += [(f"  {step} s", f"{seconds:.1f}") for step, seconds in report["timings_s"].items()]
                if "sampling" in report:
                    rows.append(("  sampling s", f"{report['sampling']['duration_s']:.1f}"))
        rows.append(("FID vs test", f"{report['fid']:.3f}"))
        rows.append(("FID real baseline", f"{report['fid_real_baseline']['fid']:.3f}"))

    width = max(len(name) for name, _ in rows)
    print(f"{'measure'.ljust(width)} | value")
    print(f"{'-' * width}-|------")
    for name, value in rows:
        print(f"{name.ljust(width)} | {value}")


if __name__ == "__main__":
    main()
