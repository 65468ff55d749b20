"""Training faults a user must never lose work to: divergence, bad numbers in a config, fp16 on a CPU,
a reused output folder, extending or re-running a finished run."""

from __future__ import annotations

import json
import math
import logging
import re
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from accelerate import Accelerator
from safetensors.torch import load_file

from medgen.cli import main as cli_main
from medgen.config import load_config
from medgen.train import main
from medgen.training import checkpoints

REPO_ROOT = Path(__file__).resolve().parent.parent
TINY = REPO_ROOT / "train_configs" / "tiny.yaml"


def overrides(npz: Path, output_dir: Path, steps: int, every: int = 2) -> list[str]:
    return [
        f"data.path={npz}", "data.max_samples=64", "data.resolution=16",
        f"data.cache_dir={output_dir.parent / 'cache'}",
        f"output_dir={output_dir}", f"max_train_steps={steps}", "train_batch_size=16", f"checkpointing_steps={every}",
        "checkpoints_total_limit=3", "sample_every_steps=0", "num_sample_images=1", "log_every_steps=1",
        "report_to=none", "model.block_out_channels=[8, 16]", "diffusion.num_inference_steps=2",
        "optim.lr_warmup_steps=0",
    ]


def planned_learning_rates(config, steps: int) -> list[float]:
    """The learning rate of each step 1..steps of a run planned for `config.max_train_steps` from the start."""
    from medgen.training.optim import build_lr_scheduler

    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=config.optim.learning_rate)
    scheduler = build_lr_scheduler(optimizer, config, steps_per_epoch=4, num_processes=1)
    rates = []
    for _ in range(steps):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return rates


# ---------------------------------------------------------------------------------------------
# Config numbers


@pytest.mark.parametrize(
    "override, field",
    [
        ("optim.learning_rate=.nan", "optim.learning_rate"),
        ("optim.learning_rate=.inf", "optim.learning_rate"),
        ("optim.learning_rate=1e400", "optim.learning_rate"),
        ("vae.learning_rate=nan", "vae.learning_rate"),
        ("optim.max_grad_norm=-1", "optim.max_grad_norm"),
        ("log_every_steps=0", "log_every_steps"),
        ("checkpoints_total_limit=0", "checkpoints_total_limit"),
        ("ema.decay=1.5", "ema.decay"),
    ],
)
def test_non_finite_or_out_of_range_numbers_are_config_errors_naming_the_field(override, field):
    with pytest.raises(ValueError, match=re.escape(field) + " must be"):
        load_config(TINY, [override])


