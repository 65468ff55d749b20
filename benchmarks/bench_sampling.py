"""Sampling benchmark: pipeline overhead around the UNet, DDPM versus the default fast sampler, and their quality.

Three questions, answered side by side in one run:

1. How much time does a pipeline call spend outside the UNet? Forward pre/post hooks on the UNet sum its
   forward time; `overhead = pipeline wall time / summed UNet time` (target <= 1.05).
2. How many images per second does DDPM over its full schedule (1000 steps by default) give, against the
   default fast sampler, DPM-Solver++ at 25 steps, on the same model and batch?
3. With `--quality`: are the fast sampler's images as good? The same model samples the same N images (same
   labels, same seeds: image i starts from the noise of seed i) with DPM-Solver++ (25 steps), DDIM (50) and
   DDPM (its full schedule); FID and per-label recall against the real test split, and images/s, are
   reported side by side. Goal: FID(DPM-Solver++) <= 1.1 x FID(DDPM) at >= 40x DDPM's speed. Batches are
   written to `--output` as they finish, so an interrupted run resumes where it stopped.

The model is a saved pipeline (`--pipeline DIR`, e.g. a trained medgen model) or, by default, a randomly
initialised label-conditioned UNet with medgen's default training architecture at 32 px (about 1 M
parameters, built by `medgen.training.tasks`). Random weights are fine: timing does not depend on them.

    python benchmarks/bench_sampling.py                        # default architecture, CPU or GPU
    python benchmarks/bench_sampling.py --pipeline path/to/pipeline --batch-size 16 --repeats 5
    python benchmarks/bench_sampling.py --ddpm-steps 200       # shorter DDPM run on a slow CPU
    python benchmarks/bench_sampling.py --quality --pipeline chest-xray --num-images 256 --output runs/sampler-quality
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler

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


QUALITY_FID_RATIO = 1.1  # the fast sampler's FID may be at most this multiple of DDPM's
QUALITY_SPEEDUP = 40.0  # ... while sampling at least this many times faster


def fast_samplers(base_config, fast_steps: list[int]) -> list[tuple[str, Any, int]]:
    """DPM-Solver++ (the default sampler) at each of ``fast_steps``, on the pipeline's own noise schedule."""
    return [
        ("DPM-Solver++", DPMSolverMultistepScheduler.from_config(base_config, algorithm_type="dpmsolver++"), steps)
        for steps in fast_steps
    ]


def quality_samplers(base_config, fast_steps: list[int], ddim_steps: int, ddpm_steps: int) -> list[tuple[str, Any, int]]:
    """The samplers compared, each built from the pipeline's own noise schedule: DPM-Solver++ at each of
    ``fast_steps``, DDIM, and DDPM last (the reference every row is compared with)."""
    return [
        *fast_samplers(base_config, fast_steps),
        ("DDIM", DDIMScheduler.from_config(base_config), ddim_steps),
        ("DDPM", DDPMScheduler.from_config(base_config), ddpm_steps),
    ]


def sampler_folder(output: Path, name: str, steps: int) -> Path:
    """Where one sampler's batches are kept: one folder per sampler and step count."""
    return output / f"{name}-{steps}"


def image_labels(pipe, count: int) -> list[str | None]:
    """The label of each image: the pipeline's labels in turn, so that any prefix of the run is balanced."""
    names = list(getattr(pipe, "labels", None) or [])
    return [names[i % len(names)] if names else None for i in range(count)]


def _batch_kwargs(pipe, labels: list[str | None]) -> dict[str, Any]:
    if labels[0] is not None:
        return {"labels": labels}
    if "prompt" in inspect.signature(pipe.__call__).parameters:
        return {"prompt": ["chest x-ray"] * len(labels)}
    return {"num_images_per_prompt": len(labels)}


def check_manifest(output: Path, manifest: dict[str, Any]) -> None:
    """An output folder holds one run: resuming with other settings would mix images of two runs."""
    path = output / "quality_run.json"
    if path.is_file():
        stored = json.loads(path.read_text())
        if stored != manifest:
            changed = sorted(key for key in set(stored) | set(manifest) if stored.get(key) != manifest.get(key))
            raise SystemExit(
                f"--output {output} holds a run with other settings ({', '.join(changed)} differ); "
                "give another folder, or the same settings to resume it"
            )
    else:
        output.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(manifest, indent=2) + "\n")


