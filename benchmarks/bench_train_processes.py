"""Training throughput with 1 vs N processes on the same config, side by side in one run.

Each run trains `--steps` steps of the config (default: the latent 128 px chest-xray model) in a fresh output
folder, launched with `torchrun --standalone --nproc_per_node N` (on CPUs, `accelerate launch --cpu
--num_processes N` starts a single process), with the cores split evenly between processes. Throughput is
`training_summary.json`'s images/s (the global batch: per-process batch x processes), so the per-process
batch stays the same and N processes see N times more images per step.

    python benchmarks/bench_train_processes.py --processes 1,2 --steps 40 \\
        --override model.pretrained_vae=medgen/pretrained/chest-xray/vae
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run(processes: int, args: argparse.Namespace, folder: Path) -> dict:
    output = folder / f"procs{processes}"
    env = {**os.environ, "OMP_NUM_THREADS": str(max(1, args.cores // processes))}
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
        f"--master_port={free_port()}", str(REPO_ROOT / "medgen" / "train.py"), "--config", args.config,
        "--output_dir", str(output), f"max_train_steps={args.steps}", "checkpointing_steps=100000",
        "sample_every_steps=0", "report_to=none", f"log_every_steps={max(1, args.steps // 4)}", *args.override,
    ]
    subprocess.run(command, check=True, env=env, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return json.loads((output / "training_summary.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default=str(REPO_ROOT / "train_configs" / "chest_xray_128.yaml"))
    parser.add_argument("--processes", default="1,2", help="comma-separated process counts")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--override", nargs="*", default=[], help="config overrides (key=value)")
    args = parser.parse_args()
    counts = [int(value) for value in args.processes.split(",")]
    with tempfile.TemporaryDirectory() as folder:
        results = {count: run(count, args, Path(folder)) for count in counts}
    base = results[counts[0]]["images_per_second"]
    print(f"{Path(args.config).name}, {args.steps} steps, {args.cores} cores")
    print(f"{'processes':>9} | {'images/s':>8} | {'vs ' + str(counts[0]):>6}")
    for count, summary in results.items():
        print(f"{count:>9} | {summary['images_per_second']:>8.1f} | {summary['images_per_second'] / base:>6.2f}")


if __name__ == "__main__":
    main()
