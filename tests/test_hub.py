"""Saving and loading medgen pipelines: the folder format, both loaders, and loading errors.

A saved folder must load two ways with identical images: with medgen (no remote code runs) and with
stock diffusers (`trust_remote_code=True`) on a machine without medgen.
"""

from __future__ import annotations

import inspect
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler
from huggingface_hub import ModelCard
from huggingface_hub.errors import OfflineModeIsEnabled

import medgen
from helpers import tiny_label_pipeline, tiny_unconditional_pipeline
from medgen.pipelines import LabelConditionedPipeline, UnconditionalPipeline, pipeline_label_conditioned, pipeline_unconditional

STEPS = 3

# name -> (builder, call arguments, medgen class, shipped source module)
VARIANTS = {
    "label": (lambda: tiny_label_pipeline(), {"labels": ["pneumonia", "normal"]}, LabelConditionedPipeline, pipeline_label_conditioned),
    "label_latent": (
        lambda: tiny_label_pipeline(labels=("atelectasis", "effusion", "pneumonia"), multi_label=True, latent=True),
        {"labels": [{"effusion": 0.5, "pneumonia": 1.0}]},
        LabelConditionedPipeline,
        pipeline_label_conditioned,
    ),
    # a model with its own default guidance scale: both loaders sample with it when the call gives none
    "label_default_guidance": (
        lambda: tiny_label_pipeline(default_guidance_scale=4.0), {"labels": ["pneumonia", "normal"]},
        LabelConditionedPipeline, pipeline_label_conditioned,
    ),
    # a model that guides only part of its steps by default: both loaders honour the stored interval
    "label_guidance_interval": (
        lambda: tiny_label_pipeline(default_guidance_scale=4.0, default_guidance_interval=[0.3, 1.0]),
        {"labels": ["pneumonia", "normal"]}, LabelConditionedPipeline, pipeline_label_conditioned,
    ),
    "unconditional": (tiny_unconditional_pipeline, {"batch_size": 2}, UnconditionalPipeline, pipeline_unconditional),
}

# Loads each saved folder with stock diffusers only: `import medgen` fails inside this script.
STOCK_DIFFUSERS_SCRIPT = textwrap.dedent(
    """
    import json, sys
    sys.modules["medgen"] = None  # any import of medgen now raises ImportError
    import numpy as np
    import torch
    from diffusers import DiffusionPipeline

    torch.set_num_threads(1)
    jobs = json.loads(sys.argv[1])
    report = {}
    for name, job in jobs.items():
        pipe = DiffusionPipeline.from_pretrained(job["folder"], trust_remote_code=True)
        pipe.set_progress_bar_config(disable=True)
        images = pipe(generator=torch.Generator().manual_seed(0), num_inference_steps=job["steps"],
                      output_type="np", **job["kwargs"]).images
        np.save(job["output"], images)
        report[name] = {"module": type(pipe).__module__, "labels": list(getattr(pipe, "labels", []))}
    report["medgen_modules"] = sorted(m for m in sys.modules if m.startswith("medgen."))
    print(json.dumps(report))
    """
)


pytestmark = pytest.mark.usefixtures("single_thread")  # tiny models run fastest on one thread


def _generate(pipe, kwargs: dict) -> np.ndarray:
    pipe.set_progress_bar_config(disable=True)
    return pipe(generator=torch.Generator().manual_seed(0), num_inference_steps=STEPS, output_type="np", **kwargs).images


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> dict[str, dict]:
    """Each variant saved once, with its images before saving."""
    root = tmp_path_factory.mktemp("saved")
    result = {}
    for name, (build, kwargs, _, _) in VARIANTS.items():
        pipe = build()
        folder = pipe.save_pretrained(root / name, model_card={"license": "cc-by-4.0", "tags": ["chest-x-ray"]})
        result[name] = {"pipe": pipe, "folder": Path(folder), "kwargs": kwargs, "images": _generate(pipe, kwargs)}
    return result


def _copy_folder(source: Path, destination: Path) -> Path:
    return Path(shutil.copytree(source, destination))


def _diffusers_modules() -> set[str]:
    return {name for name in sys.modules if name.startswith("diffusers_modules")}


# ----------------------------------------------------------------------------------------------------
# Folder contents
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(VARIANTS))
def test_saved_weights_are_safetensors_only(saved, name):
    folder = saved[name]["folder"]
    files = [path for path in folder.rglob("*") if path.is_file()]
    assert not [path for path in files if path.suffix in {".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt"}]
    weights = sorted(path.relative_to(folder).as_posix() for path in files if path.suffix == ".safetensors")
    expected = ["unet/diffusion_pytorch_model.safetensors"]
    if name == "label_latent":
        expected.append("vae/diffusion_pytorch_model.safetensors")
    assert weights == expected


