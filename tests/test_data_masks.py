"""Image + mask data: the `mask_column`, identical geometry for image and mask, errors naming the row, and the
held-out split stratified by label and source."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import SHARED_DATA
from medgen.data import DataConfig, build_dataset
from medgen.data.transforms import mask_to_indices, random_augment, resize_mask


def _write_pairs(folder: Path, sizes: list[tuple[int, int]], mask_sizes=None, labels=None) -> Path:
    """Images whose pixels are 255 exactly where their mask is set (a bright off-centre rectangle)."""
    (folder / "images").mkdir(parents=True)
    (folder / "masks").mkdir()
    rows = ["file_name,mask_file_name,label"]
    for index, (height, width) in enumerate(sizes):
        mask = np.zeros((height, width), dtype=np.uint8)
        mask[height // 5 : height // 2, width // 8 : width // 2 + 3] = 255
        image = mask.copy()
        image[0, 0] = 40  # not constant, so min-max scaling keeps 255 -> 1
        Image.fromarray(image).save(folder / "images" / f"{index}.png")
        mask_height, mask_width = (mask_sizes or {}).get(index, (height, width))
        mask = np.array(Image.fromarray(mask).resize((mask_width, mask_height), Image.Resampling.NEAREST))
        Image.fromarray(mask).save(folder / "masks" / f"{index}.png")
        label = (labels or ["a", "b"])[index % len(labels or ["a", "b"])]
        rows.append(f"images/{index}.png,masks/{index}.png,{label}")
    (folder / "metadata.csv").write_text("\n".join(rows) + "\n")
    return folder


def _config(folder: Path, **overrides) -> DataConfig:
    values = dict(
        source="csv", path=str(folder), findings_column="label", resolution=16, mask_column="mask_file_name",
        cache_dir=str(folder / "cache"), normalization="range",
    )
    values.update(overrides)
    return DataConfig(**values)


@pytest.mark.parametrize("resize_mode", ["crop", "pad"])
def test_mask_goes_through_the_image_geometry(tmp_path, resize_mode):
    folder = _write_pairs(tmp_path / "pairs", [(40, 64), (64, 30), (32, 32)])
    data = build_dataset(_config(folder, resize_mode=resize_mode))
    assert data.mask_names == ["foreground"]
    rows = data.dataset[:]
    assert rows["mask"].shape == (3, 1, 16, 16) and rows["mask"].dtype == torch.int64
    assert set(rows["mask"].unique().tolist()) == {0, 1}
    bright = rows["pixel_values"] > 0.0  # the image is 1 exactly inside its rectangle
    agreement = (bright == rows["mask"].bool()).float().mean(dim=(1, 2, 3))
    assert torch.all(agreement >= 0.95), agreement  # only bilinear edge pixels may differ


def test_resize_mask_uses_the_crop_and_pad_offsets_of_resize_image():
    from medgen.data.transforms import resize_image

    mask = np.zeros((30, 60), dtype=np.uint8)
    mask[:, 40:] = 1
    for mode in ("crop", "pad"):
        resized = resize_mask(mask, 12, mode)
        image = resize_image(mask[None].astype(np.float32), 12, mode)[0]
        assert resized.dtype == np.uint8 and set(np.unique(resized)) <= {0, 1}
        assert np.mean((image > 0.5) == (resized == 1)) >= 0.95


def test_mask_values_class_indices_and_8_bit_convention():
    np.testing.assert_array_equal(mask_to_indices(np.array([[0, 255], [128, 3]]), 1), [[0, 1], [1, 0]])
    np.testing.assert_array_equal(mask_to_indices(np.array([[0, 1], [2, 0]]), 2), [[0, 1], [2, 0]])
    np.testing.assert_array_equal(mask_to_indices(np.array([[0, 127], [255, 0]]), 2), [[0, 1], [2, 0]])
    with pytest.raises(ValueError, match="neither class indices"):
        mask_to_indices(np.array([[0, 7]]), 2)


def test_random_augment_moves_image_and_mask_together():
    mask = torch.zeros(4, 1, 32, 32, dtype=torch.long)
    mask[:, :, 8:20, 4:18] = 1
    images = mask.float() * 2 - 1
    generator = torch.Generator().manual_seed(0)
    moved, moved_mask = random_augment(
        images, generator, hflip=True, max_rotation=15, max_translation=0.1, masks=mask
    )
    assert moved_mask.dtype == torch.long and set(moved_mask.unique().tolist()) <= {0, 1}
    assert not torch.equal(moved_mask, mask)
    agreement = ((moved > 0) == moved_mask.bool()).float().mean()
    assert agreement >= 0.97
    plain = random_augment(images, torch.Generator().manual_seed(0), hflip=True, max_rotation=15, max_translation=0.1)
    torch.testing.assert_close(plain, moved)  # same draws with or without masks


def test_mask_of_another_size_is_an_error_naming_the_row(tmp_path):
    folder = _write_pairs(tmp_path / "pairs", [(32, 32), (32, 32)], mask_sizes={1: (30, 32)})
    with pytest.raises(ValueError, match=r"masks/1.png is 32x30 \(width x height\) but its image .*images/1.png is 32x32 \(listed in metadata.csv row 3\)"):
        build_dataset(_config(folder))


def test_missing_mask_is_skipped_with_its_row_or_an_error(tmp_path):
    folder = _write_pairs(tmp_path / "pairs", [(32, 32)] * 3)
    (folder / "masks" / "1.png").unlink()
    data = build_dataset(_config(folder))
    assert len(data) == 2
    assert any("missing mask" in reason and "row 3" in reason for _, reason in data.skipped)
    with pytest.raises(FileNotFoundError, match=r"mask.*row.* 3 \(.*masks/1.png\)"):
        build_dataset(_config(folder, bad_files="error"))


def test_blank_mask_cell_and_unreadable_mask(tmp_path):
    folder = _write_pairs(tmp_path / "pairs", [(32, 32)] * 3)
    csv = folder / "metadata.csv"
    csv.write_text(csv.read_text().replace("images/0.png,masks/0.png", "images/0.png,"))
    (folder / "masks" / "2.png").write_bytes(b"garbage")
    data = build_dataset(_config(folder))
    assert len(data) == 1
    reasons = " | ".join(reason for _, reason in data.skipped)
    assert "'mask_file_name' is empty in metadata.csv row 2" in reasons
    assert "unreadable mask" in reasons and "row 4" in reasons
    with pytest.raises((FileNotFoundError, ValueError), match="row"):
        build_dataset(_config(folder, bad_files="error"))


def test_mask_values_that_are_no_class_are_an_error_naming_the_row(tmp_path):
    folder = _write_pairs(tmp_path / "pairs", [(32, 32)] * 2)
    Image.fromarray(np.full((32, 32), 7, dtype=np.uint8)).save(folder / "masks" / "0.png")
    with pytest.raises(ValueError, match=r"masks/0.png .*row 2.*neither class indices"):
        build_dataset(_config(folder, mask_classes=["left", "right"]))


def test_config_errors_name_the_option(tmp_path):
    with pytest.raises(ValueError, match="mask_column"):
        DataConfig(source="csv", path=str(tmp_path), mask_classes=["lung"])
    with pytest.raises(ValueError, match="holdout_fraction"):
        DataConfig(source="csv", path=str(tmp_path), stratify_columns=["source"])
    with pytest.raises(ValueError, match="mask_column"):
        DataConfig(source="medmnist", path=str(tmp_path), mask_column="mask_file_name")
    folder = _write_pairs(tmp_path / "pairs", [(32, 32)])
    with pytest.raises(ValueError, match="mask_column: column.*'masks'"):
        build_dataset(_config(folder, mask_column="masks"))


def test_without_masks_rows_and_cache_key_are_unchanged(tmp_path):
    from medgen.data import dataset as dataset_module

    folder = _write_pairs(tmp_path / "pairs", [(32, 32)] * 2)
    data = build_dataset(_config(folder, mask_column=None))
    assert "mask" not in data.dataset.column_names and data.mask_names == []
    config = _config(folder, mask_column=None).to_dict()
    for name in dataset_module.KEY_ONLY_WHEN_SET:
        assert not config[name]  # so the key is computed from the same fields as before masks existed


def test_lung_holdout_is_seeded_20_percent_per_label_and_source():
    folder = SHARED_DATA / "lung-cxr-masks"
    if not folder.exists():
        pytest.skip(f"real data not found at {folder}")
    import pandas as pd

    from medgen.data.tables import derive_split, read_table

    frame = read_table(folder / "metadata.csv")
    split = derive_split(frame, "file_name", "label", 0.2, "random", 0, extra_columns=["source"])
    again = derive_split(frame, "file_name", "label", 0.2, "random", 0, extra_columns=["source"])
    pd.testing.assert_series_equal(split["split"], again["split"])
    for (_, _), group in split.groupby(["label", "source"]):
        assert abs((group["split"] == "test").sum() - round(len(group) * 0.2)) == 0
    other_seed = derive_split(frame, "file_name", "label", 0.2, "random", 1, extra_columns=["source"])
    assert not other_seed["split"].equals(split["split"])
