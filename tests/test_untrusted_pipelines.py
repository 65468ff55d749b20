"""A downloaded pipeline folder can never make medgen run code.

medgen loads only the components a pipeline class takes, each from an allow-listed diffusers or
transformers class, with `trust_remote_code=False`. These folders are built to attack that: an
`AutoModel` whose config points at a Python file in the folder, a module where a class belongs,
a component the pipeline does not take.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
from transformers import AutoTokenizer, BertConfig, BertModel

import medgen
from helpers import tiny_label_pipeline
from medgen.pipelines import TextToImagePipeline
from medgen.text_encoders import offline_encoder_folder

# Written by the folder's own code when it is imported: its existence means the folder ran code.
MALICIOUS_MODULE = textwrap.dedent(
    """
    import os, pathlib
    pathlib.Path(os.environ["MEDGEN_TEST_MARKER"]).write_text("the pipeline folder ran code")
    from transformers import BertConfig, BertModel

    class RemoteConfig(BertConfig):
        model_type = "remote-bert"

    class RemoteModel(BertModel):
        config_class = RemoteConfig
    """
)

# Loads each folder in one fresh process whose stdin answers "y" to any "trust remote code?" prompt.
LOAD_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import medgen

    results = {}
    for name, folder in json.loads(sys.argv[1]).items():
        try:
            pipe = medgen.load_pipeline(folder)
            results[name] = {"loaded": [type(pipe).__name__, type(pipe.text_encoder).__name__]}
        except ValueError as error:
            results[name] = {"refused": str(error)}
    with open(sys.argv[2], "w") as file:
        json.dump(results, file)
    """
)


@pytest.fixture(scope="module")
def text_pipeline_folder(tmp_path_factory) -> Path:
    """A tiny saved text-to-image pipeline: the real MiniLM tokenizer, a tiny seeded BERT, 16 px."""
    tokenizer = AutoTokenizer.from_pretrained(offline_encoder_folder())
    torch.manual_seed(0)
    encoder = BertModel(BertConfig(
        vocab_size=tokenizer.vocab_size, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=32, max_position_embeddings=32,
    )).eval()
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, block_out_channels=(8, 16), layers_per_block=1,
        norm_num_groups=8, attention_head_dim=8, cross_attention_dim=16,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
    )
    vae = AutoencoderKL(
        in_channels=1, out_channels=1, latent_channels=4, block_out_channels=(8, 16),
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
        layers_per_block=1, norm_num_groups=8, sample_size=16,
    )
    pipe = TextToImagePipeline(
        vae=vae, text_encoder=encoder, tokenizer=tokenizer, unet=unet,
        scheduler=DDPMScheduler(num_train_timesteps=100), max_length=16,
    )
    return Path(pipe.save_pretrained(tmp_path_factory.mktemp("text") / "pipe"))


@pytest.fixture(scope="module")
def label_pipeline_folder(tmp_path_factory) -> Path:
    return Path(tiny_label_pipeline().save_pretrained(tmp_path_factory.mktemp("label") / "pipe"))


def _copy(folder: Path, destination: Path) -> Path:
    return Path(shutil.copytree(folder, destination))


def _edit_index(folder: Path, **entries) -> None:
    index_path = folder / "model_index.json"
    model_index = json.loads(index_path.read_text())
    model_index.update(entries)
    index_path.write_text(json.dumps(model_index))


def _plant_remote_code(component_folder: Path) -> None:
    """Makes `component_folder` a transformers model that needs its own Python file to load."""
    component_folder.mkdir(exist_ok=True)
    config_path = component_folder / "config.json"
    config = json.loads(config_path.read_text()) if config_path.is_file() else {}
    config.update(
        model_type="remote-bert",  # unknown to transformers: only the folder's code could build it
        auto_map={"AutoConfig": "remote_code.RemoteConfig", "AutoModel": "remote_code.RemoteModel"},
    )
    config_path.write_text(json.dumps(config))
    (component_folder / "remote_code.py").write_text(MALICIOUS_MODULE)


@pytest.fixture(scope="module")
def remote_code_attempts(text_pipeline_folder, tmp_path_factory) -> dict:
    """Two folders whose text encoder config points at the folder's own Python, loaded in one subprocess:
    "auto" names `["transformers", "AutoModel"]`, "concrete" keeps the saved `["transformers", "BertModel"]`."""
    work = tmp_path_factory.mktemp("remote")
    auto = _copy(text_pipeline_folder, work / "auto")
    _edit_index(auto, text_encoder=["transformers", "AutoModel"])
    concrete = _copy(text_pipeline_folder, work / "concrete")
    for folder in (auto, concrete):
        _plant_remote_code(folder / "text_encoder")
    marker, results = work / "code-ran.txt", work / "results.json"
    env = {**os.environ, "MEDGEN_TEST_MARKER": str(marker), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "HF_MODULES_CACHE": str(work / "modules"), "OMP_NUM_THREADS": "1"}
    completed = subprocess.run(
        [sys.executable, "-c", LOAD_SCRIPT, json.dumps({"auto": str(auto), "concrete": str(concrete)}), str(results)],
        input="y\ny\ny\n", cwd=work, env=env, capture_output=True, text=True, timeout=300,
    )
    results = json.loads(results.read_text()) if results.is_file() else {}
    return {"completed": completed, "results": results, "marker": marker}


