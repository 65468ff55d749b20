"""Do the mask generator's masks look like the real masks of the same label?

For "pairs from nothing" the masks are drawn by the pipeline's mask generator, so a segmenter trained on the pairs
learns the generator's idea of each label: how often the structure is absent (BUSI *normal* images have an empty
lesion mask), how much of the image it covers, in how many pieces. Per label and mask class, the generated masks
(one per real test mask, with that mask's label) are compared with the real test masks:

- `empty`: the fraction of masks in which the class is absent;
- `area_mean` / `area_median` / `area_p90`: the fraction of the image the class covers (empty masks count 0);
- `components_mean`: connected pieces per non-empty mask (two lungs make 2; one lesion 1);
- `area_distance`: the 1-Wasserstein distance between the real and generated per-mask areas (0: the same
  distribution of sizes, empty masks included), the one figure to compare settings by.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np


def class_areas(indices: np.ndarray, mask_class: int) -> np.ndarray:
    """The fraction of the image each class-index mask of `indices` `(N, H, W)` gives to `mask_class`: `(N,)`."""
    return (indices == mask_class).reshape(len(indices), -1).mean(axis=1)


def shape_statistics(indices: np.ndarray, mask_class: int) -> dict[str, Any]:
    """The statistics of one mask class over class-index masks `indices` `(N, H, W)` (see the module docstring)."""
    from skimage.measure import label as connected_components

    present = indices == mask_class
    areas = class_areas(indices, mask_class)
    nonempty = areas > 0
    pieces = [int(connected_components(mask, connectivity=2).max()) for mask in present[nonempty]]
    return {
        "n": int(len(indices)),
        "empty": float(np.mean(~nonempty)),
        "area_mean": float(areas.mean()),
        "area_median": float(np.median(areas)),
        "area_p90": float(np.quantile(areas, 0.9)),
        "components_mean": float(np.mean(pieces)) if pieces else None,
    }


def compare_masks(
    real: np.ndarray, real_targets: np.ndarray, generated: np.ndarray, generated_targets: np.ndarray,
    label_names: Sequence[str], class_names: Sequence[str],
) -> dict[str, Any]:
    """Per label (and mask class) the statistics of the `real` and `generated` class-index masks `(N, H, W)`, whose
    label indices into `label_names` are `real_targets` / `generated_targets`; and, over every label, the mean
    `area_distance` and the largest gap in the fraction of empty masks."""
    from scipy.stats import wasserstein_distance

    per_label: dict[str, Any] = {}
    distances, empty_gaps = [], []
    for index, label in enumerate(label_names):
        real_rows, generated_rows = real_targets == index, generated_targets == index
        if not real_rows.any() or not generated_rows.any():
            continue
        classes = {}
        for class_index, class_name in enumerate(class_names, start=1):
            on_real = shape_statistics(real[real_rows], class_index)
            on_generated = shape_statistics(generated[generated_rows], class_index)
            distance = float(wasserstein_distance(class_areas(real[real_rows], class_index),
                                                  class_areas(generated[generated_rows], class_index)))
            classes[class_name] = {"real": on_real, "generated": on_generated, "area_distance": distance}
            distances.append(distance)
            empty_gaps.append(abs(on_generated["empty"] - on_real["empty"]))
        per_label[label] = classes
    return {
        "per_label": per_label,
        "area_distance_mean": float(np.mean(distances)) if distances else None,
        "empty_gap_max": float(np.max(empty_gaps)) if empty_gaps else None,
    }


def draw_masks_for_labels(
    pipe: Any, label_names: Sequence[str], targets: np.ndarray, *, num_inference_steps: int, guidance_scale: float | None = None,
    batch_size: int = 32, seed: int = 0,
) -> np.ndarray:
    """One mask from `pipe`'s mask generator per entry of `targets` (label indices into `label_names`): `(N, H, W)`
    class indices at the image size. Mask i uses `torch.Generator("cpu").manual_seed(seed + i)`; `guidance_scale`
    None draws at the model's own stored default."""
    import torch

    lookup = {name.lower(): name for name in pipe.labels}
    unknown = sorted({label_names[t] for t in targets if label_names[t].lower() not in lookup})
    if unknown:
        raise ValueError(f"the mask generator cannot draw label(s) {unknown}; its labels are {list(pipe.labels)}")
    labels = [lookup[label_names[t].lower()] for t in targets]
    masks = []
    for start in range(0, len(labels), batch_size):
        stop = min(start + batch_size, len(labels))
        generators = [torch.Generator("cpu").manual_seed(seed + i) for i in range(start, stop)]
        with torch.inference_mode():
            masks.append(pipe.sample_masks(labels[start:stop], num_inference_steps=num_inference_steps,
                                           guidance_scale=guidance_scale, generator=generators).numpy())
    return np.concatenate(masks)


def mask_generator_section(
    pipe: Any, test: Any, *, num_inference_steps: int, guidance_scale: float | None = None, seed: int = 0,
) -> dict[str, Any]:
    """The `mask_generator` section of report.json: masks drawn for the labels of the real `test` pairs
    (`medgen.segmentation.pairs.Pairs`), compared with theirs (`compare_masks`)."""
    from medgen.sampling import effective_mask_generator_guidance_scale
    from medgen.segmentation.pairs import indices_from_masks

    if test.targets is None:
        return {"skipped": "the test masks carry no labels: nothing to compare the generator's masks per label against"}
    generated = draw_masks_for_labels(
        pipe, test.label_names, test.targets, num_inference_steps=num_inference_steps, guidance_scale=guidance_scale,
        seed=seed,
    )
    section = compare_masks(indices_from_masks(test.masks), test.targets, generated, test.targets, test.label_names,
                            list(pipe.mask_classes))
    section["sampling"] = {
        "num_inference_steps": num_inference_steps,
        "guidance_scale": effective_mask_generator_guidance_scale(pipe, guidance_scale), "seed": seed,
        "seed_rule": "the mask for test mask i (its label) uses torch.Generator('cpu').manual_seed(seed + i)",
    }
    section["n_masks"] = int(len(test))
    return section


__all__ = ["class_areas", "compare_masks", "draw_masks_for_labels", "mask_generator_section", "shape_statistics"]
