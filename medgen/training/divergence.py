"""Stop a run at the first non-finite loss or gradient norm, before it reaches the weights.

A loss that turns NaN or infinite never recovers: every later step, checkpoint, sample grid and the
saved pipeline would hold NaN weights while the run still reports success. Every training loop
(the diffusion loop in `train.py`, the autoencoder stage in `vae.py`) calls one `DivergenceGuard`
after the backward pass and before `optimizer.step()`, so the weights in memory and every checkpoint
already written stay those of the last good step.
"""

from __future__ import annotations

import math

import torch


class TrainingStopped(RuntimeError):
    """A run that cannot usefully continue; the message says why and what to try (`medgen train` exits 1)."""


class TrainingDiverged(TrainingStopped):
    def __init__(self, message: str, step: int, learning_rate: float, quantity: str):
        super().__init__(message)
        self.step = step
        self.learning_rate = learning_rate
        self.quantity = quantity


class DivergenceGuard:
    """Checks each optimiser step's loss and gradient norm.

    `learning_rate_field` names the config field a user would lower (`optim.learning_rate`,
    `vae.learning_rate`), `remedies` what else to try; `stage` names the loop in the message. With an
    fp16 gradient scaler an infinite gradient norm is routine (the scaler skips that step and lowers its
    scale), so only the loss is checked then.
    """

    def __init__(
        self, accelerator, learning_rate_field: str, stage: str = "training",
        remedies: tuple[str, ...] = ("a longer optim.lr_warmup_steps", "a smaller optim.max_grad_norm"),
    ):
        self.accelerator = accelerator
        self.learning_rate_field = learning_rate_field
        self.stage = stage
        self.remedies = remedies
        self.last_checkpoint = None  # set by the loop after each checkpoint: named in the message
        self._bad_loss: float | None = None

    def observe_loss(self, loss: torch.Tensor | float) -> float:
        """Records one micro-batch's loss (every micro-batch, also between gradient-accumulation syncs)."""
        value = float(loss.detach().item() if isinstance(loss, torch.Tensor) else loss)
        if not math.isfinite(value) and self._bad_loss is None:
            self._bad_loss = value
        return value

    def check(self, step: int, learning_rate: float, grad_norm: torch.Tensor | float | None) -> None:
        """Raises `TrainingDiverged` when this step's loss or gradient norm is not finite.

        Called on every process at each gradient sync: gradient norms are computed on all-reduced
        gradients and loss flags are reduced across processes, so every process stops at the same step.
        """
        bad_loss, self._bad_loss = self._bad_loss, None
        norm = float(grad_norm) if grad_norm is not None else 0.0
        scaled = getattr(self.accelerator, "scaler", None) is not None
        flags = torch.tensor(
            [bad_loss is not None, not scaled and not math.isfinite(norm)], dtype=torch.float32,
            device=self.accelerator.device,
        )
        if self.accelerator.num_processes > 1:
            flags = self.accelerator.reduce(flags, reduction="sum")
        loss_bad, norm_bad = (bool(flag) for flag in flags.tolist())
        if not (loss_bad or norm_bad):
            return
        quantity = (
            f"loss is {bad_loss}" if bad_loss is not None
            else "loss is not finite on another process" if loss_bad
            else f"gradient norm is {norm}"
        )
        if self.last_checkpoint is not None:
            kept = (
                f"The last good checkpoint {self.last_checkpoint} is kept and no pipeline was saved; resume from it "
                f"with `--resume_from_checkpoint latest {self.learning_rate_field}=<lower value>`."
            )
        else:
            kept = "Nothing was saved (no checkpoint had been written yet)."
        *tries, last = (f"a lower {self.learning_rate_field} (e.g. {learning_rate / 10:.3g})", *self.remedies)
        raise TrainingDiverged(
            f"{self.stage} diverged at step {step}: the {quantity} (learning rate {learning_rate:.3g}). {kept} "
            f"Try {', '.join(tries)}{' or ' if tries else ''}{last}.",
            step=step, learning_rate=learning_rate, quantity=quantity,
        )


def current_learning_rate(optimizer) -> float:
    """The learning rate the next `optimizer.step()` will use (first parameter group)."""
    return float(optimizer.param_groups[0]["lr"])
