"""Cost of the two ways to condition a latent model on a mask, side by side in one run.

(a) concatenation (segmentation-guided diffusion; what `MaskConditionedPipeline` does): the mask classes + a
    "mask present" channel are concatenated to the latent, one UNet trains;
(b) a diffusers `ControlNetModel` (a trainable copy of the UNet's encoder fed the mask) beside the frozen label
    UNet, whose skip connections it adds to.

Both at the built-in 128 px shape (8x32x32 latents, widths 32-64-128, attention on the last level, as
train_configs/lung_cxr_mask_128.yaml). Reports trainable parameters and seconds per training step (forward +
backward, batch --batch) on this machine, the median of --repeats steps after one warm-up step.

    python benchmarks/bench_mask_conditioning.py --batch 8 --repeats 5
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from diffusers import ControlNetModel, UNet2DConditionModel


def label_unet(in_channels: int) -> UNet2DConditionModel:
    torch.manual_seed(0)
    return UNet2DConditionModel(
        sample_size=32, in_channels=in_channels, out_channels=8, block_out_channels=(32, 64, 128), layers_per_block=1,
        down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D", "UpBlock2D"), mid_block_type="UNetMidBlock2D",
        norm_num_groups=8, attention_head_dim=32, class_embed_type="projection", projection_class_embeddings_input_dim=3,
    )


def timed(step, repeats: int) -> float:
    step()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.manual_seed(0)
    batch = args.batch
    latents = torch.randn(batch, 8, 32, 32)
    mask = torch.rand(batch, 2, 32, 32)
    mask_pixels = torch.rand(batch, 2, 128, 128)
    timesteps = torch.randint(0, 1000, (batch,))
    labels = torch.zeros(batch, 3)

    concat = label_unet(8 + 2)

    def concat_step():
        concat.zero_grad()
        out = concat(torch.cat([latents, mask], 1), timesteps, encoder_hidden_states=None, class_labels=labels).sample
        out.pow(2).mean().backward()

    frozen = label_unet(8).requires_grad_(False)
    controlnet = ControlNetModel.from_unet(frozen, conditioning_channels=2, conditioning_embedding_out_channels=(16, 32, 64))

    def controlnet_step():
        controlnet.zero_grad()
        down, mid = controlnet(
            latents, timesteps, encoder_hidden_states=None, controlnet_cond=mask_pixels, class_labels=labels, return_dict=False
        )
        out = frozen(latents, timesteps, encoder_hidden_states=None, class_labels=labels,
                     down_block_additional_residuals=down, mid_block_additional_residual=mid).sample
        out.pow(2).mean().backward()

    def trainable(module):
        return sum(p.numel() for p in module.parameters() if p.requires_grad)

    rows = [
        ("concatenation (one UNet, +2 input channels)", trainable(concat), timed(concat_step, args.repeats)),
        ("ControlNet beside the frozen label UNet", trainable(controlnet), timed(controlnet_step, args.repeats)),
    ]
    print(f"torch threads {torch.get_num_threads()}, batch {batch}, median of {args.repeats} steps")
    for name, params, seconds in rows:
        print(f"{name:48s} trainable params {params / 1e6:6.2f} M   {seconds:6.3f} s/step")
    print(f"ControlNet / concatenation step time: {rows[1][2] / rows[0][2]:.2f}x")


if __name__ == "__main__":
    main()
