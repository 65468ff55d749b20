"""The segmenter behind mask faithfulness and segmentation downstream: it learns, it is seeded, Dice is right."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from medgen.segmentation.dice import dice_scores, dice_summary
from medgen.segmentation.pairs import Pairs, concatenate_pairs, indices_from_masks, masks_from_indices
from medgen.segmentation.segmenter import SegmenterRecipe, predict_masks, train_segmenter, trained_segmenter
from segmentation_helpers import disc_pairs

FAST = SegmenterRecipe(channels=(8, 16), steps=80, batch_size=8, learning_rate=1e-2, image_size=None, max_shift=2)


@pytest.fixture(scope="module")
def discs():
    return disc_pairs(32, seed=0), disc_pairs(16, seed=1)


def test_segmenter_learns_discs_to_dice_above_0_8(discs):
    train, test = discs
    segmenter = train_segmenter(train, FAST, seed=0)
    predicted = predict_masks(segmenter, test.images)
    assert predicted.shape == test.masks.shape and predicted.dtype == np.uint8
    assert dice_summary(dice_scores(predicted, test.masks), test.masks)["dice"] > 0.8


def test_same_seed_same_segmenter_other_seed_another(discs):
    train, _ = discs
    recipe = dataclasses.replace(FAST, steps=5)
    first, again, other = (train_segmenter(train, recipe, seed=s).network.state_dict() for s in (0, 0, 1))
    assert all(torch.equal(first[name], again[name]) for name in first)
    assert not all(torch.equal(first[name], other[name]) for name in first)


def test_predictions_come_back_at_the_images_size(discs):
    train, test = discs
    recipe = dataclasses.replace(FAST, steps=2, image_size=16)  # trained at 16 px, asked about 32 px images
    predicted = predict_masks(train_segmenter(train, recipe, seed=0), test.images)
    assert predicted.shape == (16, 1, 32, 32)


def test_a_size_the_unet_cannot_halve_is_refused_naming_the_divisor(discs):
    train, _ = discs
    with pytest.raises(ValueError, match="divisible by 4"):
        train_segmenter(train, dataclasses.replace(FAST, channels=(8, 16, 32), image_size=30), seed=0)


def test_cached_segmenter_is_loaded_not_retrained(discs, tmp_path):
    train, test = discs
    recipe = dataclasses.replace(FAST, steps=3)
    first, cached = trained_segmenter(train, recipe, seed=0, cache_dir=tmp_path)
    assert not cached and list((tmp_path / "segmenters").glob("*.safetensors"))
    second, cached = trained_segmenter(train, recipe, seed=0, cache_dir=tmp_path)
    assert cached
    assert np.array_equal(predict_masks(first, test.images), predict_masks(second, test.images))
    _, cached = trained_segmenter(train, recipe, seed=1, cache_dir=tmp_path)  # another seed is another model
    assert not cached


def test_dice_of_empty_masks_rewards_an_empty_prediction_only():
    reference = np.zeros((3, 1, 8, 8), np.uint8)
    reference[2, 0, :4] = 1
    predicted = np.zeros_like(reference)
    predicted[1, 0, :2] = 1  # a lesion drawn on an empty image
    predicted[2, 0, :2] = 1  # half of the reference
    scores = dice_scores(predicted, reference)
    assert scores[:, 0] == pytest.approx([1.0, 0.0, 2 * 16 / (16 + 32)])
    summary = dice_summary(scores, reference, ["lesion"])
    assert summary["n_empty_reference_masks"] == 2
    assert summary["dice_nonempty"] == pytest.approx(2 / 3)
    assert summary["dice_per_class"]["lesion"] == pytest.approx(scores.mean())


@pytest.mark.parametrize(
    ("images", "masks", "message"),
    [
        (np.zeros((2, 1, 8, 8)), np.zeros((2, 1, 4, 4)), "masks are 4x4 but images are 8x8"),
        (np.zeros((2, 1, 8, 8)), np.full((2, 1, 8, 8), 255), "only 0 and 1"),
        (np.zeros((2, 1, 8, 8)), np.zeros((3, 1, 8, 8)), "2 images but 3 masks"),
        (np.zeros((2, 8, 8)), np.zeros((2, 1, 8, 8)), r"images must be \(N, C, H, W\)"),
        (np.full((2, 1, 8, 8), 2.0), np.zeros((2, 1, 8, 8)), r"images must lie in \[0, 1\]"),
    ],
)
def test_bad_pairs_are_refused_saying_what_is_wrong(images, masks, message):
    with pytest.raises(ValueError, match=message):
        Pairs(images, masks)


def test_class_indices_and_one_hot_masks_convert_both_ways():
    indices = np.array([[[0, 1], [2, 2]]], np.uint8)
    one_hot = masks_from_indices(indices, 2)
    assert one_hot.shape == (1, 2, 2, 2)
    assert one_hot[0, 0].tolist() == [[0, 1], [0, 0]] and one_hot[0, 1].tolist() == [[0, 0], [1, 1]]
    assert np.array_equal(indices_from_masks(one_hot), indices)
    with pytest.raises(ValueError, match="0..2"):
        masks_from_indices(np.array([[[3]]]), 2)


def test_joined_pairs_keep_labels_and_sources():
    first, second = disc_pairs(4, seed=0), disc_pairs(2, seed=1)
    joined = concatenate_pairs([first, second])
    assert len(joined) == 6 and joined.counts() == {"small": 3, "large": 3}
    assert joined.sources[4] == "disc_1_0"


def test_specks_below_the_minimum_object_size_are_dropped_from_predictions():
    from medgen.segmentation.segmenter import remove_small_objects

    masks = np.zeros((2, 1, 20, 20), np.uint8)
    masks[0, 0, 2:10, 2:10] = 1  # 64 px: kept
    masks[0, 0, 15, 15] = masks[0, 0, 16, 16] = 1  # one diagonal 2 px speck (8-connected): dropped
    masks[1, 0, 0:3, 0:3] = 1  # 9 px on an otherwise empty image: dropped
    cleaned = remove_small_objects(masks, 0.025)  # 10 px of 400
    assert cleaned[0, 0].sum() == 64 and cleaned[1].sum() == 0
    assert masks.sum() == 64 + 2 + 9  # the input is left as it was
    assert remove_small_objects(masks, 0.0) is masks
