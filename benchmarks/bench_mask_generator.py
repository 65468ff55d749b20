"""The masks of a pipeline's mask generator at several label guidance scales, against the real test masks, per label.

One mask per real test mask (with that mask's label; mask i drawn at seed + i, the same seeds at every scale), scored
by `medgen.evaluation.mask_statistics` (what `medgen evaluate` reports as `mask_generator`): the fraction of empty
masks, the mean area and pieces per mask, real / generated, and the area distance (1-Wasserstein between the real
and generated mask areas of a label: 0 is the same sizes). Prints one table row per label and scale, then one
JSON line per scale.

    python benchmarks/bench_mask_generator.py --pipeline breast-ultrasound-lesions --scales 1 2 3 5
"""

from __future__ import annotations

import argparse
import json


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pipeline", required=True, help="mask pipeline with a mask generator: built-in name or folder")
    parser.add_argument("--config", help="training config whose data section names the masks (default: the pipeline's own)")
    parser.add_argument("--scales", type=float, nargs="+", default=[1.0, 2.0, 3.0])
    parser.add_argument("--steps", type=int, default=15, help="the mask generator's sampling steps")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import torch

    import medgen
    from medgen.config import load_config
    from medgen.evaluation.mask_statistics import compare_masks, draw_masks_for_labels
    from medgen.pipelines.locate import resolve_pipeline_folder
    from medgen.segmentation.data import load_pairs
    from medgen.segmentation.pairs import indices_from_masks

    torch.set_num_threads(1)
    pipe = medgen.load_pipeline(args.pipeline)
    config = args.config or str(resolve_pipeline_folder(args.pipeline) / "training_config.yaml")
    values = {key: value for key, value in load_config(config).data.to_dict().items() if key != "max_samples"}
    test, _ = load_pairs(values, "test", values["resolution"], values["channels"])
    real = indices_from_masks(test.masks)
    print(f"{args.pipeline}: {len(test)} test masks; real / generated")
    print("| scale | label | class | empty | area mean | area p90 | pieces per non-empty mask | area distance |")
    print("|---|---|---|---|---|---|---|---|")
    for scale in args.scales:
        generated = draw_masks_for_labels(pipe, test.label_names, test.targets, num_inference_steps=args.steps,
                                          guidance_scale=scale, seed=args.seed)
        section = compare_masks(real, test.targets, generated, test.targets, test.label_names, list(pipe.mask_classes))
        for label, classes in section["per_label"].items():
            for class_name, entry in classes.items():
                r, g = entry["real"], entry["generated"]
                pieces = " / ".join("-" if value is None else f"{value:.2f}" for value in (r["components_mean"], g["components_mean"]))
                print(f"| {scale:g} | {label} | {class_name} | {r['empty']:.2f} / {g['empty']:.2f} | "
                      f"{r['area_mean']:.3f} / {g['area_mean']:.3f} | {r['area_p90']:.3f} / {g['area_p90']:.3f} | "
                      f"{pieces} | {entry['area_distance']:.4f} |", flush=True)
        print(json.dumps({"guidance_scale": scale, "area_distance_mean": round(section["area_distance_mean"], 5),
                          "empty_gap_max": round(section["empty_gap_max"], 3)}), flush=True)


if __name__ == "__main__":
    main()