def test_medgen_train_exits_2_naming_a_nan_learning_rate(tmp_path, capsys):
    assert cli_main(["train", "--config", str(TINY), "optim.learning_rate=.nan", f"output_dir={tmp_path / 'run'}"]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("medgen train: error:") and len(error.splitlines()) == 1
    assert "optim.learning_rate must be a finite number" in error
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------------------------------------
# Divergence


def test_a_diverging_run_stops_names_step_and_rate_and_keeps_the_last_good_checkpoint(
    pneumoniamnist_npz, tmp_path, capsys
):
    output_dir = tmp_path / "nan"
    argv = [
        "train", "--config", str(TINY), *overrides(pneumoniamnist_npz, output_dir, steps=8, every=1),
        "optim.learning_rate=1e6",
    ]
    assert cli_main(argv) == 1

    error = capsys.readouterr().err.strip().splitlines()[-1]
    match = re.search(r"diverged at step (\d+): the (loss|gradient norm) is (nan|inf).*rate ([0-9.e+-]+)", error)
    assert error.startswith("medgen train: error:") and match, error
    step, rate = int(match.group(1)), float(match.group(4))
    assert 1 < step <= 8
    assert rate == pytest.approx(planned_learning_rates(load_config(TINY, argv[3:]), step)[-1], rel=1e-2)
    assert "optim.learning_rate" in error and "--resume_from_checkpoint latest" in error  # what to try

    # every checkpoint before the bad step is kept and finite; nothing after it; no pipeline
    kept = checkpoints.list_checkpoints(output_dir)
    assert kept and checkpoints.read_state(kept[-1])["step"] == step - 1
    assert str(kept[-1]) in error
    weights = load_file(kept[-1] / "model.safetensors")
    assert all(torch.isfinite(tensor).all() for tensor in weights.values())
    assert not (output_dir / "model_index.json").exists() and not (output_dir / "unet").exists()
    assert not (output_dir / "training_summary.json").exists()


def test_guard_stops_on_an_infinite_gradient_norm_before_the_update():
    from medgen.training.divergence import DivergenceGuard, TrainingDiverged

    guard = DivergenceGuard(Accelerator(cpu=True), "vae.learning_rate", stage="autoencoder training")
    guard.observe_loss(torch.tensor(0.5))
    guard.check(3, 1e-3, torch.tensor(2.0))  # a finite step passes
    guard.observe_loss(torch.tensor(0.4))
    with pytest.raises(TrainingDiverged, match=r"autoencoder training diverged at step 4: the gradient norm is inf"):
        guard.check(4, 1e-3, torch.tensor(float("inf")))
    # a NaN loss in any micro-batch of an accumulated step counts, even when the last one is finite
    guard.observe_loss(float("nan"))
    guard.observe_loss(0.3)
    with pytest.raises(TrainingDiverged, match=r"step 5: the loss is nan.*lower vae\.learning_rate"):
        guard.check(5, 2e-3, 1.0)


def test_a_diverging_autoencoder_stage_saves_nothing(pneumoniamnist_npz, tmp_path):
    from medgen.data import build_dataset
    from medgen.training.divergence import TrainingDiverged
    from medgen.training.vae import train_autoencoder

    config = load_config(
        REPO_ROOT / "train_configs" / "vae_pneumoniamnist.yaml",
        [f"data.path={pneumoniamnist_npz}", "data.resolution=16", "data.max_samples=32",
         f"data.cache_dir={tmp_path / 'cache'}", f"output_dir={tmp_path / 'vae'}", "vae.block_out_channels=[8, 16]",
         "vae.max_train_steps=6", "vae.train_batch_size=16", "vae.learning_rate=1e6", "report_to=none"],
    )
    with pytest.raises(TrainingDiverged, match=r"autoencoder training diverged at step \d+.*vae\.learning_rate"):
        train_autoencoder(config, build_dataset(config.data), Accelerator(cpu=True))
    assert not (tmp_path / "vae" / "config.json").exists()


# ---------------------------------------------------------------------------------------------
# Precision


def test_fp16_on_a_cpu_warns_and_records_fp32(pneumoniamnist_npz, tmp_path, caplog):
    output_dir = tmp_path / "fp16"
    config = load_config(TINY, overrides(pneumoniamnist_npz, output_dir, steps=1, every=1) + ["mixed_precision=fp16"])
    with caplog.at_level(logging.WARNING):
        main(config)
    warnings = [record.getMessage() for record in caplog.records if "fp16" in record.getMessage()]
    assert len(warnings) == 1 and "fp32" in warnings[0]
    for folder in (output_dir, output_dir / "checkpoints" / "checkpoint-1"):
        saved = yaml.safe_load((folder / "training_config.yaml").read_text())
        assert saved["mixed_precision"] == "no", folder
    assert json.loads((output_dir / "training_summary.json").read_text())["mixed_precision"] == "no"


# ---------------------------------------------------------------------------------------------
# One folder, one run


@pytest.fixture(scope="module")
def finished_run(pneumoniamnist_npz, tmp_path_factory) -> Path:
    """A finished 3-step run (checkpoints every 2 steps, no warmup: the cosine reaches zero at the end)."""
    output_dir = tmp_path_factory.mktemp("finished") / "run"
    main(load_config(TINY, overrides(pneumoniamnist_npz, output_dir, steps=3)))
    return output_dir


def copy_run(run: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(run, tmp_path / "run"))


def test_the_last_step_is_always_checkpointed_with_its_run_id(finished_run):
    saved = checkpoints.list_checkpoints(finished_run)
    assert [p.name for p in saved] == ["checkpoint-2", "checkpoint-3"]  # 3 is not a multiple of checkpointing_steps
    run_ids = {checkpoints.read_state(path)["run_id"] for path in saved}
    assert len(run_ids) == 1 and None not in run_ids
    assert json.loads((finished_run / "training_summary.json").read_text())["run_id"] in run_ids


def test_an_output_dir_holding_a_run_is_refused_then_overwritten_on_request(
    finished_run, pneumoniamnist_npz, tmp_path, capsys
):
    output_dir = copy_run(finished_run, tmp_path)
    old_id = checkpoints.read_state(output_dir / "checkpoints" / "checkpoint-3")["run_id"]
    index = (output_dir / "model_index.json").read_bytes()

    argv = ["train", "--config", str(TINY), *overrides(pneumoniamnist_npz, output_dir, steps=1, every=1)]
    assert cli_main(argv) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("medgen train: error:") and len(error.splitlines()) == 1
    assert str(output_dir) in error and "--resume_from_checkpoint latest" in error and "--overwrite_output_dir" in error
    assert (output_dir / "model_index.json").read_bytes() == index  # untouched
    assert [p.name for p in checkpoints.list_checkpoints(output_dir)] == ["checkpoint-2", "checkpoint-3"]

    # --overwrite_output_dir: the earlier run's files go (not the user's own), so `latest` is the new run's
    (output_dir / "notes.txt").write_text("mine")
    assert cli_main([*argv, "--overwrite_output_dir"]) == 0
    saved = checkpoints.list_checkpoints(output_dir)
    assert [p.name for p in saved] == ["checkpoint-1"]
    assert checkpoints.read_state(saved[0])["run_id"] != old_id
    assert checkpoints.resolve_checkpoint(output_dir, "latest") == saved[0]
    assert json.loads((output_dir / "training_summary.json").read_text())["steps"] == 1
    assert (output_dir / "notes.txt").read_text() == "mine"

    assert cli_main([*argv, "--overwrite_output_dir", "--resume_from_checkpoint", "latest"]) == 2
    assert "give one of them" in capsys.readouterr().err


def test_overwriting_removes_only_the_run_files_inside_the_folder(tmp_path):
    from medgen.training.run_folder import remove_earlier_run

    output_dir, outside = tmp_path / "run", tmp_path / "outside"
    for folder in (output_dir / "unet", output_dir / "checkpoints" / "checkpoint-2", output_dir / "mine", outside):
        folder.mkdir(parents=True)
    (output_dir / "model_index.json").write_text(json.dumps({"_class_name": "X", "unet": ["diffusers", "UNet2DModel"],
                                                             "../outside": ["diffusers", "UNet2DModel"]}))
    (output_dir / "README.md").write_text("model card")
    # an earlier run over three image sets: its summaries go too, so a new run's card never counts a stale set
    for name in ("data_summary.json", "data_summary_extra1.json", "data_summary_extra2.json"):
        (output_dir / name).write_text("{}")
    remove_earlier_run(output_dir)
    assert sorted(p.name for p in output_dir.iterdir()) == ["mine"] and outside.is_dir()


def test_resuming_never_mixes_checkpoints_of_two_runs(finished_run, pneumoniamnist_npz, tmp_path):
    output_dir = copy_run(finished_run, tmp_path)
    # a checkpoint of another run (same files, another run id) resumed into this folder
    foreign = Path(shutil.copytree(output_dir / "checkpoints" / "checkpoint-2", tmp_path / "other" / "checkpoint-2"))
    state = checkpoints.read_state(foreign)
    (foreign / checkpoints.STATE_FILE).write_text(json.dumps({**state, "run_id": "another"}))
    config = load_config(TINY, overrides(pneumoniamnist_npz, output_dir, steps=6))
    with pytest.raises(ValueError, match=r"another run.*mix two runs"):
        main(config, resume_from_checkpoint=str(foreign))
    # a folder whose checkpoints come from two runs: `latest` refuses rather than guess
    shutil.rmtree(output_dir / "checkpoints" / "checkpoint-2")
    shutil.move(foreign, output_dir / "checkpoints" / "checkpoint-2")
    with pytest.raises(ValueError, match="another run"):
        main(config, resume_from_checkpoint="latest")
    assert [p.name for p in checkpoints.list_checkpoints(output_dir)] == ["checkpoint-2", "checkpoint-3"]


# ---------------------------------------------------------------------------------------------
# Extending and re-running


def test_extending_a_run_rebuilds_the_schedule_over_the_new_total(finished_run, pneumoniamnist_npz, tmp_path, capsys):
    output_dir = copy_run(finished_run, tmp_path)
    run_id = checkpoints.read_state(output_dir / "checkpoints" / "checkpoint-3")["run_id"]
    capsys.readouterr()

    extended = load_config(TINY, overrides(pneumoniamnist_npz, output_dir, steps=4))
    main(extended, resume_from_checkpoint="latest")
    out = capsys.readouterr().out
    # documented: from the resumed step on, the rate is that of a run planned for 4 steps from the start, not the
    # zero the 3-step cosine ended at
    planned = planned_learning_rates(extended, 4)
    assert "rebuilt over 4 steps" in out and f"learning rate {planned[3]:.3g}" in out
    summary = json.loads((output_dir / "training_summary.json").read_text())
    assert summary["final_learning_rate"] == pytest.approx(planned[3]) and planned[3] > 1e-5
    assert summary["run_id"] == run_id and summary["steps"] == 4
    state = checkpoints.read_state(output_dir / "checkpoints" / "checkpoint-4")
    assert {key: state[key] for key in ("step", "run_id", "max_train_steps")} == {"step": 4, "run_id": run_id, "max_train_steps": 4}
    # the run's training time adds up over the processes that trained it
    before = checkpoints.read_state(output_dir / "checkpoints" / "checkpoint-3")["progress"]["training_seconds"]
    assert state["progress"]["training_seconds"] > before
    assert summary["training_seconds"] == pytest.approx(before + summary["loop_seconds"])


def test_resuming_a_finished_run_says_so_and_changes_nothing(finished_run, pneumoniamnist_npz, tmp_path, capsys):
    output_dir = copy_run(finished_run, tmp_path)
    stamps = {path: path.stat().st_mtime_ns for path in output_dir.rglob("*") if path.is_file()}
    capsys.readouterr()

    argv = ["train", "--config", str(TINY), *overrides(pneumoniamnist_npz, output_dir, steps=3)]
    assert cli_main([*argv, "--resume_from_checkpoint", "latest"]) == 0
    out = capsys.readouterr().out
    assert "already finished at step 3" in out and "nan" not in out
    assert {path: path.stat().st_mtime_ns for path in output_dir.rglob("*") if path.is_file()} == stamps


def test_a_finished_run_without_its_pipeline_saves_it_on_resume(finished_run, pneumoniamnist_npz, tmp_path, capsys):
    """Stopped after the last checkpoint but before the pipeline was written: resuming only saves the pipeline."""
    output_dir = copy_run(finished_run, tmp_path)
    for name in ("model_index.json", "unet", "training_summary.json"):
        path = output_dir / name
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    capsys.readouterr()

    main(load_config(TINY, overrides(pneumoniamnist_npz, output_dir, steps=3)), resume_from_checkpoint="latest")
    out = capsys.readouterr().out
    assert "already finished at step 3" in out and "final loss" not in out
    assert (output_dir / "model_index.json").is_file()
    assert [p.name for p in checkpoints.list_checkpoints(output_dir)] == ["checkpoint-2", "checkpoint-3"]


def test_a_longer_run_stopped_early_exports_the_pipeline_of_a_checkpoint(
    finished_run, pneumoniamnist_npz, tmp_path, capsys
):
    """`--max_train_steps N --resume_from_checkpoint <checkpoint-N>` saves the model as it stood at step N (EMA
    weights), with a summary saying N, even where the folder holds the pipeline of a later step; asking again is
    a no-op."""
    output_dir = copy_run(finished_run, tmp_path)
    step_3_unet = (output_dir / "unet" / "diffusion_pytorch_model.safetensors").read_bytes()
    checkpoint_2 = output_dir / "checkpoints" / "checkpoint-2"
    capsys.readouterr()

    main(load_config(TINY, overrides(pneumoniamnist_npz, output_dir, steps=2)), resume_from_checkpoint=str(checkpoint_2))
    assert "Saving its pipeline" in capsys.readouterr().out
    summary = json.loads((output_dir / "training_summary.json").read_text(), parse_constant=pytest.fail)  # strict JSON: no NaN
    assert summary["steps"] == 2 and summary["steps_this_run"] == 0
    # nothing trained by the export: the figures are those the checkpoint recorded of the process that trained it
    recorded = checkpoints.read_state(checkpoint_2)["progress"]
    assert recorded["training_seconds"] > 0 and math.isfinite(recorded["last_loss"])
    assert summary["final_loss"] == recorded["last_loss"] and summary["training_seconds"] == recorded["training_seconds"]
    batch = load_config(TINY, overrides(pneumoniamnist_npz, output_dir, steps=2)).train_batch_size
    assert summary["images_per_second"] == pytest.approx(2 * batch / recorded["training_seconds"])
    assert (output_dir / "unet" / "diffusion_pytorch_model.safetensors").read_bytes() != step_3_unet
    assert yaml.safe_load((output_dir / "training_config.yaml").read_text())["max_train_steps"] == 2

    step_2_index = (output_dir / "model_index.json").stat().st_mtime_ns
    main(load_config(TINY, overrides(pneumoniamnist_npz, output_dir, steps=2)), resume_from_checkpoint=str(checkpoint_2))
    assert "already finished at step 2" in capsys.readouterr().out
    assert (output_dir / "model_index.json").stat().st_mtime_ns == step_2_index


def test_an_export_at_a_checkpoint_that_recorded_no_figures_says_none(finished_run, pneumoniamnist_npz, tmp_path):
    """A checkpoint written before runs recorded their progress: the export's summary says `null`, not 0 or NaN."""
    output_dir = copy_run(finished_run, tmp_path)
    checkpoint_2 = output_dir / "checkpoints" / "checkpoint-2"
    state = checkpoints.read_state(checkpoint_2)
    del state["progress"]
    (checkpoint_2 / checkpoints.STATE_FILE).write_text(json.dumps(state))

    main(load_config(TINY, overrides(pneumoniamnist_npz, output_dir, steps=2)), resume_from_checkpoint=str(checkpoint_2))
    summary = json.loads((output_dir / "training_summary.json").read_text(), parse_constant=pytest.fail)
    assert summary["steps"] == 2 and summary["steps_this_run"] == 0
    assert summary["final_loss"] is None and summary["training_seconds"] is None and summary["images_per_second"] is None
