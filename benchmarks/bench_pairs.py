"""Time to make image + mask pairs with `medgen generate --pairs` at the built-in 128 px shape.

The speed of sampling does not depend on the weights, so by default the pipeline is built untrained from
train_configs/lung_cxr_mask_128.yaml and lung_cxr_masks_64.yaml (the image UNet on the shared autoencoder, the
64 px mask generator); `--pipeline DIR` times a trained folder instead. Goal: 16 pairs in <= 30 s on this machine.
Prints the wall time and the CPU time of the run (on a shared machine the wall time includes waiting for others).

    python benchmarks/bench_pairs.py --count 16
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def build_untrained(folder: Path) -> Path:
    from diffusers import DPMSolverMultistepScheduler

    from medgen.config import load_config
    from medgen.pipelines import MaskConditionedPipeline
    from medgen.training.diffusion import build_noise_scheduler
    from medgen.training.mask_task import MaskGeneratorTask, MaskTask

    os.chdir(REPO)  # the configs name the autoencoder relative to the repository
    image = load_config(REPO / "train_configs" / "lung_cxr_mask_128.yaml")
    masks = load_config(REPO / "train_configs" / "lung_cxr_masks_64.yaml")
    labels = ["normal", "tuberculosis"]
    image_task, mask_task = MaskTask(image, labels, False), MaskGeneratorTask(masks, labels, False)
    scheduler = DPMSolverMultistepScheduler.from_config(build_noise_scheduler(image.diffusion).config)
    pipe = image_task.build_pipeline(image_task.unet, scheduler)
    pipe = MaskConditionedPipeline(
        unet=pipe.unet, scheduler=pipe.scheduler, vae=pipe.vae, mask_unet=mask_task.unet,
        mask_scheduler=DPMSolverMultistepScheduler.from_config(scheduler.config),
        id2label=pipe.config.id2label, id2mask_class=pipe.config.id2mask_class,
    )
    return pipe.save_pretrained(folder)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pipeline", help="a trained mask pipeline folder (default: untrained, built-in shape)")
    parser.add_argument("--count", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--label", default="normal")
    args = parser.parse_args()
    from medgen import cli

    with tempfile.TemporaryDirectory() as temporary:
        pipeline = args.pipeline or str(build_untrained(Path(temporary) / "pipeline"))
        output = Path(temporary) / "pairs"
        import resource

        cpu_start = resource.getrusage(resource.RUSAGE_SELF)
        start = time.perf_counter()
        code = cli.main([
            "generate", "--pipeline", pipeline, "--labels", args.label, "--pairs", "--count", str(args.count),
            "--batch-size", str(args.batch_size), "--seed", "0", "--output", str(output),
        ])
        seconds = time.perf_counter() - start
        cpu_end = resource.getrusage(resource.RUSAGE_SELF)
        cpu = (cpu_end.ru_utime - cpu_start.ru_utime) + (cpu_end.ru_stime - cpu_start.ru_stime)
        pairs = len(list((output / "masks").glob("*.png"))) if output.exists() else 0
    load = os.getloadavg()[0]
    # on a shared machine the wall time depends on the others' load; the CPU time is what the run itself needed
    print(
        f"{pairs} pairs in {seconds:.1f} s wall, {cpu:.1f} s CPU (goal <= 30 s for 16), exit {code}, "
        f"load average {load:.1f} on {os.cpu_count()} cores"
    )
    sys.exit(code)


if __name__ == "__main__":
    main()
