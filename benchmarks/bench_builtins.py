"""Built-in models on this machine: sampling time at pipeline defaults and the size of the shipped weights.

Issue 19's usability goals for the 128 px built-ins (the text model `medical-text` is timed beside them): one image in <= 2 s and a batch of 16 in <= 20 s at the
pipeline's defaults (its scheduler, step count and guidance) on the CPU, and every shipped weight file together
<= 100 MB (fp16), so that the package stays publishable on PyPI. For each built-in named this times
a 1-image call and a 16-image call (the first label; median of `--repeats` calls after one untimed warm-up
call), side by side in one run, and sums the bytes of every `*.safetensors` file under `medgen/pretrained/`.

    python benchmarks/bench_builtins.py
    python benchmarks/bench_builtins.py --models chest-xray lung-ct --repeats 5 --json runs/bench_builtins.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from medgen.pipelines import load_pipeline
from medgen.pipelines.locate import BUILTIN_PIPELINES, builtin_pipeline_path
from medgen.sampling import effective_guidance_scale, effective_inference_steps, sampler_text

LABEL_MODELS = ("chest-xray", "brain-mri", "breast-ultrasound", "lung-ct", "medical-text")
ONE_IMAGE_GOAL_S = 2.0
BATCH_GOAL_S = 20.0
WEIGHTS_GOAL_MB = 100.0


def time_call(pipeline, condition: str, count: int, repeats: int) -> float:
    """Median seconds of `repeats` calls making `count` images of `condition` (a label, or a text model's prompt)
    at the pipeline's defaults."""
    key = "labels" if pipeline.labels else "prompt"

    def call() -> None:
        generator = torch.Generator().manual_seed(0)
        pipeline(**{key: [condition] * count}, generator=generator, output_type="np")

    call()  # warm-up: first-call allocations and lazy initialisation are not what a user waits for each time
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def shipped_weight_bytes() -> dict[str, int]:
    """Bytes of the safetensors files of each shipped folder (every folder under medgen/pretrained)."""
    root = builtin_pipeline_path("default").parent
    return {
        folder.name: sum(path.stat().st_size for path in folder.rglob("*.safetensors"))
        for folder in sorted(root.iterdir()) if folder.is_dir() and not folder.name.startswith((".", "_"))
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(LABEL_MODELS), choices=sorted(BUILTIN_PIPELINES),
                        help="built-ins to time (default: the four 128 px label models and the text model; a text model is "
                        "asked for its first example prompt)")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per size; the median is reported")
    parser.add_argument("--batch", type=int, default=16, help="images in the batch call (default 16)")
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args()
    torch.set_grad_enabled(False)

    rows = []
    print(f"torch threads: {torch.get_num_threads()}")
    print(f"| model | sampler | steps | guidance | 1 image s (goal <= {ONE_IMAGE_GOAL_S:g}) | {args.batch} images s "
          f"(goal <= {BATCH_GOAL_S:g}) |")
    print("|---|---|---|---|---|---|")
    for name in args.models:
        pipeline = load_pipeline(name)
        pipeline.set_progress_bar_config(disable=True)
        label = pipeline.labels[0] if pipeline.labels else pipeline.config.example_prompts[0]
        one = time_call(pipeline, label, 1, args.repeats)
        batch = time_call(pipeline, label, args.batch, args.repeats)
        row = {  # the defaults a call without them samples with: the model's own where it stores them
            "model": name, "label": label, "sampler": sampler_text(pipeline.scheduler),
            "num_inference_steps": effective_inference_steps(pipeline),
            "guidance_scale": effective_guidance_scale(pipeline, None), "one_image_s": one, "batch": args.batch,
            "batch_s": batch,
        }
        rows.append(row)
        print(f"| {name} | {row['sampler']} | {row['num_inference_steps']} | {row['guidance_scale']} | {one:.2f} | {batch:.2f} |")

    sizes = shipped_weight_bytes()
    total_mb = sum(sizes.values()) / 1e6
    print()
    print("| shipped folder | safetensors MB |")
    print("|---|---|")
    for folder, size in sizes.items():
        print(f"| {folder} | {size / 1e6:.1f} |")
    print(f"| **all** (goal <= {WEIGHTS_GOAL_MB:g}) | **{total_mb:.1f}** |")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"timings": rows, "weights_bytes": sizes}, indent=2) + "\n")


if __name__ == "__main__":
    main()
