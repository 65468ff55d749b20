"""Mask faithfulness of a mask-conditioned pipeline at several `mask_guidance_scale` values, side by side.

The same seeded subset of test masks, the same seeds and the same real-trained segmenter (medgen's standard
recipe, cached as `medgen evaluate` caches it) for every scale; prints one JSON line per scale with the Dice of
the segmenter on the generated images, on the real test images, and their ratio.

    python benchmarks/bench_mask_guidance.py --pipeline breast-ultrasound-lesions \
        --config runs/busi_mask_128/training_config.yaml --scales 1 3 --max-masks 48
"""

from __future__ import annotations

import argparse
import json

import torch


class WithMaskGuidance:
    """The pipeline, called with a fixed `mask_guidance_scale` (everything else passes through)."""

    def __init__(self, pipe, scale: float):
        self._pipe, self._scale = pipe, scale

    def __getattr__(self, name):
        return getattr(self._pipe, name)

    def __call__(self, masks=None, **kwargs):
        return self._pipe(masks=masks, mask_guidance_scale=self._scale, **kwargs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pipeline", required=True, help="mask pipeline: built-in name or folder")
    parser.add_argument("--config", required=True, help="its training config (the data section names the masks)")
    parser.add_argument("--scales", type=float, nargs="+", default=[1.0, 3.0])
    parser.add_argument("--max-masks", type=int, default=48, help="seeded subset of the test masks")
    args = parser.parse_args()

    import medgen
    from medgen.config import load_config
    from medgen.evaluation.features import default_cache_dir
    from medgen.evaluation.mask_faithfulness import mask_faithfulness
    from medgen.segmentation.data import load_pairs

    torch.set_num_threads(1)
    pipe = medgen.load_pipeline(args.pipeline)
    pipe.set_progress_bar_config(disable=True)
    values = {key: value for key, value in load_config(args.config).data.to_dict().items() if key != "max_samples"}
    train, _ = load_pairs(values, "train", values["resolution"], values["channels"])
    test, _ = load_pairs(values, "test", values["resolution"], values["channels"])
    for scale in args.scales:
        section = mask_faithfulness(WithMaskGuidance(pipe, scale), train, test, max_masks=args.max_masks,
                                    cache_dir=default_cache_dir())
        print(json.dumps({"mask_guidance_scale": scale, **{key: section[key] for key in (
            "dice_generated", "dice_real_test", "ratio", "ratio_nonempty")}}), flush=True)


if __name__ == "__main__":
    main()
