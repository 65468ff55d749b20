"""How the app feels: time from a Generate click to the first image and to all N, per batch size, and how fast
Cancel frees the worker.

    python benchmarks/bench_app.py                                   # the embedded default pipeline, CPU
    python benchmarks/bench_app.py --pipeline path/to/pipeline --count 4 --steps 15 --batch-sizes 16,2,1

It calls the same function the Generate button calls (`AppService.run`: small batched pipeline calls whose
images reach the gallery as each finishes, the ZIP written after each batch) and the same cancel path (an
event the step callback checks), so the numbers are what a user waits for minus network and browser time.
Each batch size is run side by side in the same process, interleaved, so they share the machine's state;
a batch size of the run's count or more is one pipeline call for the whole run. It also times one plain
batched pipeline call for the same N images in every repeat and prints the median of the ratios app time / pipeline
call of the same repeat (goal: <= 1.3), which holds up when other work slows the machine down for a while.
Prints a table.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time

from medgen.app import AppService, pipeline_with_sampler, stream_generation
from medgen.app.streaming import call_kwargs


def time_run(service: AppService, request) -> tuple[float, float]:
    """Seconds from the call to the first image and to the last one."""
    start = time.perf_counter()
    first = None
    for result in service.run(request):
        if result.gallery and first is None:
            first = time.perf_counter() - start
    return first or float("nan"), time.perf_counter() - start


def time_batched_call(service: AppService, request) -> float:
    """Seconds for one plain pipeline call making all of `request`'s images (no app around it)."""
    import torch

    pipe = pipeline_with_sampler(service.pipe, request.sampler)
    kwargs = call_kwargs(service.info.kind, request, request.count)
    generators = [torch.Generator().manual_seed(seed) for seed in request.seeds]
    # In a thread, as the app runs it: torch's intra-op threading differs between the main and other threads.
    worker = threading.Thread(target=lambda: pipe(**kwargs, generator=generators, output_type="np"))
    start = time.perf_counter()
    worker.start()
    worker.join()
    return time.perf_counter() - start


def time_cancel(service: AppService, request, after_steps: int) -> tuple[float, float]:
    """Seconds from setting Cancel to the end of the stream, and to the worker really stopping."""
    cancel, worker_done = threading.Event(), threading.Event()
    cancelled_at = None
    for update in stream_generation(service.pipe, request, cancel=cancel, worker_done=worker_done, batch_size=service.batch_size):
        if update.kind == "step" and update.steps_done >= after_steps and cancelled_at is None:
            cancelled_at = time.perf_counter()
            cancel.set()
    stream_end = time.perf_counter() - cancelled_at
    worker_done.wait()
    return stream_end, time.perf_counter() - cancelled_at


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pipeline", default=None, help="pipeline folder or Hub id (default: $MEDGEN_PIPELINE, then the embedded default)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="cpu")
    parser.add_argument("--count", type=int, default=4, help="images per run (default 4)")
    parser.add_argument("--steps", type=int, default=15, help="denoising steps (default 15, the app's default)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per batch size after one warm-up run (default 3)")
    parser.add_argument(
        "--batch-sizes", default=None,
        help="comma list of images per pipeline call to compare side by side (default: COUNT, i.e. the whole run in "
        "one call, and the app's default)",
    )
    args = parser.parse_args(argv)

    try:
        load_start = time.perf_counter()
        service = AppService.from_source(args.pipeline, device=args.device)
        load_s = time.perf_counter() - load_start
    except (ValueError, FileNotFoundError) as error:
        print(f"bench_app: error: {error}", file=sys.stderr)
        return 2
    default_batch = service.batch_size
    batch_sizes = (
        [int(value) for value in args.batch_sizes.split(",")] if args.batch_sizes
        else list(dict.fromkeys([args.count, default_batch]))
    )
    info = service.info
    inputs = {"condition": info.labels[0] if info.kind == "label" else None, "prompt": "chest x-ray" if info.kind == "text" else None}
    request = service.request(**inputs, count=args.count, num_inference_steps=args.steps, seed=0)
    time_run(service, service.request(**inputs, count=1, num_inference_steps=2, seed=0))  # warm-up

    firsts: dict[int, list[float]] = {size: [] for size in batch_sizes}
    totals: dict[int, list[float]] = {size: [] for size in batch_sizes}
    cancels: dict[int, list[float]] = {size: [] for size in batch_sizes}
    calls: list[float] = []
    for _ in range(args.repeats):
        calls.append(time_batched_call(service, request))
        for size in batch_sizes:  # interleaved, so that a slow moment of the machine hits every size alike
            service.batch_size = size
            first, total = time_run(service, request)
            firsts[size].append(first)
            totals[size].append(total)
            long_request = service.request(**inputs, count=args.count, num_inference_steps=max(args.steps, 10), seed=0)
            cancels[size].append(time_cancel(service, long_request, after_steps=3)[1])
    service.batch_size = default_batch

    def median(values: list[float]) -> str:
        return f"{statistics.median(values):.3f}"

    call = statistics.median(calls)
    print(f"\nmedgen app benchmark: {service.default_model} ({info.class_name}, {info.image_size} px) on {service.device}, "
          f"{args.count} images x {args.steps} steps, median of {args.repeats}; pipeline load {load_s:.2f} s; "
          f"one plain batched call for all {args.count} images: {call:.3f} s\n")
    header = ["images per call", "calls", "click -> first image (s)", f"click -> {args.count} images + ZIP (s)",
              "app / one call (paired)", "cancel -> worker free (s)"]
    print("| " + " | ".join(header) + " |\n|" + "|".join("-" * (len(name) + 2) for name in header) + "|")
    for size in batch_sizes:
        calls_per_run = -(-args.count // size)
        name = f"{size}{' (app default)' if size == default_batch else ''}"
        # Each run divided by the plain call timed in the same repeat: robust to a machine whose load drifts.
        paired = statistics.median(total / plain for total, plain in zip(totals[size], calls))
        cells = [name, str(calls_per_run), median(firsts[size]), median(totals[size]), f"{paired:.2f} x",
                 median(cancels[size])]
        print("| " + " | ".join(cell.rjust(len(head)) for cell, head in zip(cells, header)) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