def test_auto_model_with_remote_code_is_refused_even_when_stdin_answers_yes(remote_code_attempts):
    completed = remote_code_attempts["completed"]
    assert not remote_code_attempts["marker"].exists(), "loading a pipeline folder ran its Python code"
    assert completed.returncode == 0, completed.stderr[-3000:]
    refusal = remote_code_attempts["results"]["auto"].get("refused", "")
    assert "'text_encoder'" in refusal and "transformers.AutoModel" in refusal
    assert "[y/N]" not in completed.stdout + completed.stderr  # nobody was even asked


def test_allowed_class_ignores_an_auto_map_in_its_config(remote_code_attempts):
    # The concrete BertModel loads the saved weights and never looks at the folder's Python.
    assert remote_code_attempts["results"]["concrete"] == {"loaded": ["TextToImagePipeline", "BertModel"]}
    assert not remote_code_attempts["marker"].exists()


@pytest.mark.parametrize(
    ("component", "entry"),
    [
        ("unet", ["diffusers", "utils"]),  # a module, not a class
        ("unet", ["diffusers", "DiffusionPipeline"]),  # would route to the folder's pipeline.py
        ("unet", ["transformers", "AutoModel"]),
        ("scheduler", ["diffusers", "UNet2DModel"]),  # a diffusers class, but not a scheduler
        ("scheduler", ["diffusers", "SchedulerMixin"]),
        ("vae", ["diffusers", "AutoModel"]),
    ],
)
def test_component_outside_the_allow_list_is_refused_naming_it(label_pipeline_folder, tmp_path, component, entry):
    folder = _copy(label_pipeline_folder, tmp_path / "pipe")
    _edit_index(folder, **{component: entry})
    with pytest.raises(ValueError, match="refuses to load") as error:
        medgen.load_pipeline(folder)
    assert f"Component {component!r}" in str(error.value)
    assert f"{entry[0]}.{entry[1]}" in str(error.value)


def test_components_the_pipeline_does_not_take_are_never_loaded(label_pipeline_folder, tmp_path, monkeypatch, caplog):
    folder = _copy(label_pipeline_folder, tmp_path / "pipe")
    _edit_index(folder, text_encoder=["transformers", "AutoModel"], safety_checker=["diffusers", "utils"])
    _plant_remote_code(folder / "text_encoder")
    marker = tmp_path / "code-ran.txt"
    monkeypatch.setenv("MEDGEN_TEST_MARKER", str(marker))

    with caplog.at_level(logging.WARNING, logger="medgen.pipelines.hub"):
        pipe = medgen.load_pipeline(folder)

    assert pipe.labels == ["normal", "pneumonia"]
    assert not marker.exists()
    assert "text_encoder" in caplog.text and "safety_checker" in caplog.text  # said, not silent


def test_a_refused_folder_loads_nothing(label_pipeline_folder, tmp_path):
    # The unet entry is fine, the scheduler entry is not: the refusal comes before any weights are read.
    folder = _copy(label_pipeline_folder, tmp_path / "pipe")
    _edit_index(folder, scheduler=["diffusers", "utils"])
    (folder / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(ValueError, match="'scheduler'"):
        medgen.load_pipeline(folder)


def test_missing_required_component_is_named(label_pipeline_folder, tmp_path):
    folder = _copy(label_pipeline_folder, tmp_path / "pipe")
    model_index = json.loads((folder / "model_index.json").read_text())
    del model_index["unet"]
    (folder / "model_index.json").write_text(json.dumps(model_index))
    with pytest.raises(ValueError, match="names no unet"):
        medgen.load_pipeline(folder)


def test_text_encoder_that_a_saved_pipeline_could_not_load_is_refused_before_training(tmp_path):
    from transformers import GPT2Config, GPT2Model

    from medgen.text_encoders import load_text_encoder

    folder = tmp_path / "gpt2-encoder"
    GPT2Model(GPT2Config(n_embd=16, n_layer=1, n_head=2, n_positions=32, vocab_size=64)).save_pretrained(folder)
    AutoTokenizer.from_pretrained(offline_encoder_folder()).save_pretrained(folder)
    with pytest.raises(ValueError, match="GPT2Model.*BertModel"):
        load_text_encoder(folder)
