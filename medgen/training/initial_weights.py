"""Starting a run from a trained pipeline's denoiser (`model.init_from`): fine-tuning instead of training from noise.

A built-in name (`chest-xray`) or a saved pipeline folder gives the UNet its first weights; the run's config
must build the same UNet (widths, attention, label count, latent channels), and for a label model the
pipeline's labels must be the data's labels in the same order, so that each class embedding keeps its meaning.
The optimizer, learning-rate schedule and EMA start fresh (EMA from these weights). Uses: adapting a built-in
to another hospital's images, or continuing a shipped model's training when its run folder is gone.
`--resume_from_checkpoint` continues a run of medgen's own instead, optimizer state included.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch


WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"


def init_weights(init_from: str, kind: str = "") -> Path:
    """The UNet weights file a run of model kind `kind` starts from, in the pipeline folder `init_from` names (a
    folder, or a built-in pipeline's name): its `unet/`, or for a mask generator run (`kind` "mask_generator") the
    `mask_unet/` of a mask pipeline that has one (so a shipped mask model's generator can be trained further)."""
    from medgen.pipelines.locate import BUILTIN_PIPELINES, builtin_pipeline_path

    folder = Path(init_from).expanduser()
    if not folder.is_dir() and init_from.lower() in BUILTIN_PIPELINES:
        folder = builtin_pipeline_path(init_from)
    component = "mask_unet" if kind == "mask_generator" and (folder / "mask_unet" / WEIGHTS_NAME).is_file() else "unet"
    weights = folder / component / WEIGHTS_NAME
    if not weights.is_file():
        raise FileNotFoundError(
            f"model.init_from {init_from!r}: no {weights} (give a saved pipeline folder with unet/ in safetensors, "
            f"or a built-in name: {', '.join(BUILTIN_PIPELINES)})"
        )
    return weights


def init_folder(init_from: str) -> Path:
    """The pipeline folder `init_from` names: a folder holding `unet/`, or a built-in pipeline's name."""
    return init_weights(init_from).parent.parent


def pipeline_labels(folder: Path) -> list[str] | None:
    """The label names a pipeline folder records in model_index.json (`id2label`), None when it records none."""
    index = json.loads((folder / "model_index.json").read_text()) if (folder / "model_index.json").is_file() else {}
    id2label = index.get("id2label")
    if not id2label:
        return None
    return [id2label[key] for key in sorted(id2label, key=int)]


def load_initial_weights(
    unet: torch.nn.Module, init_from: str, label_names: list[str] | None = None, kind: str = ""
) -> Path:
    """Copies the UNet weights of the pipeline `init_from` (see `init_weights` for `kind`) into `unet` (cast to its
    dtype); returns the folder.

    Raises ValueError naming the folder when its labels are not `label_names` or its UNet has another shape."""
    from safetensors.torch import load_file

    weights = init_weights(init_from, kind)
    folder = weights.parent.parent
    recorded = pipeline_labels(folder)
    if label_names and recorded is not None and [n.lower() for n in recorded] != [n.lower() for n in label_names]:
        raise ValueError(
            f"model.init_from {init_from!r} was trained on labels {recorded}; this run's data has {label_names}. "
            "Each class embedding keeps the meaning of its position: list the pipeline's labels in its order "
            "in data.labels, or train from scratch"
        )
    state = load_file(str(weights))
    own = unet.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    reshaped = sorted(name for name in set(own) & set(state) if own[name].shape != state[name].shape)
    if missing or unexpected or reshaped:
        details = "; ".join(
            f"{what}: {', '.join(names[:3])}{' ...' if len(names) > 3 else ''}"
            for what, names in (("missing", missing), ("not in this UNet", unexpected), ("other shape", reshaped))
            if names
        )
        raise ValueError(
            f"model.init_from {init_from!r}: its UNet ({weights.parent / 'config.json'}) is not the one this config "
            f"builds ({details}). Copy its model section (block_out_channels, attention_levels, layers_per_block, "
            "attention_head_dim) and its autoencoder (model.pretrained_vae) into the config"
        )
    unet.load_state_dict({name: tensor.to(own[name].dtype) for name, tensor in state.items()})
    return folder


def init_record(init_from: str, kind: str = "") -> dict:
    """What a fine-tuning run started from, for its `training_summary.json` and model card: the name given, the
    folder, the SHA-256 of its UNet weights and how many steps they had been trained (None when not recorded)."""
    import hashlib

    weights = init_weights(init_from, kind)
    folder = weights.parent.parent
    summary_path = folder / "training_summary.json"
    # the folder's training summary counts its image model's steps, not its mask generator's
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() and weights.parent.name == "unet" else {}
    return {
        "init_from": init_from,
        # a built-in is named, not located: the path of this machine's install says nothing elsewhere
        "folder": None if folder != Path(init_from).expanduser() else str(folder),
        "component": weights.parent.name,
        "unet_sha256": hashlib.sha256(weights.read_bytes()).hexdigest(),
        "steps": summary.get("total_steps", summary.get("steps")),
    }

