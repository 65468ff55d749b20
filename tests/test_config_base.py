"""A training config may start from another (`base: other.yaml`) and list only what differs."""

from __future__ import annotations

from pathlib import Path

import pytest

from medgen.config import load_config

REPO_ROOT = Path(__file__).resolve().parent.parent
CONFIGS = REPO_ROOT / "train_configs"
TINY = CONFIGS / "tiny.yaml"


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_a_config_with_a_base_equals_the_base_with_its_keys_changed(tmp_path):
    child = write(tmp_path / "child.yaml", f"base: {TINY}\noptim:\n  learning_rate: 3.0e-4\ndata:\n  resolution: 16\n")

    config = load_config(child)

    assert config == load_config(TINY, ["optim.learning_rate=3.0e-4", "data.resolution=16"])
    assert config.optim.lr_scheduler == load_config(TINY).optim.lr_scheduler  # the rest of the section is kept


def test_a_base_is_found_beside_the_config_not_in_the_working_directory(tmp_path, monkeypatch):
    (tmp_path / "configs").mkdir()
    write(tmp_path / "configs" / "parent.yaml", TINY.read_text())
    child = write(tmp_path / "configs" / "child.yaml", "base: parent.yaml\nmax_train_steps: 7\n")
    monkeypatch.chdir(tmp_path)

    assert load_config("configs/child.yaml").max_train_steps == 7
    assert load_config(child) == load_config(TINY, ["max_train_steps=7"])


def test_a_list_in_the_config_replaces_the_base_list(tmp_path):
    shared = load_config(CONFIGS / "autoencoder_128.yaml")
    child = write(tmp_path / "one_set.yaml", f"base: {CONFIGS / 'autoencoder_128.yaml'}\nextra_data: []\n")

    assert len(shared.extra_data) == 3
    assert load_config(child).extra_data == []
    assert load_config(child).vae == shared.vae


def test_bases_chain_and_the_nearest_value_wins(tmp_path):
    write(tmp_path / "a.yaml", f"base: {TINY}\nmax_train_steps: 5\nseed: 1\n")
    write(tmp_path / "b.yaml", "base: a.yaml\nmax_train_steps: 9\n")

    config = load_config(tmp_path / "b.yaml", ["seed=3"])

    assert (config.max_train_steps, config.seed) == (9, 3)  # b over a, the command line over both


def test_the_decoder_configs_train_the_shared_autoencoder_on_one_set(tmp_path):
    shared = load_config(CONFIGS / "autoencoder_128.yaml")
    for name, path in (("decoder_chest_xray_128", "kermany-cxr-224"), ("decoder_brain_mri_128", "brain-tumor-mri")):
        decoder = load_config(CONFIGS / f"{name}.yaml")
        assert decoder.extra_data == [] and decoder.data.path.endswith(path), name
        assert decoder.vae.train_decoder_only and decoder.vae.learning_rate == pytest.approx(1e-4), name
        for field in ("latent_channels", "block_out_channels", "layers_per_block", "norm_num_groups", "crop_size"):
            assert getattr(decoder.vae, field) == getattr(shared.vae, field), (name, field)


def test_a_missing_base_names_the_config_that_asked_for_it(tmp_path):
    child = write(tmp_path / "child.yaml", "base: nowhere.yaml\n")

    with pytest.raises(FileNotFoundError, match=r"nowhere\.yaml.*the base of .*child\.yaml"):
        load_config(child)


def test_bases_that_loop_are_an_error_naming_the_loop(tmp_path):
    write(tmp_path / "a.yaml", "base: b.yaml\n")
    write(tmp_path / "b.yaml", "base: a.yaml\n")

    with pytest.raises(ValueError, match=r"loop: .*a\.yaml -> .*b\.yaml -> .*a\.yaml"):
        load_config(tmp_path / "a.yaml")


@pytest.mark.parametrize("value", ["[a.yaml]", "3", "''"])
def test_a_base_that_is_not_a_file_name_is_an_error(tmp_path, value):
    child = write(tmp_path / "child.yaml", f"base: {value}\n")

    with pytest.raises(ValueError, match=r"child\.yaml: base must name a config file"):
        load_config(child)


def test_a_typo_in_a_config_with_a_base_still_suggests_the_key(tmp_path):
    child = write(tmp_path / "child.yaml", f"base: {TINY}\noptim:\n  learnig_rate: 1.0e-4\n")

    with pytest.raises(ValueError, match=r"child\.yaml.*optim\.learnig_rate.*learning_rate"):
        load_config(child)
