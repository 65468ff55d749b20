"""Sample grids: one row per label (or prompt), titled, saved as PNG."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

TITLE_WIDTH = 96


def image_grid(rows: list[tuple[str, np.ndarray]], pad: int = 2) -> Image.Image:
    """`rows`: (title, images `(N, H, W, C)` in [0, 1]). Returns a grayscale grid with the titles on the left."""
    height, width = rows[0][1].shape[1:3]
    columns = max(len(images) for _, images in rows)
    grid = Image.new("L", (TITLE_WIDTH + columns * (width + pad), len(rows) * (height + pad)), color=0)
    draw = ImageDraw.Draw(grid)
    for r, (title, images) in enumerate(rows):
        top = r * (height + pad)
        draw.text((4, top + height // 2 - 5), title[:15], fill=255)
        for c, image in enumerate(images):
            tile = (np.clip(image.mean(axis=-1), 0, 1) * 255).round().astype(np.uint8)
            grid.paste(Image.fromarray(tile, mode="L"), (TITLE_WIDTH + c * (width + pad), top))
    return grid


def save_sample_grid(rows: list[tuple[str, np.ndarray]], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image_grid(rows).save(path)
    return path
