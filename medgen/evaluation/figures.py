"""Report figures drawn with Pillow and numpy (no plotting library needed): grids, pairs, histograms."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

TILE = 96
BACKGROUND = (255, 255, 255)
REAL_COLOUR = (31, 119, 180)
GENERATED_COLOUR = (214, 39, 40)


def _to_pil(image: np.ndarray, side: int = TILE) -> Image.Image:
    """`(C, H, W)` [0, 1] -> RGB tile, nearest-neighbour upscaled so that small images stay legible."""
    array = (np.clip(image, 0, 1) * 255).round().astype(np.uint8)
    pil = Image.fromarray(array[0]) if array.shape[0] == 1 else Image.fromarray(np.transpose(array, (1, 2, 0)))
    return pil.convert("RGB").resize((side, side), Image.NEAREST)


def _text(draw: ImageDraw.ImageDraw, xy: tuple[int, int], text: str, fill=(0, 0, 0)) -> None:
    draw.text(xy, text, fill=fill)


def image_grid(images: np.ndarray, path: str | Path, columns: int = 8, title: str = "") -> Path:
    """Saves up to `columns * 4` images as a grid PNG with an optional title line."""
    images = images[: columns * 4]
    rows = max(1, int(np.ceil(len(images) / columns)))
    header = 16 if title else 0
    canvas = Image.new("RGB", (columns * (TILE + 2) + 2, rows * (TILE + 2) + 2 + header), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    if title:
        _text(draw, (4, 2), title)
    for index, image in enumerate(images):
        row, column = divmod(index, columns)
        canvas.paste(_to_pil(image), (2 + column * (TILE + 2), header + 2 + row * (TILE + 2)))
    canvas.save(path)
    return Path(path)


def nearest_pairs(
    generated: np.ndarray, train: np.ndarray, distances: np.ndarray, train_index: np.ndarray, path: str | Path, count: int = 8
) -> Path:
    """The `count` generated images closest to a training image, each above its nearest training image."""
    order = np.argsort(distances)[:count]
    canvas = Image.new("RGB", (len(order) * (TILE + 4) + 4, 2 * (TILE + 4) + 36), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    _text(draw, (4, 2), "top: generated   bottom: nearest training image   (distance)")
    for column, index in enumerate(order):
        x = 4 + column * (TILE + 4)
        canvas.paste(_to_pil(generated[index]), (x, 16))
        canvas.paste(_to_pil(train[train_index[index]]), (x, 20 + TILE))
        _text(draw, (x, 22 + 2 * TILE), f"{distances[index]:.3g}")
    canvas.save(path)
    return Path(path)


def histogram_plot(
    real: np.ndarray, generated: np.ndarray, path: str | Path, title: str = "intensity histogram", width: int = 512, height: int = 220
) -> Path:
    """Two normalised histograms (same bins) drawn as step lines: real in blue, generated in red."""
    margin_left, margin_bottom, margin_top = 40, 24, 20
    canvas = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    _text(draw, (margin_left, 4), title)
    _text(draw, (width - 150, 4), "real", fill=REAL_COLOUR)
    _text(draw, (width - 100, 4), "generated", fill=GENERATED_COLOUR)
    plot_width, plot_height = width - margin_left - 10, height - margin_bottom - margin_top
    top = float(max(real.max(), generated.max(), 1e-12))
    draw.line([(margin_left, margin_top), (margin_left, margin_top + plot_height), (margin_left + plot_width, margin_top + plot_height)], fill=(0, 0, 0))
    _text(draw, (margin_left - 4, margin_top + plot_height + 4), "0")
    _text(draw, (margin_left + plot_width - 6, margin_top + plot_height + 4), "1")
    _text(draw, (2, margin_top), f"{top:.2f}")
    for values, colour in ((real, REAL_COLOUR), (generated, GENERATED_COLOUR)):
        step = plot_width / len(values)
        points = []
        for index, value in enumerate(values):
            y = margin_top + plot_height - value / top * plot_height
            points += [(margin_left + index * step, y), (margin_left + (index + 1) * step, y)]
        draw.line(points, fill=colour, width=2)
    canvas.save(path)
    return Path(path)
