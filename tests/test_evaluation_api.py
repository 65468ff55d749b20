"""`evaluate` / `medgen evaluate`: folders of generated images, the report files, and clear errors for bad inputs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from medgen.evaluation import ImageSet, evaluate, evaluate_image_sets, load_generated_folder, save_generated_folder
from medgen.evaluation.features import get_feature_extractor

LABELS = ["normal", "pneumonia"]


@pytest.fixture(scope="module")
def small_sets(pneumoniamnist_npz):
    arrays = np.load(pneumoniamnist_npz)

    def split(name: str, count: int) -> ImageSet:
        labels = np.eye(2, dtype=np.float32)[arrays[f"{name}_labels"][:count, 0]]
        return ImageSet(arrays[f"{name}_images"][:count], labels, LABELS, False, name)

    return split("train", 600), split("test", 120), split("val", 60)


def test_report_has_per_label_figures_and_writes_json_and_html(small_sets, tmp_path):
    train, test, _ = small_sets
    report = evaluate_image_sets(
        test, test, train, output_dir=tmp_path, feature_extractor="pixel", use_cache=False, classifier=False
    )
    assert report["fid"] == pytest.approx(0.0, abs=1e-6)
    assert report["fid_real_baseline"]["fid"] > report["fid"]
    assert not report["memorization"]["alarm"]
    assert set(report["per_label"]) == set(LABELS)
    for name in LABELS:
        entry = report["per_label"][name]
        assert entry["n_generated"] == entry["n_real"] == int(test.label_mask(name).sum())
        assert entry["fid"] == pytest.approx(0.0, abs=1e-6)
        assert entry["ms_ssim"]["generated"] == pytest.approx(entry["ms_ssim"]["real"])

    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved["feature_extractor"]["name"] == "pixel"
    assert "_distances" not in saved["memorization"]["pixel"]
    html = (tmp_path / "report.html").read_text()
    for figure in ("figures/generated_normal.png", "figures/nearest_pixel.png", "figures/histogram_pneumonia.png"):
        assert figure in html and (tmp_path / figure).is_file()


def test_generated_folder_round_trip_and_params_json_labels(small_sets, tmp_path):
    _, test, _ = small_sets
    save_generated_folder(test, tmp_path / "by_label")
    loaded = load_generated_folder(tmp_path / "by_label", ["Normal", "Pneumonia"])
    assert len(loaded) == len(test)
    assert loaded.labels.sum(axis=0).tolist() == test.labels.sum(axis=0).tolist()

    run = tmp_path / "runs" / "run1"
    run.mkdir(parents=True)
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(run / "00000.png")
    (run / "params.json").write_text(json.dumps({"labels": {"pneumonia": 1.0}}))
    from_params = load_generated_folder(tmp_path / "runs", LABELS)
    assert from_params.labels.tolist() == [[0.0, 1.0]]


def test_evaluate_scores_a_folder_through_the_data_layer(pneumoniamnist_npz, small_sets, tmp_path):
    _, _, val = small_sets
    save_generated_folder(val, tmp_path / "generated")
    report = evaluate(
        generated=tmp_path / "generated", data=pneumoniamnist_npz, split="test", output=tmp_path / "out",
        feature_extractor="pixel", use_cache=False, classifier=False, max_real=200,
    )
    assert report["n_generated"] == len(val) and report["n_real"] == 200
    assert report["label_names"] == LABELS
    assert report["train_split"] == "train" and report["n_train"] == 4707
    assert not report["memorization"]["alarm"]
    assert (tmp_path / "out" / "report.html").is_file()


def test_cli_samples_a_tiny_pipeline(pneumoniamnist_npz, tmp_path):
    from helpers import tiny_label_pipeline

    from medgen.cli import main

    torch.manual_seed(0)
    tiny_label_pipeline().save_pretrained(tmp_path / "pipe")
    code = main([
        "evaluate", "--pipeline", str(tmp_path / "pipe"), "--data", str(pneumoniamnist_npz),
        "--num-samples", "8", "--num-inference-steps", "2", "--output", str(tmp_path / "out"),
        "--feature-extractor", "pixel", "--no-classifier", "--max-real", "100", "--no-cache", "--device", "cpu",
    ])
    assert code == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["n_generated"] == 8 and report["image_shape"] == [1, 16, 16]
    assert {name: entry["n_generated"] for name, entry in report["per_label"].items()} == {"normal": 4, "pneumonia": 4}
    assert report["sampling"]["num_inference_steps"] == 2
    # what was read is saved beside the report: images per label of each real split
    summary = json.loads((tmp_path / "out" / "data_summary_test.json").read_text())
    assert summary["num_images"] == 100 and sum(summary["images_per_label"].values()) == 100
    assert json.loads((tmp_path / "out" / "data_summary_train.json").read_text())["num_images"] == 4707


def test_cli_reads_the_real_data_before_sampling(tmp_path, monkeypatch, capsys):
    from helpers import tiny_label_pipeline

    import medgen.evaluation.api as api
    from medgen.cli import main

    tiny_label_pipeline().save_pretrained(tmp_path / "pipe")
    sampled = []
    monkeypatch.setattr(api, "sample_pipeline", lambda *args, **kwargs: sampled.append(1))
    code = main([
        "evaluate", "--pipeline", str(tmp_path / "pipe"), "--data", str(tmp_path / "typo.npz"),
        "--num-samples", "8", "--output", str(tmp_path / "out"), "--device", "cpu",
    ])
    assert code == 2 and sampled == []
    assert "typo.npz" in capsys.readouterr().err


def test_text_pipelines_are_prompted_from_the_template(pneumoniamnist_npz, tmp_path, monkeypatch):
    import functools

    from helpers import tiny_text_pipeline

    from medgen.cli import main
    from medgen.pipelines import TextToImagePipeline

    tiny_text_pipeline().save_pretrained(tmp_path / "pipe")
    prompts = []
    original = TextToImagePipeline.__call__

    @functools.wraps(original)
    def recording(self, *args, **kwargs):
        prompts.extend(kwargs["prompt"])
        return original(self, *args, **kwargs)

    monkeypatch.setattr(TextToImagePipeline, "__call__", recording)
    args = [
        "evaluate", "--pipeline", str(tmp_path / "pipe"), "--data", str(pneumoniamnist_npz), "--labels", "normal",
        "pneumonia", "--num-samples", "4", "--num-inference-steps", "2", "--feature-extractor", "pixel",
        "--no-classifier", "--max-real", "50", "--no-cache", "--device", "cpu",
    ]
    assert main([*args, "--prompt-template", "frontal radiograph: {labels}", "--output", str(tmp_path / "out")]) == 0
    assert sorted(set(prompts)) == ["frontal radiograph: normal", "frontal radiograph: pneumonia"]
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["sampling"]["prompt_template"] == "frontal radiograph: {labels}"
    with pytest.raises(ValueError, match="no '{labels}' slot"):
        evaluate(str(tmp_path / "pipe"), str(pneumoniamnist_npz), num_samples=2, labels=["normal"],
                 prompt_template="chest x-ray", feature_extractor="pixel", classifier=False, use_cache=False)


def test_cli_unknown_label_is_a_clear_error(pneumoniamnist_npz, tmp_path, capsys):
    from helpers import tiny_label_pipeline

    from medgen.cli import main

    tiny_label_pipeline().save_pretrained(tmp_path / "pipe")
    code = main([
        "evaluate", "--pipeline", str(tmp_path / "pipe"), "--data", str(pneumoniamnist_npz), "--labels", "pneumonai",
        "--num-samples", "4", "--num-inference-steps", "2", "--output", str(tmp_path / "out"), "--device", "cpu",
    ])
    assert code == 2
    assert "pneumonai" in capsys.readouterr().err


def test_bad_inputs_raise_clear_errors(small_sets, tmp_path):
    train, test, _ = small_sets
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no images"):
        load_generated_folder(tmp_path / "empty", LABELS)
    with pytest.raises(FileNotFoundError, match="missing"):
        load_generated_folder(tmp_path / "missing", LABELS)

    (tmp_path / "typo" / "pneumonai").mkdir(parents=True)
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(tmp_path / "typo" / "pneumonai" / "0.png")
    with pytest.raises(ValueError, match="pneumonai"):
        load_generated_folder(tmp_path / "typo", LABELS)

    (tmp_path / "mixed").mkdir()
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(tmp_path / "mixed" / "a.png")
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(tmp_path / "mixed" / "b.png")
    with pytest.raises(ValueError, match="one size"):
        load_generated_folder(tmp_path / "mixed")

    bigger = ImageSet(np.zeros((4, 1, 32, 32), np.float32), source="bigger")
    with pytest.raises(ValueError, match="shape"):
        evaluate_image_sets(bigger, test, train, feature_extractor="pixel", use_cache=False)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        ImageSet(np.full((2, 28, 28), 2.0, np.float32))
    with pytest.raises(ValueError, match="empty"):
        ImageSet(np.zeros((0, 28, 28), np.float32))
    with pytest.raises(ValueError, match="incepton"):
        get_feature_extractor("incepton")
    with pytest.raises(ValueError, match="exactly one"):
        evaluate(data="x.npz")
    with pytest.raises(FileNotFoundError, match="nowhere.npz"):
        evaluate(generated=tmp_path / "mixed", data=tmp_path / "nowhere.npz")


def test_report_html_puts_each_labels_accuracy_beside_the_classifier_on_real_images_of_it(tmp_path):
    from medgen.evaluation.report import write_html

    report = {
        "per_label": {"normal": {"n_generated": 4, "n_real": 5, "fid": 1.5}, "pneumonia": {"n_generated": 4, "n_real": 7, "fid": 2.5}},
        "label_accuracy": {"accuracy": 0.5, "per_label": {"normal": 0.75, "pneumonia": 0.25},
                           "real_test_accuracy": 0.6, "real_test_per_label": {"normal": 0.8, "pneumonia": 0.125}},
    }
    html = write_html(report, tmp_path / "report.html", {}).read_text()
    assert "classifier accuracy on real test images" in html
    row = html[html.index("<td>pneumonia</td>"):]
    row = row[: row.index("</tr>")]
    assert row.endswith("<td>0.25</td><td>0.125</td>")
