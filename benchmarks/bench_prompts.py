"""What do the prompts of a trained text-to-image pipeline control? Measured, not eyeballed.

For each prompt, `--count` images are sampled with the same seeds (image i of every prompt starts from the same
noise), so differences between prompts are the prompt's doing. Two measurements:

1. Finding: a classifier trained on the real training split (the evaluation's `SmallCNN`, cached like
   `medgen evaluate` caches it) scores every generated image; the table gives, per prompt, the mean probability
   and the share of images classified as each label. Prompts the model was trained on should land on their label;
   wording it never saw shows where the frozen encoder puts it.
2. Copies (`--copies`): the distance from each generated image to its nearest training image, against the
   distance between two different patients' training images; a small data set learned for many epochs shows up
   here as images that sit on a training image and prompts that retrieve one.
3. Prompt vs seed: mean absolute pixel difference between two prompts at the same seed, against the difference
   between two seeds at the same prompt. A ratio near 0 means the seed decides the image and the prompt barely
   matters; near 1, the prompt moves images as much as a new seed does.

It also saves a grid (one row per prompt, one column per seed, first `--grid-columns` seeds, enlarged).

    python benchmarks/bench_prompts.py --pipeline outputs/pneumoniamnist_text --data ../shared/data/pneumoniamnist/pneumoniamnist.npz
    python benchmarks/bench_prompts.py --pipeline outputs/covid_notes_text --copies --prompts "diffuse bilateral infiltrates" ...
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from medgen.evaluation.classifier import predict_probabilities, real_classifier
from medgen.evaluation.features import default_cache_dir
from medgen.evaluation.images import ImageSet, load_real_split
from medgen.pipelines import load_pipeline
from medgen.sample_grid import image_grid

DEFAULT_PROMPTS = (
    "chest x-ray, normal",
    "chest x-ray, pneumonia",
    "right lower lobe pneumonia with consolidation",
    "clear lungs, no acute disease",
)


def sample(pipe, prompt: str, count: int, steps: int, guidance_scale: float | None, batch: int) -> np.ndarray:
    images = []
    for start in range(0, count, batch):
        size = min(batch, count - start)
        generators = [torch.Generator("cpu").manual_seed(start + i) for i in range(size)]
        extra = {} if guidance_scale is None else {"guidance_scale": guidance_scale}
        images.append(
            pipe([prompt] * size, num_inference_steps=steps, generator=generators, output_type="np", **extra).images
        )
    return np.concatenate(images)


def prompt_vs_seed(by_prompt: dict[str, np.ndarray]) -> tuple[float, float]:
    """(mean |A_i - B_i| over prompt pairs at the same seed, mean |A_i - A_j| over seed pairs at the same prompt)."""
    across_prompts = [np.abs(a - b).mean() for a, b in itertools.combinations(by_prompt.values(), 2)]
    across_seeds = [np.abs(images - np.roll(images, 1, axis=0)).mean() for images in by_prompt.values()]
    return float(np.mean(across_prompts)), float(np.mean(across_seeds))


def report_findings(data: str, by_prompt: dict[str, np.ndarray]) -> None:
    """Per prompt: the real-trained classifier's mean probability and share of images for each label."""
    images = next(iter(by_prompt.values()))
    side, channels = images.shape[1], images.shape[-1]
    train = load_real_split(data, "train", side, channels)
    classifier = real_classifier(train, default_cache_dir())
    names = train.label_names
    print(f"classifier trained on {len(train)} real '{Path(data).name}' training images ({', '.join(names)})")
    print(f"{'prompt':48s}" + "".join(f"  P({name})  %{name}" for name in names))

    def row(title: str, images: ImageSet) -> None:
        probabilities = predict_probabilities(classifier, images, train.multi_label)
        winners = probabilities.argmax(axis=1)
        cells = "".join(f"  {probabilities[:, k].mean():8.3f}  {100 * (winners == k).mean():5.1f}%" for k in range(len(names)))
        print(f"{title[:48]:48s}{cells}")

    test = load_real_split(data, "test", side, channels)
    for name in names:  # the classifier on real images of each label: the best a prompt can reach
        row(f"[real test images: {name}]", test.subset(test.label_mask(name)))
    for prompt, generated in by_prompt.items():
        row(prompt, ImageSet(generated.transpose(0, 3, 1, 2)))


