"""Image readers: `read_x(path) -> (array, meta)`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def read_image(path: str | Path, **options: Any) -> tuple[np.ndarray, dict[str, Any]]:
    raise NotImplementedError


def read_dicom(path: str | Path, window: tuple[float, float] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
    raise NotImplementedError
