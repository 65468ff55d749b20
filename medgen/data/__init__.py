"""Medical image data: readers (PNG/JPEG/TIFF, DICOM, MedMNIST npz), transforms, labels, datasets."""

from __future__ import annotations

from medgen.data.config import DataConfig
from medgen.data.dataset import MedicalImageDataset, build_dataset, split_for_process
from medgen.data.readers import read_dicom, read_image
from medgen.data.summary import format_data_summary, summarize_dataset, write_data_summary

__all__ = [
    "DataConfig",
    "MedicalImageDataset",
    "build_dataset",
    "format_data_summary",
    "read_dicom",
    "read_image",
    "split_for_process",
    "summarize_dataset",
    "write_data_summary",
]