def sample_batches(pipe, folder: Path, labels: list[str | None], steps: int, seed: int, batch_size: int, guidance_scale) -> None:
    """Samples the images of one sampler batch by batch into `folder`; batches already there are kept (resume)."""
    from safetensors.numpy import save_file
    from tqdm.auto import tqdm

    folder.mkdir(parents=True, exist_ok=True)
    starts = [start for start in range(0, len(labels), batch_size) if not (folder / f"batch-{start:06d}.safetensors").is_file()]
    for start in tqdm(starts, desc=folder.name, unit="batch"):
        batch = labels[start : start + batch_size]
        generators = [torch.Generator("cpu").manual_seed(seed + start + i) for i in range(len(batch))]
        kwargs = {"num_inference_steps": steps, "generator": generators, "output_type": "np", **_batch_kwargs(pipe, batch)}
        if guidance_scale is not None:
            kwargs["guidance_scale"] = guidance_scale
        began = time.perf_counter()
        with torch.inference_mode():
            images = np.asarray(pipe(**kwargs).images, dtype=np.float32)
        seconds = time.perf_counter() - began
        pixels = np.clip(np.round(images * 255), 0, 255).astype(np.uint8)
        path = folder / f"batch-{start:06d}.safetensors"
        save_file({"images": pixels}, str(path) + ".partial", metadata={"seconds": repr(seconds)})
        os.replace(str(path) + ".partial", path)  # a batch is on disk whole or not at all


def read_batches(folder: Path, count: int) -> tuple[np.ndarray, float]:
    """`(N, C, H, W)` images in [0, 1] of one sampler and the seconds their sampling took."""
    from safetensors import safe_open

    parts, seconds = [], 0.0
    for path in sorted(folder.glob("batch-*.safetensors")):
        with safe_open(str(path), framework="numpy") as handle:
            parts.append(handle.get_tensor("images"))
            seconds += float(handle.metadata()["seconds"])
    images = np.concatenate(parts) if parts else np.zeros((0, 1, 1, 1), dtype=np.uint8)
    if len(images) != count:
        raise SystemExit(f"{folder} holds {len(images)} images, {count} expected; run the benchmark again to finish it")
    return np.transpose(images, (0, 3, 1, 2)).astype(np.float32) / 255.0, seconds


def quality_metrics(real, generated: np.ndarray, labels: list[str | None], extractor, real_features: np.ndarray, k: int = 3) -> dict[str, Any]:
    """FID, precision and recall of one sampler's images, and recall per label (real images of a label vs the
    generated images asked for that label)."""
    from medgen.evaluation.features import extract_features
    from medgen.evaluation.fidelity import frechet_distance, precision_recall

    features = extract_features(extractor, generated)
    metrics: dict[str, Any] = {"fid": frechet_distance(real_features, features), **precision_recall(real_features, features, k)}
    if real.labels is not None and labels and labels[0] is not None:
        real_targets = real.labels.argmax(axis=1)
        lookup = {name.lower(): index for index, name in enumerate(real.label_names)}
        recall = {}
        for name in dict.fromkeys(labels):
            index = lookup.get(str(name).lower())
            mine = features[[i for i, label in enumerate(labels) if label == name]]
            theirs = real_features[real_targets == index] if index is not None else real_features[:0]
            if len(mine) > k and len(theirs) > k:
                recall[name] = precision_recall(theirs, mine, k)["recall"]
        metrics["recall_per_label"] = recall
    return metrics


QUALITY_HEADER = f"{'sampler':<14} {'steps':>6} {'images':>7} {'images/s':>10} {'speed-up':>9} {'FID':>8} {'FID / DDPM':>10} {'recall':>7}  recall per label"


