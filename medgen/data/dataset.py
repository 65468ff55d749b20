"""`build_dataset(cfg)`: a `datasets.Dataset` of preprocessed tensors."""

from __future__ import annotations

from medgen.data.config import DataConfig


class MedicalImageDataset:
    pass


def build_dataset(cfg: DataConfig) -> MedicalImageDataset:
    raise NotImplementedError
