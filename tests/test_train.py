"""Training: config validation, a real run on PneumoniaMNIST, exact resume after interruption, 2-process DDP."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from medgen.config import load_config
from medgen.pipelines import LabelConditionedPipeline, load_pipeline
from medgen.train import main
from medgen.training import checkpoints

REPO_ROOT = Path(__file__).resolve().parent.parent
TINY = REPO_ROOT / "train_configs" / "tiny.yaml"


def tiny_overrides(npz: Path, output_dir: Path, steps: int = 6) -> list[str]:
    return [
        f"data.path={npz}", "data.max_samples=96", "data.resolution=16", f"data.cache_dir={output_dir.parent / 'cache'}",
        f"output_dir={output_dir}", f"max_train_steps={steps}", "train_batch_size=16", "checkpointing_steps=2",
        "checkpoints_total_limit=3", "sample_every_steps=0", "num_sample_images=2", "log_every_steps=2",
        "report_to=none",
    ]


def test_every_shipped_config_loads():
    for path in sorted((REPO_ROOT / "train_configs").glob("*.yaml")):
        config = load_config(path)
        assert config.max_train_steps >= 1, path


def test_config_typo_names_the_key(tmp_path):
    config = tmp_path / "typo.yaml"
    config.write_text(TINY.read_text().replace("learning_rate:", "learnig_rate:"))
    with pytest.raises(ValueError, match=r"optim\.learnig_rate.*learning_rate"):
        load_config(config)


def test_a_yaml_typo_suggests_the_closest_key_instead_of_listing_all(tmp_path):
    config = tmp_path / "typo.yaml"
    config.write_text(TINY.read_text().replace("resolution:", "resolutoin:"))
    with pytest.raises(ValueError) as error:
        load_config(config)
    message = str(error.value)
    assert message.startswith(f"{config}: ") and "did you mean data.resolution?" in message
    assert "bad_files" not in message  # not every key of the section


def test_a_command_line_typo_is_the_command_lines_error_with_the_closest_key(tmp_path, capsys):
    from medgen.cli import main as cli_main

    with pytest.raises(ValueError) as error:
        load_config(TINY, ["data.resolutoin=64"])
    message = str(error.value)
    assert message.startswith("command-line override 'data.resolutoin=64'") and "did you mean data.resolution?" in message
    assert str(TINY) not in message and "bad_files" not in message
    with pytest.raises(ValueError, match=r"^command-line override 'max_train_steps=many'.*expected an integer"):
        load_config(TINY, ["max_train_steps=many"])
    assert cli_main(["train", "--config", str(TINY), "data.resolutoin=64", f"output_dir={tmp_path / 'run'}"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("medgen train: error: command-line override"), lines
    assert not (tmp_path / "run").exists()


def test_config_wrong_type_and_bad_override_are_errors():
    with pytest.raises(ValueError, match="max_train_steps: expected an integer"):
        load_config(TINY, ["max_train_steps=many"])
    with pytest.raises(ValueError, match="Unknown config key.*diffusion.sheduler"):
        load_config(TINY, ["diffusion.sheduler=dpm"])
    with pytest.raises(ValueError, match="key=value"):
        load_config(TINY, ["optim.learning_rate"])
    with pytest.raises(ValueError, match="beta_schedule"):
        load_config(TINY, ["diffusion.beta_schedule=quadratic"])
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        load_config("nope.yaml")


def test_override_sets_nested_values():
    config = load_config(TINY, ["optim.learning_rate=2e-4", "model.block_out_channels=[8, 16]", "data.clahe=true"])
    assert config.optim.learning_rate == pytest.approx(2e-4)
    assert config.model.block_out_channels == [8, 16]
    assert config.data.clahe is True


def test_tiny_run_saves_a_loadable_pipeline(pneumoniamnist_npz, tmp_path):
    output_dir = tmp_path / "run"
    config = load_config(TINY, tiny_overrides(pneumoniamnist_npz, output_dir))
    main(config)

    assert (output_dir / "model_index.json").is_file()
    assert (output_dir / "pipeline.py").is_file()
    assert (output_dir / "training_config.yaml").is_file()
    assert "max_train_steps: 6" in (output_dir / "training_config.yaml").read_text()
    assert [p.name for p in checkpoints.list_checkpoints(output_dir)] == ["checkpoint-2", "checkpoint-4", "checkpoint-6"]
    assert (output_dir / "checkpoints" / "checkpoint-6" / "training_config.yaml").is_file()
    assert list((output_dir / "samples").glob("step-*.png"))
    assert not list(output_dir.rglob("*.bin")) or all("checkpoints" in str(p) for p in output_dir.rglob("*.bin"))

    pipe = load_pipeline(output_dir)
    assert isinstance(pipe, LabelConditionedPipeline)
    assert pipe.labels == ["normal", "pneumonia"]
    images = pipe(labels=["normal", "pneumonia"], num_inference_steps=3, output_type="np").images
    assert images.shape == (2, 16, 16, 1)
    assert 0.0 <= images.min() and images.max() <= 1.0


def test_resume_after_interruption_matches_an_uninterrupted_run(pneumoniamnist_npz, tmp_path):
    full_dir, resumed_dir = tmp_path / "full", tmp_path / "resumed"
    main(load_config(TINY, tiny_overrides(pneumoniamnist_npz, full_dir)))

    # The interrupted run: checkpoint-4 is the last complete one; a write of step 6 was cut off half-way.
    (resumed_dir / "checkpoints").mkdir(parents=True)
    shutil.copytree(full_dir / "checkpoints" / "checkpoint-4", resumed_dir / "checkpoints" / "checkpoint-4")
    half_written = resumed_dir / "checkpoints" / ".tmp-checkpoint-6"
    half_written.mkdir()
    (half_written / "model.safetensors").write_bytes(b"truncated")
    assert checkpoints.resolve_checkpoint(resumed_dir, "latest").name == "checkpoint-4"

    main(load_config(TINY, tiny_overrides(pneumoniamnist_npz, resumed_dir)), resume_from_checkpoint="latest")

    # Same step count, LR schedule, EMA and data order: the resumed weights equal the uninterrupted ones.
    full = load_file(full_dir / "checkpoints" / "checkpoint-6" / "model.safetensors")
    resumed = load_file(resumed_dir / "checkpoints" / "checkpoint-6" / "model.safetensors")
    assert full.keys() == resumed.keys()
    for key in full:
        torch.testing.assert_close(resumed[key], full[key], msg=key)
    full_ema = load_file(full_dir / "checkpoints" / "checkpoint-6" / "ema.safetensors")
    resumed_ema = load_file(resumed_dir / "checkpoints" / "checkpoint-6" / "ema.safetensors")
    for key in full_ema:
        torch.testing.assert_close(resumed_ema[key], full_ema[key], msg=key)
    assert not half_written.exists() or (resumed_dir / "checkpoints" / "checkpoint-6").is_dir()


def test_resume_from_a_folder_that_is_not_a_checkpoint(pneumoniamnist_npz, tmp_path):
    config = load_config(TINY, tiny_overrides(pneumoniamnist_npz, tmp_path / "run"))
    with pytest.raises(FileNotFoundError, match="Not a complete medgen checkpoint"):
        main(config, resume_from_checkpoint=str(tmp_path))


@pytest.mark.slow
def test_two_process_training_with_accelerate_launch(pneumoniamnist_npz, tmp_path):
    output_dir = tmp_path / "ddp"
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "2", "--cpu", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no", str(REPO_ROOT / "medgen" / "train.py"),
        "--config", str(TINY), *tiny_overrides(pneumoniamnist_npz, output_dir, steps=4),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Pipeline saved to" in result.stdout
    pipe = load_pipeline(output_dir)
    assert pipe(labels="pneumonia", num_inference_steps=2, output_type="np").images.shape == (1, 16, 16, 1)
    assert [p.name for p in checkpoints.list_checkpoints(output_dir)] == ["checkpoint-2", "checkpoint-4"]


@pytest.mark.slow
def test_medgen_train_launches_two_processes(pneumoniamnist_npz, tmp_path):
    output_dir = tmp_path / "launched"
    command = [
        sys.executable, "-m", "medgen", "train", "--num-processes", "2", "--config", str(TINY),
        *tiny_overrides(pneumoniamnist_npz, output_dir, steps=2),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Pipeline saved to" in result.stdout
    assert [p.name for p in checkpoints.list_checkpoints(output_dir)] == ["checkpoint-2"]


def test_train_script_reports_config_errors_without_traceback(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("data:\n  source: medmnist\n  path: x.npz\nmodel:\n  kind: diffusion\n")
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "medgen" / "train.py"), "--config", str(bad)],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2
    assert "model.kind must be one of" in result.stderr
    assert "Traceback" not in result.stderr
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "medgen" / "train.py"), "--config", str(TINY), "data.resolutoin=64"],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("medgen train: error: command-line override 'data.resolutoin=64'")


def test_medgen_train_on_several_processes_checks_the_config_before_launching(tmp_path, capsys, monkeypatch):
    # `accelerate launch medgen/train.py` can only report a config error after starting the script, and then
    # adds a traceback of its own; `medgen train --num-processes N` checks first and launches quietly.
    from medgen.cli import main as cli_main

    launched = []

    def fake_run(command, *args, **kwargs):
        launched.append(command)
        return subprocess.CompletedProcess(command, 0)

    monkeypatch.setattr(subprocess, "run", fake_run)
    assert cli_main(["train", "--config", str(TINY), "--num-processes", "2", "data.resolutoin=64"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert not launched and len(lines) == 1 and "did you mean data.resolution?" in lines[0]

    output_dir = tmp_path / "run"
    argv = ["train", "--config", str(TINY), "--num-processes", "2", "--output-dir", str(output_dir), "max_train_steps=4"]
    assert cli_main(argv) == 0
    command = launched[-1]
    assert command[1:4] == ["-m", "accelerate.commands.launch", "--quiet"]
    assert command[command.index("--num_processes") + 1] == "2"
    script = command.index(str(REPO_ROOT / "medgen" / "train.py"))
    assert command[script + 1:] == ["--config", str(TINY), "--output_dir", str(output_dir), "max_train_steps=4"]
    # a folder holding another run is refused here too, before any process starts
    output_dir.mkdir()
    (output_dir / "model_index.json").write_text("{}")
    launched.clear()
    assert cli_main(argv) == 2 and not launched
    assert "already holds an earlier run" in capsys.readouterr().err


def test_unconditional_run_on_a_folder_of_real_images(covid_notes_dir, tmp_path):
    output_dir = tmp_path / "uncond"
    overrides = [
        f"data.path={covid_notes_dir / 'images'}", "data.resolution=16", "data.max_samples=32",
        f"data.cache_dir={tmp_path / 'cache'}", "model.block_out_channels=[8, 16]", "model.attention_levels=[false, true]",
        f"output_dir={output_dir}", "max_train_steps=2", "train_batch_size=8", "checkpointing_steps=2",
        "sample_every_steps=0", "num_sample_images=2", "report_to=none",
    ]
    main(load_config(REPO_ROOT / "train_configs" / "unconditional.yaml", overrides))
    pipe = load_pipeline(output_dir)
    assert type(pipe).__name__ == "UnconditionalPipeline"
    assert pipe(batch_size=2, num_inference_steps=2, output_type="np").images.shape == (2, 16, 16, 1)


def _small_labelled_folder(folder: Path, per_label: int = 6) -> Path:
    """A user's own small folder: PNGs listed in metadata.csv with a label column and no split column."""
    from PIL import Image

    folder.mkdir()
    rows = ["file_name,label"]
    rng = np.random.default_rng(0)
    for label in ("benign", "malignant"):
        for index in range(per_label):
            name = f"{label}_{index}.png"
            Image.fromarray(rng.integers(0, 256, (20, 20), dtype=np.uint8)).save(folder / name)
            rows.append(f"{name},{label}")
    (folder / "metadata.csv").write_text("\n".join(rows) + "\n")
    return folder