def report_copies(pipeline: str, by_prompt: dict[str, np.ndarray]) -> None:
    """Per prompt: how close generated images come to the images the pipeline was trained on (pixel space), against
    how close each training image comes to its nearest *other* training image (different patients)."""
    from medgen.config import load_config
    from medgen.evaluation.memorization import nearest_neighbours, pixel_vectors

    config_path = Path(pipeline) / "training_config.yaml"
    if not config_path.is_file():
        raise FileNotFoundError(f"--copies needs the training config saved with the pipeline: {config_path} is missing")
    images = next(iter(by_prompt.values()))
    train = load_real_split(load_config(config_path).data, "train", images.shape[1], images.shape[-1])
    train_vectors = pixel_vectors(train.images)
    # leave-one-out: the nearest other training image (the distance between two different patients' images)
    pairwise = torch.cdist(torch.from_numpy(train_vectors).double(), torch.from_numpy(train_vectors).double())
    pairwise.fill_diagonal_(float("inf"))
    between_patients = pairwise.min(dim=1).values.numpy()
    threshold = float(np.percentile(between_patients, 5))
    print(
        f"training images: {len(train)}; nearest other training image: median {np.median(between_patients):.2f}, "
        f"5th percentile {threshold:.2f} (pixel distance)"
    )
    print(f"{'prompt':48s}  median nearest-training  below 5th pct  distinct training images matched")
    for prompt, generated in by_prompt.items():
        distances, indices = nearest_neighbours(pixel_vectors(generated.transpose(0, 3, 1, 2)), train_vectors)
        print(
            f"{prompt[:48]:48s}  {np.median(distances):22.2f}  {100 * (distances < threshold).mean():12.1f}%  "
            f"{len(set(indices.tolist())):5d} of {len(generated)}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pipeline", required=True, help="a trained text-to-image pipeline folder")
    parser.add_argument("--data", help="real labelled data for the classifier (e.g. PneumoniaMNIST .npz); without it, "
                        "only the prompt-vs-seed comparison and the grid")
    parser.add_argument("--copies", action="store_true", help="also compare generated images with the pipeline's own "
                        "training images (read through its saved training_config.yaml)")
    parser.add_argument("--prompts", nargs="+", default=list(DEFAULT_PROMPTS))
    parser.add_argument("--count", type=int, default=64, help="images per prompt (same seeds for every prompt)")
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--guidance-scale", type=float, help="default: the pipeline's")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--grid", default="prompt_grid.png", help="where to save the grid PNG")
    parser.add_argument("--grid-columns", type=int, default=8)
    parser.add_argument("--grid-scale", type=int, default=3, help="enlarge each tile this many times")
    args = parser.parse_args()

    torch.manual_seed(0)
    pipe = load_pipeline(args.pipeline)
    pipe.set_progress_bar_config(disable=True)
    with torch.inference_mode():
        by_prompt = {p: sample(pipe, p, args.count, args.steps, args.guidance_scale, args.batch) for p in args.prompts}
    print(f"pipeline {args.pipeline}: {args.count} images per prompt, {args.steps} steps, same seeds 0..{args.count - 1}")
    if args.data:
        report_findings(args.data, by_prompt)
    if args.copies:
        report_copies(args.pipeline, by_prompt)
    across_prompts, across_seeds = prompt_vs_seed(by_prompt)
    print(
        f"mean |pixel difference|: between prompts at the same seed {across_prompts:.4f}, between seeds at the same "
        f"prompt {across_seeds:.4f}, ratio {across_prompts / across_seeds:.2f}"
    )

    # rows titled by number (a grid title holds ~15 characters); the legend goes to the output
    grid = image_grid([(f"row {i + 1}", images[: args.grid_columns]) for i, images in enumerate(by_prompt.values())])
    grid = grid.resize((grid.width * args.grid_scale, grid.height * args.grid_scale), Image.NEAREST)
    grid.save(args.grid)
    print(f"grid: {args.grid} (seeds 0..{min(args.grid_columns, args.count) - 1} left to right)")
    for i, prompt in enumerate(by_prompt):
        print(f"  row {i + 1}: {prompt}")


if __name__ == "__main__":
    main()
