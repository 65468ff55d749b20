"""The fixed classifier recipe every arm is trained with, and its test metrics.

Fixed steps (not epochs): every arm gets the same number of optimiser updates, so that adding images changes
what the classifier sees, never how long it trains. Images are drawn uniformly (no class re-weighting: a rare
label's extra images must be allowed to change the balance the classifier learns). The same light augmentation
(random shifts of up to 2 px, +/-10% contrast) is applied in every arm; no flips, since a mirrored chest X-ray
is an anatomically different image.
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from medgen.downstream.data import LabelledImages
from medgen.evaluation.classifier import one_thread


@dataclass(frozen=True)
class Recipe:
    widths: tuple[int, ...] = (8, 16, 32)
    steps: int = 400
    batch_size: int = 64
    learning_rate: float = 2e-3
    weight_decay: float = 1e-4
    max_shift: int = 2
    contrast_jitter: float = 0.1
    image_size: int | None = None  # side the images are area-downsampled to first; None keeps their size

    def describe(self) -> dict:
        return {
            **asdict(self),
            "model": f"CNN, {len(self.widths)} blocks of two 3x3 conv + BatchNorm + ReLU (widths {list(self.widths)}), "
            "max-pool between blocks, global average pool, linear head",
            "optimizer": "AdamW with a one-cycle learning-rate schedule, cross-entropy loss",
            "sampling": "uniform over the training set, with replacement, fixed number of steps",
            "augmentation": f"random shift up to {self.max_shift} px (reflect padding), contrast x U(1 +/- {self.contrast_jitter})",
            "input": "images as given" if self.image_size is None else f"images area-downsampled to {self.image_size} px",
        }


STANDARD = Recipe()
QUICK = Recipe(widths=(4, 8), steps=20, batch_size=16)


class DownstreamCNN(nn.Module):
    def __init__(self, in_channels: int, num_labels: int, widths: tuple[int, ...]) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels
        for index, width in enumerate(widths):
            if index:
                layers.append(nn.MaxPool2d(2))
            layers += [
                nn.Conv2d(channels, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
                nn.Conv2d(width, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
            ]
            channels = width
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1))
        self.head = nn.Linear(channels, num_labels)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images).flatten(1))


def _augment(batch: torch.Tensor, recipe: Recipe, generator: torch.Generator) -> torch.Tensor:
    size = batch.shape[-1]
    if recipe.max_shift:
        shift = recipe.max_shift
        padded = nn.functional.pad(batch, (shift,) * 4, mode="reflect")
        offsets = torch.randint(0, 2 * shift + 1, (len(batch), 2), generator=generator)
        batch = torch.stack([padded[i, :, y : y + size, x : x + size] for i, (y, x) in enumerate(offsets.tolist())])
    if recipe.contrast_jitter:
        scale = 1 + (torch.rand(len(batch), 1, 1, 1, generator=generator) * 2 - 1) * recipe.contrast_jitter
        batch = batch * scale
    return batch


def _inputs(images: LabelledImages, recipe: Recipe) -> torch.Tensor:
    """The images as the classifier sees them: in [-1, 1], area-downsampled to `recipe.image_size` if smaller."""
    inputs = torch.from_numpy(np.ascontiguousarray(images.images))
    if recipe.image_size is not None and recipe.image_size < inputs.shape[-1]:
        inputs = nn.functional.interpolate(inputs, size=(recipe.image_size, recipe.image_size), mode="area")
    return inputs * 2 - 1


def single_thread_on_cpu(device: str) -> contextlib.AbstractContextManager:
    """CPU training of a network this small runs on one thread (see `medgen.evaluation.classifier.one_thread`)."""
    return one_thread() if device == "cpu" else contextlib.nullcontext()


def train(images: LabelledImages, recipe: Recipe, seed: int, device: str = "cpu") -> DownstreamCNN:
    """Trains a fresh `DownstreamCNN`; the same seed gives the same initialisation and batch order."""
    with single_thread_on_cpu(device):
        return _train(images, recipe, seed, device)


def _train(images: LabelledImages, recipe: Recipe, seed: int, device: str) -> DownstreamCNN:
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)  # batches and augmentation drawn on the CPU: same on every device
    inputs = _inputs(images, recipe)
    targets = torch.from_numpy(images.targets)
    model = DownstreamCNN(inputs.shape[1], len(images.label_names), recipe.widths).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.learning_rate, weight_decay=recipe.weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=recipe.learning_rate, total_steps=recipe.steps)
    loss_fn = nn.CrossEntropyLoss()
    batch = min(recipe.batch_size, len(inputs))
    model.train()
    for _ in range(recipe.steps):
        index = torch.randint(0, len(inputs), (batch,), generator=generator)
        loss = loss_fn(model(_augment(inputs[index], recipe, generator).to(device)), targets[index].to(device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
    return model.eval()


def predict(model: DownstreamCNN, images: LabelledImages, device: str = "cpu", recipe: Recipe | None = None) -> np.ndarray:
    """`(N, L)` softmax probabilities; give the training `recipe` so the images are prepared the same way."""
    inputs = _inputs(images, recipe or STANDARD)
    with torch.inference_mode(), single_thread_on_cpu(device):
        batches = [torch.softmax(model(inputs[i : i + 512].to(device)), dim=1).cpu() for i in range(0, len(inputs), 512)]
    return torch.cat(batches).numpy()


def score_on_test(probabilities: np.ndarray, test: LabelledImages) -> dict:
    """AUROC (binary, or one-vs-rest macro for more labels), balanced accuracy and sensitivity per label."""
    from sklearn.metrics import balanced_accuracy_score, recall_score, roc_auc_score

    labels = list(range(len(test.label_names)))
    predicted = probabilities.argmax(axis=1)
    present = np.unique(test.targets)
    if len(present) < 2:
        auroc = None
    elif len(labels) == 2:
        auroc = float(roc_auc_score(test.targets, probabilities[:, 1]))
    else:
        scores = probabilities[:, present] / np.clip(probabilities[:, present].sum(axis=1, keepdims=True), 1e-12, None)
        auroc = float(roc_auc_score(test.targets, scores, multi_class="ovr", average="macro", labels=present))
    sensitivity = recall_score(test.targets, predicted, labels=labels, average=None, zero_division=0)
    return {
        "auroc": auroc,
        "balanced_accuracy": float(balanced_accuracy_score(test.targets, predicted)),
        "sensitivity": {name: float(value) for name, value in zip(test.label_names, sensitivity)},
    }
