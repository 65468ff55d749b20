"""Checkpoints that survive interruption.

Each checkpoint is written to a hidden temporary folder and renamed into place only when
complete, so a run killed mid-write never leaves a half checkpoint that `latest` would pick.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)$")
STATE_FILE = "medgen_state.json"
EMA_FILE = "ema.safetensors"


def checkpoint_dir(output_dir: str | Path) -> Path:
    return Path(output_dir) / "checkpoints"


def list_checkpoints(output_dir: str | Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    folder = checkpoint_dir(output_dir)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := CHECKPOINT_PATTERN.match(p.name)) and p.is_dir()]
    return [path for _, path in sorted(found)]


def resolve_checkpoint(output_dir: str | Path, resume_from: str) -> Path | None:
    """`latest` -> newest complete checkpoint (None when there is none yet); otherwise the given folder."""
    if resume_from == "latest":
        checkpoints = list_checkpoints(output_dir)
        return checkpoints[-1] if checkpoints else None
    path = Path(resume_from)
    if not (path / STATE_FILE).is_file():
        raise FileNotFoundError(f"Not a complete medgen checkpoint (no {STATE_FILE}): {path}")
    return path


def temporary_path(output_dir: str | Path, step: int) -> Path:
    return checkpoint_dir(output_dir) / f".tmp-checkpoint-{step}"


def clear(path: Path) -> None:
    """Removes what an interrupted earlier write left at `path`."""
    if path.exists():
        shutil.rmtree(path)


def save_ema(ema, folder: Path) -> None:
    """EMA weights as safetensors (no pickle), with the EMA step in the metadata."""
    from safetensors.torch import save_file

    tensors = {f"shadow.{i}": p.detach().cpu().contiguous() for i, p in enumerate(ema.shadow_params)}
    save_file(tensors, folder / EMA_FILE, metadata={"optimization_step": str(ema.optimization_step)})


def load_ema(ema, checkpoint: Path) -> None:
    from safetensors import safe_open

    with safe_open(str(checkpoint / EMA_FILE), framework="pt") as handle:
        step = int(handle.metadata()["optimization_step"])
        shadow = [handle.get_tensor(f"shadow.{i}") for i in range(len(handle.keys()))]
    if len(shadow) != len(ema.shadow_params):
        raise ValueError(f"{checkpoint / EMA_FILE} holds {len(shadow)} tensors; the model has {len(ema.shadow_params)}.")
    ema.load_state_dict({"shadow_params": shadow, "optimization_step": step})


def finalize(temporary: Path, step: int, run_id: str | None = None, **state) -> Path:
    """Writes the state file (step, the id of the run, any extra `state`) and renames the folder into place."""
    (temporary / STATE_FILE).write_text(json.dumps({"step": step, "run_id": run_id, **state}, indent=2))
    final = temporary.parent / f"checkpoint-{step}"
    if final.exists():
        shutil.rmtree(final)
    temporary.rename(final)
    return final


def prune(output_dir: str | Path, total_limit: int | None, run_id: str | None = None) -> list[Path]:
    """Removes the oldest checkpoints of run `run_id` beyond the newest `total_limit` (None keeps all);
    returns what it removed. Checkpoints of other runs are never touched."""
    if total_limit is None:
        return []
    own = [path for path in list_checkpoints(output_dir) if read_state(path).get("run_id") == run_id]
    removed = own[:-total_limit]
    for old in removed:
        shutil.rmtree(old)
    return removed


def read_state(checkpoint: Path) -> dict:
    return json.loads((checkpoint / STATE_FILE).read_text())
