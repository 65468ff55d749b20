"""How the app feels: time from a Generate click to the first image and to all N, and how fast Cancel frees the worker.

    python benchmarks/bench_app.py                                   # the embedded default pipeline, CPU
    python benchmarks/bench_app.py --pipeline path/to/pipeline --count 4 --steps 25

It calls the same function the Generate button calls (`AppService.run`: batched pipeline calls, the
ZIP written after each batch) and the same cancel path (an event the step callback checks), so the
numbers are what a user waits for minus network and browser time. It also times one plain batched
pipeline call for the same N images and prints the ratio app time / pipeline call (goal: <= 1.3).
Prints a table.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time

from medgen.app_logic import AppService, pipeline_with_sampler, stream_generation


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
    kwargs = {"num_inference_steps": request.num_inference_steps, "output_type": "np"}
    if service.info.kind == "label":
        kwargs.update(labels=[request.condition] * request.count, guidance_scale=request.guidance_scale)
    elif service.info.kind == "text":
        kwargs.update(prompt=request.prompt, num_images_per_prompt=request.count, guidance_scale=request.guidance_scale)
    else:
        kwargs.update(num_images_per_prompt=request.count)
    generators = [torch.Generator().manual_seed(seed) for seed in request.seeds]
    # In a thread, as the app runs it: torch's intra-op threading differs between the main and other threads.
    worker = threading.Thread(target=lambda: pipe(**kwargs, generator=generators))
    start = time.perf_counter()
    worker.start()
    worker.join()
    return time.perf_counter() - start


def time_cancel(service: AppService, request, after_steps: int) -> tuple[float, float]:
    """Seconds from setting Cancel to the end of the stream, and to the worker really stopping."""
    cancel, worker_done = threading.Event(), threading.Event()
    cancelled_at = None
    for update in stream_generation(service.pipe, request, cancel=cancel, worker_done=worker_done):
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
    parser.add_argument("--steps", type=int, default=25, help="denoising steps (default 25)")
    parser.add_argument("--repeats", type=int, default=2, help="timed runs after one warm-up run (default 2)")
    args = parser.parse_args(argv)

    try:
        load_start = time.perf_counter()
        service = AppService.from_source(args.pipeline, device=args.device)
        load_s = time.perf_counter() - load_start
    except (ValueError, FileNotFoundError) as error:
        print(f"bench_app: error: {error}", file=sys.stderr)
        return 2
    info = service.info
    inputs = {"condition": info.labels[0] if info.kind == "label" else None, "prompt": "chest x-ray" if info.kind == "text" else None}
    request = service.request(**inputs, count=args.count, num_inference_steps=args.steps, seed=0)
    time_run(service, service.request(**inputs, count=1, num_inference_steps=2, seed=0))  # warm-up

    firsts, totals, calls, cancels, frees = [], [], [], [], []
    for _ in range(args.repeats):
        first, total = time_run(service, request)
        firsts.append(first)
        totals.append(total)
        calls.append(time_batched_call(service, request))
        long_request = service.request(**inputs, count=args.count, num_inference_steps=max(args.steps, 10), seed=0)
        stream_end, worker_free = time_cancel(service, long_request, after_steps=3)
        cancels.append(stream_end)
        frees.append(worker_free)

    def cell(values: list[float]) -> str:
        return f"{statistics.median(values):8.3f} s"

    per_step = statistics.median(totals) / args.steps
    print(f"\nmedgen app benchmark: {info.source} ({info.class_name}, {info.image_size} px) on {service.device}, "
          f"{args.count} images x {args.steps} steps, median of {args.repeats}\n")
    rows = [
        ("pipeline load", f"{load_s:8.3f} s"),
        ("click -> first image", cell(firsts)),
        (f"click -> {args.count} images (with ZIP)", cell(totals)),
        ("one denoising step of the batch (mean)", f"{per_step:8.3f} s"),
        (f"one batched pipeline call ({args.count} images)", cell(calls)),
        ("app / batched call ratio (goal <= 1.3)", f"{statistics.median(totals) / statistics.median(calls):8.2f} x"),
        ("cancel -> stream ends", cell(cancels)),
        ("cancel -> worker free", cell(frees)),
    ]
    width = max(len(name) for name, _ in rows)
    print(f"| {'measure':<{width}} | {'time':>10} |\n|{'-' * (width + 2)}|{'-' * 12}|")
    for name, value in rows:
        print(f"| {name:<{width}} | {value:>10} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