def run_quality(args: argparse.Namespace) -> dict[str, Any]:
    from medgen.config import load_config
    from medgen.evaluation.features import cached_features, default_cache_dir, get_feature_extractor
    from medgen.evaluation.fidelity import real_baseline_fid
    from medgen.evaluation.images import load_real_split
    from medgen.pipelines import load_pipeline
    from medgen.pipelines.hub import resolve_pipeline_folder

    pipeline = args.pipeline or "default"
    folder = resolve_pipeline_folder(pipeline)
    config_path = Path(args.config) if args.config else folder / "training_config.yaml"
    if not config_path.is_file():
        raise SystemExit(f"no training config to read the real data from: {config_path} not found; pass --config")
    data = load_config(config_path).data
    pipe = load_pipeline(pipeline)
    pipe.to(torch.device(args.device))
    pipe.set_progress_bar_config(disable=True)
    base_config = pipe.scheduler.config
    samplers = quality_samplers(base_config, args.fast_steps, args.ddim_steps, args.ddpm_steps or base_config.num_train_timesteps)
    labels = image_labels(pipe, args.num_images)
    output = Path(args.output)
    check_manifest(output, {
        "pipeline": str(pipeline), "num_images": args.num_images, "seed": args.seed, "guidance_scale": args.guidance_scale,
        "samplers": [f"{name}-{steps}" for name, _, steps in samplers],
    })
    # the real data is read before the long sampling, so a wrong path fails in seconds
    real = load_real_split(data, args.split, data.resolution, data.channels)
    print(f"pipeline : {type(pipe).__name__} ({pipeline}); {args.num_images} images per sampler, seeds {args.seed}..")
    print(f"real     : {data.path} [{args.split}], {len(real)} images; features {args.feature_extractor}")
    for name, scheduler, steps in samplers:
        pipe.scheduler = scheduler
        sample_batches(pipe, sampler_folder(output, name, steps), labels, steps, args.seed, args.batch_size, args.guidance_scale)

    extractor = get_feature_extractor(args.feature_extractor)
    real_features = cached_features(extractor, real.images, real.fingerprint(), default_cache_dir())
    rows = []
    for name, _, steps in samplers:
        images, seconds = read_batches(sampler_folder(output, name, steps), args.num_images)
        rows.append({"sampler": name, "steps": steps, "images_per_s": len(images) / seconds,
                     **quality_metrics(real, images, labels, extractor, real_features)})
    ddpm = rows[-1]
    for row in rows:
        row["speedup_vs_ddpm"] = row["images_per_s"] / ddpm["images_per_s"]
        row["fid_ratio_vs_ddpm"] = row["fid"] / ddpm["fid"]
    fast_rows = rows[: len(args.fast_steps)]
    for row in fast_rows:
        row["meets_goal"] = bool(row["fid_ratio_vs_ddpm"] <= QUALITY_FID_RATIO and row["speedup_vs_ddpm"] >= QUALITY_SPEEDUP)
    fast = rows[0]  # the first --fast-steps value: the default under test
    baseline = real_baseline_fid(real_features, args.num_images)
    report = {
        "pipeline": str(pipeline), "real": f"{data.path} [{args.split}]", "n_real": len(real), "num_images": args.num_images,
        "feature_extractor": args.feature_extractor, "real_baseline_fid": baseline, "samplers": rows,
        "goal": {"fid_ratio_at_most": QUALITY_FID_RATIO, "speedup_at_least": QUALITY_SPEEDUP, "steps": fast["steps"],
                 "met": fast["meets_goal"]},
    }
    (output / "quality.json").write_text(json.dumps(report, indent=2) + "\n")

    print()
    print(QUALITY_HEADER)
    print("-" * len(QUALITY_HEADER))
    for row in rows:
        per_label = ", ".join(f"{name} {value:.3f}" for name, value in row.get("recall_per_label", {}).items())
        print(f"{row['sampler']:<14} {row['steps']:>6} {args.num_images:>7} {row['images_per_s']:>10.4g} "
              f"{row['speedup_vs_ddpm']:>8.1f}x {row['fid']:>8.2f} {row['fid_ratio_vs_ddpm']:>10.3f} {row['recall']:>7.3f}  {per_label}")
    if baseline:
        print(f"\nReal-vs-real FID floor at this N ({baseline['n_per_subset']} vs {baseline['n_per_subset']} real images): {baseline['fid']:.2f}")
    for row in fast_rows:
        print(f"Goal FID({row['sampler']} {row['steps']}) <= {QUALITY_FID_RATIO} x FID(DDPM) at >= {QUALITY_SPEEDUP:g}x its "
              f"speed: {'met' if row['meets_goal'] else 'not met'} (ratio {row['fid_ratio_vs_ddpm']:.3f}, "
              f"{row['speedup_vs_ddpm']:.1f}x).")
    print(f"report: {output / 'quality.json'}")
    return report


