"""`medgen evaluate --prompt-groups`: a text pipeline scored per prompt group of the sets it was trained on."""

from __future__ import annotations

import json
import re

import pytest
import yaml

from conftest import SHARED_DATA
from helpers import tiny_text_pipeline
from medgen import cli
from medgen.data import DataConfig
from medgen.evaluation.prompt_groups import REPORT_FILE, evaluate_prompt_groups, plan_groups


def _set(tmp_path, folder: str, prompts: str, order: str) -> dict:
    path = SHARED_DATA / folder
    if not path.exists():
        pytest.skip(f"real data not found at {path}")
    return {"source": "csv", "path": str(path), "findings_column": "label", "prompts": prompts, "resolution": 16,
            "holdout_fraction": 0.2, "holdout_order": order, "cache_dir": str(tmp_path / "cache")}


def test_groups_come_from_the_prompt_sets_and_name_their_prompts():
    sets = [DataConfig(source="csv", path="x/kermany-cxr-224", findings_column="label", prompts="kermany")]
    groups = plan_groups(sets)
    assert [g.name for g in groups] == ["chest x-ray / normal", "chest x-ray / bacterial pneumonia", "chest x-ray / viral pneumonia"]
    viral = groups[2]
    assert viral.label == "pneumonia" and viral.filters == {"label": ["pneumonia"], "subtype": ["virus"]}
    assert viral.prompts[0] == "pediatric chest x-ray, viral pneumonia" and len(viral.prompts) == 3
    with pytest.raises(ValueError, match="without a prompt set"):
        plan_groups([DataConfig(source="csv", path="x/notes", findings_column="label")])


def test_medgen_evaluate_prompt_groups_scores_every_group_on_held_out_images(tmp_path):
    sets = [_set(tmp_path, "busi-ultrasound", "busi", "random"), _set(tmp_path, "lung-ct-iqothnccd", "lung_ct", "last")]
    config = tmp_path / "train.yaml"
    config.write_text(yaml.safe_dump({"data": sets[0], "extra_data": sets[1:], "model": {"kind": "text"}}))
    tiny_text_pipeline().save_pretrained(tmp_path / "pipe")
    code = cli.main([
        "evaluate", "--pipeline", str(tmp_path / "pipe"), "--config", str(config), "--prompt-groups",
        "--num-samples", "12", "--num-inference-steps", "2", "--max-real", "6", "--feature-extractor", "pixel",
        "--no-cache", "--no-classifier", "--no-feature-memorization", "--no-frd", "--no-progress", "--output", str(tmp_path / "eval"),
    ])
    assert code == 0
    summary = json.loads((tmp_path / "eval" / REPORT_FILE).read_text())
    names = [(g["set"], g["group"]) for g in summary["groups"]]
    assert names == [
        ("busi-ultrasound", "breast ultrasound / benign"), ("busi-ultrasound", "breast ultrasound / malignant"),
        ("busi-ultrasound", "breast ultrasound / normal"), ("lung-ct-iqothnccd", "chest CT / benign"),
        ("lung-ct-iqothnccd", "chest CT / malignant"), ("lung-ct-iqothnccd", "chest CT / normal"),
    ]
    malignant = summary["groups"][1]
    prompts = malignant["prompts"]  # 2 images: the canonical prompt and one paraphrase, once each
    assert list(prompts)[0] == "breast ultrasound, malignant lesion" and list(prompts.values()) == [1, 1]
    assert all("malignant" in prompt for prompt in prompts)
    assert malignant["label"] == "malignant" and malignant["num_real_test"] == 6
    assert malignant["label_figures"]["fid"] is not None and summary["sets"]["busi-ultrasound"]["n_generated"] == 6
    assert sorted(summary["modality"]["per_modality"]) == ["breast ultrasound", "chest CT"]
    assert (tmp_path / "eval" / "busi-ultrasound" / "report.json").is_file()
    assert (tmp_path / "eval" / "modality" / "report.json").is_file()
    for part in ("busi-ultrasound", "modality"):  # the command's switches reach every part's scoring
        assert "switched off" in json.loads((tmp_path / "eval" / part / "report.json").read_text())["frd"]["skipped"]


def test_a_pipeline_without_prompts_is_refused(tmp_path):
    from helpers import tiny_label_pipeline

    sets = [DataConfig.from_dict(_set(tmp_path, "busi-ultrasound", "busi", "random"))]
    with pytest.raises(ValueError, match="takes no prompt"):
        evaluate_prompt_groups(tiny_label_pipeline(), sets)


