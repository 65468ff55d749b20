"""Post-processing functions keep shape and range and do what their names promise."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import ndimage

from medgen import postprocess
from medgen.postprocess import (
    adaptive_sharpen,
    apply_preset,
    bilateral_filter,
    clahe,
    edge_enhance,
    list_presets,
    register_preset,
    sharpen,
    vignette,
    window_image,
)


def _structured_image(size: int = 32, seed: int = 0) -> np.ndarray:
    """A smooth gradient, a bright disc and a little noise: enough structure for every filter."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / (size - 1)
    disc = ((x - 0.5) ** 2 + (y - 0.5) ** 2 < 0.08).astype(np.float64)
    image = 0.2 + 0.3 * x + 0.4 * disc + rng.normal(0, 0.02, (size, size))
    return np.clip(image, 0, 1).astype(np.float32)


def _laplacian_variance(image: np.ndarray) -> float:
    return float(ndimage.laplace(image.astype(np.float64)).var())


ALL_FUNCTIONS = [
    (bilateral_filter, {}),
    (sharpen, {}),
    (adaptive_sharpen, {}),
    (clahe, {}),
    (window_image, {"center": 0.5, "width": 0.5}),
    (edge_enhance, {}),
    (postprocess.gaussian_smooth, {}),
    (vignette, {}),
]


@pytest.mark.parametrize("func, kwargs", ALL_FUNCTIONS, ids=lambda v: getattr(v, "__name__", ""))
@pytest.mark.parametrize("shape", [(32, 32), (32, 32, 1), (32, 32, 3)])
def test_functions_keep_shape_and_range(func, kwargs, shape):
    rng = np.random.default_rng(1)
    image = rng.random(shape, dtype=np.float32)
    out = func(image, **kwargs)
    assert out.shape == shape
    assert out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() <= 1.0


def test_bilateral_reduces_noise_and_keeps_edge():
    rng = np.random.default_rng(0)
    clean = np.zeros((48, 48), np.float32)
    clean[:, 24:] = 0.8
    clean[:, :24] = 0.2
    noisy = np.clip(clean + rng.normal(0, 0.03, clean.shape), 0, 1).astype(np.float32)
    out = bilateral_filter(noisy, sigma_color=0.1, sigma_spatial=2.0)
    flat = (slice(4, -4), slice(4, 18))
    assert out[flat].var() < 0.5 * noisy[flat].var()
    # The step between the halves survives: a Gaussian of the same spatial sigma would halve it
    # at the boundary columns, the bilateral filter keeps it nearly whole.
    step = out[4:-4, 25].mean() - out[4:-4, 22].mean()
    assert step > 0.5


@pytest.mark.parametrize("func", [sharpen, adaptive_sharpen, edge_enhance])
def test_sharpening_raises_laplacian_variance(func):
    image = _structured_image()
    assert _laplacian_variance(func(image)) > 1.2 * _laplacian_variance(image)


def test_adaptive_sharpen_spares_flat_regions():
    image = _structured_image(64)
    plain = sharpen(image, amount=1.0)
    adaptive = adaptive_sharpen(image, amount=1.0)
    # Inside the flat corner (only noise), the adaptive version changes pixels less.
    corner = (slice(2, 14), slice(2, 14))
    assert np.abs(adaptive - image)[corner].mean() < np.abs(plain - image)[corner].mean()


def test_clahe_raises_contrast_on_low_contrast_image():
    image = 0.45 + 0.1 * _structured_image(64)
    out = clahe(image)
    assert out.std() > 2 * image.std()
    assert np.ptp(out) > np.ptp(image)


def test_window_image_clips_and_maps_linearly():
    image = np.linspace(0, 1, 101, dtype=np.float32).reshape(1, 101)
    out = window_image(image, center=0.5, width=0.2)
    assert np.all(out[image <= 0.4] == 0.0)
    assert np.all(out[image >= 0.6] == 1.0)
    np.testing.assert_allclose(out[0, 50], 0.5, atol=1e-6)
    np.testing.assert_allclose(out[0, 45], 0.25, atol=1e-5)
    with pytest.raises(ValueError, match="width"):
        window_image(image, center=0.5, width=0)


def test_vignette_darkens_corners_only():
    image = np.full((33, 33), 0.8, np.float32)
    out = vignette(image, strength=0.5)
    assert out[16, 16] == pytest.approx(0.8)
    assert out[0, 0] == pytest.approx(0.4, abs=1e-6)


@pytest.mark.parametrize(
    "bad, message",
    [
        (np.zeros((4, 4, 4), np.float32), "shape"),
        (np.zeros((4, 4), np.uint8), "dtype"),
        (np.full((4, 4), 2.0, np.float32), "range"),
        (np.full((4, 4), np.nan, np.float32), "NaN"),
    ],
)
def test_bad_images_raise_clear_errors(bad, message):
    with pytest.raises(ValueError, match=message):
        sharpen(bad)


def test_presets_registry_and_records():
    assert {"none", "thesis", "clahe", "sharpen", "soft"} <= set(list_presets())
    batch = np.stack([_structured_image(seed=s)[..., None] for s in range(3)])  # (B, H, W, 1)

    same, record = apply_preset(batch, "none")
    np.testing.assert_array_equal(same, batch)
    assert record["preset"] == "none" and record["steps"] == []

    out, record = apply_preset(batch, "thesis")
    assert out.shape == batch.shape
    assert [step["function"] for step in record["steps"]] == ["bilateral_filter", "adaptive_sharpen"]
    json.dumps(record)  # stored in params.json and DICOM files
    # The record is what was applied: replaying its steps gives the same images.
    replay = batch[1]
    for step in record["steps"]:
        replay = getattr(postprocess, step["function"])(replay, **step["params"])
    np.testing.assert_array_equal(out[1], replay)

    single, _ = apply_preset(batch[0, ..., 0], "clahe")
    assert single.shape == batch.shape[1:3]
    listed, _ = apply_preset([batch[0], batch[1]], "sharpen")
    assert isinstance(listed, list) and len(listed) == 2


def test_unknown_preset_lists_valid_names():
    with pytest.raises(ValueError, match=r"unknown post-processing preset 'sharpn'.*thesis"):
        apply_preset(np.zeros((8, 8), np.float32), "sharpn")


def test_register_preset_rejects_unknown_function():
    with pytest.raises(ValueError, match="unknown post-processing function 'blur'"):
        register_preset("bad", [("blur", {})])
    assert "bad" not in list_presets()
