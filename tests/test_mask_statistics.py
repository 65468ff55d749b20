"""The mask generator's masks against real masks of the same label (`medgen.evaluation.mask_statistics`): how often
a structure is absent, how much of the image it covers and in how many pieces; `medgen evaluate` reports it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mask_helpers import tiny_mask_pipeline
from medgen.evaluation.mask_statistics import compare_masks, draw_masks_for_labels, shape_statistics
from medgen.pipelines.evaluation_record import describe_mask_generator

pytestmark = pytest.mark.usefixtures("single_thread")  # tiny models run fastest on one thread


def _masks(count: int, squares: int = 1, side: int = 4, size: int = 16) -> np.ndarray:
    masks = np.zeros((count, size, size), dtype=np.int64)
    for piece in range(squares):
        masks[:, 1 + piece * (side + 2): 1 + piece * (side + 2) + side, 1:1 + side] = 1
    return masks


def test_shape_statistics_count_empty_masks_areas_and_pieces():
    masks = np.concatenate([_masks(2, squares=2), np.zeros((2, 16, 16), dtype=np.int64)])
    stats = shape_statistics(masks, 1)
    assert stats["n"] == 4 and stats["empty"] == 0.5
    assert stats["area_mean"] == pytest.approx(0.5 * 32 / 256) and stats["area_median"] == pytest.approx(16 / 256)
    assert stats["components_mean"] == 2.0  # two separate squares per non-empty mask
    assert shape_statistics(np.zeros((3, 16, 16), dtype=np.int64), 1)["components_mean"] is None


def test_compare_masks_finds_lesions_drawn_on_labels_whose_real_masks_are_empty():
    # real: "normal" masks empty, "lesion" masks one 4x4 square; generated: half the "normal" masks get a square
    real = np.concatenate([np.zeros((4, 16, 16), dtype=np.int64), _masks(4)])
    generated = np.concatenate([np.zeros((2, 16, 16), dtype=np.int64), _masks(2), _masks(4)])
    targets = np.array([0] * 4 + [1] * 4)
    section = compare_masks(real, targets, generated, targets, ["normal", "lesion"], ["lesion"])
    normal = section["per_label"]["normal"]["lesion"]
    assert normal["real"]["empty"] == 1.0 and normal["generated"]["empty"] == 0.5
    assert normal["area_distance"] == pytest.approx(0.5 * 16 / 256)  # half the masks moved from area 0 to 16/256
    assert section["per_label"]["lesion"]["lesion"]["area_distance"] == 0.0  # the same sizes
    assert section["empty_gap_max"] == 0.5
    assert section["area_distance_mean"] == pytest.approx(0.25 * 16 / 256)
    assert describe_mask_generator(section).startswith("normal: empty 1.00 / 0.50, area 0.000 / 0.031; lesion: empty 0.00 / 0.00")


def test_masks_are_drawn_per_label_and_seed_at_the_models_own_guidance():
    pipe = tiny_mask_pipeline()
    names, targets = ["Tuberculosis", "normal"], np.array([0, 1, 1, 0, 1])
    first = draw_masks_for_labels(pipe, names, targets, num_inference_steps=3, batch_size=2, seed=7)
    assert first.shape == (5, 16, 16)
    np.testing.assert_array_equal(first, draw_masks_for_labels(pipe, names, targets, num_inference_steps=3, batch_size=5, seed=7))
    # mask i is the generator's mask for label i at seed + i, whatever the batch
    single = pipe.sample_masks(["normal"], num_inference_steps=3, generator=[torch.Generator().manual_seed(9)]).numpy()
    np.testing.assert_array_equal(first[2], single[0])
    with pytest.raises(ValueError, match=r"cannot draw label\(s\) \['benign'\]"):
        draw_masks_for_labels(pipe, ["benign"], np.array([0]), num_inference_steps=2)