def _step_list(text: str) -> list[int]:
    """``"15,25"`` -> ``[15, 25]``: positive step counts."""
    try:
        steps = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected step counts such as 25 or 15,25, got {text!r}") from None
    if not steps or min(steps) < 1 or len(set(steps)) != len(steps):
        raise argparse.ArgumentTypeError(f"expected distinct positive step counts such as 25 or 15,25, got {text!r}")
    return steps


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pipeline", default=None, help="saved pipeline folder, built-in name or Hub repo id (default: built-in model)")
    parser.add_argument("--quality", action="store_true", help="compare the samplers' image quality (FID, recall) on --num-images images")
    parser.add_argument("--num-images", type=int, default=256, help="--quality: images per sampler (default 256)")
    parser.add_argument("--ddim-steps", type=int, default=50, help="--quality: DDIM steps (default 50)")
    parser.add_argument("--output", help="--quality: folder for the sampled batches and quality.json (resumable)")
    parser.add_argument("--config", help="--quality: training config whose data section is the real data (default: the pipeline's)")
    parser.add_argument("--split", default="test", help="--quality: real split to compare with (default test)")
    parser.add_argument("--seed", type=int, default=0, help="--quality: image i starts from the noise of seed + i (default 0)")
    parser.add_argument("--guidance-scale", type=float, default=None, help="--quality: guidance (default: the pipeline's)")
    parser.add_argument("--feature-extractor", default="inception", choices=("inception", "pixel"), help="--quality: FID features")
    parser.add_argument("--batch-size", type=int, default=4, help="images per pipeline call")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per sampler; the median is reported")
    parser.add_argument("--fast-steps", type=_step_list, default=[25], help="DPM-Solver++ steps, one or a comma list "
                        "such as 15,25 (each is a row; the first is the one the goal verdict is about; default 25)")
    parser.add_argument("--ddpm-steps", type=int, default=None, help="DDPM steps (default: the full training schedule)")
    parser.add_argument("--resolution", type=int, default=32, help="side of the built-in model (ignored with --pipeline)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    for name in ("batch_size", "repeats", "resolution"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be a positive integer, got {getattr(args, name)}")
    if args.ddpm_steps is not None and args.ddpm_steps < 1:
        parser.error(f"--ddpm-steps must be a positive integer, got {args.ddpm_steps}")
    if args.quality:
        if not args.output:
            parser.error("--quality needs --output, the folder its sampled batches are kept in")
        if args.num_images < 8 or args.ddim_steps < 1:
            parser.error("--num-images must be >= 8 and --ddim-steps >= 1")
    return args


def main(argv: list[str] | None = None) -> list[SamplerResult] | dict[str, Any]:
    args = parse_args(argv)
    if args.quality:
        return run_quality(args)
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
        *fast_samplers(base_config, args.fast_steps),
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

    ddpm, fasts = results[0], results[1:]
    print()
    full_schedule = base_config.num_train_timesteps
    # every DDPM step costs one UNet call; the rest of the call (VAE decode, post-processing) is paid once
    ddpm_full_s = ddpm.unet_s * full_schedule / ddpm.steps + (ddpm.wall_s - ddpm.unet_s)
    if ddpm.steps != full_schedule:
        print(f"Estimated DDPM over its full {full_schedule}-step schedule: {ddpm.batch_size / ddpm_full_s:.4g} images/s "
              f"(its UNet time scaled by {full_schedule}/{ddpm.steps}, plus the time outside the UNet once).")
    for fast in fasts:
        print(f"DPM-Solver++ ({fast.steps} steps) is {ddpm_full_s / fast.wall_s:.1f}x faster than DDPM ({full_schedule} steps).")
    worst = max(results, key=lambda r: r.overhead)
    verdict = "meets" if worst.overhead <= 1.05 else "misses"
    print(f"Largest overhead {worst.overhead:.3f} ({worst.name}) {verdict} the target of 1.05.")
    return results


if __name__ == "__main__":
    main()