@pytest.mark.parametrize("name", list(VARIANTS))
def test_model_index_names_shipped_pipeline(saved, name):
    model_index = json.loads((saved[name]["folder"] / "model_index.json").read_text())
    assert model_index["_class_name"] == ["pipeline", VARIANTS[name][2].__name__]
    for component, entry in model_index.items():
        if isinstance(entry, list) and component != "_class_name" and entry[0] is not None:
            assert entry[0] in ("diffusers", "transformers"), (component, entry)


@pytest.mark.parametrize("name", list(VARIANTS))
def test_pipeline_py_is_the_shipped_source(saved, name):
    shipped_source = Path(inspect.getsourcefile(VARIANTS[name][3]))
    assert (saved[name]["folder"] / "pipeline.py").read_bytes() == shipped_source.read_bytes()


@pytest.mark.parametrize("name", list(VARIANTS))
def test_model_card_has_hub_metadata_and_warning(saved, name):
    card = ModelCard.load(saved[name]["folder"] / "README.md")
    assert card.data.license == "cc-by-4.0"
    assert card.data.library_name == "diffusers"
    assert {"medgen", "medical-imaging", "synthetic-data", "chest-x-ray"} <= set(card.data.tags)
    assert "not for diagnosis" in card.text.lower()
    assert VARIANTS[name][2].__name__ in card.text


@pytest.mark.parametrize(
    "name, task", [("label", None), ("label_latent", None), ("unconditional", "unconditional-image-generation")]
)
def test_model_card_task_fits_the_pipeline_kind(saved, name, task):
    # a label-conditioned model is no unconditional image generator; the Hub has no class-conditional task
    card = ModelCard.load(saved[name]["folder"] / "README.md")
    assert card.data.pipeline_tag == task
    assert ("class-conditional-image-generation" in card.data.tags) == name.startswith("label")


def test_model_card_defaults_to_apache_license(tmp_path):
    folder = tiny_unconditional_pipeline().save_pretrained(tmp_path / "pipe")
    assert ModelCard.load(Path(folder) / "README.md").data.license == "apache-2.0"


def test_save_pretrained_refuses_push_to_hub(tmp_path):
    with pytest.raises(ValueError, match="push_to_hub"):
        tiny_unconditional_pipeline().save_pretrained(tmp_path / "pipe", push_to_hub=True)


# ----------------------------------------------------------------------------------------------------
# Loading with medgen: same images, no remote code
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("loader", ["load_pipeline", "from_pretrained"])
@pytest.mark.parametrize("name", list(VARIANTS))
def test_medgen_round_trip_gives_identical_images(saved, name, loader):
    entry = saved[name]
    medgen_class = VARIANTS[name][2]
    before = _diffusers_modules()
    if loader == "load_pipeline":
        loaded = medgen.load_pipeline(entry["folder"])
    else:
        loaded = medgen_class.from_pretrained(entry["folder"])
    assert type(loaded) is medgen_class
    assert _diffusers_modules() == before  # the folder's pipeline.py was not imported
    assert loaded.labels == entry["pipe"].labels
    assert loaded.config.get("multi_label") == entry["pipe"].config.get("multi_label")
    assert type(loaded.scheduler) is type(entry["pipe"].scheduler)
    np.testing.assert_array_equal(_generate(loaded, entry["kwargs"]), entry["images"])


def test_medgen_loading_never_runs_the_folder_code(saved, tmp_path):
    # A folder from the Hub could ship any pipeline.py: loading with medgen must not execute it.
    folder = _copy_folder(saved["label"]["folder"], tmp_path / "pipe")
    (folder / "pipeline.py").write_text("raise RuntimeError('pipeline.py was executed')\n")
    loaded = medgen.load_pipeline(folder)
    np.testing.assert_array_equal(_generate(loaded, saved["label"]["kwargs"]), saved["label"]["images"])


def test_from_pretrained_accepts_component_overrides(saved):
    pipe = saved["label"]["pipe"]
    scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    loaded = LabelConditionedPipeline.from_pretrained(saved["label"]["folder"], scheduler=scheduler)
    assert loaded.scheduler is scheduler
    with pytest.raises(ValueError, match="schedular"):
        LabelConditionedPipeline.from_pretrained(saved["label"]["folder"], schedular=scheduler)


