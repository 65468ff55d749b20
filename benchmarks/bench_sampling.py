"""Sampling benchmark: pipeline overhead around the UNet, and DDPM versus the default fast sampler.

Two questions, answered side by side in one run:

1. How much time does a pipeline call spend outside the UNet? Forward pre/post hooks on the UNet sum its
   forward time; `overhead = pipeline wall time / summed UNet time` (target <= 1.05).
2. How many images per second does DDPM over its full schedule (1000 steps by default) give, against the
   default fast sampler, DPM-Solver++ at 25 steps, on the same model and batch?

The model is a saved pipeline (`--pipeline DIR`, e.g. a trained medgen model) or, by default, a randomly
initialised label-conditioned UNet with medgen's default training architecture at 32 px (about 1 M
parameters, built by `medgen.training.tasks`). Random weights are fine: timing does not depend on them.

    python benchmarks/bench_sampling.py                        # default architecture, CPU or GPU
    python benchmarks/bench_sampling.py --pipeline path/to/pipeline --batch-size 16 --repeats 5
    python benchmarks/bench_sampling.py --ddpm-steps 200       # shorter DDPM run on a slow CPU
"""

from __future__ import annotations

import argparse
import inspect
import statistics
import time
from dataclasses import dataclass
from typing import Any, Callable

import torch
from diffusers import DDPMScheduler, DPMSolverMultistepScheduler

DEFAULT_LABELS = ["normal", "pneumonia"]


class UNetTimer:
    """Sums the UNet's forward time with hooks, so the rest of the pipeline call is measured as overhead."""

    def __init__(self, unet: torch.nn.Module, synchronize: Callable[[], None]):
        self.synchronize = synchronize
        self.total = 0.0
        self.calls = 0
        self._start = 0.0
        unet.register_forward_pre_hook(self._before)
        unet.register_forward_hook(self._after)

    def _before(self, module: torch.nn.Module, args: Any) -> None:
        self.synchronize()  # on a GPU, work queued before the UNet must not count as UNet time
        self._start = time.perf_counter()

    def _after(self, module: torch.nn.Module, args: Any, output: Any) -> None:
        self.synchronize()
        self.total += time.perf_counter() - self._start
        self.calls += 1

    def reset(self) -> None:
        self.total, self.calls = 0.0, 0


@dataclass
class SamplerResult:
    name: str
    steps: int
    wall_s: float
    unet_s: float
    unet_calls: int
    batch_size: int

    @property
    def overhead(self) -> float:
        return self.wall_s / self.unet_s

    @property
    def images_per_s(self) -> float:
        return self.batch_size / self.wall_s


def default_pipeline(resolution: int):
    """A label-conditioned pipeline with medgen's default training architecture and noise schedule."""
    from medgen.config import TrainConfig
    from medgen.data import DataConfig
    from medgen.training.diffusion import build_noise_scheduler, build_sampler
    from medgen.training.tasks import build_task

    # The data config is never read: the task only needs the resolution and channels to shape the UNet.
    config = TrainConfig(data=DataConfig(source="medmnist", path="unused.npz", resolution=resolution))
    torch.manual_seed(0)
    task = build_task(config, DEFAULT_LABELS, multi_label=False)
    scheduler = build_sampler(build_noise_scheduler(config.diffusion), config.diffusion.sampler)
    return task.build_pipeline(task.unet, scheduler)


def call_kwargs(pipe, batch_size: int) -> dict[str, Any]:
    """Arguments that make any medgen pipeline produce `batch_size` images."""
    parameters = inspect.signature(pipe.__call__).parameters
    if getattr(pipe, "labels", None):
        names = pipe.labels
        return {"labels": [names[i % len(names)] for i in range(batch_size)]}
    if "prompt" in parameters:
        return {"prompt": ["chest x-ray"] * batch_size}
    return {"num_images_per_prompt": batch_size}


def time_sampler(pipe, timer: UNetTimer, name: str, steps: int, batch_size: int, repeats: int, synchronize) -> SamplerResult:
    kwargs = call_kwargs(pipe, batch_size)
    pipe(num_inference_steps=min(steps, 3), output_type="np", **kwargs)  # warm-up: allocations, kernels
    walls, unet_times = [], []
    for repeat in range(repeats):
        timer.reset()
        generator = torch.Generator(device="cpu").manual_seed(repeat)
        synchronize()
        start = time.perf_counter()
        pipe(num_inference_steps=steps, generator=generator, output_type="np", **kwargs)
        synchronize()
        walls.append(time.perf_counter() - start)
        unet_times.append(timer.total)
    # the median resists one repeat slowed by other processes on a shared machine
    return SamplerResult(name, steps, statistics.median(walls), statistics.median(unet_times), timer.calls, batch_size)


