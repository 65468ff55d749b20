"""Medical image data: readers (PNG/JPEG/TIFF, DICOM, MedMNIST npz), transforms, labels, datasets."""

from __future__ import annotations

from medgen.data.config import DataConfig
from medgen.data.dataset import MedicalImageDataset, build_dataset
from medgen.data.readers import read_dicom, read_image

__all__ = ["DataConfig", "MedicalImageDataset", "build_dataset", "read_dicom", "read_image"]
