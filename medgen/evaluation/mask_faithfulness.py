"""Mask faithfulness: does a mask-conditioned pipeline draw the anatomy (or lesion) its mask asks for?

A small segmenter (`medgen.segmentation`, a MONAI U-Net) is trained on the real training pairs; the pipeline
draws one image from every *test* mask (with that pair's label); the segmenter segments each generated image
and Dice is taken against the mask it was drawn from. The same segmenter's Dice on the real test images is
the reference: a segmenter is never perfect, so the generated images are judged by the ratio

    ratio = Dice(segmenter on generated images, conditioning masks) / Dice(segmenter on real test images, their masks)

A ratio near 1 says the images follow their masks as well as real images do; well below 1, the pipeline
ignores its masks or draws structures the segmenter cannot recognise. Test masks are never trained on by the
segmenter (nor, when the data layer's split is used, by the pipeline).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from medgen.sampling import DEFAULT_INFERENCE_STEPS, effective_guidance_scale, effective_mask_guidance_scale
from medgen.segmentation.pairs import Pairs, indices_from_masks


def is_mask_pipeline(pipe: Any) -> bool:
    """Whether `pipe` draws images from masks (`pipe(masks=[...])`, with `mask_classes`)."""
    import inspect

    return "masks" in inspect.signature(pipe.__call__).parameters and bool(getattr(pipe, "mask_classes", None))


def _pipeline_label(pipe: Any, name: str | None) -> str | None:
    if name is None:
        return None
    labels = list(getattr(pipe, "labels", None) or [])
    lookup = {label.lower(): label for label in labels}
    if name.lower() not in lookup:
        raise ValueError(f"the pipeline cannot draw label {name!r} of the test pairs; its labels are {labels}")
    return lookup[name.lower()]


def sample_from_masks(
    pipe: Any,
    pairs: Pairs,
    *,
    num_inference_steps: int = DEFAULT_INFERENCE_STEPS,
    guidance_scale: float | None = None,
    batch_size: int = 16,
    seed: int = 0,
    progress: bool = False,
) -> np.ndarray:
    """One image per pair's mask (and label, when the pairs have labels): `(N, C, H, W)` in [0, 1].

    Image i uses `torch.Generator("cpu").manual_seed(seed + i)`, as `medgen generate` does.
    """
    import torch
    from tqdm.auto import tqdm

    if not is_mask_pipeline(pipe):
        raise ValueError(f"{type(pipe).__name__} does not draw images from masks (no `masks` argument)")
    if pairs.num_classes != len(pipe.mask_classes):
        raise ValueError(
            f"the pairs' masks have {pairs.num_classes} class(es); the pipeline's masks have "
            f"{len(pipe.mask_classes)} ({', '.join(pipe.mask_classes)})"
        )
    indices = indices_from_masks(pairs.masks)
    labels = (
        [_pipeline_label(pipe, pairs.label_names[target]) for target in pairs.targets]
        if pairs.targets is not None
        else [None] * len(pairs)
    )
    images = []
    for start in tqdm(range(0, len(pairs), batch_size), desc="sampling from test masks", disable=not progress, unit="batch"):
        stop = min(start + batch_size, len(pairs))
        kwargs: dict[str, Any] = {
            "masks": [indices[i] for i in range(start, stop)],
            "labels": None if all(label is None for label in labels[start:stop]) else labels[start:stop],
            "num_inference_steps": num_inference_steps,
            "generator": [torch.Generator("cpu").manual_seed(seed + i) for i in range(start, stop)],
            "output_type": "np",
        }
        if guidance_scale is not None:
            kwargs["guidance_scale"] = guidance_scale
        with torch.inference_mode():
            output = pipe(**kwargs)
        images.append(np.asarray(output.images, dtype=np.float32).transpose(0, 3, 1, 2))
    generated = np.concatenate(images)
    if generated.shape[2:] != pairs.images.shape[2:]:
        raise RuntimeError(
            f"the pipeline made {generated.shape[2]}x{generated.shape[3]} images; the test masks are "
            f"{pairs.images.shape[2]}x{pairs.images.shape[3]}"
        )
    return generated


def faithfulness_scores(
    segmenter: Any, generated: np.ndarray, test: Pairs, class_names: Sequence[str] | None = None, device: str = "cpu"
) -> tuple[dict[str, Any], np.ndarray]:
    """The report section for images `generated[i]` drawn from `test.masks[i]` (see the module docstring), and the
    segmenter's masks of the generated images."""
    from medgen.segmentation.dice import dice_scores, dice_summary
    from medgen.segmentation.segmenter import predict_masks

    if len(generated) != len(test):
        raise ValueError(f"{len(generated)} generated images for {len(test)} test masks: one image per mask")
    names = list(class_names) if class_names else None
    predicted_generated = predict_masks(segmenter, generated, device)
    predicted_real = predict_masks(segmenter, test.images, device)
    generated_scores = dice_scores(predicted_generated, test.masks)
    real_scores = dice_scores(predicted_real, test.masks)
    on_generated = dice_summary(generated_scores, test.masks, names)
    on_real = dice_summary(real_scores, test.masks, names)

    def ratio(numerator: float | None, denominator: float | None) -> float | None:
        return numerator / denominator if numerator is not None and denominator else None

    section: dict[str, Any] = {
        "dice_generated": on_generated["dice"],
        "dice_real_test": on_real["dice"],
        "ratio": ratio(on_generated["dice"], on_real["dice"]),
        "dice_generated_nonempty": on_generated["dice_nonempty"],
        "dice_real_test_nonempty": on_real["dice_nonempty"],
        "ratio_nonempty": ratio(on_generated["dice_nonempty"], on_real["dice_nonempty"]),
        "generated": on_generated,
        "real_test": on_real,
        "n_test_masks": len(test),
    }
    if test.targets is not None:
        per_label = {}
        for index, name in enumerate(test.label_names):
            rows = test.targets == index
            if rows.any():
                dice_generated, dice_real = float(generated_scores[rows].mean()), float(real_scores[rows].mean())
                per_label[name] = {
                    "n": int(rows.sum()),
                    "dice_generated": dice_generated,
                    "dice_real_test": dice_real,
                    "ratio": ratio(dice_generated, dice_real),
                }
        section["per_label"] = per_label
    return section, predicted_generated


