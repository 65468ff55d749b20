"""The privacy gate before publishing: `push_to_hub` and `medgen space build` refuse a pipeline without a
stored evaluation of its weights, or whose evaluation raised the memorization alarm, unless the user passes
`allow_unevaluated=True` / `--allow-unevaluated`; `medgen evaluate --pipeline DIR` stores that evaluation."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import tiny_label_pipeline, tiny_unconditional_pipeline
from huggingface_hub import HfApi, ModelCard
from huggingface_hub.errors import OfflineModeIsEnabled

import medgen
from medgen import cli
from medgen.commands import space
from medgen.evaluation import ImageSet, evaluate_image_sets
from medgen.pipelines.publishing import PublishingRefused, store_evaluation

REPO_ID = "medgen-test/tiny"


pytestmark = pytest.mark.usefixtures("single_thread")  # tiny models run fastest on one thread


def _memorization_report(copies: bool) -> dict:
    """A real evaluation report on 16 px noise images: generated images that are copies of the training
    images raise the memorization alarm; images drawn independently do not."""
    rng = np.random.default_rng(0)
    train, held_out, fresh = (rng.random((48, 16, 16), dtype=np.float32) for _ in range(3))
    generated = train.copy() if copies else fresh
    return evaluate_image_sets(
        ImageSet(generated, source="generated"), ImageSet(held_out, source="held-out"), ImageSet(train, source="train"),
        feature_extractor="pixel", use_cache=False, classifier=False, memorization_features=False,
    )


@pytest.fixture(scope="module")
def reports() -> dict[str, dict]:
    result = {"alarm": _memorization_report(copies=True), "clean": _memorization_report(copies=False)}
    assert result["alarm"]["memorization"]["alarm"] and not result["clean"]["memorization"]["alarm"]
    return result


@pytest.fixture(scope="module")
def folders(tmp_path_factory, reports) -> dict[str, Path]:
    """One tiny pipeline saved three times: without an evaluation, with a clean one, with an alarm."""
    root = tmp_path_factory.mktemp("gate")
    pipe = tiny_unconditional_pipeline()
    result = {}
    for name in ("unevaluated", "clean", "alarm"):
        folder = Path(pipe.save_pretrained(root / name))
        if name != "unevaluated":
            store_evaluation(folder, reports[name])
        result[name] = folder
    return result


def _copy(folder: Path, destination: Path) -> Path:
    return Path(shutil.copytree(folder, destination))


@pytest.fixture
def uploads(monkeypatch) -> list[dict]:
    """Replaces the Hub calls: each upload records the files of the folder it was given."""
    recorded: list[dict] = []

    def upload_folder(self, repo_id, folder_path, commit_message=None, **kwargs):
        folder = Path(folder_path)
        files = {path.relative_to(folder).as_posix(): path.read_bytes() for path in folder.rglob("*") if path.is_file()}
        recorded.append({"repo_id": repo_id, "files": files})
        return f"https://huggingface.co/{repo_id}/commit/0"

    monkeypatch.setattr(HfApi, "create_repo", lambda self, repo_id, **kwargs: repo_id)
    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    return recorded


# ----------------------------------------------------------------------------------------------------
# push_to_hub
# ----------------------------------------------------------------------------------------------------


def test_push_refuses_a_pipeline_without_stored_evaluation(uploads):
    with pytest.raises(PublishingRefused, match="no stored evaluation") as error:
        tiny_unconditional_pipeline().push_to_hub(REPO_ID)
    message = str(error.value)
    assert "medgen evaluate --pipeline" in message and "allow_unevaluated=True" in message and REPO_ID in message
    assert isinstance(error.value, ValueError)
    assert uploads == []  # refused before anything left the machine


def test_push_refuses_a_pipeline_whose_evaluation_raised_the_memorization_alarm(folders, uploads):
    pipe = medgen.load_pipeline(folders["alarm"])
    with pytest.raises(PublishingRefused, match="memorization alarm") as error:
        pipe.push_to_hub(REPO_ID)
    assert "pixel space: ALARM" in str(error.value) and str(folders["alarm"]) in str(error.value)
    assert uploads == []


def test_push_with_the_flag_passes_the_gate_and_fails_only_for_being_offline(folders):
    pipe = medgen.load_pipeline(folders["alarm"])
    with pytest.raises(RuntimeError, match="HF_HUB_OFFLINE") as error:
        pipe.push_to_hub(REPO_ID, allow_unevaluated=True)
    assert isinstance(error.value.__cause__, OfflineModeIsEnabled)
    with pytest.raises(RuntimeError, match="HF_HUB_OFFLINE"):
        tiny_unconditional_pipeline().push_to_hub(REPO_ID, allow_unevaluated=True)


def test_push_of_a_pipeline_loaded_from_an_evaluated_folder_uploads_its_evaluation(folders, uploads):
    url = medgen.load_pipeline(folders["clean"]).push_to_hub(REPO_ID)
    assert url.startswith(f"https://huggingface.co/{REPO_ID}")
    [upload] = uploads
    stored = json.loads((folders["clean"] / "evaluation.json").read_text())
    assert json.loads(upload["files"]["evaluation.json"]) == stored
    card = upload["files"]["README.md"].decode()
    assert "## Evaluation" in card and "no alarm" in card and stored["date"] in card
    fid_row = next(line for line in card.splitlines() if line.startswith("| FID"))
    assert f"{stored['fid']:.3f}" in fid_row and f"real-vs-real baseline {stored['fid_real_baseline']:.3f}" in fid_row
    held_out_row = next(line for line in card.splitlines() if line.startswith("| Held out"))
    assert ("not checked" in held_out_row) == (stored["data"]["held_out"] is None)


def test_push_refuses_a_pipeline_changed_after_its_evaluation(folders, uploads):
    pipe = medgen.load_pipeline(folders["clean"])
    with torch.no_grad():
        next(pipe.unet.parameters()).add_(0.1)  # e.g. trained further: the stored evaluation no longer applies
    with pytest.raises(PublishingRefused, match="no stored evaluation"):
        pipe.push_to_hub(REPO_ID)
    assert uploads == []


def test_save_pretrained_keeps_and_carries_the_evaluation(folders, tmp_path):
    folder = _copy(folders["clean"], tmp_path / "clean")
    stored = (folder / "evaluation.json").read_text()
    pipe = medgen.load_pipeline(folder)
    pipe.save_pretrained(folder)  # re-saved in place
    pipe.save_pretrained(tmp_path / "elsewhere")
    for saved in (folder, tmp_path / "elsewhere"):
        assert (saved / "evaluation.json").read_text() == stored
        assert "| Memorization | no alarm" in ModelCard.load(saved / "README.md").text


# ----------------------------------------------------------------------------------------------------
# medgen space build
# ----------------------------------------------------------------------------------------------------


def _space_build(*argv: str) -> int:
    return cli.main(["space", "build", *argv])


@pytest.mark.parametrize(("name", "reason"), [("unevaluated", "no stored evaluation"), ("alarm", "memorization alarm")])
def test_space_build_refuses_in_one_line_and_writes_nothing(folders, tmp_path, capsys, name, reason):
    out = tmp_path / "space"
    assert _space_build("--pipeline", str(folders[name]), "--output", str(out)) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("medgen space: error: refusing to build a Space") and "\n" not in error
    assert reason in error and "--allow-unevaluated" in error and f"medgen evaluate --pipeline {folders[name]}" in error
    assert not out.exists() or not any(out.iterdir())


@pytest.mark.parametrize("name", ["unevaluated", "alarm"])
def test_space_build_with_the_flag_builds(folders, tmp_path, name):
    out = tmp_path / "space"
    assert _space_build("--pipeline", str(folders[name]), "--output", str(out), "--allow-unevaluated", "--no-builtins") == 0
    assert len(list(out.glob("pipelines/*/model_index.json"))) == 1


def test_space_build_passes_a_clean_evaluation_and_ships_it(folders, tmp_path):
    out = space.build_space(str(folders["clean"]), tmp_path / "space", include_builtins=False)
    [shipped] = out.glob("pipelines/*/evaluation.json")
    assert json.loads(shipped.read_text())["memorization"]["alarm"] is False


def test_space_build_refuses_an_evaluation_of_other_weights(folders, tmp_path):
    # Weights replaced in the folder after it was evaluated: the evaluation no longer vouches for them.
    folder = _copy(folders["clean"], tmp_path / "pipe")
    tiny_unconditional_pipeline(seed=1).save_pretrained(folder)
    with pytest.raises(PublishingRefused, match="other weights"):
        space.build_space(str(folder), tmp_path / "space", include_builtins=False)
    assert "other weights" in ModelCard.load(folder / "README.md").text


def test_space_build_of_a_hub_repo_needs_the_flag(tmp_path):
    with pytest.raises(PublishingRefused, match="Hub repo id") as error:
        space.build_space("my-org/medgen-chestxray", tmp_path / "space", include_builtins=False)
    assert "--allow-unevaluated" in str(error.value) and "hf download my-org/medgen-chestxray" in str(error.value)
    out = space.build_space("my-org/medgen-chestxray", tmp_path / "space", allow_unevaluated=True, include_builtins=False)
    assert "my-org/medgen-chestxray" in json.loads((out / "space_config.json").read_text())["pipelines"]


# ----------------------------------------------------------------------------------------------------
# medgen evaluate --pipeline DIR stores the evaluation
# ----------------------------------------------------------------------------------------------------


def _evaluate_argv(pipeline: Path, data: Path, output: Path) -> list[str]:
    return [
        "evaluate", "--pipeline", str(pipeline), "--data", str(data), "--num-samples", "8", "--num-inference-steps", "2",
        "--output", str(output), "--feature-extractor", "pixel", "--no-classifier", "--max-real", "100", "--no-cache",
        "--device", "cpu", "--no-progress", "--no-feature-memorization",
    ]


def test_evaluate_stores_its_summary_and_the_card_section_which_the_gate_reads(pneumoniamnist_npz, tmp_path, capsys, uploads):
    folder = Path(tiny_label_pipeline().save_pretrained(tmp_path / "pipe"))
    assert "No stored evaluation" in ModelCard.load(folder / "README.md").text
    assert cli.main([*_evaluate_argv(folder, pneumoniamnist_npz, tmp_path / "report"), "--store-in-pipeline"]) == 0
    assert f"evaluation stored: {folder / 'evaluation.json'}" in capsys.readouterr().out

    report = json.loads((tmp_path / "report" / "report.json").read_text())
    summary = json.loads((folder / "evaluation.json").read_text())
    assert summary["fid"] == pytest.approx(report["fid"])
    assert summary["fid_real_baseline"] == pytest.approx(report["fid_real_baseline"]["fid"])
    assert summary["n_generated"] == 8 and summary["data"]["split"] == "test" and summary["data"]["n_real"] == 100
    assert summary["data"]["train_split"] == "train" and summary["memorization"]["pixel"]["n_train_searched"] == 4707
    assert summary["memorization"]["alarm"] == report["memorization"]["alarm"]
    assert set(summary["recall_per_label"]) == {"normal", "pneumonia"}
    assert summary["medgen_version"] == medgen.__version__ and summary["date"]

    card = ModelCard.load(folder / "README.md")
    assert card.data.library_name == "diffusers"  # the front matter survived the update
    assert "No stored evaluation" not in card.text and f"{summary['fid']:.3f}" in card.text
    assert card.text.count("## Evaluation") == 1 and card.text.index("## Evaluation") < card.text.index("## Intended use")

    # the gate reads what was stored: a clean evaluation publishes, an alarm is refused
    if summary["memorization"]["alarm"]:
        with pytest.raises(PublishingRefused, match="memorization alarm"):
            medgen.load_pipeline(folder).push_to_hub(REPO_ID)
    else:
        medgen.load_pipeline(folder).push_to_hub(REPO_ID)
        assert "evaluation.json" in uploads[0]["files"]


def test_stored_label_accuracy_keeps_each_label_beside_the_classifier_on_real_images_of_it(pneumoniamnist_npz, tmp_path):
    from medgen.pipelines.publishing import store_evaluation

    folder = Path(tiny_label_pipeline().save_pretrained(tmp_path / "pipe"))
    assert cli.main(_evaluate_argv(folder, pneumoniamnist_npz, tmp_path / "report")) == 0
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    report["label_accuracy"] = {  # as the classifier writes it (tests/test_evaluation_metrics.py)
        "accuracy": 0.5, "per_label": {"normal": 0.875, "pneumonia": 0.125}, "real_test_accuracy": 0.75,
        "real_test_per_label": {"normal": 0.9, "pneumonia": 0.0},
    }
    store_evaluation(folder, report)

    summary = json.loads((folder / "evaluation.json").read_text())
    assert summary["label_accuracy"] == 0.5
    assert summary["label_accuracy_per_label"] == {
        "normal": {"generated": 0.875, "real_test": 0.9}, "pneumonia": {"generated": 0.125, "real_test": 0.0},
    }
    card = (folder / "README.md").read_text()
    assert "| Label accuracy: pneumonia | 0.125 (the classifier on real test images of pneumonia: 0.000) |" in card
    assert "| Label accuracy: normal | 0.875 (the classifier on real test images of normal: 0.900) |" in card
    assert "| Generated images | 8 (DPMSolverMultistepScheduler, 2 steps, guidance 2.00) |" in card  # the sampler settings they were drawn with


def test_evaluate_no_store_leaves_the_pipeline_folder_as_it_was(pneumoniamnist_npz, tmp_path):
    folder = Path(tiny_label_pipeline().save_pretrained(tmp_path / "pipe"))
    card = (folder / "README.md").read_text()
    assert cli.main([*_evaluate_argv(folder, pneumoniamnist_npz, tmp_path / "report"), "--no-store"]) == 0
    assert not (folder / "evaluation.json").exists() and (folder / "README.md").read_text() == card


def test_storing_next_to_a_missing_local_folder_says_no_such_folder(tmp_path, monkeypatch):
    from medgen.pipelines.publishing import local_pipeline_folder

    (tmp_path / "runs").mkdir()
    monkeypatch.chdir(tmp_path)
    folder, problem = local_pipeline_folder("runs/nope")
    assert folder is None and problem.startswith("no such folder: runs/nope") and "Hub" not in problem
    folder, problem = local_pipeline_folder("org/model")  # no local org/: a Hub repo id
    assert folder is None and "Hub repo" in problem