def test_load_with_torch_dtype(saved):
    loaded = medgen.load_pipeline(saved["label"]["folder"], torch_dtype=torch.float64)
    assert loaded.unet.dtype == torch.float64


# ----------------------------------------------------------------------------------------------------
# Loading with stock diffusers, without medgen
# ----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stock_diffusers_run(saved, tmp_path_factory) -> dict:
    """Loads every saved variant in one subprocess where medgen cannot be imported."""
    work = tmp_path_factory.mktemp("stock")
    jobs = {
        name: {"folder": str(entry["folder"]), "kwargs": entry["kwargs"], "steps": STEPS, "output": str(work / f"{name}.npy")}
        for name, entry in saved.items()
    }
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "PYTHONHOME")}
    env.update(HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(work / "modules"), OMP_NUM_THREADS="1")
    # -I: no cwd, user site or PYTHONPATH on sys.path; the script also blocks `import medgen`.
    completed = subprocess.run(
        [sys.executable, "-I", "-c", STOCK_DIFFUSERS_SCRIPT, json.dumps(jobs)],
        cwd=work, env=env, capture_output=True, text=True, timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    report = json.loads(completed.stdout.strip().splitlines()[-1])
    return {"report": report, "jobs": jobs}


@pytest.mark.parametrize("name", list(VARIANTS))
def test_stock_diffusers_loads_identical_pipeline_without_medgen(saved, stock_diffusers_run, name):
    report = stock_diffusers_run["report"]
    assert report["medgen_modules"] == []
    assert report[name]["module"].startswith("diffusers_modules")  # the folder's own pipeline.py
    assert report[name]["labels"] == saved[name]["pipe"].labels
    images = np.load(stock_diffusers_run["jobs"][name]["output"], allow_pickle=False)
    np.testing.assert_array_equal(images, saved[name]["images"])


# ----------------------------------------------------------------------------------------------------
# Loading errors
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("loader", [medgen.load_pipeline, LabelConditionedPipeline.from_pretrained])
def test_missing_folder_raises_file_not_found(tmp_path, loader):
    missing = tmp_path / "no_such_pipeline"
    with pytest.raises(FileNotFoundError, match="no_such_pipeline"):
        loader(missing)


def test_unknown_repo_id_offline_raises_file_not_found():
    with pytest.raises(FileNotFoundError, match="medgen-test/no-such-repo"):
        medgen.load_pipeline("medgen-test/no-such-repo")


@pytest.mark.parametrize("name", ["outputs/tiny", "runs/nope", "./nope", "~/medgen-no-such-folder/pipe", "a/b/c", "nope"])
def test_a_missing_folder_named_like_a_path_is_one_line_without_the_hub(name, tmp_path, monkeypatch, capsys):
    import huggingface_hub

    from medgen.cli import main

    (tmp_path / "outputs").mkdir()
    (tmp_path / "runs").mkdir()
    monkeypatch.chdir(tmp_path)

    def no_download(*args, **kwargs):
        raise AssertionError(f"tried the Hub for {args}")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", no_download)
    with pytest.raises(FileNotFoundError) as error:
        medgen.load_pipeline(name)
    assert str(error.value).startswith(f"no such folder{' or built-in pipeline' if name == 'nope' else ''}: {name}")
    assert "\n" not in str(error.value)
    assert main(["generate", "--pipeline", name, "--output", str(tmp_path / "out")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"medgen generate: error: no such folder"), lines


def test_a_misspelt_builtin_name_suggests_the_closest(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"^no such folder or built-in pipeline: chestxray \(did you mean 'chest-xray'\?\)\. medgen loads"):
        medgen.load_pipeline("chestxray")


def test_a_repo_id_that_cannot_be_downloaded_says_no_such_folder_in_one_line(tmp_path, monkeypatch):
    import huggingface_hub
    from huggingface_hub.errors import LocalEntryNotFoundError

    monkeypatch.chdir(tmp_path)

    def offline(*args, **kwargs):
        raise LocalEntryNotFoundError("Got: ConnectError\nPlease check your internet connection and try again.")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    with pytest.raises(FileNotFoundError) as error:
        medgen.load_pipeline("medgen-test/no-such-repo")
    message = str(error.value)
    assert message.startswith("no such folder: medgen-test/no-such-repo, and no Hugging Face Hub repo") and "\n" not in message
    assert "could not be reached" in message


def test_a_component_class_that_does_not_fit_the_saved_weights_is_one_line(saved, tmp_path):
    # model_index.json says UNet2DModel, the folder holds a UNet2DConditionModel: diffusers would load a UNet
    # with empty ("meta") tensors that fails at the first .to() with "Cannot copy out of meta tensor".
    folder = _copy_folder(saved["label"]["folder"], tmp_path / "pipe")
    _edit_component(folder, "unet", ["diffusers", "UNet2DModel"])
    with pytest.raises(ValueError) as error:
        medgen.load_pipeline(folder)
    message = str(error.value)
    assert "'unet'" in message and "UNet2DModel" in message and "holds a UNet2DConditionModel" in message
    assert "\n" not in message


@pytest.mark.parametrize("loader", [medgen.load_pipeline, UnconditionalPipeline.from_pretrained])
def test_folder_without_model_index_raises(tmp_path, loader):
    (tmp_path / "unet").mkdir()
    with pytest.raises(ValueError, match="model_index.json"):
        loader(tmp_path)


def test_file_instead_of_folder_raises(tmp_path):
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"")
    with pytest.raises(ValueError, match="model.safetensors"):
        medgen.load_pipeline(path)


def test_corrupt_model_index_raises(saved, tmp_path):
    folder = _copy_folder(saved["label"]["folder"], tmp_path / "pipe")
    (folder / "model_index.json").write_text('{"_class_name": ["pipeline", ')
    with pytest.raises(ValueError, match="model_index.json"):
        medgen.load_pipeline(folder)


def test_loading_with_the_wrong_class_names_both(saved):
    with pytest.raises(ValueError, match="LabelConditionedPipeline") as error:
        UnconditionalPipeline.from_pretrained(saved["label"]["folder"])
    assert "UnconditionalPipeline" in str(error.value)
    with pytest.raises(ValueError, match="UnconditionalPipeline") as error:
        LabelConditionedPipeline.from_pretrained(saved["unconditional"]["folder"])
    assert "LabelConditionedPipeline" in str(error.value)


def test_non_medgen_pipeline_folder_raises(saved, tmp_path):
    folder = _copy_folder(saved["unconditional"]["folder"], tmp_path / "pipe")
    model_index = json.loads((folder / "model_index.json").read_text())
    model_index["_class_name"] = "DDPMPipeline"
    (folder / "model_index.json").write_text(json.dumps(model_index))
    with pytest.raises(ValueError, match="DDPMPipeline"):
        medgen.load_pipeline(folder)


def _edit_component(folder: Path, component: str, entry: list) -> None:
    model_index = json.loads((folder / "model_index.json").read_text())
    model_index[component] = entry
    (folder / "model_index.json").write_text(json.dumps(model_index))


def test_component_from_other_library_raises_without_importing_it(saved, tmp_path):
    folder = _copy_folder(saved["label"]["folder"], tmp_path / "pipe")
    _edit_component(folder, "unet", ["medgen_untrusted_lib", "UNet2DConditionModel"])
    # A ModuleNotFoundError here would mean medgen tried to import the named library.
    with pytest.raises(ValueError, match="medgen_untrusted_lib"):
        medgen.load_pipeline(folder)
    assert "medgen_untrusted_lib" not in sys.modules


def test_unknown_component_class_raises(saved, tmp_path):
    folder = _copy_folder(saved["label"]["folder"], tmp_path / "pipe")
    _edit_component(folder, "unet", ["diffusers", "UNet9DModel"])
    with pytest.raises(ValueError, match="UNet9DModel"):
        medgen.load_pipeline(folder)


def test_pickle_weights_are_refused(saved, tmp_path):
    # Only safetensors load: a folder whose weights are a pickle (.bin) is an error, never unpickled.
    from safetensors.torch import load_file

    folder = _copy_folder(saved["label"]["folder"], tmp_path / "pipe")
    weights = folder / "unet" / "diffusion_pytorch_model.safetensors"
    torch.save(load_file(weights), folder / "unet" / "diffusion_pytorch_model.bin")
    weights.unlink()
    with pytest.raises(OSError, match="safetensors"):
        medgen.load_pipeline(folder)


def test_push_to_hub_offline_raises_clear_error(monkeypatch):
    # huggingface_hub reads HF_HUB_OFFLINE once, at import: set its constant too, so that this test
    # never reaches the network even when the variable was not set before the import.
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(RuntimeError, match="medgen-test/tiny") as error:
        # allow_unevaluated: past the privacy gate (tests/test_publishing_gate.py), to the upload itself
        tiny_unconditional_pipeline().push_to_hub("medgen-test/tiny", allow_unevaluated=True)
    assert "HF_HUB_OFFLINE" in str(error.value)
    assert isinstance(error.value.__cause__, OfflineModeIsEnabled)  # refused before any network access