def test_prompt_groups_with_data_need_the_sets_prompt_set(tmp_path, capsys):
    tiny_text_pipeline().save_pretrained(tmp_path / "pipe")
    folder = SHARED_DATA / "busi-ultrasound"
    if not folder.exists():
        pytest.skip(f"real data not found at {folder}")
    argv = ["evaluate", "--pipeline", str(tmp_path / "pipe"), "--data", str(folder), "--prompt-groups", "--output", str(tmp_path / "e")]
    assert cli.main(argv) == 2
    assert "needs the set's prompt set: data.prompts=NAME" in capsys.readouterr().err
    assert cli.main(["evaluate", "--generated", str(tmp_path), "--data", str(folder), "--prompt-groups", "--output", str(tmp_path / "e")]) == 2
    assert "give --pipeline, not --generated" in capsys.readouterr().err


def test_test_images_that_are_training_images_are_refused_or_left_out_and_the_evaluation_stored(tmp_path, capsys):
    """lung-ct-iqothnccd holds byte copies across its numbered files: some held-out slices are training slices."""
    sets = [_set(tmp_path, "lung-ct-iqothnccd", "lung_ct", "last")]
    config = tmp_path / "train.yaml"
    config.write_text(yaml.safe_dump({"data": sets[0], "model": {"kind": "text"}}))
    pipe = tmp_path / "pipe"
    tiny_text_pipeline().save_pretrained(pipe)
    argv = [
        "evaluate", "--pipeline", str(pipe), "--config", str(config), "--prompt-groups", "--num-samples", "6",
        "--num-inference-steps", "2", "--feature-extractor", "pixel", "--no-cache",
        "--no-feature-memorization", "--no-frd", "--no-progress", "--output", str(tmp_path / "eval"), "--store-in-pipeline",
    ]
    assert cli.main(argv) == 2
    assert "are training images" in capsys.readouterr().err and not (pipe / "evaluation.json").exists()

    assert cli.main([*argv, "--exclude-training-overlap"]) == 0
    report = json.loads((tmp_path / "eval" / REPORT_FILE).read_text())
    overlap = report["sets"]["lung-ct-iqothnccd"]["training_overlap"]
    assert overlap["n_excluded"] > 0 and overlap["held_out"] is True
    assert sum(group["num_real_test"] for group in report["groups"]) == overlap["n_reference"] - overlap["n_excluded"]

    # the finding accuracy of each prompt's images, and of canonical prompts against paraphrases
    normal = report["groups"][2]["prompt_accuracy"]
    assert [entry["n"] for entry in normal.values()] == list(report["groups"][2]["prompts"].values())
    assert all(0 <= entry["finding_accuracy"] <= 1 for entry in normal.values())
    paraphrases = report["paraphrases"]
    assert paraphrases["n_canonical"] == 3 and paraphrases["n_paraphrases"] == 3  # 2 images per group, 3 groups
    canonical_hits = sum(list(group["prompt_accuracy"].values())[0]["finding_accuracy"] for group in report["groups"])
    assert paraphrases["finding_accuracy_canonical"] == pytest.approx(canonical_hits / 3)

    stored = json.loads((pipe / "evaluation.json").read_text())
    assert stored["paraphrases"] == paraphrases
    assert stored["kind"] == "prompt_groups" and stored["data"]["n_excluded_as_training"] == overlap["n_excluded"]
    assert stored["data"]["held_out"] is True and stored["memorization"]["alarm"] is False
    assert stored["prompts"]["lung-ct-iqothnccd / chest CT / normal"] == report["groups"][2]["prompts"]
    assert set(stored["per_modality"]) == {"chest CT"}
    # how far the modality figures move with the draw of generated images: overall and per modality
    intervals = stored["intervals"]
    assert intervals["fid"][0] <= stored["fid"] <= intervals["fid"][1]
    low, high = intervals["fid_per_modality"]["chest CT"]
    assert low <= stored["per_modality"]["chest CT"]["fid"] <= high and low < high
    card = (pipe / "README.md").read_text()
    assert "Modality accuracy" in card and "chest CT, normal" in card  # the prompts it was scored on
    assert "intervals over the draw of generated images" in card
    assert re.search(r"Modality chest CT: FID / modality accuracy \| [\d.]+ \([\d.]+ to [\d.]+\) /", card)
    from medgen.pipelines.publishing import check_before_publishing

    check_before_publishing(pipe, allow_unevaluated=False, action="publish", name="it", evaluate_target=str(pipe))
