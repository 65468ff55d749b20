"""Pure array transforms: geometry of crop vs pad, intensity scaling, CLAHE, augmentation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medgen.data.transforms import (
    apply_clahe,
    preprocess,
    random_augment,
    resize_image,
    scale_intensity,
    to_channels,
)


def test_crop_keeps_center_and_drops_edges():
    image = np.zeros((1, 40, 80), dtype=np.float32)
    image[:, :, :20] = 1.0  # bright left quarter
    image[:, :, 60:] = 1.0  # bright right quarter
    cropped = resize_image(image, 16, "crop")
    assert cropped.shape == (1, 16, 16)
    # a square crop keeps the center half of a 2:1 image; only filter blur reaches the border
    assert cropped[..., 1:-1].max() < 1e-6 and cropped.max() < 0.25
    assert resize_image(image, 16, "pad").max() > 0.99


def test_pad_keeps_whole_image_with_black_bars():
    image = np.ones((1, 40, 80), dtype=np.float32)
    padded = resize_image(image, 16, "pad")
    assert padded.shape == (1, 16, 16)
    # 2:1 image -> 16 x 8 content, 4 black rows above and below
    np.testing.assert_allclose(padded[0, :4], 0.0)
    np.testing.assert_allclose(padded[0, 12:], 0.0)
    np.testing.assert_allclose(padded[0, 4:12], 1.0, atol=1e-6)
    tall = resize_image(np.ones((1, 90, 30), dtype=np.float32), 12, "pad")
    assert tall[0, :, :4].max() == 0.0 and tall[0, :, 4:8].min() > 0.99


def test_resize_antialiases_fine_stripes():
    stripes = np.tile(np.array([0.0, 1.0], dtype=np.float32), (64, 32))[None]  # 1-px stripes
    small = resize_image(stripes, 8, "crop")
    assert abs(small.mean() - 0.5) < 0.05 and small.std() < 0.1  # averaged, not aliased


def test_scale_intensity_modes():
    hounsfield = np.linspace(-1024, 3071, 100, dtype=np.float32).reshape(10, 10)
    scaled = scale_intensity(hounsfield)
    assert scaled.min() == 0.0 and scaled.max() == 1.0
    with_hot_pixel = np.random.default_rng(0).uniform(0, 100, (50, 50)).astype(np.float32)
    with_hot_pixel[0, 0] = 1e6
    assert np.median(scale_intensity(with_hot_pixel, "minmax")) < 0.01
    assert 0.3 < np.median(scale_intensity(with_hot_pixel, "percentile")) < 0.7
    dark = np.full((4, 4), 20.0, dtype=np.float32)
    dark[0, 0] = 40.0
    np.testing.assert_allclose(scale_intensity(dark, "range", value_range=(0, 255)).max(), 40 / 255)
    np.testing.assert_array_equal(scale_intensity(np.full((3, 3), 7.0)), 0.0)
    with pytest.raises(ValueError, match="unknown intensity scaling mode 'zscore'"):
        scale_intensity(dark, "zscore")


def test_channels():
    gray = np.random.default_rng(1).uniform(0, 255, (6, 7)).astype(np.float32)
    assert to_channels(gray, 1).shape == (1, 6, 7)
    three = to_channels(gray, 3)
    assert three.shape == (3, 6, 7) and np.array_equal(three[0], three[2])
    rgb = np.random.default_rng(2).uniform(0, 1, (6, 7, 3)).astype(np.float32)
    assert to_channels(rgb, 1).shape == (1, 6, 7)
    assert np.array_equal(to_channels(rgb, 3)[1], rgb[..., 1])
    with pytest.raises(ValueError, match=r"\(2, 3, 4, 5\)"):
        to_channels(np.zeros((2, 3, 4, 5)), 1)


@pytest.mark.parametrize("mode", ["crop", "pad"])
def test_preprocess_shape_range(mode):
    image = np.random.default_rng(3).uniform(-1024, 2000, (50, 70)).astype(np.float32)
    out = preprocess(image, resolution=24, channels=1, resize_mode=mode, normalization="percentile", clahe=True)
    assert out.shape == (1, 24, 24) and out.dtype == np.float32
    assert out.min() >= -1.0 and out.max() <= 1.0 and out.max() > 0.5 and out.min() < -0.5


def test_clahe_raises_local_contrast():
    rng = np.random.default_rng(4)
    flat = (0.45 + 0.1 * rng.uniform(0, 1, (1, 64, 64))).astype(np.float32)
    equalized = apply_clahe(flat)
    assert equalized.shape == flat.shape and equalized.min() >= 0 and equalized.max() <= 1
    assert equalized.std() > 2 * flat.std()


def test_random_augment():
    images = torch.linspace(-1, 1, 2 * 1 * 8 * 8).reshape(2, 1, 8, 8)
    assert torch.equal(random_augment(images, torch.Generator().manual_seed(0)), images)  # flips off by default
    batch = images.repeat(16, 1, 1, 1)
    flipped = random_augment(batch, torch.Generator().manual_seed(0), hflip=True)
    is_flipped = [torch.equal(f, b.flip(-1)) for f, b in zip(flipped, batch)]
    assert 0 < sum(is_flipped) < len(batch)
    again = random_augment(batch, torch.Generator().manual_seed(0), hflip=True)
    assert torch.equal(flipped, again)
    moved = random_augment(batch, torch.Generator().manual_seed(1), max_rotation=10, max_translation=0.1)
    assert moved.shape == batch.shape and moved.min() >= -1 - 1e-5 and moved.max() <= 1 + 1e-5
    assert not torch.equal(moved, batch)
    with pytest.raises(ValueError, match="max_translation"):
        random_augment(batch, max_translation=1.5)
