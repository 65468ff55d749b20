"""Fréchet Radiomics Distance (FRD): a radiology-specific distance between real and generated images.

FRD (Konz, Osuala et al., "Fréchet Radiomic Distance (FRD): A Versatile Metric for Comparing Medical
Imaging Datasets", Medical Image Analysis 2026, arXiv 2412.01496) replaces FID's ImageNet Inception
features by hand-defined radiomic features (first-order intensity statistics and GLCM/GLRLM/GLSZM/NGTDM
texture features of the original image, its Laplacian-of-Gaussian and wavelet filtrations): about 400
numbers per 2D image that radiologists' tools also compute, no neural network and no downloaded weights.

Everything radiomic comes from the PyPI package `frd-score` (Apache-2.0), which `pip install
'medgen[frd]'` installs with `pyradiomics-bhklab` (the maintained pyradiomics fork with Python >= 3.10
builds): its FRDv1 extraction settings (`get_feature_extractor`), its per-image extraction on a
whole-image mask (`process_image_mask_pair`), its z-score normalisation against the reference set
(`z_score_normalize`) and its Fréchet distance (`calculate_frechet_distance`). frd-score reads image
folders; medgen adds what its folder API lacks: in-memory image sets, a cache of the real images'
features (like the FID feature cache), a progress bar and a process pool over images. Each image is
handed to frd-score as the 8-bit grayscale PNG `medgen generate` would write, so FRD here equals
`python -m frd_score REAL_DIR GENERATED_DIR` on the same images saved as PNG.

The value follows frd-score's v1 convention: `log(d^2)`, the logarithm of the squared Fréchet distance
between the two sets' normalised radiomic features. Lower is closer; it can be negative.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from medgen.evaluation.images import ImageSet

FRD_VERSION = "v1"
INSTALL_HINT = "pip install 'medgen[frd]' (installs frd-score and pyradiomics-bhklab; pyradiomics builds from source)"
IMAGES_PER_TASK = 8

_worker_extractor: Any = None  # the pyradiomics extractor of a worker process (built once per process)


def missing_packages() -> list[str]:
    """The FRD packages that are not installed (empty when FRD can be computed)."""
    needed = {"frd-score": "frd_score", "pyradiomics-bhklab": "radiomics"}
    return [package for package, module in needed.items() if importlib.util.find_spec(module) is None]


def _build_extractor() -> Any:
    """frd-score's FRDv1 pyradiomics extractor for 2D images, with pyradiomics' logging quietened."""
    import logging

    import SimpleITK
    from frd_score import frd

    frd._ensure_radiomics()
    frd.setVerbosity(logging.CRITICAL)
    logging.getLogger("radiomics").setLevel(logging.ERROR)
    # Parallelism comes from the process pool: one ITK thread per process avoids oversubscribing the cores.
    SimpleITK.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    return frd.get_feature_extractor(frd_version=FRD_VERSION, image_dim=2)


def _init_worker() -> None:
    global _worker_extractor
    _worker_extractor = _build_extractor()


class NoRadiomicFeatures(ValueError):
    """pyradiomics could not describe any image of a set (e.g. every image is one flat grey)."""


def _extract(images: np.ndarray, extractor: Any = None) -> tuple[list[list[float] | None], list[str], list[str]]:
    """Radiomic features of `(n, H, W)` uint8 images, each through frd-score's `process_image_mask_pair`.

    Returns the rows (None for an image pyradiomics cannot describe), the feature names and the errors.
    """
    import logging
    import tempfile

    from frd_score import frd
    from PIL import Image

    extractor = extractor if extractor is not None else _worker_extractor
    rows: list[list[float] | None] = []
    names: list[str] = []
    errors: list[str] = []
    with tempfile.TemporaryDirectory(prefix="medgen-frd-") as folder:
        for index, image in enumerate(images):
            path = Path(folder) / f"{index}.png"
            Image.fromarray(image).save(path)
            logging.disable(logging.ERROR)  # frd-score logs each failure with its traceback; medgen counts them instead
            try:
                result = frd.process_image_mask_pair((str(path), None), feature_extractor=extractor, frd_version=FRD_VERSION)
            except (ValueError, RuntimeError, ArithmeticError) as error:  # e.g. a constant image: no grey-level bins
                result = None
                errors.append(f"{type(error).__name__}: {error}")
            finally:
                logging.disable(logging.NOTSET)
            if result is None:
                rows.append(None)
                continue
            values, named, _ = result
            rows.append([float(v) for v in values])
            names = list(named)
    return rows, names, errors


def _as_uint8_grayscale(images: np.ndarray) -> np.ndarray:
    """`(N, C, H, W)` float [0, 1] -> `(N, H, W)` uint8: the channel mean, as an 8-bit grayscale PNG holds it."""
    return (np.clip(images.mean(axis=1), 0.0, 1.0) * 255).round().astype(np.uint8)


def default_num_workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on every platform
        return max(1, os.cpu_count() or 1)


def radiomic_features(
    images: np.ndarray, num_workers: int | None = None, progress: bool = False, desc: str = "radiomics"
) -> tuple[np.ndarray, list[str]]:
    """Radiomic features `(N, F)` float64 of `(N, C, H, W)` float [0, 1] images, and the F feature names.

    Images are spread over `num_workers` processes (default: every core this process may use) in tasks of
    `IMAGES_PER_TASK` images; one process (or a handful of images) runs here without a pool.
    An image that pyradiomics cannot describe (a constant image has no grey-level bins) gets a row of NaN, as
    does one with a feature it cannot compute: frd-score's distance leaves such images out. No image described
    at all raises `NoRadiomicFeatures`.
    """
    from tqdm.auto import tqdm

    missing = missing_packages()
    if missing:
        raise ModuleNotFoundError(f"FRD needs {', '.join(missing)}: {INSTALL_HINT}")
    if len(images) == 0:
        raise ValueError("no images to extract radiomic features from")
    gray = _as_uint8_grayscale(images)
    workers = min(num_workers or default_num_workers(), math.ceil(len(gray) / IMAGES_PER_TASK))
    bar = tqdm(total=len(gray), desc=desc, disable=not progress, unit="image")
    chunks = [gray[start : start + IMAGES_PER_TASK] for start in range(0, len(gray), IMAGES_PER_TASK)]
    results: list[tuple[list[list[float] | None], list[str], list[str]]] = [([], [], [])] * len(chunks)
    if workers <= 1:
        extractor = _build_extractor()
        for index, chunk in enumerate(chunks):
            results[index] = _extract(chunk, extractor)
            bar.update(len(chunk))
    else:
        import multiprocessing
        import sys
        from concurrent.futures import ProcessPoolExecutor, as_completed

        # fork on Linux, as frd-score's own pool does: it also works from a script without a `__main__` guard,
        # and the workers run only pyradiomics / SimpleITK / numpy, never the parent's torch thread pools.
        context = multiprocessing.get_context("fork" if sys.platform.startswith("linux") else "spawn")
        with ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_init_worker) as pool:
            futures = {pool.submit(_extract, chunk): index for index, chunk in enumerate(chunks)}
            for future in as_completed(futures):
                results[futures[future]] = future.result()
                bar.update(len(chunks[futures[future]]))
    bar.close()
    names = next((names for _, names, _ in results if names), [])
    errors = [error for _, _, chunk_errors in results for error in chunk_errors]
    if not names:
        raise NoRadiomicFeatures(f"pyradiomics could not describe any of the {len(gray)} images ({errors[0] if errors else 'no features'})")
    rows = [row if row is not None else [math.nan] * len(names) for chunk_rows, _, _ in results for row in chunk_rows]
    return np.array(rows, dtype=np.float64), names


def package_versions() -> dict[str, str]:
    """The versions that define the features: frd-score (settings) and pyradiomics (the `radiomics` module)."""
    from importlib.metadata import version

    import radiomics

    return {"frd-score": version("frd-score"), "radiomics": str(radiomics.__version__)}


def _cache_name() -> str:
    versions = package_versions()
    return f"frd-{FRD_VERSION}-frd_score-{versions['frd-score']}-radiomics-{versions['radiomics']}"


def cached_radiomic_features(
    images: np.ndarray,
    fingerprint: str,
    cache_dir: str | Path | None,
    num_workers: int | None = None,
    progress: bool = False,
    desc: str = "radiomics",
) -> tuple[np.ndarray, list[str]]:
    """`radiomic_features`, stored as safetensors keyed by (data fingerprint, FRD and package versions).

    The same cache folder as the FID features (`<cache>/features/`), so re-evaluating a new checkpoint on
    the same real data only extracts the generated images. `cache_dir=None` disables the cache.
    """
    from safetensors import safe_open
    from safetensors.numpy import save_file

    if cache_dir is None:
        return radiomic_features(images, num_workers, progress, desc)
    path = Path(cache_dir) / "features" / f"{fingerprint}-{_cache_name()}.safetensors"
    if path.is_file():
        with safe_open(str(path), framework="numpy") as stored:
            features = stored.get_tensor("features")
            names = json.loads((stored.metadata() or {}).get("feature_names", "[]"))
        if len(features) == len(images) and len(names) == features.shape[1]:
            return features, names
    features, names = radiomic_features(images, num_workers, progress, desc)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    save_file({"features": features}, str(tmp), metadata={"feature_names": json.dumps(names)})
    tmp.replace(path)
    return features, names


def frechet_radiomics_distance(real: np.ndarray, generated: np.ndarray, feature_names: list[str] | None = None) -> dict[str, Any]:
    """FRD between radiomic features `(N, F)` of a real reference set and another set, as frd-score's v1.

    Following frd-score's `calculate_feature_statistics` and `compute_frd` (v1): images with a NaN feature
    are left out, both sets are z-scored with the *real* set's mean and std (paper Eq. 3), features that
    become NaN or infinite (constant on the real set) are dropped, and FRD = log of the squared Fréchet
    distance between the two Gaussians. Returns `{"frd", "n_real", "n_generated", "n_features"}`;
    `frd` is None when the sets coincide in feature space (distance 0).
    """
    from frd_score import frd

    real = real[~np.isnan(real).any(axis=1)].astype(np.float32)
    generated = generated[~np.isnan(generated).any(axis=1)].astype(np.float32)
    result: dict[str, Any] = {"n_real": int(len(real)), "n_generated": int(len(generated))}
    if len(real) < 2 or len(generated) < 2:
        result["skipped"] = "FRD needs at least 2 real and 2 generated images with complete radiomic features"
        return result
    normalised = [
        frd.z_score_normalize(
            features, new_min=0, new_max=1, replace_nan=False, feature_names=feature_names,
            base_distribution=real, handle_std_zero=False,
        )
        for features in (real, generated)
    ]
    keep = np.ones(real.shape[1], dtype=bool)
    for features in normalised:
        keep &= np.isfinite(features).all(axis=0)
    real_n, generated_n = (features[:, keep] for features in normalised)
    squared = float(frd.calculate_frechet_distance(
        real_n.mean(axis=0), np.cov(real_n, rowvar=False), generated_n.mean(axis=0), np.cov(generated_n, rowvar=False)
    ))
    result["n_features"] = int(keep.sum())
    result["frd"] = math.log(squared) if squared > 0 else None
    return result


def real_baseline_frd(real: np.ndarray, size: int, seed: int = 0, feature_names: list[str] | None = None) -> dict[str, Any] | None:
    """FRD between two disjoint random halves of the real features, each of `size` images (capped by the data).

    Like `fid_real_baseline`: what two sets of real images of this size score, the floor to read FRD against.
    """
    size = min(size, len(real) // 2)
    if size < 2:
        return None
    order = np.random.default_rng(seed).permutation(len(real))
    entry = frechet_radiomics_distance(real[order[:size]], real[order[size : 2 * size]], feature_names)
    return {"frd": entry.get("frd"), "n_per_subset": int(size)}


def frd_report(
    real: ImageSet,
    generated: ImageSet,
    cache_dir: str | Path | None = None,
    progress: bool = False,
    seed: int = 0,
    num_workers: int | None = None,
) -> dict[str, Any]:
    """`report["frd"]`: FRD of the generated images against the real reference images, its real floor, and
    with labelled sets the FRD of each label's images (`per_label`).

    Without the optional packages the entry says how to install them and holds no number. The real
    images' features are cached under `cache_dir` (None: not cached).
    """
    missing = missing_packages()
    if missing:
        return {"skipped": f"FRD needs the optional packages {', '.join(missing)}: {INSTALL_HINT}"}
    started = time.perf_counter()
    real_features, names = cached_radiomic_features(
        real.images, real.fingerprint(), cache_dir, num_workers, progress, "radiomics: real reference images"
    )
    if generated.fingerprint() == real.fingerprint():  # e.g. real images scored against themselves: extract once
        generated_features = real_features
    else:
        try:
            generated_features, _ = radiomic_features(generated.images, num_workers, progress, "radiomics: generated images")
        except NoRadiomicFeatures as error:
            return {"skipped": f"no FRD: {error}", "n_real": len(real), "n_generated": 0}
    entry = frechet_radiomics_distance(real_features, generated_features, names)
    undescribed = {
        name: int(np.isnan(features).any(axis=1).sum()) for name, features in (("real", real_features), ("generated", generated_features))
    }
    if any(undescribed.values()):
        entry["images_without_features"] = undescribed  # left out of the distance, as frd-score's v1 does
    if "frd" in entry:
        entry["frd_real_baseline"] = real_baseline_frd(real_features, len(generated_features), seed, names)
    if real.labels is not None and generated.labels is not None and generated.label_names == real.label_names:
        # per label, like per_label FID: each label's generated images against that label's real images
        entry["per_label"] = {
            name: frechet_radiomics_distance(real_features[real.label_mask(name)], generated_features[generated.label_mask(name)], names)
            for name in real.label_names
            if generated.label_mask(name).any()
        }
    entry.update(
        version=FRD_VERSION,
        definition="log of the squared Fréchet distance between radiomic features z-scored on the real images (frd-score v1)",
        packages=package_versions(),
        n_features_extracted=len(names),
        duration_s=round(time.perf_counter() - started, 3),
    )
    return entry
