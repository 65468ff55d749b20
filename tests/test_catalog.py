"""Shipping a training run as a pretrained folder, and `medgen models` describing the shipped ones."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from medgen.cli import main as cli
from medgen.pipelines import load_pipeline
from medgen.pipelines.catalog import MODEL_INFO_FILE, PRETRAINED_DIR, describe, ship
from helpers import tiny_label_pipeline

PIPELINE_SOURCE = Path(__file__).resolve().parent.parent / "medgen" / "pipelines" / "pipeline_label_conditioned.py"


@pytest.fixture
def run_dir(tmp_path):
    folder = tmp_path / "run"
    tiny_label_pipeline(labels=("benign", "malignant", "normal"), latent=True).save_pretrained(folder)
    (folder / "training_config.yaml").write_text("seed: 0\n")
    return folder


def test_ship_writes_fp16_weights_the_current_source_and_what_the_model_is(run_dir, tmp_path):
    out = ship(run_dir, "lung-ct", "lung CT", "IQ-OTH/NCCD train split", output=tmp_path / "shipped")
    weights = load_file(out / "unet" / "diffusion_pytorch_model.safetensors")
    assert all(tensor.dtype == torch.float16 for tensor in weights.values())
    assert all(t.dtype == torch.float16 for t in load_file(out / "vae" / "diffusion_pytorch_model.safetensors").values())
    assert (out / "pipeline.py").read_text() == PIPELINE_SOURCE.read_text()
    assert (out / "training_config.yaml").is_file()
    assert json.loads((out / MODEL_INFO_FILE).read_text())["modality"] == "lung CT"
    pipe = load_pipeline(out)  # loads back in float32 and samples the same images as the fp32 run, up to fp16 rounding
    assert pipe.unet.dtype == torch.float32
    kwargs = dict(labels="malignant", num_inference_steps=2, output_type="np")
    shipped = pipe(generator=torch.Generator().manual_seed(0), **kwargs).images
    original = load_pipeline(run_dir)(generator=torch.Generator().manual_seed(0), **kwargs).images
    assert abs(shipped - original).max() < 0.05
    description = describe(out)
    assert (description.name, description.resolution, description.latent) == ("lung-ct", 16, True)
    assert description.labels == ["benign", "malignant", "normal"]


def test_shipped_card_states_what_the_run_recorded(tmp_path):
    folder = tmp_path / "run"
    tiny_label_pipeline(labels=("benign", "malignant", "normal"), latent=True).save_pretrained(folder)
    (folder / "training_config.yaml").write_text(
        "data: {source: csv, path: busi}\ntrain_batch_size: 16\ndiffusion: {prediction_type: v_prediction}\nlicense: other\n"
    )
    (folder / "training_summary.json").write_text(json.dumps({"steps": 1500}))
    (folder / "data_summary.json").write_text(json.dumps({"num_images": 624}))
    card = (ship(folder, "busi", "breast ultrasound", "BUSI train split", output=tmp_path / "out") / "README.md").read_text()
    assert "| Data | BUSI train split |" in card and "| Training images | 624 |" in card
    assert "| Optimisation steps | 1500 (batch 16 x 1 accumulation) |" in card
    assert "| Prediction type | v_prediction |" in card and "license: other" in card
    assert "not recorded" not in card.split("## Training")[1].split("##")[0]


def test_the_card_counts_the_training_images_of_every_image_set(tmp_path):
    folder = tmp_path / "run"
    tiny_label_pipeline(labels=("benign", "malignant", "normal"), latent=True).save_pretrained(folder)
    (folder / "training_config.yaml").write_text(
        "data: {source: csv, path: busi}\nextra_data: [{source: csv, path: ct}, {source: csv, path: mri}]\n"
    )
    for name, count in (("data_summary.json", 624), ("data_summary_extra1.json", 878), ("data_summary_extra2.json", 1000)):
        (folder / name).write_text(json.dumps({"num_images": count}))
    out = ship(folder, "three", "mixed", "three sets", output=tmp_path / "out")
    assert "| Training images | 2502 |" in (out / "README.md").read_text()
    assert (out / "data_summary_extra2.json").is_file()  # carried, so a re-shipped folder still counts every set
    again = ship(out, "three", "mixed", "three sets", output=tmp_path / "again")
    assert "| Training images | 2502 |" in (again / "README.md").read_text()
    # a set whose summary is missing: the count is "not recorded", never the other sets' count passed off as all
    (folder / "data_summary_extra1.json").unlink()
    card = (ship(folder, "three", "mixed", "three sets", output=tmp_path / "partial") / "README.md").read_text()
    assert "| Training images | not recorded |" in card


def test_ship_never_replaces_a_folder_unasked_and_names_bad_inputs(run_dir, tmp_path):
    out = ship(run_dir, "x", "chest X-ray", "data", output=tmp_path / "shipped")
    stamp = (out / "model_index.json").stat().st_mtime_ns
    with pytest.raises(FileExistsError, match="--overwrite"):
        ship(run_dir, "x", "chest X-ray", "data", output=out)
    assert (out / "model_index.json").stat().st_mtime_ns == stamp
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "nothing")):
        ship(tmp_path / "nothing", "x", "m", "d", output=tmp_path / "other")
    with pytest.raises(ValueError, match="plain name"):
        ship(run_dir, "../escape", "m", "d")


def test_models_command_ships_and_lists(run_dir, tmp_path, capsys):
    out = tmp_path / "cli-shipped"
    code = cli(["models", "ship", str(run_dir), "--name", "tiny", "--modality", "CT", "--training-data", "tiny",
                "--output", str(out)])
    assert code == 0 and (out / "model_index.json").is_file()
    assert "medgen evaluate --pipeline" in capsys.readouterr().out
    assert cli(["models", "ship", str(tmp_path / "missing"), "--name", "t", "--modality", "m", "--training-data", "d"]) == 2
    assert "missing" in capsys.readouterr().err
    assert cli(["models", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    from medgen.pipelines.hub import BUILTIN_PIPELINES

    assert {name for entry in listed for name in [entry["name"], *entry["aliases"]]} == set(BUILTIN_PIPELINES)
    assert all((Path(entry["folder"]) / "model_index.json").is_file() for entry in listed)


def _description(name: str, recall: float, **evaluation) -> "ModelDescription":
    from medgen.pipelines.catalog import ModelDescription

    return ModelDescription(
        name=name, modality="breast ultrasound", resolution=128, labels=["benign", "malignant", "normal"],
        size_mb=9.6, latent=True, folder=f"/opt/site-packages/medgen/pretrained/{name}",
        training_data="BUSI breast ultrasound at 128 px: 624 training images (benign 350, malignant 168, "
        "normal 106); test = seeded random 20% per class, and a long tail of words to wrap " * 2,
        evaluation={"fid": 266.1, "fid_real_baseline": 112.4, "precision": 0.17, "recall": recall,
                    "recall_per_label": {"benign": recall, "malignant": 0.3, "normal": 0.2}, "n_generated": 156,
                    "label_accuracy": 0.68, "tstr_auc": 0.728, "trtr_auc": 0.829, "memorization_alarm": False,
                    **evaluation},
    )


def test_models_listing_fits_100_columns_shows_each_folder_and_explains_recall_zero():
    from medgen.commands.models import format_table

    text = format_table([_description("breast-ultrasound", 0.0), _description("lung-ct", 0.25)])
    assert max(len(line) for line in text.splitlines()) <= 100
    assert "/opt/site-packages/medgen/pretrained/breast-ultrasound" in text
    assert "/opt/site-packages/medgen/pretrained/lung-ct" in text
    assert "recall 0.00*" in text and "benign 0.00*" in text and "* recall 0.00: no real test image" in text
    assert "from_pretrained(FOLDER, trust_remote_code=True)" in text
    # no footnote without a zero recall
    assert "* recall 0.00" not in format_table([_description("lung-ct", 0.25)])


def test_a_shipped_folder_records_no_absolute_path_of_the_machine_it_was_shipped_on(run_dir, tmp_path, monkeypatch):
    (run_dir / "training_config.yaml").write_text(
        f"seed: 0\noutput_dir: {run_dir}\nmodel: {{pretrained_vae: {tmp_path / 'autoencoder'}, init_from: chest-xray}}\n"
    )
    workdir = tmp_path / "checkout"
    workdir.mkdir()
    monkeypatch.chdir(workdir)
    out = ship(run_dir.resolve(), "lung-ct", "lung CT", "IQ-OTH/NCCD train split", output=tmp_path / "shipped")
    assert json.loads((out / MODEL_INFO_FILE).read_text())["trained_in"] == "../run"
    for component in ("unet", "vae"):
        assert json.loads((out / component / "config.json").read_text())["_name_or_path"] == f"../run/{component}"
    config = yaml.safe_load((out / "training_config.yaml").read_text())
    assert config == {"seed": 0, "output_dir": "../run", "model": {"pretrained_vae": "../autoencoder", "init_from": "chest-xray"}}


@pytest.mark.parametrize("name", sorted(path.name for path in PRETRAINED_DIR.iterdir() if (path / MODEL_INFO_FILE).is_file()))
def test_no_builtin_folder_ships_an_absolute_path(name):
    folder = PRETRAINED_DIR / name
    recorded = [json.loads((folder / MODEL_INFO_FILE).read_text()).get("trained_in", "")]
    recorded += [json.loads(path.read_text()).get("_name_or_path", "") for path in folder.glob("*/config.json")]
    config = yaml.safe_load((folder / "training_config.yaml").read_text())
    recorded += [config.get("output_dir") or "", (config.get("model") or {}).get("pretrained_vae") or ""]
    assert not [path for path in recorded if Path(path).is_absolute()]


def test_a_shipped_text_pipeline_names_its_encoder_without_an_absolute_path(tmp_path, monkeypatch):
    from helpers import tiny_text_pipeline

    run = tmp_path / "text_run"
    tiny_text_pipeline().save_pretrained(run)
    (run / "training_config.yaml").write_text("seed: 0\n")
    workdir = tmp_path / "checkout"
    workdir.mkdir()
    monkeypatch.chdir(workdir)
    out = ship(run.resolve(), "notes", "chest X-ray", "notes", output=tmp_path / "shipped")
    card = (out / "README.md").read_text()
    assert "free text through `../text_run/text_encoder`" in card and str(tmp_path) not in card


def test_models_listing_shows_the_stored_intervals_of_fid_and_recall(tmp_path):
    import shutil

    from medgen.commands.models import format_table
    from medgen.pipelines.catalog import describe
    from medgen.pipelines.hub import builtin_pipeline_path

    with_intervals = _description("chest-xray", 0.18, intervals={"fid": [52.8, 57.2], "recall": [0.14, 0.22], "level": 0.95})
    text = " ".join(format_table([with_intervals]).split())  # the listing wraps long lines
    assert "FID 266.1 [52.8, 57.2] at N = 156" in text and "recall 0.18 [0.14, 0.22]" in text
    assert "[low, high]: the stored evaluation's 95% interval" in text
    without = format_table([_description("chest-xray", 0.18)])
    assert "[52.8" not in without and "[low, high]" not in without
    # describe() reads them from the stored evaluation.json
    folder = tmp_path / "model"
    shutil.copytree(builtin_pipeline_path("pneumoniamnist-32"), folder)
    summary = json.loads((folder / "evaluation.json").read_text())
    summary["intervals"] = {"level": 0.95, "resamples": 100, "fid": [1.0, 2.0], "recall": [0.1, 0.3]}
    (folder / "evaluation.json").write_text(json.dumps(summary))
    assert describe(folder).evaluation["intervals"]["fid"] == [1.0, 2.0]
