"""Fréchet Radiomics Distance in `medgen evaluate`: it orders a known shift, caches the real features, equals
frd-score's own folder command, and without the optional packages says how to install them."""

from __future__ import annotations

import numpy as np
import pytest

from medgen.evaluation import ImageSet
from medgen.evaluation import frd as frd_module
from medgen.evaluation.frd import frd_report, missing_packages

needs_frd = pytest.mark.skipif(
    bool(missing_packages()), reason=f"FRD needs {', '.join(missing_packages())}: pip install 'medgen[frd]'"
)


@pytest.fixture(scope="module")
def chest_xrays(pneumoniamnist_npz):
    arrays = np.load(pneumoniamnist_npz)
    return arrays["train_images"][:6].astype(np.float32)[:, None] / 255, arrays["test_images"][:6].astype(np.float32)[:, None] / 255


@needs_frd
def test_frd_orders_a_known_shift_and_caches_the_real_features(chest_xrays, tmp_path, monkeypatch):
    from scipy.ndimage import gaussian_filter

    reference, other = chest_xrays
    blurred = gaussian_filter(other, sigma=(0, 0, 1.5, 1.5))
    noised = np.clip(other + np.random.default_rng(0).normal(0, 0.08, other.shape), 0, 1).astype(np.float32)
    real = ImageSet(reference, source="real")
    scores = {
        name: frd_report(real, ImageSet(images, source=name), cache_dir=tmp_path, num_workers=2)
        for name, images in (("real", other), ("blurred", blurred), ("noised", noised))
    }
    assert scores["real"]["frd"] < scores["blurred"]["frd"]
    assert scores["real"]["frd"] < scores["noised"]["frd"]
    entry = scores["real"]
    assert entry["n_real"] == entry["n_generated"] == 6
    assert entry["n_features"] > 100 and entry["version"] == "v1"
    assert entry["frd_real_baseline"]["n_per_subset"] == 3

    cached = list((tmp_path / "features").glob("*frd-v1*.safetensors"))
    assert len(cached) == 1
    extracted = []
    original = frd_module.radiomic_features

    def counting(images, num_workers=None, progress=False, desc="radiomics"):
        extracted.append(desc)
        return original(images, num_workers, progress, desc)

    monkeypatch.setattr(frd_module, "radiomic_features", counting)
    again = frd_report(real, ImageSet(other, source="real"), cache_dir=tmp_path, num_workers=1)
    assert extracted == ["radiomics: generated images"]  # the real reference images came from the cache
    assert again["frd"] == pytest.approx(entry["frd"])


@needs_frd
def test_evaluate_reports_the_frd_of_frd_scores_own_command_on_the_same_pngs(chest_xrays, tmp_path):
    import json

    from frd_score import compute_frd
    from PIL import Image

    from medgen.evaluation import evaluate_image_sets

    reference, other = (images for images in chest_xrays)
    for name, images in (("real", reference), ("generated", other)):
        (tmp_path / name).mkdir()
        for index, image in enumerate(images):
            Image.fromarray((image[0] * 255).round().astype(np.uint8)).save(tmp_path / name / f"{index:03d}.png")
    expected = compute_frd([str(tmp_path / "real"), str(tmp_path / "generated")], num_workers=1)
    labels = np.eye(2, dtype=np.float32)[[0, 1, 0, 1, 0, 1]]
    evaluate_image_sets(
        ImageSet(other, labels, ["normal", "pneumonia"]), ImageSet(reference, labels, ["normal", "pneumonia"]),
        output_dir=tmp_path / "eval", feature_extractor="pixel", use_cache=False, classifier=False,
        memorization_features=False,
    )
    stored = json.loads((tmp_path / "eval" / "report.json").read_text())["frd"]
    assert stored["frd"] == pytest.approx(expected, rel=1e-6)
    assert {name: entry["n_generated"] for name, entry in stored["per_label"].items()} == {"normal": 3, "pneumonia": 3}
    assert stored["n_real"] == stored["n_generated"] == 6 and "frd-score" in stored["packages"]
    assert "FRD (radiomics)" in (tmp_path / "eval" / "report.html").read_text()


@needs_frd
def test_images_pyradiomics_cannot_describe_are_counted_not_fatal(chest_xrays, tmp_path):
    reference, other = chest_xrays
    flat = np.full((2, 1, 28, 28), 0.5, np.float32)  # a collapsed model's flat grey images: no grey-level bins
    real = ImageSet(reference[:4])
    mixed = frd_report(real, ImageSet(np.concatenate([other[:3], flat[:1]])), cache_dir=tmp_path, num_workers=1)
    assert mixed["images_without_features"] == {"real": 0, "generated": 1}
    assert mixed["n_generated"] == 3 and isinstance(mixed["frd"], float)
    blank = frd_report(real, ImageSet(flat), cache_dir=tmp_path, num_workers=1)
    assert "frd" not in blank and "could not describe any of the 2 images" in blank["skipped"]


def test_without_the_extra_the_report_says_how_to_install_it_and_has_no_number(chest_xrays, monkeypatch, tmp_path):
    from medgen.evaluation import evaluate_image_sets

    monkeypatch.setattr(frd_module, "missing_packages", lambda: ["frd-score", "pyradiomics-bhklab"])
    reference, other = chest_xrays
    report = evaluate_image_sets(
        ImageSet(other), ImageSet(reference), output_dir=tmp_path, feature_extractor="pixel", use_cache=False,
        classifier=False, memorization_features=False,
    )
    entry = report["frd"]
    assert "pip install &#x27;medgen[frd]&#x27;" in (tmp_path / "report.html").read_text()
    assert "pip install 'medgen[frd]'" in entry["skipped"]
    assert "frd-score" in entry["skipped"] and "pyradiomics-bhklab" in entry["skipped"]
    assert not any(isinstance(value, float) for value in entry.values())


@needs_frd
def test_switched_off_frd_extracts_nothing_and_the_console_says_so(chest_xrays, monkeypatch, tmp_path):
    from medgen.commands.evaluate import summary_lines
    from medgen.evaluation import evaluate_image_sets

    def must_not_run(*args, **kwargs):
        raise AssertionError("radiomic features extracted although FRD was switched off")

    monkeypatch.setattr(frd_module, "radiomic_features", must_not_run)
    monkeypatch.setattr(frd_module, "cached_radiomic_features", must_not_run)
    reference, other = chest_xrays
    report = evaluate_image_sets(
        ImageSet(other), ImageSet(reference), feature_extractor="pixel", use_cache=False, classifier=False,
        memorization_features=False, frd=False,
    )
    assert "switched off" in report["frd"]["skipped"]
    assert any(line.startswith("FRD: switched off") for line in summary_lines(report))


@needs_frd
def test_the_console_summary_prints_frd_beside_its_real_floor(chest_xrays, tmp_path):
    from medgen.commands.evaluate import summary_lines
    from medgen.evaluation import evaluate_image_sets

    reference, other = chest_xrays
    report = evaluate_image_sets(
        ImageSet(other), ImageSet(reference), feature_extractor="pixel", use_cache=False, classifier=False,
        memorization_features=False,
    )
    line = next(line for line in summary_lines(report) if line.startswith("FRD (radiomics)"))
    assert f"{report['frd']['frd']:.4g}" in line and f"real floor {report['frd']['frd_real_baseline']['frd']:.4g}" in line


def test_evaluate_has_a_no_frd_flag():
    from medgen.cli import build_parser

    args = build_parser().parse_args(["evaluate", "--pipeline", "x", "--data", "y", "--output", "z", "--no-frd"])
    assert args.no_frd is True
