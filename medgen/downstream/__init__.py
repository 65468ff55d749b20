"""`medgen downstream`: do synthetic images help a classifier trained on scarce real data?

For each real fraction and seed, one fixed classifier recipe is trained under four arms and tested on the
held-out real test split (see `arms.ARMS`); the control `real+duplicated` adds as many re-sampled real
images as `real+synthetic` adds synthetic ones, so that "more images" is separated from "new images".
"""

from __future__ import annotations

from typing import Any

__all__ = ["ARMS", "run_downstream"]


def __getattr__(name: str) -> Any:
    # Lazy, so that `medgen --help` (which imports the CLI module of this package) does not import torch.
    if name == "ARMS":
        from medgen.downstream.arms import ARMS

        return ARMS
    if name == "run_downstream":
        from medgen.downstream.experiment import run_downstream

        return run_downstream
    raise AttributeError(f"module 'medgen.downstream' has no attribute {name!r}")
