"""`benchmarks/bench_sampling.py --quality`: the sampler comparison a user runs before trusting the fast default."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

import helpers  # tests/helpers.py: tiny seeded pipelines (pytest puts tests/ on sys.path)

BENCHMARK = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_sampling.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_sampling", BENCHMARK)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file runs
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """A tiny label pipeline and a training config whose data section is a small PneumoniaMNIST-shaped npz."""
    folder = tmp_path_factory.mktemp("quality")
    rng = np.random.default_rng(0)
    arrays = {}
    for split, count in (("train", 8), ("val", 4), ("test", 24)):
        arrays[f"{split}_images"] = rng.integers(0, 255, (count, 16, 16)).astype(np.uint8)
        arrays[f"{split}_labels"] = (np.arange(count) % 2)[:, None]
    np.savez(folder / "pneumoniamnist.npz", **arrays)
    helpers.tiny_label_pipeline(labels=("normal", "pneumonia")).save_pretrained(folder / "pipe")
    config = {"data": {"source": "medmnist", "path": str(folder / "pneumoniamnist.npz"), "resolution": 16}}
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    return folder


def _argv(tiny_model, output, *extra):
    return [
        "--quality", "--pipeline", str(tiny_model / "pipe"), "--config", str(tiny_model / "config.yaml"),
        "--num-images", "8", "--batch-size", "4", "--fast-steps", "2", "--ddim-steps", "3", "--ddpm-steps", "5",
        "--feature-extractor", "pixel", "--output", str(output), "--device", "cpu", *extra,
    ]


def test_three_samplers_same_images_count_and_goal_verdict(bench, tiny_model, tmp_path, capsys):
    report = bench.main(_argv(tiny_model, tmp_path / "q"))
    rows = {row["sampler"]: row for row in report["samplers"]}
    assert list(rows) == ["DPM-Solver++", "DDIM", "DDPM"]
    assert [rows[name]["steps"] for name in rows] == [2, 3, 5]
    assert rows["DDPM"]["fid_ratio_vs_ddpm"] == 1.0 and rows["DDPM"]["speedup_vs_ddpm"] == 1.0
    for row in rows.values():
        assert row["fid"] >= 0 and 0 <= row["recall"] <= 1
        assert set(row["recall_per_label"]) == {"normal", "pneumonia"}
    fast = rows["DPM-Solver++"]
    # the verdict is the stated rule applied to the measured numbers
    expected = fast["fid_ratio_vs_ddpm"] <= 1.1 and fast["speedup_vs_ddpm"] >= 40
    assert report["goal"]["met"] is expected
    assert json.loads((tmp_path / "q" / "quality.json").read_text())["goal"]["met"] is expected
    assert "Goal FID(DPM-Solver++ 2)" in capsys.readouterr().out


def test_several_fast_step_counts_are_rows_against_the_same_ddpm(bench, tiny_model, tmp_path, capsys):
    report = bench.main([*_argv(tiny_model, tmp_path / "q"), "--fast-steps", "2,4"])
    fast = [row for row in report["samplers"] if row["sampler"] == "DPM-Solver++"]
    assert [row["steps"] for row in fast] == [2, 4]
    ddpm = report["samplers"][-1]
    for row in fast:  # each is compared with the one DDPM run, and gets its own verdict
        assert row["fid_ratio_vs_ddpm"] == pytest.approx(row["fid"] / ddpm["fid"])
        assert row["meets_goal"] is (row["fid_ratio_vs_ddpm"] <= 1.1 and row["speedup_vs_ddpm"] >= 40)
    # the report's verdict is about the first value, the default under test
    assert report["goal"]["steps"] == 2 and report["goal"]["met"] is fast[0]["meets_goal"]
    assert {path.name for path in (tmp_path / "q").iterdir() if path.is_dir()} == {
        "DPM-Solver++-2", "DPM-Solver++-4", "DDIM-3", "DDPM-5"
    }
    out = capsys.readouterr().out
    assert "Goal FID(DPM-Solver++ 2)" in out and "Goal FID(DPM-Solver++ 4)" in out


def test_an_interrupted_run_resumes_from_its_batches(bench, tiny_model, tmp_path):
    first = bench.main(_argv(tiny_model, tmp_path / "q"))
    batches = sorted((tmp_path / "q" / "DDPM-5").glob("batch-*.safetensors"))
    assert len(batches) == 2
    kept = batches[0].stat().st_mtime_ns
    batches[1].unlink()  # as if the run had been stopped during DDPM's second batch
    second = bench.main(_argv(tiny_model, tmp_path / "q"))
    assert batches[0].stat().st_mtime_ns == kept and batches[1].is_file()  # only the missing batch was sampled
    # image i starts from the noise of seed i, so the re-sampled batch and every metric are the same
    for a, b in zip(first["samplers"], second["samplers"]):
        assert a["fid"] == pytest.approx(b["fid"]) and a["recall"] == pytest.approx(b["recall"])


def test_resuming_with_other_settings_is_refused(bench, tiny_model, tmp_path):
    bench.main(_argv(tiny_model, tmp_path / "q"))
    with pytest.raises(SystemExit, match="holds a run with other settings \\(num_images differ\\)"):
        bench.main([*_argv(tiny_model, tmp_path / "q"), "--num-images", "12"])
