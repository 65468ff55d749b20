"""Sample grids: one row per label (or prompt), titled, saved as PNG; a mask pipeline's pairs with the mask outlined."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

TITLE_WIDTH = 96
LINE_HEIGHT = 11  # PIL's default bitmap font is about 10 px tall


def title_lines(draw: ImageDraw.ImageDraw, title: str, max_lines: int) -> list[str]:
    """`title` wrapped at word boundaries to the title column (a word too long for a line is cut to fit), at most
    `max_lines` lines; a title that needs more ends its last line with "..."."""
    width = TITLE_WIDTH - 8
    lines: list[str] = []
    for word in title.split():
        candidate = f"{lines[-1]} {word}" if lines else word
        if lines and draw.textlength(candidate) <= width:
            lines[-1] = candidate
            continue
        while draw.textlength(word) > width and len(word) > 1:  # cut to what fits
            word = word[:-1]
        lines.append(word)
    if len(lines) > max_lines:
        last = lines[max_lines - 1]
        while last and draw.textlength(last + "...") > width:
            last = last[:-1]
        lines = [*lines[:max_lines - 1], last.rstrip() + "..."]
    return lines


def image_grid(rows: list[tuple[str, np.ndarray]], pad: int = 2) -> Image.Image:
    """`rows`: (title, images `(N, H, W, C)` in [0, 1]). Returns a grid with the titles on the left: RGB when any
    row holds 3-channel images (a colour model, or outlined masks), else grayscale."""
    height, width = rows[0][1].shape[1:3]
    columns = max(len(images) for _, images in rows)
    mode = "RGB" if any(images.shape[-1] == 3 for _, images in rows) else "L"
    grid = Image.new(mode, (TITLE_WIDTH + columns * (width + pad), len(rows) * (height + pad)), color=0)
    draw = ImageDraw.Draw(grid)
    for r, (title, images) in enumerate(rows):
        top = r * (height + pad)
        lines = title_lines(draw, title, max(1, height // LINE_HEIGHT))
        first = top + (height - len(lines) * LINE_HEIGHT) // 2
        for index, line in enumerate(lines):
            draw.text((4, first + index * LINE_HEIGHT), line, fill=255 if mode == "L" else (255, 255, 255))
        for c, image in enumerate(images):
            pixels = image if mode == "RGB" and image.shape[-1] == 3 else image.mean(axis=-1)
            if mode == "RGB" and pixels.ndim == 2:
                pixels = np.repeat(pixels[..., None], 3, axis=-1)
            tile = (np.clip(pixels, 0, 1) * 255).round().astype(np.uint8)
            grid.paste(Image.fromarray(tile, mode=mode), (TITLE_WIDTH + c * (width + pad), top))
    return grid


def overlay(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """A grayscale image `(H, W)` in [0, 1] as RGB uint8 with the outline of every mask class in colour."""
    from skimage.segmentation import find_boundaries

    colours = np.array([[255, 64, 64], [64, 255, 64], [64, 160, 255], [255, 220, 0]], dtype=np.uint8)
    rgb = np.repeat((np.clip(image, 0, 1) * 255).astype(np.uint8)[..., None], 3, axis=-1)
    for value in np.unique(mask):
        if value == 0:
            continue
        edge = find_boundaries(mask == value, mode="inner")
        rgb[edge] = colours[(int(value) - 1) % len(colours)]
    return rgb


def outlined_pairs(images: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Generated grayscale images `(N, H, W, 1)` in [0, 1] with their masks `(N, H, W)` outlined: `(N, H, W, 3)` in
    [0, 1], rows for `image_grid`."""
    return np.stack([overlay(image[..., 0], mask) for image, mask in zip(images, masks)]) / 255.0


def save_sample_grid(rows: list[tuple[str, np.ndarray]], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image_grid(rows).save(path)
    return path
