"""AdamW and learning-rate schedules (warmup + cosine/linear/constant, or MultiStep at epoch milestones)."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from diffusers.optimization import get_scheduler

from medgen.config import OptimConfig, TrainConfig


def build_optimizer(parameters: Iterable[torch.nn.Parameter], config: OptimConfig) -> torch.optim.AdamW:
    return torch.optim.AdamW(
        [p for p in parameters if p.requires_grad],
        lr=config.learning_rate,
        betas=(config.adam_beta1, config.adam_beta2),
        weight_decay=config.weight_decay,
    )


def build_lr_scheduler(optimizer, config: TrainConfig, steps_per_epoch: int, num_processes: int):
    """accelerate steps a prepared scheduler once per process per update, hence the scaling by `num_processes`."""
    optim = config.optim
    warmup = optim.lr_warmup_steps * num_processes
    if optim.lr_scheduler == "multistep":
        milestones = sorted(m * steps_per_epoch * num_processes for m in optim.milestones)

        def factor(step: int) -> float:
            warm = min(1.0, (step + 1) / warmup) if warmup else 1.0
            return warm * optim.gamma ** sum(step >= m for m in milestones)

        return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    return get_scheduler(
        optim.lr_scheduler,
        optimizer=optimizer,
        num_warmup_steps=warmup,
        num_training_steps=config.max_train_steps * num_processes,
    )
