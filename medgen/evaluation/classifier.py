"""A small seeded CNN classifier: label accuracy of generated images and train-on-synthetic/test-on-real (TSTR).

The classifier is deliberately tiny (three conv blocks, CPU-fast) and trained for a fixed number of
steps with a fixed seed, so that numbers are reproducible and the real-trained model can be cached
(safetensors, keyed by the training set's fingerprint and the recipe) across evaluations.

- `label_accuracy`: a classifier trained on real training images is asked what it sees in each generated
  image; the fraction that matches the requested label says whether the model draws the finding it was
  asked for. Read it next to the same classifier's accuracy on real test images (its ceiling), overall and per
  label (`real_test_per_label`): a label the classifier does not recognise in real images either cannot be
  checked in generated ones.
- `tstr`: the same recipe trained only on generated images, scored by AUC on real test images, next to
  the real-trained AUC (and a real-trained AUC at the same number of images): how useful the synthetic
  images are as training data.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from medgen.evaluation.images import ImageSet


@dataclass(frozen=True)
class ClassifierRecipe:
    """How the classifier is trained; part of the cache key."""

    steps: int = 300
    batch_size: int = 64
    learning_rate: float = 2e-3
    max_side: int = 64
    seed: int = 0
    width: int = 8  # channels of the first conv block (the next two have 2x and 4x)
    augment: bool = False  # random horizontal flips and shifts of up to 1/16 of the side while training
    version: int = 2


class SmallCNN(nn.Module):
    """Three conv blocks and a linear head; ~6k parameters at width 8, ~100k at width 32."""

    def __init__(self, in_channels: int, num_outputs: int, width: int = 8) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.BatchNorm2d(2 * width), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(2 * width, 4 * width, 3, padding=1), nn.BatchNorm2d(4 * width), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
        )
        self.head = nn.Linear(4 * width, num_outputs)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images).flatten(1))


@contextmanager
def one_thread() -> Iterator[None]:
    """Runs the block on one intra-op thread.

    A step of this network is a few milliseconds of work: with two threads the time goes into thread
    hand-offs (10x slower per step on a busy 2-core machine), with one it goes into the work.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _prepare(images: np.ndarray, max_side: int) -> torch.Tensor:
    tensor = torch.from_numpy(np.ascontiguousarray(images)).float() * 2 - 1
    if max(tensor.shape[-2:]) > max_side:
        tensor = nn.functional.interpolate(tensor, size=(max_side, max_side), mode="area")
    return tensor


def _targets(images: ImageSet) -> torch.Tensor:
    labels = torch.from_numpy(images.labels)
    return labels if images.multi_label else labels.argmax(dim=1)


def _check_trainable(images: ImageSet, what: str) -> None:
    if images.labels is None or not images.label_names:
        raise ValueError(f"{what} has no labels; a classifier needs labelled images")
    if images.multi_label:
        return
    present = np.unique(images.labels.argmax(axis=1))
    if len(present) < 2:
        raise ValueError(
            f"{what} holds only label {images.label_names[int(present[0])]!r}; a classifier needs at least two labels"
        )


def train_classifier(
    images: ImageSet, recipe: ClassifierRecipe = ClassifierRecipe(), progress: bool = False, desc: str = "classifier"
) -> SmallCNN:
    """Trains `SmallCNN` on a labelled image set (cross-entropy for single-label, BCE for multi-label)."""
    _check_trainable(images, images.source or "training images")
    with one_thread():
        return _train(images, recipe, progress, desc)