def test_a_small_folder_run_says_what_it_did_and_its_generate_hint_runs_as_printed(tmp_path, capsys, caplog):
    import logging
    import shlex

    from medgen.cli import main as cli_main

    data = _small_labelled_folder(tmp_path / "own")
    output_dir = tmp_path / "run"
    overrides = [
        "data.source=csv", f"data.path={data}", "data.findings_column=label", "data.resolution=16",
        f"data.cache_dir={tmp_path / 'cache'}", "model.block_out_channels=[8, 16]", "model.norm_num_groups=8",
        f"output_dir={output_dir}", "max_train_steps=3", "train_batch_size=4", "checkpointing_steps=1",
        "checkpoints_total_limit=1", "sample_every_steps=0", "num_sample_images=1", "report_to=none",
        "optim.lr_warmup_steps=500", "optim.learning_rate=1e-3",
    ]
    with caplog.at_level(logging.WARNING):
        main(load_config(TINY, overrides))
    out = capsys.readouterr().out
    # the warmup outlasting the run is said before training, and the peak learning rate after it
    warning = " ".join(record.getMessage() for record in caplog.records)
    assert "optim.lr_warmup_steps 500 outlasts this run (max_train_steps 3)" in warning and "peaks at 4e-06" in warning
    assert "learning rate peaked at 4e-06 (optim.learning_rate 0.001)" in out
    summary = json.loads((output_dir / "training_summary.json").read_text())
    assert summary["peak_learning_rate"] == pytest.approx(4e-6)
    # every checkpoint save and prune is a line of its own
    assert "Saved checkpoint" in out and "checkpoint-3" in out
    assert "removed checkpoint-1 (checkpoints_total_limit 1)" in out and "removed checkpoint-2" in out
    # the model card says what was read: every image, nothing held out (not "split train")
    card = (output_dir / "README.md").read_text()
    assert "split `train`" not in card and "the data has no split column" in card
    # the printed generate command runs as printed
    hint = next(line for line in out.splitlines() if line.startswith("Generate: "))
    argv = shlex.split(hint.removeprefix("Generate: "))
    assert argv[:2] == ["medgen", "generate"] and "--labels" in argv
    assert cli_main([*argv[1:], "--num-inference-steps", "2"]) == 0
    assert len(list((output_dir / "generated").glob("*.png"))) == 8
