"""`medgen generate` launched as several processes: the same files as one process, one error line on failure."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import helpers  # tests/helpers.py: tiny seeded pipelines (pytest puts tests/ on sys.path)

ARGS = (
    "generate", "--labels", "pneumonia", "--count", "5", "--seed", "3", "--batch-size", "2",
    "--num-inference-steps", "2", "--format", "png,dcm",
)  # fmt: skip


def _medgen(tmp_path, launcher: list[str], *args: str) -> subprocess.CompletedProcess:
    # One thread per process, as a launcher sets it: the same arithmetic in every run.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [*launcher, "-m", "medgen", *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )


@pytest.mark.slow
def test_two_processes_write_the_files_one_process_writes(tmp_path):
    helpers.tiny_label_pipeline(labels=("normal", "pneumonia")).save_pretrained(tmp_path / "pipe")
    one = _medgen(tmp_path, [sys.executable], *ARGS, "--pipeline", "pipe", "--output", "one")
    assert one.returncode == 0, one.stderr
    # torchrun on CPU: `accelerate launch --cpu` would start a single process.
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    two = _medgen(tmp_path, torchrun, *ARGS, "--pipeline", "pipe", "--output", "two")
    assert two.returncode == 0, two.stderr

    params = json.loads((tmp_path / "two" / "params.json").read_text())
    assert params["num_processes"] == 2 and params["complete"] is True
    assert [image["index"] for image in params["images"]] == [0, 1, 2, 3, 4]
    names = sorted(path.name for path in (tmp_path / "one").iterdir())
    assert names == sorted(path.name for path in (tmp_path / "two").iterdir())
    for index in range(5):
        png = f"image_{index:05d}.png"
        assert (tmp_path / "one" / png).read_bytes() == (tmp_path / "two" / png).read_bytes(), png
    # One metadata.csv, written once by the main process, rows in image order whatever process made them.
    assert (tmp_path / "one" / "metadata.csv").read_bytes() == (tmp_path / "two" / "metadata.csv").read_bytes()

    import pydicom

    series = {pydicom.dcmread(tmp_path / "two" / f"image_{index:05d}.dcm").SeriesInstanceUID for index in range(5)}
    assert len(series) == 1  # both processes' DICOM files belong to one synthetic series

    # A refusal on the main process (files of a run already there) stops both processes with one error line.
    again = _medgen(tmp_path, torchrun, *ARGS, "--pipeline", "pipe", "--output", "two")
    assert again.returncode != 0
    errors = [line for line in again.stderr.splitlines() if line.startswith("medgen generate: error:")]
    assert len(errors) == 1 and "never overwrites" in errors[0], again.stderr
    assert (tmp_path / "one" / "image_00000.png").read_bytes() == (tmp_path / "two" / "image_00000.png").read_bytes()
