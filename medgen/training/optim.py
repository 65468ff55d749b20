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


def restart_schedule(lr_scheduler, optimizer, learning_rate: float) -> float:
    """After a resume: the schedule of the *current* config, evaluated at the restored step; returns the new LR.

    A checkpoint stores the scheduler's step and base learning rate, while the schedule's shape (warmup,
    `max_train_steps`, milestones) comes from the config it is rebuilt with. Without this the first step after a
    resume would still use the learning rate stored in the optimizer (near zero at the end of a cosine run that
    is being extended) and an `optim.learning_rate` override would be ignored. With an unchanged config the
    values are exactly those stored, so an interrupted run resumes bit for bit.
    """
    inner = getattr(lr_scheduler, "scheduler", lr_scheduler)  # accelerate wraps the torch scheduler
    inner.base_lrs = [learning_rate] * len(inner.base_lrs)
    rates = [base * factor(inner.last_epoch) for base, factor in zip(inner.base_lrs, inner.lr_lambdas)]
    for group, rate in zip(optimizer.param_groups, rates):
        group["initial_lr"] = learning_rate
        group["lr"] = rate
    inner._last_lr = list(rates)
    return rates[0]


def warmup_outlasts_run(config: TrainConfig, steps_per_epoch: int, start_step: int = 0) -> str | None:
    """A warning when `optim.lr_warmup_steps` is so long that the learning rate never reaches
    `optim.learning_rate` in this run (e.g. 500 warmup steps in a 250-step run peak at half the rate, and
    a 1-step run trains at rate 0), saying the peak it reaches; None when the schedule reaches its rate."""
    optim = config.optim
    if not optim.lr_warmup_steps or start_step >= config.max_train_steps:
        return None
    probe = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=optim.learning_rate)
    schedule = build_lr_scheduler(probe, config, steps_per_epoch, num_processes=1)
    factors = [schedule.lr_lambdas[0](step) for step in range(start_step, config.max_train_steps)]
    peak = max(factors)
    if peak >= 1.0 - 1e-9:
        return None
    suggestion = config.max_train_steps // 10
    return (
        f"optim.lr_warmup_steps {optim.lr_warmup_steps} outlasts this run (max_train_steps {config.max_train_steps}): "
        f"the learning rate never reaches optim.learning_rate {optim.learning_rate:g}; it peaks at "
        f"{optim.learning_rate * peak:.3g} ({peak * 100:.2g}% of it). For the full rate, set optim.lr_warmup_steps="
        f"{suggestion}" + (" (a tenth of the run) or lower." if suggestion else ".")
    )
