"""The autoencoder's patch-adversarial loss, its checkpoints and exact resume, and 4-channel latents end to end."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from medgen.config import VAEConfig, load_config
from medgen.train import main
from medgen.training import checkpoints
from medgen.training.vae import (
    adversarial_active,
    adversarial_criterion,
    autoencoder_loss_and_reconstruction,
    build_autoencoder,
    build_discriminator,
    discriminator_loss,
    load_initial_autoencoder,
)

REPO_ROOT = Path(__file__).resolve().parent.parent
VAE_CONFIG = REPO_ROOT / "train_configs" / "vae_pneumoniamnist.yaml"


def tiny_vae_overrides(npz: Path, output_dir: Path, steps: int = 4) -> list[str]:
    return [
        f"data.path={npz}", "data.resolution=16", "data.max_samples=40", f"data.cache_dir={output_dir.parent / 'cache'}",
        f"output_dir={output_dir}", "vae.block_out_channels=[8, 16]", f"vae.max_train_steps={steps}",
        "vae.train_batch_size=8", "vae.learning_rate=3e-3", "vae.scaling_images=16", "vae.holdout_fraction=0.1",
        "vae.adversarial_weight=0.5", "vae.discriminator_start_step=2", "vae.discriminator_layers=2",
        "vae.discriminator_channels=8", "checkpointing_steps=2", "log_every_steps=1", "report_to=none",
    ]


@pytest.mark.parametrize(
    "override, match",
    [
        ("vae.adversarial_weigth=0.1", "vae.adversarial_weight"),  # a typo names the closest field
        ("vae.adversarial_weight=-0.1", "vae.adversarial_weight must be >= 0"),
        ("vae.adversarial_loss=wasserstein", "vae.adversarial_loss must be one of"),
        ("vae.discriminator_learning_rate=0", "vae.discriminator_learning_rate must be > 0"),
        ("vae.discriminator_channels=0", "vae.discriminator_channels must be >= 1"),
        ("vae.discriminator_layers=0", "vae.discriminator_layers must be >= 1"),
        ("vae.discriminator_start_step=-1", "vae.discriminator_start_step must be >= 0"),
        ("vae.discriminator_start_step=1500", "would never switch on"),
        ("vae.discriminator_layers=x", "discriminator_layers"),
    ],
)
def test_bad_adversarial_settings_are_config_errors(override, match):
    with pytest.raises(ValueError, match=match):
        load_config(VAE_CONFIG, ["vae.adversarial_weight=0.1", override])


def test_crops_too_small_for_the_discriminator_are_a_config_error():
    with pytest.raises(ValueError, match="vae.crop_size 16 is too small.*at least 32 px"):
        load_config(REPO_ROOT / "train_configs" / "autoencoder_128.yaml", ["vae.adversarial_weight=0.1", "vae.crop_size=16"])


def test_images_too_small_for_the_discriminator_are_refused_before_training(pneumoniamnist_npz, tmp_path):
    config = load_config(VAE_CONFIG, [*tiny_vae_overrides(pneumoniamnist_npz, tmp_path / "run"), "vae.discriminator_layers=3"])
    with pytest.raises(ValueError, match="16 px images.*discriminator_layers 3.*at least 32 px"):
        main(config)
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_adversarial_losses_train_each_network_against_the_other():
    config = VAEConfig(block_out_channels=[8, 16], adversarial_weight=0.5, discriminator_layers=2, discriminator_channels=8)
    torch.manual_seed(0)
    vae, discriminator, criterion = build_autoencoder(config, 1, 16), build_discriminator(config, 1), adversarial_criterion(config)
    pixels = torch.rand(4, 1, 16, 16) * 2 - 1

    loss, parts, reconstruction = autoencoder_loss_and_reconstruction(vae, pixels, config, None, discriminator, criterion)
    plain, plain_parts, _ = autoencoder_loss_and_reconstruction(vae, pixels, config)
    assert "generator_adversarial" in parts and "generator_adversarial" not in plain_parts
    loss.backward()
    assert all(p.grad is not None for p in vae.parameters() if p.requires_grad)

    discriminator.zero_grad(set_to_none=True)
    vae.zero_grad(set_to_none=True)
    d_loss = discriminator_loss(discriminator, pixels, reconstruction, criterion)
    d_loss.backward()
    assert d_loss.item() > 0
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in discriminator.parameters())
    assert all(p.grad is None for p in vae.parameters())  # the discriminator's loss never trains the autoencoder


@pytest.mark.parametrize("step, active", [(0, False), (1, False), (2, True), (3, True)])
def test_adversarial_loss_is_on_only_from_the_start_step(step, active):
    config = VAEConfig(adversarial_weight=0.5, discriminator_start_step=2)
    assert adversarial_active(config, step) is active
    assert adversarial_active(VAEConfig(adversarial_weight=0.0), step) is False


@pytest.fixture(scope="module")
def adversarial_run(pneumoniamnist_npz, tmp_path_factory):
    """A 4-step adversarial autoencoder run (warm-up 2 steps) with checkpoints at steps 2 and 4, and its logs."""
    from accelerate import Accelerator

    output_dir = tmp_path_factory.mktemp("adversarial") / "run"
    logged: dict[int, dict] = {}
    original = Accelerator.log
    Accelerator.log = lambda self, values, step=None, **kw: logged.setdefault(step, {}).update(values)
    try:
        main(load_config(VAE_CONFIG, tiny_vae_overrides(pneumoniamnist_npz, output_dir)))
    finally:
        Accelerator.log = original
    return output_dir, logged


def test_adversarial_terms_are_logged_only_after_the_warm_up(adversarial_run):
    _, logged = adversarial_run
    assert sorted(logged) == [1, 2, 3, 4]
    for step in (1, 2):
        assert "autoencoder/generator_adversarial" not in logged[step] and "autoencoder/discriminator" not in logged[step]
    for step in (3, 4):
        assert logged[step]["autoencoder/generator_adversarial"] > 0 and logged[step]["autoencoder/discriminator"] > 0
    assert all("autoencoder/reconstruction" in values for values in logged.values())


def test_discriminator_is_checkpointed_but_never_saved_with_the_autoencoder(adversarial_run):
    output_dir, _ = adversarial_run
    saved = [path.name for path in checkpoints.list_checkpoints(output_dir)]
    assert saved == ["checkpoint-2", "checkpoint-4"]
    final = output_dir / "checkpoints" / "checkpoint-4"
    assert checkpoints.read_state(final)["stage"] == "autoencoder"
    discriminator = load_file(final / "model_1.safetensors")
    warm = load_file(output_dir / "checkpoints" / "checkpoint-2" / "model_1.safetensors")
    # never run during the warm-up (steps 1-2: its batch-norm statistics are still the initial ones), trained after it
    assert any(key.endswith("running_mean") for key in warm)
    assert all(torch.all(warm[key] == 0) for key in warm if key.endswith("running_mean"))
    assert all(torch.all(warm[key] == 1) for key in warm if key.endswith("running_var"))
    assert any(not torch.equal(discriminator[key], warm[key]) for key in discriminator)
    autoencoder = load_file(output_dir / "diffusion_pytorch_model.safetensors")
    assert not any("discriminator" in key or key.startswith("model.") for key in autoencoder)
    assert json.loads((output_dir / "reconstruction_metrics.json").read_text())["adversarial_weight"] == 0.5


def test_an_interrupted_adversarial_run_resumes_exactly(adversarial_run, pneumoniamnist_npz, tmp_path):
    full_dir, _ = adversarial_run
    # the run as it stood when stopped right after its step-2 checkpoint
    resumed_dir = tmp_path / "run"
    shutil.copytree(full_dir / "checkpoints" / "checkpoint-2", resumed_dir / "checkpoints" / "checkpoint-2")
    main(load_config(VAE_CONFIG, tiny_vae_overrides(pneumoniamnist_npz, resumed_dir)), resume_from_checkpoint="latest")

    for name in ("model.safetensors", "model_1.safetensors"):  # the autoencoder and the discriminator
        expected = load_file(full_dir / "checkpoints" / "checkpoint-4" / name)
        actual = load_file(resumed_dir / "checkpoints" / "checkpoint-4" / name)
        assert expected.keys() == actual.keys()
        assert all(torch.equal(expected[key], actual[key]) for key in expected), name
    expected = load_file(full_dir / "diffusion_pytorch_model.safetensors")
    actual = load_file(resumed_dir / "diffusion_pytorch_model.safetensors")
    assert all(torch.equal(expected[key], actual[key]) for key in expected)
    metrics = json.loads((resumed_dir / "reconstruction_metrics.json").read_text())
    assert metrics["resumed_from_step"] == 2 and metrics["train_steps"] == 4


def test_resuming_with_other_autoencoder_settings_is_refused(adversarial_run, pneumoniamnist_npz, tmp_path):
    full_dir, _ = adversarial_run
    resumed_dir = tmp_path / "run"
    shutil.copytree(full_dir / "checkpoints" / "checkpoint-2", resumed_dir / "checkpoints" / "checkpoint-2")
    config = load_config(VAE_CONFIG, [*tiny_vae_overrides(pneumoniamnist_npz, resumed_dir), "vae.adversarial_weight=0.1"])
    with pytest.raises(ValueError, match=r"checkpoint-2 was written by an autoencoder run with other settings \(vae.adversarial_weight\)"):
        main(config, resume_from_checkpoint="latest")
    assert (resumed_dir / "checkpoints" / "checkpoint-2" / "model_1.safetensors").is_file()  # nothing lost


def test_a_four_channel_autoencoder_drives_latent_label_training_and_sampling(adversarial_run, pneumoniamnist_npz, tmp_path):
    """The adversarially trained 4-channel autoencoder as `model.pretrained_vae` of a latent label model: the UNet
    takes its channel count from the autoencoder, latents are cached, and the saved pipeline samples."""
    from medgen.pipelines import load_pipeline

    vae_dir, _ = adversarial_run
    output_dir = tmp_path / "label"
    main(load_config(REPO_ROOT / "train_configs" / "tiny.yaml", [
        f"data.path={pneumoniamnist_npz}", "data.max_samples=32", "data.resolution=16",
        f"data.cache_dir={tmp_path / 'cache'}", f"model.pretrained_vae={vae_dir}", "model.block_out_channels=[8, 16]",
        "model.norm_num_groups=8", f"output_dir={output_dir}", "max_train_steps=2", "train_batch_size=16",
        "checkpointing_steps=2", "report_to=none", "diffusion.num_inference_steps=2", "num_sample_images=1",
    ]))
    assert len(list((tmp_path / "cache" / "medgen-latents").glob("*.safetensors"))) == 1
    pipe = load_pipeline(output_dir)
    assert pipe.vae.config.latent_channels == 4 and pipe.unet.config.in_channels == 4
    pipe.set_progress_bar_config(disable=True)
    images = pipe(labels="pneumonia", num_inference_steps=2, output_type="np", generator=torch.manual_seed(0)).images
    assert images.shape == (1, 16, 16, 1) and (images >= 0).all() and (images <= 1).all()


def test_every_autoencoder_benchmark_variant_is_a_valid_config_with_one_change():
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_autoencoder", REPO_ROOT / "benchmarks" / "bench_autoencoder.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    shipped = load_config(bench.CONFIG)
    table = bench.variants(300, bench.ADVERSARIAL_WEIGHT)
    assert set(bench.DEFAULT_VARIANTS) <= set(table) and table["l1_ssim_c8"][1] == []
    for name, (_, overrides) in table.items():
        config = load_config(bench.CONFIG, [*overrides, "vae.max_train_steps=300"])
        assert config.data == shipped.data and config.extra_data == shipped.extra_data, name
        if "adversarial" in name:
            assert config.vae.adversarial_weight == 0.01 and config.vae.discriminator_start_step == 100
        assert config.vae.latent_channels == (4 if name.endswith("_c4") else 8)
        if name.startswith("continue"):  # the shipped autoencoder fits the config it continues under
            assert config.vae.init_from == str(bench.SHIPPED)
            load_initial_autoencoder(build_autoencoder(config.vae, config.data.channels, config.data.resolution), config.vae.init_from)
    c4 = load_config(REPO_ROOT / "train_configs" / "autoencoder_128_c4.yaml")
    assert c4.vae.latent_channels == 4 and c4.data == shipped.data and c4.extra_data == shipped.extra_data
    assert {**c4.vae.__dict__, "latent_channels": 8} == shipped.vae.__dict__  # only the channel count differs


def _init_from_overrides(npz: Path, output_dir: Path, source: Path) -> list[str]:
    return [*tiny_vae_overrides(npz, output_dir, steps=1), "vae.adversarial_weight=0", f"vae.init_from={source}"]


def test_an_autoencoder_run_can_start_from_a_trained_autoencoder(adversarial_run, pneumoniamnist_npz, tmp_path):
    source, _ = adversarial_run
    trained = load_file(source / "diffusion_pytorch_model.safetensors")
    # at a vanishing rate one step leaves the starting weights as they were: the run began from them, not from noise
    continued = tmp_path / "continued"
    main(load_config(VAE_CONFIG, [*_init_from_overrides(pneumoniamnist_npz, continued, source), "vae.learning_rate=1e-12"]))
    weights = load_file(continued / "diffusion_pytorch_model.safetensors")
    assert weights.keys() == trained.keys()
    assert all(torch.allclose(weights[key], trained[key], atol=1e-6) for key in trained)
    fresh = tmp_path / "fresh"
    main(load_config(VAE_CONFIG, [*tiny_vae_overrides(pneumoniamnist_npz, fresh, steps=1), "vae.adversarial_weight=0",
                                  "vae.learning_rate=1e-12"]))
    fresh_weights = load_file(fresh / "diffusion_pytorch_model.safetensors")
    assert not all(torch.allclose(fresh_weights[key], trained[key], atol=1e-6) for key in trained)


def test_starting_from_an_autoencoder_of_another_architecture_is_refused_naming_it(adversarial_run, pneumoniamnist_npz, tmp_path):
    source, _ = adversarial_run
    output_dir = tmp_path / "run"
    config = load_config(VAE_CONFIG, [*_init_from_overrides(pneumoniamnist_npz, output_dir, source), "vae.block_out_channels=[8, 8]"])
    with pytest.raises(ValueError, match=r"vae.init_from .*block_out_channels \[8, 16\] \(config: \[8, 8\]\)"):
        main(config)
    assert not (output_dir / "diffusion_pytorch_model.safetensors").exists()
    with pytest.raises(ValueError, match="vae.init_from 'no-such-autoencoder'.*No autoencoder"):
        main(load_config(VAE_CONFIG, _init_from_overrides(pneumoniamnist_npz, tmp_path / "other", Path("no-such-autoencoder"))))


def test_a_decoder_only_run_keeps_the_latent_space_latent_models_were_trained_on(adversarial_run, pneumoniamnist_npz, tmp_path):
    source, _ = adversarial_run
    trained = load_file(source / "diffusion_pytorch_model.safetensors")
    output_dir = tmp_path / "decoder"
    main(load_config(VAE_CONFIG, [*_init_from_overrides(pneumoniamnist_npz, output_dir, source), "vae.train_decoder_only=true"]))
    weights = load_file(output_dir / "diffusion_pytorch_model.safetensors")
    encoder = [key for key in trained if key.startswith(("encoder.", "quant_conv."))]
    decoder = [key for key in trained if key.startswith("decoder.")]
    assert encoder and decoder
    assert all(torch.equal(weights[key], trained[key]) for key in encoder)
    assert not all(torch.equal(weights[key], trained[key]) for key in decoder)
    scaling = [json.loads((folder / "config.json").read_text())["scaling_factor"] for folder in (source, output_dir)]
    assert scaling[0] == scaling[1]


@pytest.mark.parametrize("state_records_it", [True, False], ids=["checkpoint-records-it", "older-checkpoint"])
def test_a_resumed_decoder_only_run_keeps_the_starting_scaling_factor(
    adversarial_run, pneumoniamnist_npz, tmp_path, state_records_it
):
    # a decoder-only run stopped after its step-2 checkpoint and resumed must still save the latent scale its
    # starting autoencoder's latent models were trained at, not the default of a freshly built autoencoder
    source, _ = adversarial_run
    expected = json.loads((source / "config.json").read_text())["scaling_factor"]
    overrides = [*_init_from_overrides(pneumoniamnist_npz, tmp_path / "full", source), "vae.train_decoder_only=true",
                 "vae.max_train_steps=4"]
    main(load_config(VAE_CONFIG, overrides))
    stopped = tmp_path / "full" / "checkpoints" / "checkpoint-2"
    assert checkpoints.read_state(stopped)["scaling_factor"] == pytest.approx(expected)
    resumed_dir = tmp_path / "resumed"
    shutil.copytree(stopped, resumed_dir / "checkpoints" / "checkpoint-2")
    if not state_records_it:  # written before checkpoints recorded it: taken from vae.init_from
        state_file = resumed_dir / "checkpoints" / "checkpoint-2" / checkpoints.STATE_FILE
        state = json.loads(state_file.read_text())
        del state["scaling_factor"]
        state_file.write_text(json.dumps(state))
    resumed = [*_init_from_overrides(pneumoniamnist_npz, resumed_dir, source), "vae.train_decoder_only=true",
               "vae.max_train_steps=4"]
    main(load_config(VAE_CONFIG, resumed), resume_from_checkpoint="latest")
    assert expected != pytest.approx(build_autoencoder(VAEConfig()).config.scaling_factor)
    assert json.loads((resumed_dir / "config.json").read_text())["scaling_factor"] == pytest.approx(expected)
    assert json.loads((resumed_dir / "reconstruction_metrics.json").read_text())["resumed_from_step"] == 2


def test_a_decoder_only_run_needs_a_trained_encoder_to_keep():
    with pytest.raises(ValueError, match="vae.train_decoder_only .*set vae.init_from"):
        load_config(VAE_CONFIG, ["vae.train_decoder_only=true"])