def _train(images: ImageSet, recipe: ClassifierRecipe, progress: bool, desc: str) -> SmallCNN:
    from tqdm.auto import tqdm

    generator = torch.Generator().manual_seed(recipe.seed)
    torch.manual_seed(recipe.seed)
    inputs = _prepare(images.images, recipe.max_side)
    targets = _targets(images)
    model = SmallCNN(inputs.shape[1], len(images.label_names), recipe.width)
    loss_fn = nn.BCEWithLogitsLoss() if images.multi_label else nn.CrossEntropyLoss()
    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.learning_rate)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=recipe.learning_rate, total_steps=recipe.steps)
    # Class-balanced sampling for single-label data: real sets are imbalanced (PneumoniaMNIST is 3:1),
    # generated sets usually are not, and a prior-biased classifier would under-credit the minority label.
    if images.multi_label:
        weights = torch.ones(len(inputs))
    else:
        weights = 1.0 / torch.bincount(targets, minlength=len(images.label_names)).float()[targets]
    batch = min(recipe.batch_size, len(inputs))
    model.train()
    for _ in tqdm(range(recipe.steps), desc=desc, disable=not progress, unit="step"):
        index = torch.multinomial(weights, batch, replacement=True, generator=generator)
        batch_inputs = _augment(inputs[index], generator) if recipe.augment else inputs[index]
        loss = loss_fn(model(batch_inputs), targets[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
    return model.eval()


def _augment(batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Flips a random half of the batch left-right and shifts the batch by up to 1/16 of the side (edge padding)."""
    flip = torch.rand(len(batch), generator=generator) < 0.5
    batch = torch.where(flip[:, None, None, None], batch.flip(-1), batch)
    pad = max(1, batch.shape[-1] // 16)
    padded = nn.functional.pad(batch, (pad, pad, pad, pad), mode="replicate")
    dy, dx = torch.randint(0, 2 * pad + 1, (2,), generator=generator).tolist()
    return padded[..., dy : dy + batch.shape[-2], dx : dx + batch.shape[-1]]


def predict_probabilities(model: SmallCNN, images: ImageSet, multi_label: bool, max_side: int = 64) -> np.ndarray:
    """`(N, L)` probabilities: softmax for single-label models, sigmoid for multi-label ones."""
    inputs = _prepare(images.images, max_side)
    outputs = []
    with torch.inference_mode(), one_thread():
        for start in range(0, len(inputs), 256):
            logits = model.eval()(inputs[start : start + 256])
            outputs.append(torch.sigmoid(logits) if multi_label else torch.softmax(logits, dim=1))
    return torch.cat(outputs).numpy()


def auc(probabilities: np.ndarray, images: ImageSet) -> float | None:
    """ROC AUC on labelled images: binary AUC for two classes, one-vs-rest macro for more, macro over labels for multi-label."""
    from sklearn.metrics import roc_auc_score

    labels = images.labels
    if images.multi_label:
        scores = [
            roc_auc_score(labels[:, j] >= 0.5, probabilities[:, j])
            for j in range(labels.shape[1])
            if 0 < (labels[:, j] >= 0.5).sum() < len(labels)
        ]
        return float(np.mean(scores)) if scores else None
    classes = labels.argmax(axis=1)
    if len(np.unique(classes)) < 2:
        return None
    if labels.shape[1] == 2:
        return float(roc_auc_score(classes, probabilities[:, 1]))
    present = np.unique(classes)
    return float(roc_auc_score(classes, probabilities[:, present] / probabilities[:, present].sum(1, keepdims=True), multi_class="ovr", labels=present))


def agreement(probabilities: np.ndarray, images: ImageSet) -> dict:
    """How often predictions match the labels: accuracy (single-label, with whether each image's prediction matched)
    or per-label agreement at 0.5 (multi-label)."""
    labels = images.labels
    if images.multi_label:
        matches = (probabilities >= 0.5) == (labels >= 0.5)
        per_label = {name: float(matches[:, j].mean()) for j, name in enumerate(images.label_names)}
        return {"accuracy": float(matches.mean()), "per_label": per_label}
    requested = labels.argmax(axis=1)
    correct = probabilities.argmax(axis=1) == requested
    per_label = {
        name: float(correct[requested == j].mean()) for j, name in enumerate(images.label_names) if (requested == j).any()
    }
    return {"accuracy": float(correct.mean()), "per_label": per_label, "per_image_correct": correct.tolist()}


def _cache_path(cache_dir: Path, train: ImageSet, recipe: ClassifierRecipe) -> Path:
    key = json.dumps({"data": train.fingerprint(), "multi_label": train.multi_label, **asdict(recipe)}, sort_keys=True)
    return cache_dir / "classifiers" / f"{hashlib.sha256(key.encode()).hexdigest()[:16]}.safetensors"


def real_classifier(
    train: ImageSet, cache_dir: str | Path | None, recipe: ClassifierRecipe = ClassifierRecipe(), progress: bool = False
) -> SmallCNN:
    """The real-trained classifier, loaded from the safetensors cache when this data and recipe were seen before."""
    from safetensors.torch import load_file, save_file

    if cache_dir is not None:
        path = _cache_path(Path(cache_dir), train, recipe)
        if path.is_file():
            model = SmallCNN(train.images.shape[1], len(train.label_names), recipe.width)
            model.load_state_dict(load_file(str(path)))
            return model.eval()
    model = train_classifier(train, recipe, progress, "classifier: real training images")
    if cache_dir is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        state = {name: tensor.contiguous() for name, tensor in model.state_dict().items()}
        save_file(state, str(path), metadata={"label_names": json.dumps(train.label_names), "recipe": json.dumps(asdict(recipe))})
    return model


def classifier_report(
    train: ImageSet,
    test: ImageSet,
    generated: ImageSet,
    cache_dir: str | Path | None = None,
    recipe: ClassifierRecipe = ClassifierRecipe(),
    progress: bool = False,
) -> dict:
    """`label_accuracy` and `tstr` sections of report.json (see module docstring)."""
    multi_label = train.multi_label
    model = real_classifier(train, cache_dir, recipe, progress)
    test_probabilities = predict_probabilities(model, test, multi_label, recipe.max_side)
    real_auc = auc(test_probabilities, test)
    generated_probabilities = predict_probabilities(model, generated, multi_label, recipe.max_side)
    real_agreement = agreement(test_probabilities, test)
    label_accuracy = {
        **agreement(generated_probabilities, generated),
        "real_test_accuracy": real_agreement["accuracy"],
        "real_test_per_label": real_agreement["per_label"],
        "real_test_auc": real_auc,
        "n_generated": len(generated),
    }
    tstr: dict = {"real_trained_auc": real_auc, "n_real_train": len(train), "n_synthetic_train": len(generated)}
    try:
        synthetic_model = train_classifier(generated, recipe, progress, "TSTR: classifier on synthetic images")
    except ValueError as error:
        tstr["skipped"] = str(error)
        return {"label_accuracy": label_accuracy, "tstr": tstr}
    tstr["synthetic_trained_auc"] = auc(predict_probabilities(synthetic_model, test, multi_label, recipe.max_side), test)
    # The same recipe on as many real images as there are synthetic ones: separates "synthetic images are
    # worse" from "there are fewer of them".
    if len(generated) < len(train):
        index = np.random.default_rng(recipe.seed).choice(len(train), size=len(generated), replace=False)
        try:
            same_size_model = train_classifier(
                train.subset(index), recipe, progress, "TSTR: classifier on as many real images"
            )
            tstr["real_trained_same_size_auc"] = auc(
                predict_probabilities(same_size_model, test, multi_label, recipe.max_side), test
            )
        except ValueError as error:
            tstr["real_trained_same_size_auc"] = None
            tstr["same_size_skipped"] = str(error)
    return {"label_accuracy": label_accuracy, "tstr": tstr}
