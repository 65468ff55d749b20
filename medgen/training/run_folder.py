"""One output folder holds one run.

Training into a folder that already holds a pipeline, checkpoints or a trained autoencoder would
silently replace the earlier pipeline, and checkpoint pruning (by step number) would then delete the
new run's checkpoints while keeping the old run's, so `--resume_from_checkpoint latest` would later
resume the *old* run. So a fresh run refuses such a folder unless told to continue it
(`--resume_from_checkpoint`) or to remove the earlier run's files first (`--overwrite_output_dir`).
Every checkpoint records the id of the run that wrote it; a resumed run keeps that id and refuses a
folder whose checkpoints belong to another run.
"""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path

from medgen.training import checkpoints

# What a run writes at the top of its output folder (`config.json` and the autoencoder files are the output of
# `model.kind: vae`); a saved pipeline adds its model card and the component folders named in model_index.json.
# Nothing else is removed.
RUN_FILES = (
    "checkpoints", "samples", "logs", "autoencoder", "training_config.yaml", "training_summary.json",
    "data_summary.json", "model_index.json", "pipeline.py", "config.json",
    "diffusion_pytorch_model.safetensors", "reconstruction_metrics.json", "reconstructions.png",
    "example_masks",  # chosen from the earlier run's held-out split: they must not outlive it
)


def new_run_id() -> str:
    return uuid.uuid4().hex[:12]


def earlier_run(output_dir: str | Path) -> list[str]:
    """What in `output_dir` shows that a run already trained there (empty when nothing does)."""
    output_dir = Path(output_dir)
    found = []
    if (output_dir / "model_index.json").is_file():
        found.append("a pipeline (model_index.json)")
    saved = checkpoints.list_checkpoints(output_dir)
    if saved:
        found.append(f"{len(saved)} checkpoint(s) up to {saved[-1].name}")
    if any((folder / "reconstruction_metrics.json").is_file() for folder in (output_dir, output_dir / "autoencoder")):
        found.append("a trained autoencoder")
    return found


def check_output_dir(output_dir: str | Path, resume_from_checkpoint: str | None, overwrite_output_dir: bool) -> None:
    """Raises `ValueError` (naming the folder and the two ways on) when a fresh run would overwrite an earlier one."""
    if resume_from_checkpoint and overwrite_output_dir:
        raise ValueError(
            "--resume_from_checkpoint continues the run in the output folder and --overwrite_output_dir deletes it: "
            "give one of them."
        )
    found = earlier_run(output_dir)
    if found and not resume_from_checkpoint and not overwrite_output_dir:
        raise ValueError(
            f"output_dir {Path(output_dir).resolve()} already holds an earlier run ({', '.join(found)}). "
            f"Continue it with --resume_from_checkpoint latest, or start again with --overwrite_output_dir "
            f"(removes the earlier run's files), or choose another --output_dir."
        )


def remove_earlier_run(output_dir: str | Path) -> list[Path]:
    """Deletes the files an earlier run wrote into `output_dir` (and only those); returns what was removed."""
    output_dir = Path(output_dir)
    from medgen.data.summary import EXTRA_SUMMARY_PATTERN

    names = set(RUN_FILES) | {path.name for path in output_dir.glob(EXTRA_SUMMARY_PATTERN)}
    index = output_dir / "model_index.json"
    if index.is_file():
        names.add("README.md")
        try:
            components = [key for key in json.loads(index.read_text()) if not key.startswith("_")]
        except (json.JSONDecodeError, AttributeError, TypeError):
            components = []
        # only plain folder names: an odd index must never point the removal outside output_dir
        names.update(key for key in components if key not in (".", "..") and Path(key).name == key)
    removed = []
    for name in sorted(names):
        path = output_dir / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()
        else:
            continue
        removed.append(path)
    return removed


def resolve_run(
    output_dir: str | Path, resume_from_checkpoint: str | None, overwrite_output_dir: bool
) -> tuple[Path | None, str]:
    """The checkpoint to resume (None for a fresh start) and the run id, after every refusal above."""
    check_output_dir(output_dir, resume_from_checkpoint, overwrite_output_dir)
    if not resume_from_checkpoint:
        return None, new_run_id()
    checkpoint = checkpoints.resolve_checkpoint(output_dir, resume_from_checkpoint)
    if checkpoint is None:
        return None, new_run_id()
    return checkpoint, resumed_run_id(output_dir, checkpoint)


def resumed_run_id(output_dir: str | Path, checkpoint: Path) -> str:
    """The id of the run `checkpoint` belongs to; refuses when `output_dir` holds checkpoints of another run."""
    run_id = checkpoints.read_state(checkpoint).get("run_id")
    others = sorted(
        {
            other
            for saved in checkpoints.list_checkpoints(output_dir)
            if (other := checkpoints.read_state(saved).get("run_id")) not in (run_id, None)
        },
        key=str,
    )
    if others:
        raise ValueError(
            f"{checkpoints.checkpoint_dir(output_dir)} holds checkpoints of another run (run id {others[0]}) than "
            f"{checkpoint} (run id {run_id}); resuming would mix two runs. Resume into the folder that checkpoint "
            f"came from, or start again with --overwrite_output_dir."
        )
    # checkpoints written before run ids existed (no `run_id`) go with any run; their run continues under a new id
    return run_id or new_run_id()
