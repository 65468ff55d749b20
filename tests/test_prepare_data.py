"""The compact data cache: `medgen prepare-data` in several processes, uint8/uint16 pixels, reuse by training,
streaming without a cache, DataLoader workers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from medgen.cli import main as cli
from medgen.config import load_config
from medgen.data import DataConfig, build_dataset
from medgen.data import dataset as dataset_module
from medgen.data.dataset import split_for_process
from medgen.data.readers import read_medmnist
from medgen.data.transforms import preprocess
from medgen.train import main as train

REPO_ROOT = Path(__file__).resolve().parent.parent
TINY = REPO_ROOT / "train_configs" / "tiny.yaml"


def tiny_run(npz: Path, output_dir: Path, cache: Path, *extra: str) -> list[str]:
    return [
        f"data.path={npz}", "data.max_samples=48", "data.resolution=16", f"data.cache_dir={cache}",
        f"output_dir={output_dir}", "max_train_steps=3", "train_batch_size=8", "checkpointing_steps=3",
        "sample_every_steps=0", "num_sample_images=2", "log_every_steps=1", "report_to=none", *extra,
    ]


def stored_pixels(built) -> list[bytes]:
    """The bytes the cache holds per image (no read transform)."""
    return list(built.dataset.with_format(None)["pixel_values"])


def write_folder(folder: Path, count: int = 6, bits: int = 8) -> Path:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for index in range(count):
        if bits == 8:
            Image.fromarray(rng.integers(0, 256, (20, 24), dtype=np.uint8)).save(folder / f"img{index}.png")
        else:
            Image.fromarray(rng.integers(0, 65536, (20, 24), dtype=np.uint16)).save(folder / f"img{index}.png")
    return folder


def test_cache_holds_uint8_pixels_about_h_times_w_bytes_and_reads_as_before(pneumoniamnist_npz, tmp_path):
    cfg = DataConfig(source="medmnist", path=str(pneumoniamnist_npz), resolution=32, max_samples=64,
                     cache_dir=str(tmp_path / "cache"))  # fmt: skip
    built = build_dataset(cfg)
    assert {len(value) for value in stored_pixels(built)} == {32 * 32}  # one byte per pixel
    files = [Path(item["filename"]) for item in built.dataset.cache_files]
    bytes_per_image = sum(path.stat().st_size for path in files) / len(built)
    assert 32 * 32 <= bytes_per_image < 1.5 * 32 * 32  # float32 took 4x
    # read through the transform: float tensors in [-1, 1], within one grey level of the float pipeline
    pixels = built.dataset["pixel_values"][:]
    assert pixels.dtype == torch.float32 and pixels.shape == (64, 1, 32, 32)
    images = read_medmnist(str(pneumoniamnist_npz), "train")[0][:64]
    expected = np.stack([preprocess(image, resolution=32, value_range=(0.0, 255.0)) for image in images])
    assert np.abs(pixels.numpy() - expected).max() <= 1.0 / 255 + 1e-6


def test_sixteen_bit_sources_are_stored_as_uint16(tmp_path):
    folder = write_folder(tmp_path / "png16", count=2, bits=16)
    built = build_dataset(DataConfig(source="folder", path=str(folder), resolution=8, cache_dir=str(tmp_path / "c")))
    assert {len(value) for value in stored_pixels(built)} == {2 * 8 * 8}
    values = np.unique(built.dataset["pixel_values"][:].numpy())
    assert len(values) > 64 and values.min() >= -1.0 and values.max() <= 1.0


def test_second_build_and_training_reuse_the_prepared_cache(pneumoniamnist_npz, tmp_path, monkeypatch, capsys):
    calls = []
    decode = dataset_module.preprocess_unit
    monkeypatch.setattr(dataset_module, "preprocess_unit", lambda *a, **k: calls.append(1) or decode(*a, **k))
    overrides = tiny_run(pneumoniamnist_npz, tmp_path / "run", tmp_path / "cache")
    assert cli(["prepare-data", "--config", str(TINY), "--num-proc", "1", *overrides]) == 0
    printed = capsys.readouterr().out
    assert "48 images of 1x16x16" in printed and "images per label (single-label): normal:" in printed
    assert len(calls) == 48
    again = build_dataset(load_config(TINY, overrides).data)
    assert len(again) == 48 and len(calls) == 48  # nothing decoded again
    train(load_config(TINY, [*overrides, "data.hflip=true"]))  # hflip is read-time: same cache
    assert len(calls) == 48
    assert (tmp_path / "run" / "model_index.json").exists()


def test_prepare_data_with_two_processes_stores_what_one_process_stores(tmp_path):
    folder = write_folder(tmp_path / "images", count=7)
    (folder / "broken.png").write_bytes(b"not a png")
    config = tmp_path / "folder.yaml"
    config.write_text(
        f"data: {{source: folder, path: {folder}, resolution: 8}}\nmodel: {{kind: unconditional}}\n"
        f"output_dir: {tmp_path / 'out'}\n"
    )
    built = {}
    for num_proc in (1, 2):
        cache = tmp_path / f"cache{num_proc}"
        assert cli(["prepare-data", "--config", str(config), "--num-proc", str(num_proc), "--cache-dir", str(cache)]) == 0
        built[num_proc] = build_dataset(DataConfig(source="folder", path=str(folder), resolution=8, cache_dir=str(cache)))
    assert stored_pixels(built[1]) == stored_pixels(built[2]) and len(built[2]) == 7
    assert list(built[1].dataset["source"]) == list(built[2].dataset["source"])
    # what a decoding process left out is still known, also when the cache is reused
    assert [Path(path).name for path, _ in built[2].skipped] == ["broken.png"]
    assert built[2].skipped == built[1].skipped and built[2].skipped[0][1].startswith("unreadable file")


def test_prepare_data_bad_input_is_one_line_error(tmp_path, capsys):
    assert cli(["prepare-data", "--config", str(TINY), "data.streaming=maybe"]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("medgen prepare-data: error:") and "streaming" in error and "\n" not in error
    assert cli(["prepare-data", "--config", str(TINY), "--num-proc", "0"]) == 2
    assert "--num-proc must be at least 1" in capsys.readouterr().err
    assert cli(["prepare-data", "--config", str(TINY), "data.streaming=true"]) == 2
    assert "never cached" in capsys.readouterr().err


def test_streaming_reads_without_a_cache_and_trains(pneumoniamnist_npz, tmp_path):
    cache = tmp_path / "cache"
    overrides = tiny_run(pneumoniamnist_npz, tmp_path / "run", cache, "data.streaming=true")
    data = build_dataset(load_config(TINY, overrides).data)
    from datasets import IterableDataset

    assert isinstance(data.dataset, IterableDataset) and len(data) == 48
    rows = list(data.dataset)
    assert len(rows) == 48 and rows[0]["pixel_values"].shape == (1, 16, 16)
    assert -1.0 <= min(float(row["pixel_values"].min()) for row in rows) < max(float(row["pixel_values"].max()) for row in rows) <= 1.0
    halves = [{row["source"] for row in split_for_process(data, rank, 2)} for rank in (0, 1)]
    assert not halves[0] & halves[1] and len(halves[0] | halves[1]) == 48
    assert not cache.exists()  # nothing cached
    train(load_config(TINY, overrides))
    assert (tmp_path / "run" / "model_index.json").exists()


def test_dataloader_workers_read_the_cache(pneumoniamnist_npz, tmp_path):
    overrides = tiny_run(pneumoniamnist_npz, tmp_path / "run", tmp_path / "cache", "dataloader_num_workers=2")
    train(load_config(TINY, overrides))
    assert (tmp_path / "run" / "model_index.json").exists()
