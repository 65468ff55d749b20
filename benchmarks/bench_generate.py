"""Generation benchmark: `medgen generate` images/s with 1 and with N processes, side by side in one run.

Each row is one real `medgen generate` command: one process (`python -m medgen generate`) or N processes
(`torchrun --standalone --nproc_per_node N -m medgen generate`; `accelerate launch --num_processes N -m medgen
generate` starts the same processes on GPUs). The machine's CPU cores are shared fairly: each process gets
`cores // N` threads (OMP_NUM_THREADS). Two rates are given per row:

- sampling: images / the run's `duration_s` in `params.json` (sampling and writing, until every process has
  finished), the part that scales with `--count`;
- end to end: images / the command's wall time, which adds process start, imports and pipeline loading (a
  few seconds per run, paid once whatever the count).

The last column says whether the PNGs are byte-identical to the one-process run's (they must be).

    python benchmarks/bench_generate.py                                  # built-in pipeline, CPU
    python benchmarks/bench_generate.py --count 64 --steps 25 --processes 1,2,4
    python benchmarks/bench_generate.py --pipeline runs/pneumonia/pipeline --device cuda --processes 1,8
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pipeline", default="pneumoniamnist-32", help="pipeline name, folder or Hub id (default: pneumoniamnist-32, the fastest built-in)")
    parser.add_argument("--labels", default="pneumonia", help="--labels of every run (default pneumonia)")
    parser.add_argument("--count", type=int, default=32, help="images per run (default 32)")
    parser.add_argument("--steps", type=int, default=10, help="--num-inference-steps (default 10)")
    parser.add_argument("--batch-size", type=int, default=4, help="--batch-size, per process (default 4)")
    parser.add_argument("--processes", default="1,2", help="comma-separated process counts (default 1,2)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="default cpu")
    return parser.parse_args(argv)


def generate(args: argparse.Namespace, processes: int, output: Path) -> tuple[float, float]:
    """Runs one `medgen generate`; returns (command wall time, the run's duration_s) in seconds."""
    cores = os.cpu_count() or 1
    env = {**os.environ, "OMP_NUM_THREADS": str(max(1, cores // processes))}
    launcher = [sys.executable]
    if processes > 1:
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes)]
    command = [
        *launcher, "-m", "medgen", "generate", "--pipeline", args.pipeline, "--labels", args.labels,
        "--count", str(args.count), "--num-inference-steps", str(args.steps), "--batch-size", str(args.batch_size),
        "--seed", "0", "--device", args.device, "--output", str(output),
    ]  # fmt: skip
    started = time.perf_counter()
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{result.stderr[-3000:]}")
    return wall, json.loads((output / "params.json").read_text())["duration_s"]


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    counts = [int(text) for text in args.processes.split(",")]
    print(f"pipeline {args.pipeline}, {args.count} images, {args.steps} steps, batch {args.batch_size} per process, "
          f"device {args.device}, {os.cpu_count()} CPU cores")
    header = f"{'processes':>9} | {'threads/proc':>12} | {'sampling img/s':>14} | {'end-to-end img/s':>16} | {'wall s':>6} | identical PNGs"
    print(header)
    print("-" * len(header))
    with tempfile.TemporaryDirectory() as folder:
        reference = None
        for processes in counts:
            output = Path(folder) / f"p{processes}"
            wall, duration = generate(args, processes, output)
            pngs = {path.name: path.read_bytes() for path in sorted(output.glob("*.png"))}
            reference = reference or pngs
            threads = max(1, (os.cpu_count() or 1) // processes)
            print(
                f"{processes:>9} | {threads:>12} | {args.count / duration:>14.2f} | {args.count / wall:>16.2f} | "
                f"{wall:>6.1f} | {'yes' if pngs == reference else 'NO'}",
                flush=True,
            )


if __name__ == "__main__":
    main()
