"""Mask faithfulness: the real-trained segmenter's Dice on images drawn from the test masks, beside its Dice on
the real test images."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from medgen.evaluation.mask_faithfulness import faithfulness_scores, is_mask_pipeline, mask_faithfulness, sample_from_masks
from medgen.segmentation.pairs import Pairs
from medgen.segmentation.segmenter import SegmenterRecipe, train_segmenter
from segmentation_helpers import disc_pairs, write_pair_folder

FAST = SegmenterRecipe(channels=(8, 16), steps=80, batch_size=8, learning_rate=1e-2, image_size=None, max_shift=2)


@pytest.fixture(scope="module")
def disc_segmenter():
    return train_segmenter(disc_pairs(32, seed=0), FAST, seed=0)


def test_images_that_follow_their_masks_score_like_real_ones(disc_segmenter):
    test = disc_pairs(16, seed=1)
    section, predicted = faithfulness_scores(disc_segmenter, test.images.copy(), test)
    assert section["ratio"] == pytest.approx(1.0)
    assert section["dice_real_test"] > 0.8
    assert predicted.shape == test.masks.shape
    assert set(section["per_label"]) == {"small", "large"}


def test_images_that_ignore_their_masks_score_far_below_real_ones(disc_segmenter):
    test = disc_pairs(16, seed=1)
    shuffled = test.images[np.roll(np.arange(len(test)), 1)]  # every image drawn from another pair's mask
    section, _ = faithfulness_scores(disc_segmenter, shuffled, test)
    assert section["ratio"] < 0.5
    assert section["dice_generated"] < section["dice_real_test"]


def _pipeline_pairs(count: int, seed: int) -> Pairs:
    """Disc pairs at the tiny pipeline's 16 px, labelled with its labels."""
    pairs = disc_pairs(count, seed, size=16, labels=("normal", "tuberculosis"))
    return pairs


def test_tiny_mask_pipeline_end_to_end_reports_dice_ratio_and_figure(tmp_path):
    from mask_helpers import tiny_mask_pipeline

    pipe = tiny_mask_pipeline(mask_generator=False)
    pipe.set_progress_bar_config(disable=True)
    train, test = _pipeline_pairs(16, seed=0), _pipeline_pairs(6, seed=1)
    recipe = dataclasses.replace(FAST, steps=20)
    section = mask_faithfulness(
        pipe, train, test, recipe=recipe, num_inference_steps=2, batch_size=4, max_masks=5,
        cache_dir=tmp_path / "cache", figure=tmp_path / "faithfulness.png",
    )
    assert section["n_test_masks"] == 5 and section["n_train_pairs"] == 16
    assert 0 <= section["dice_generated"] <= 1 and 0 <= section["dice_real_test"] <= 1
    if section["dice_real_test"]:
        assert section["ratio"] == pytest.approx(section["dice_generated"] / section["dice_real_test"])
    assert section["generated"]["dice_per_class"].keys() == {"lung"}
    assert (tmp_path / "faithfulness.png").is_file()
    again = mask_faithfulness(
        pipe, train, test, recipe=recipe, num_inference_steps=2, batch_size=2, max_masks=5, cache_dir=tmp_path / "cache",
    )
    assert again["segmenter"]["loaded_from_cache"]
    assert again["dice_generated"] == pytest.approx(section["dice_generated"])  # image i uses seed + i, whatever the batch


def test_sampling_from_masks_refuses_a_label_the_pipeline_cannot_draw():
    from mask_helpers import tiny_mask_pipeline

    pipe = tiny_mask_pipeline(mask_generator=False)
    pairs = disc_pairs(2, seed=0, size=16, labels=("normal", "pneumonia"))
    with pytest.raises(ValueError, match="cannot draw label 'pneumonia'.*'normal', 'tuberculosis'"):
        sample_from_masks(pipe, pairs, num_inference_steps=1)


def test_sampling_from_masks_refuses_masks_of_another_class_count():
    from mask_helpers import tiny_mask_pipeline

    pipe = tiny_mask_pipeline(mask_generator=False)
    two_classes = Pairs(np.zeros((1, 1, 16, 16)), np.zeros((1, 2, 16, 16)))
    with pytest.raises(ValueError, match=r"2 class\(es\); the pipeline's masks have 1 \(lung\)"):
        sample_from_masks(pipe, two_classes, num_inference_steps=1)


def test_only_mask_pipelines_are_mask_pipelines():
    from helpers import tiny_label_pipeline
    from mask_helpers import tiny_mask_pipeline

    assert is_mask_pipeline(tiny_mask_pipeline(mask_generator=False))
    assert not is_mask_pipeline(tiny_label_pipeline())


def test_medgen_evaluate_on_a_mask_pipeline_adds_mask_faithfulness(tmp_path, monkeypatch, capsys):
    from mask_helpers import tiny_mask_pipeline

    from medgen.cli import main

    # the standard segmenter trains for minutes; a tiny one keeps the test to seconds
    monkeypatch.setattr("medgen.segmentation.segmenter.STANDARD", dataclasses.replace(FAST, steps=10))
    real = disc_pairs(24, seed=0, size=16, labels=("normal", "tuberculosis"))
    write_pair_folder(real, tmp_path / "real", split=["test" if i % 3 == 0 else "train" for i in range(len(real))])
    tiny_mask_pipeline().save_pretrained(tmp_path / "pipe")
    argv = [
        "evaluate", "--pipeline", str(tmp_path / "pipe"), "--data", str(tmp_path / "real"), "--label-column", "label",
        "--mask-column", "mask_file_name", "--num-samples", "6", "--num-inference-steps", "2", "--output",
        str(tmp_path / "out"), "--feature-extractor", "pixel", "--no-classifier", "--no-cache", "--device", "cpu", "--no-store",
    ]
    assert main(argv) == 0
    assert "mask faithfulness: Dice" in capsys.readouterr().out
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    section = report["mask_faithfulness"]
    assert section["n_test_masks"] == 6 and section["n_train_pairs"] == 16
    assert section["test_split"] == "test" and section["train_split"] == "train"
    assert 0 <= section["dice_generated"] <= 1 and 0 <= section["dice_real_test"] <= 1
    assert (tmp_path / "out" / "figures" / "mask_faithfulness.png").is_file()
    html = (tmp_path / "out" / "report.html").read_text()
    assert "Mask faithfulness: ratio" in html and "figures/mask_faithfulness.png" in html


def test_evaluate_says_why_mask_faithfulness_is_skipped_and_ignores_other_pipelines():
    from helpers import tiny_label_pipeline
    from mask_helpers import tiny_mask_pipeline

    from medgen.data import DataConfig
    from medgen.evaluation.mask_faithfulness import evaluate_mask_faithfulness

    without_masks = DataConfig(source="csv", path="anywhere", split="test")
    assert "no mask column" in evaluate_mask_faithfulness(tiny_mask_pipeline(), without_masks, "train")["skipped"]
    with_masks = DataConfig(source="csv", path="anywhere", split="test", mask_column="mask_file_name")
    assert "no training split" in evaluate_mask_faithfulness(tiny_mask_pipeline(), with_masks, "test")["skipped"]
    assert evaluate_mask_faithfulness(tiny_label_pipeline(), with_masks, "train") is None
