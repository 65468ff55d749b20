"""The bootstrap intervals of FID, precision and recall: what they compute, that they shrink with more images,
and where a user reads them (report.json, report.html, the console, the stored summary and the model card)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from medgen.evaluation import ImageSet, evaluate_image_sets
from medgen.evaluation.fidelity import frechet_distance, precision_recall
from medgen.evaluation.uncertainty import FrechetAgainst, bootstrap_fidelity

LABELS = ["normal", "pneumonia"]


def features(count: int, seed: int, shift: float = 0.0, dims: int = 24) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(count, dims)) * np.linspace(0.5, 2.0, dims) + shift


def figures(real: np.ndarray, generated: np.ndarray) -> dict[str, float]:
    return {"fid": frechet_distance(real, generated), **precision_recall(real, generated)}


def test_the_fast_fid_equals_torchmetrics_fid_on_the_same_images():
    real, generated = features(300, 0), features(120, 1, shift=0.3)
    fast = FrechetAgainst(real)
    assert fast(torch.from_numpy(generated).double()) == pytest.approx(frechet_distance(real, generated), rel=1e-6)
    # a subset and a set with repeated rows (what a bootstrap resample is) agree as well
    repeated = generated[[0, 0, 3, 5, 5, 5, 7, 9, 11, 11]]
    assert fast(torch.from_numpy(repeated).double()) == pytest.approx(frechet_distance(real, repeated), rel=1e-6)


def test_intervals_surround_each_figure_and_narrow_with_more_generated_images():
    real = features(400, 0)
    few, many = features(60, 1, shift=0.2), features(600, 2, shift=0.2)
    narrow = bootstrap_fidelity(real, many, figures(real, many), resamples=40, seed=0)
    wide = bootstrap_fidelity(real, few, figures(real, few), resamples=40, seed=0)
    estimates = figures(real, many)
    for name in ("fid", "precision", "recall"):
        interval = narrow[name]
        assert interval["low"] < estimates[name] < interval["high"]
        assert interval["high"] - interval["low"] == pytest.approx(2 * 1.959964 * interval["se"], rel=1e-5)
        assert wide[name]["se"] > narrow[name]["se"] > 0, name
    assert narrow["resamples"] == 40 and narrow["level"] == 0.95
    # the same seed gives the same intervals; a different level changes their width only
    assert bootstrap_fidelity(real, many, estimates, resamples=40, seed=0) == narrow
    ninety = bootstrap_fidelity(real, many, estimates, resamples=40, level=0.9, seed=0)
    assert ninety["fid"]["se"] == narrow["fid"]["se"] and ninety["fid"]["high"] < narrow["fid"]["high"]


def test_the_fid_interval_covers_a_fresh_draws_fid_most_of_the_time():
    """What the interval promises: another draw of as many images from the same model scores inside it."""
    real = features(400, 0)
    fast = FrechetAgainst(real)
    first = features(200, 1, shift=0.2)
    interval = bootstrap_fidelity(real, first, figures(real, first), resamples=60, seed=0)["fid"]
    fresh = [fast(torch.from_numpy(features(200, seed, shift=0.2)).double()) for seed in range(2, 22)]
    inside = np.mean([interval["low"] <= value <= interval["high"] for value in fresh])
    assert inside >= 0.8, (interval, fresh)


def test_intervals_stay_within_each_figures_range():
    """A low recall from a handful of images: its interval is clipped at 0, never a negative recall."""
    real = features(200, 0)
    few = features(12, 1, shift=1.0)  # recall about 0.17 with a standard error of about 0.1
    estimates = figures(real, few)
    result = bootstrap_fidelity(real, few, estimates, resamples=30, seed=0)
    assert estimates["recall"] - 1.96 * result["recall"]["se"] < 0 and result["recall"]["low"] == 0.0
    for name in ("precision", "recall"):
        assert 0.0 <= result[name]["low"] <= estimates[name] <= result[name]["high"] <= 1.0
    assert result["fid"]["low"] >= 0.0


@pytest.mark.parametrize(("options", "message"), [({"resamples": 1}, "resamples must be >= 2"), ({"level": 1.0}, "level must be in")])
def test_bad_bootstrap_settings_are_clear_errors(options, message):
    real, generated = features(50, 0), features(40, 1)
    with pytest.raises(ValueError, match=message):
        bootstrap_fidelity(real, generated, figures(real, generated), **options)


def labelled_set(count: int, seed: int, name: str) -> ImageSet:
    rng = np.random.default_rng(seed)
    images = np.clip(rng.normal(0.5, 0.2, size=(count, 16, 16, 1)), 0, 1).astype(np.float32)
    labels = np.eye(2, dtype=np.float32)[np.arange(count) % 2]
    images[labels[:, 1] == 1] *= 0.7  # the two labels look different
    return ImageSet(images, labels, LABELS, False, name)


def test_the_report_carries_intervals_overall_and_per_label_and_zero_resamples_leaves_them_out(tmp_path):
    real, generated, train = labelled_set(80, 0, "test"), labelled_set(60, 1, "generated"), labelled_set(80, 2, "train")
    options = dict(feature_extractor="pixel", use_cache=False, classifier=False, memorization_features=False)
    report = evaluate_image_sets(generated, real, train, output_dir=tmp_path, bootstrap_resamples=20, **options)
    uncertainty = report["uncertainty"]
    assert uncertainty["resamples"] == 20
    for name in ("fid", "precision", "recall"):
        assert uncertainty[name]["low"] <= report[name] <= uncertainty[name]["high"]
    for label in LABELS:
        entry = report["per_label"][label]
        assert entry["uncertainty"]["recall"]["low"] <= entry["recall"] <= entry["uncertainty"]["recall"]["high"]
    assert json.loads((tmp_path / "report.json").read_text())["uncertainty"] == uncertainty
    html = (tmp_path / "report.html").read_text()
    assert f"{uncertainty['fid']['low']:.4g} to {uncertainty['fid']['high']:.4g}" in html

    bare = evaluate_image_sets(generated, real, train, bootstrap_resamples=0, **options)
    assert "uncertainty" not in bare and "uncertainty" not in bare["per_label"]["normal"]
    assert bare["fid"] == report["fid"]
    with pytest.raises(ValueError, match="bootstrap_resamples must be >= 0"):
        evaluate_image_sets(generated, real, train, bootstrap_resamples=-1, **options)


def test_a_negative_resample_count_fails_before_anything_is_sampled(monkeypatch, tmp_path):
    import medgen.evaluation.api as api

    def never(*args, **kwargs):
        raise AssertionError("sampled before the settings were checked")

    monkeypatch.setattr(api, "sample_pipeline", never)
    monkeypatch.setattr(api, "read_image_set", never)
    with pytest.raises(ValueError, match="bootstrap_resamples must be >= 0"):
        api.evaluate(pipeline=tmp_path, data=tmp_path, bootstrap_resamples=-1)


def test_the_stored_summary_and_model_card_show_the_intervals(tmp_path):
    from medgen.commands.evaluate import summary_lines
    from medgen.pipelines.model_card import evaluation_section
    from medgen.pipelines.publishing import evaluation_summary

    real, generated, train = labelled_set(80, 0, "test"), labelled_set(60, 1, "generated"), labelled_set(80, 2, "train")
    report = evaluate_image_sets(
        generated, real, train, feature_extractor="pixel", use_cache=False, classifier=False,
        memorization_features=False, bootstrap_resamples=20,
    )
    line = next(line for line in summary_lines(report) if "interval over the draw" in line)
    assert f"FID {report['uncertainty']['fid']['low']:.4g} to {report['uncertainty']['fid']['high']:.4g}" in line

    summary = evaluation_summary(report, tmp_path)
    intervals = summary["intervals"]
    assert intervals["fid"] == [report["uncertainty"]["fid"]["low"], report["uncertainty"]["fid"]["high"]]
    assert set(intervals["recall_per_label"]) == set(LABELS)
    (tmp_path / "evaluation.json").write_text(json.dumps(summary))
    card = evaluation_section(tmp_path)
    assert "95% intervals over the draw of generated images" in card
    low, high = intervals["recall_per_label"]["normal"]
    assert f"Recall: normal | {summary['recall_per_label']['normal']:.3f} ({low:.3f} to {high:.3f})" in card
