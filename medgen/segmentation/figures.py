"""Image grids with mask outlines: reference (green) and predicted (red) masks over the images."""

from __future__ import annotations

from pathlib import Path

import numpy as np

REFERENCE_COLOUR = (0.1, 0.9, 0.1)
PREDICTED_COLOUR = (0.95, 0.1, 0.1)


def outline(mask: np.ndarray) -> np.ndarray:
    """The boundary pixels of a binary mask `(H, W)`: set pixels with an unset 4-neighbour (or on the border)."""
    mask = np.asarray(mask, dtype=bool)
    padded = np.pad(mask, 1, mode="constant")
    inner = padded[1:-1, 1:-1] & padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    return mask & ~inner


def overlay_grid(
    images: np.ndarray,
    reference: np.ndarray,
    predicted: np.ndarray | None,
    path: str | Path,
    columns: int = 8,
) -> Path:
    """Writes a PNG grid of images `(N, C, H, W)` in [0, 1] with every class's reference outline (green) and,
    when given, the predicted outline (red) drawn over it."""
    from PIL import Image

    from medgen.files import atomic_write

    if not len(images):
        raise ValueError("no images to draw")
    tiles = []
    for index, image in enumerate(images):
        rgb = np.repeat(image[:1].transpose(1, 2, 0), 3, axis=2) if image.shape[0] != 3 else image.transpose(1, 2, 0).copy()
        for k in range(reference.shape[1]):
            rgb[outline(reference[index, k])] = REFERENCE_COLOUR
            if predicted is not None:
                rgb[outline(predicted[index, k])] = PREDICTED_COLOUR
        tiles.append(rgb)
    columns = min(columns, len(tiles))
    blank = np.ones_like(tiles[0])
    tiles += [blank] * (-len(tiles) % columns)
    rows = [np.concatenate(tiles[i : i + columns], axis=1) for i in range(0, len(tiles), columns)]
    path = Path(path)
    with atomic_write(path, "wb") as file:
        Image.fromarray((np.clip(np.concatenate(rows), 0, 1) * 255).round().astype(np.uint8)).save(file, format="PNG")
    return path