def mask_faithfulness(
    pipe: Any,
    train: Pairs,
    test: Pairs,
    *,
    recipe: Any = None,
    segmenter_seed: int = 0,
    num_inference_steps: int = DEFAULT_INFERENCE_STEPS,
    guidance_scale: float | None = None,
    batch_size: int = 16,
    seed: int = 0,
    max_masks: int | None = None,
    cache_dir: str | Path | None = None,
    device: str = "cpu",
    figure: str | Path | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """The `mask_faithfulness` section of report.json: segmenter trained on `train`, images drawn from `test`'s masks.

    Args:
        pipe: a loaded mask-conditioned pipeline (`pipe(masks=[...], labels=[...])`).
        train / test: real pairs at the pipeline's image size; `test` is never trained on.
        recipe: a `SegmenterRecipe` (default `medgen.segmentation.segmenter.STANDARD`).
        max_masks: draw from a seeded subset of this many test masks (None: all of them).
        cache_dir: where the real-trained segmenter is cached (safetensors, keyed by the pairs, recipe and seed).
        figure: write a PNG of generated images with the conditioning (green) and segmented (red) outlines.
    """
    from medgen.segmentation.segmenter import STANDARD, trained_segmenter

    recipe = recipe or STANDARD
    if train.num_classes != test.num_classes:
        raise ValueError(f"training masks have {train.num_classes} class(es), test masks {test.num_classes}")
    if len(test) == 0:
        raise ValueError("mask faithfulness needs at least one test mask, got none")
    if max_masks is not None and max_masks < len(test):
        test = test.subset(np.sort(np.random.default_rng(seed).choice(len(test), size=max_masks, replace=False)))
    segmenter, cached = trained_segmenter(train, recipe, segmenter_seed, cache_dir, device, progress)
    generated = sample_from_masks(
        pipe, test, num_inference_steps=num_inference_steps, guidance_scale=guidance_scale, batch_size=batch_size,
        seed=seed, progress=progress,
    )
    class_names = list(getattr(pipe, "mask_classes", None) or []) or None
    section, predicted = faithfulness_scores(segmenter, generated, test, class_names, device)
    section.update(
        n_train_pairs=len(train),
        segmenter={**recipe.describe(), "seed": segmenter_seed, "loaded_from_cache": cached},
        sampling={
            # the scales used: the pipeline's own defaults where none was asked for
            "num_inference_steps": num_inference_steps, "guidance_scale": effective_guidance_scale(pipe, guidance_scale),
            "mask_guidance_scale": effective_mask_guidance_scale(pipe), "seed": seed,
            "seed_rule": "the image of test mask i uses torch.Generator('cpu').manual_seed(seed + i)",
        },
    )
    if figure is not None:
        from medgen.segmentation.figures import overlay_grid

        shown = min(32, len(test))
        overlay_grid(generated[:shown], test.masks[:shown], predicted[:shown], figure)
        section["figure"] = str(figure)
    return section



def evaluate_mask_faithfulness(
    pipe: Any,
    reference_config: Any,
    train_split: str | None,
    *,
    max_masks: int | None = None,
    num_inference_steps: int = DEFAULT_INFERENCE_STEPS,
    guidance_scale: float | None = None,
    batch_size: int = 16,
    seed: int = 0,
    cache_dir: str | Path | None = None,
    use_cache: bool = True,
    output: str | Path | None = None,
    progress: bool = False,
) -> dict[str, Any] | None:
    """`medgen evaluate`'s mask faithfulness section for a mask-conditioned pipeline (None for any other pipeline).

    `reference_config` is the `DataConfig` of the real reference (test) split; its `mask_column` names the
    masks, and the same config at `train_split` gives the segmenter's training pairs. Without a mask column or
    a separate training split the section says why it was skipped. A pipeline with a mask generator also gets
    its `mask_generator` section (`medgen.evaluation.mask_statistics`: its masks against the test masks, per
    label), under that key.
    """
    import torch

    from medgen.evaluation.features import default_cache_dir

    if not is_mask_pipeline(pipe):
        return None
    if not getattr(reference_config, "mask_column", None):
        return {
            "skipped": "the real data names no mask column: evaluate with the mask training config (--config, whose "
            "data section sets mask_column) or give --mask-column"
        }
    if train_split is None or train_split == reference_config.split:
        return {"skipped": f"no training split apart from the reference split {reference_config.split!r} to train the segmenter on"}
    from medgen.segmentation.data import load_pairs

    values = {key: value for key, value in reference_config.to_dict().items() if key != "max_samples"}
    if not values.get("mask_classes"):
        values["mask_classes"] = list(pipe.mask_classes)  # decodes 8-bit masks (class c stored as c * 255 // K)
    resolution, channels = values["resolution"], values["channels"]
    test, _ = load_pairs(values, reference_config.split, resolution, channels, reference_config.max_samples)
    train, _ = load_pairs(values, train_split, resolution, channels)
    if test.targets is not None and not getattr(pipe, "labels", None):
        test = Pairs(test.images, test.masks, [], None, test.sources)  # the pipeline takes masks only
    figure = None
    if output is not None:
        (Path(output) / "figures").mkdir(parents=True, exist_ok=True)
        figure = Path(output) / "figures" / "mask_faithfulness.png"
    cache = (Path(cache_dir) if cache_dir is not None else default_cache_dir()) if use_cache else None
    device = str(getattr(pipe, "_execution_device", None) or getattr(pipe, "device", "cpu"))
    with torch.inference_mode(False):
        section = mask_faithfulness(
            pipe, train, test, num_inference_steps=num_inference_steps, guidance_scale=guidance_scale,
            batch_size=batch_size, seed=seed, max_masks=max_masks, cache_dir=cache, device="cuda" if device.startswith("cuda") else "cpu",
            figure=figure, progress=progress,
        )
    if figure is not None:
        section["figure"] = "figures/mask_faithfulness.png"  # relative to the report folder
    section["train_split"], section["test_split"] = train_split, reference_config.split
    if getattr(pipe, "has_mask_generator", False):
        from medgen.evaluation.mask_statistics import mask_generator_section

        section["mask_generator"] = mask_generator_section(pipe, test, num_inference_steps=num_inference_steps, seed=seed)
    return section


__all__ = ["evaluate_mask_faithfulness", "faithfulness_scores", "is_mask_pipeline", "mask_faithfulness", "sample_from_masks"]