TABLE_HEADER = (
    f"{'sampler':<14} {'steps':>6} {'batch':>6} {'wall s':>9} {'UNet s':>9} {'UNet calls':>10} {'overhead':>9} {'images/s':>10}"
)


def format_row(r: SamplerResult) -> str:
    return (
        f"{r.name:<14} {r.steps:>6} {r.batch_size:>6} {r.wall_s:>9.3f} {r.unet_s:>9.3f} {r.unet_calls:>10} "
        f"{r.overhead:>9.3f} {r.images_per_s:>10.4g}"
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pipeline", default=None, help="saved pipeline folder or Hub repo id (default: built-in model)")
    parser.add_argument("--batch-size", type=int, default=4, help="images per pipeline call")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per sampler; the median is reported")
    parser.add_argument("--fast-steps", type=int, default=25, help="DPM-Solver++ steps")
    parser.add_argument("--ddpm-steps", type=int, default=None, help="DDPM steps (default: the full training schedule)")
    parser.add_argument("--resolution", type=int, default=32, help="side of the built-in model (ignored with --pipeline)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    for name in ("batch_size", "repeats", "fast_steps", "resolution"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be a positive integer, got {getattr(args, name)}")
    if args.ddpm_steps is not None and args.ddpm_steps < 1:
        parser.error(f"--ddpm-steps must be a positive integer, got {args.ddpm_steps}")
    return args


def main(argv: list[str] | None = None) -> list[SamplerResult]:
    args = parse_args(argv)
    device = torch.device(args.device)
    if args.pipeline:
        from medgen.pipelines import load_pipeline

        pipe = load_pipeline(args.pipeline)
        source = args.pipeline
    else:
        pipe = default_pipeline(args.resolution)
        source = f"built-in default architecture, {args.resolution} px, random weights"
    pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    synchronize = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    timer = UNetTimer(pipe.unet, synchronize)

    base_config = pipe.scheduler.config
    ddpm_steps = args.ddpm_steps or base_config.num_train_timesteps
    samplers = [
        ("DDPM", DDPMScheduler.from_config(base_config), ddpm_steps),
        ("DPM-Solver++", DPMSolverMultistepScheduler.from_config(base_config, algorithm_type="dpmsolver++"), args.fast_steps),
    ]

    parameters = sum(p.numel() for p in pipe.unet.parameters())
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"pipeline : {type(pipe).__name__} ({source})")
    print(f"UNet     : {parameters / 1e6:.2f} M parameters, sample size {pipe.unet.config.sample_size}, dtype {pipe.unet.dtype}")
    print(f"device   : {device_name}; torch {torch.__version__}; batch {args.batch_size}; median of {args.repeats}")
    print()

    print(TABLE_HEADER)
    print("-" * len(TABLE_HEADER))
    results = []
    for name, scheduler, steps in samplers:
        pipe.scheduler = scheduler
        results.append(time_sampler(pipe, timer, name, steps, args.batch_size, args.repeats, synchronize))
        print(format_row(results[-1]), flush=True)  # rows appear as they finish: DDPM can take minutes on a CPU

    ddpm, fast = results
    print()
    print(f"DPM-Solver++ ({fast.steps} steps) is {fast.images_per_s / ddpm.images_per_s:.1f}x faster than DDPM ({ddpm.steps} steps).")
    full_schedule = base_config.num_train_timesteps
    if ddpm.steps != full_schedule:
        # every DDPM step costs the same UNet call, so time scales linearly with the step count
        estimate = ddpm.images_per_s * ddpm.steps / full_schedule
        print(f"Estimated DDPM over its full {full_schedule}-step schedule: {estimate:.4g} images/s "
              f"({fast.images_per_s / estimate:.1f}x slower than DPM-Solver++).")
    worst = max(results, key=lambda r: r.overhead)
    verdict = "meets" if worst.overhead <= 1.05 else "misses"
    print(f"Largest overhead {worst.overhead:.3f} ({worst.name}) {verdict} the target of 1.05.")
    return results


if __name__ == "__main__":
    main()
