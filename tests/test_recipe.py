"""Training recipe options: rectified flow, EDM preconditioning, scale-shift conditioning, constant LR with warm-up,
and their validation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import (
    DiffusionPipeline,
    DPMSolverMultistepScheduler,
    EDMDPMSolverMultistepScheduler,
    EDMEulerScheduler,
    FlowMatchEulerDiscreteScheduler,
)

from medgen.config import DiffusionConfig, ModelConfig, OptimConfig, load_config
from medgen.pipelines import LabelConditionedPipeline, load_pipeline
from medgen.train import main
from medgen.training.diffusion import EDMObjective, RectifiedFlowObjective, build_objective, build_sampler
from medgen.training.tasks import build_task

REPO_ROOT = Path(__file__).resolve().parent.parent
TINY = REPO_ROOT / "train_configs" / "tiny.yaml"


def tiny_overrides(npz: Path, output_dir: Path, steps: int = 3) -> list[str]:
    return [
        f"data.path={npz}", "data.max_samples=48", "data.resolution=16", f"data.cache_dir={output_dir.parent / 'cache'}",
        f"output_dir={output_dir}", f"max_train_steps={steps}", "train_batch_size=16", "checkpointing_steps=3",
        "sample_every_steps=0", "num_sample_images=1", "log_every_steps=1", "report_to=none",
        "diffusion.num_inference_steps=3",
    ]


def test_rectified_flow_trains_and_its_saved_pipeline_samples_with_a_stock_scheduler(pneumoniamnist_npz, tmp_path):
    output_dir = tmp_path / "flow"
    config = load_config(TINY, [*tiny_overrides(pneumoniamnist_npz, output_dir), "diffusion.objective=rectified_flow"])
    main(config)

    scheduler_config = json.loads((output_dir / "scheduler" / "scheduler_config.json").read_text())
    assert scheduler_config["_class_name"] == "DPMSolverMultistepScheduler"
    assert scheduler_config["use_flow_sigmas"] is True and scheduler_config["prediction_type"] == "flow_prediction"
    assert "rectified flow" in (output_dir / "README.md").read_text()

    # round trip: medgen's loader and stock diffusers with the folder's own pipeline.py
    pipe = load_pipeline(output_dir)
    assert isinstance(pipe, LabelConditionedPipeline)
    assert isinstance(pipe.scheduler, DPMSolverMultistepScheduler) and pipe.scheduler.config.use_flow_sigmas
    first = pipe(labels=["normal", "pneumonia"], num_inference_steps=3, output_type="np",
                 generator=torch.Generator().manual_seed(0)).images
    stock = DiffusionPipeline.from_pretrained(output_dir, trust_remote_code=True, use_safetensors=True)
    second = stock(labels=["normal", "pneumonia"], num_inference_steps=3, output_type="np",
                   generator=torch.Generator().manual_seed(0)).images
    assert first.shape == (2, 16, 16, 1) and torch.isfinite(torch.from_numpy(first)).all()
    assert (first == second).all()


def test_flow_sampler_integrates_the_velocity_the_objective_trains():
    """A model that outputs the exact velocity of a fixed x0 must land on x0 with the saved sampler."""
    config = DiffusionConfig(objective="rectified_flow")
    objective = build_objective(config)
    assert isinstance(objective, RectifiedFlowObjective)
    assert isinstance(objective.scheduler, FlowMatchEulerDiscreteScheduler)
    clean = torch.full((1, 1, 4, 4), 0.7)
    noise = torch.randn(1, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    timesteps = objective.sample_timesteps(64, "cpu", torch.Generator().manual_seed(0))
    assert ((timesteps > 0) & (timesteps < config.num_train_timesteps)).all()
    # the training target is what the velocity is: x_t = x0 + t (noise - x0)
    noisy = objective.add_noise(clean, noise, timesteps[:1])
    sigma = timesteps[0] / config.num_train_timesteps
    assert torch.allclose(noisy, clean + sigma * (noise - clean), atol=1e-6)
    assert objective.loss(noise - clean, clean, noise, timesteps[:1]).item() == pytest.approx(0.0, abs=1e-10)

    sampler = build_sampler(objective.scheduler, "dpm")
    sampler.set_timesteps(8)
    sample = noise * sampler.init_noise_sigma
    for t in sampler.timesteps:
        sample = sampler.step(noise - clean, t, sampler.scale_model_input(sample, t)).prev_sample
    # the flow samplers start at sigma 0.999, not 1: a residual of 0.001 * (noise - x0)
    assert torch.allclose(sample, clean, atol=1e-2)
    assert not torch.allclose(noise, clean, atol=0.1)  # the check is not vacuous


def edm_oracle(x0: torch.Tensor, sigma_data: float):
    """The UNet output F that makes EDM's denoiser D = c_skip x + c_out F return `x0` exactly, computed from what the
    UNet is given (c_in x and c_noise = ln(sigma) / 4) with the formulas of Karras et al. (2022), Table 1."""

    def output(model_input: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        sigma = torch.exp(4 * torch.as_tensor(timestep, dtype=torch.float32)).reshape(-1, 1, 1, 1)
        x = model_input * (sigma**2 + sigma_data**2).sqrt()
        c_skip = sigma_data**2 / (sigma**2 + sigma_data**2)
        c_out = sigma * sigma_data / (sigma**2 + sigma_data**2).sqrt()
        return (x0 - c_skip * x) / c_out

    return output


def test_edm_training_preconditioning_is_what_the_saved_sampler_applies():
    """For the same sigma, the UNet input and timestep the objective trains on are those the sampler passes, and the
    denoised estimate the loss scores is the one the sampler steps with."""
    from helpers import tiny_label_unet

    config = DiffusionConfig(objective="edm")
    objective = build_objective(config)
    assert isinstance(objective, EDMObjective) and isinstance(objective.scheduler, EDMEulerScheduler)
    unet = tiny_label_unet(2).eval()
    labels = torch.nn.functional.one_hot(torch.tensor([0]), 3).float()
    clean = torch.randn(1, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    noise = torch.randn(1, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    for sampler in (build_sampler(objective.scheduler, "dpm"), EDMEulerScheduler.from_config(objective.scheduler.config)):
        for index in (0, 3, 5):  # sigma 80 (pure noise) down to sigma_min 0.002
            sampler.set_timesteps(6)
            t, sigma = sampler.timesteps[index], sampler.sigmas[index]
            sample = clean + sigma * noise
            model_input = sampler.scale_model_input(sample, t)  # also sets the sampler's step index from t
            timesteps = t.reshape(1)
            assert torch.allclose(objective.sigmas(timesteps).flatten(), sigma.reshape(1), rtol=1e-5)
            assert torch.allclose(objective.add_noise(clean, noise, timesteps), model_input, rtol=1e-5, atol=1e-6)
            with torch.no_grad():
                output = unet(model_input, t, encoder_hidden_states=None, class_labels=labels).sample
            if isinstance(sampler, EDMEulerScheduler):
                stepped = sampler.step(output, t, sample).pred_original_sample
            else:
                stepped = sampler.convert_model_output(output, sample=sample)
            denoised = objective.denoised(output, clean, noise, timesteps)
            assert torch.allclose(denoised, stepped, rtol=1e-4, atol=1e-4)


def test_edm_loss_is_the_weighted_denoiser_loss_and_its_optimum_samples_back_the_data():
    config = DiffusionConfig(objective="edm", edm_sigma_data=0.5)
    objective = build_objective(config)
    timesteps = objective.sample_timesteps(4096, "cpu", torch.Generator().manual_seed(0))
    log_sigma = torch.log(objective.sigmas(timesteps).flatten())
    assert log_sigma.mean().item() == pytest.approx(config.edm_p_mean, abs=0.05)
    assert log_sigma.std().item() == pytest.approx(config.edm_p_std, abs=0.05)

    clean = torch.randn(4, 2, 4, 4, generator=torch.Generator().manual_seed(1)) * 0.5
    noise = torch.randn(4, 2, 4, 4, generator=torch.Generator().manual_seed(2))
    timesteps = timesteps[:4]
    prediction = torch.randn(4, 2, 4, 4, generator=torch.Generator().manual_seed(3))
    # EDM: lambda(sigma) ||D(x) - x0||^2 with lambda = (sigma^2 + sigma_data^2) / (sigma sigma_data)^2 = 1 / c_out^2
    sigma, sigma_data = objective.sigmas(timesteps), 0.5
    x = clean + sigma * noise
    c_skip = sigma_data**2 / (sigma**2 + sigma_data**2)
    c_out = sigma * sigma_data / (sigma**2 + sigma_data**2).sqrt()
    weight = (sigma**2 + sigma_data**2) / (sigma * sigma_data) ** 2
    expected = (weight * (c_skip * x + c_out * prediction - clean) ** 2).mean()
    assert objective.loss(prediction, clean, noise, timesteps).item() == pytest.approx(expected.item(), rel=1e-5)
    # ... which is plain MSE on the network's output against its effective target
    target = (clean - c_skip * x) / c_out
    assert expected.item() == pytest.approx(((prediction - target) ** 2).mean().item(), rel=1e-4)

    oracle = edm_oracle(clean, sigma_data)
    model_input = objective.add_noise(clean, noise, timesteps)
    assert objective.loss(oracle(model_input, timesteps), clean, noise, timesteps).item() == pytest.approx(0, abs=1e-8)
    sampler = build_sampler(objective.scheduler, "dpm")
    assert isinstance(sampler, EDMDPMSolverMultistepScheduler) and sampler.config.sigma_data == 0.5
    sampler.set_timesteps(8)
    sample = noise * sampler.init_noise_sigma
    for t in sampler.timesteps:
        sample = sampler.step(oracle(sampler.scale_model_input(sample, t), t), t, sample).prev_sample
    assert torch.allclose(sample, clean, atol=1e-3)


@pytest.mark.parametrize("kind", ["unconditional", "label", "latent_label", "text", "mask"])
def test_every_pipeline_loop_samples_an_edm_model_correctly(kind):
    """Each pipeline's loop (init_noise_sigma, scale_model_input, the scheduler's timesteps, step) with the saved EDM
    sampler and a UNet answering the exact EDM output for a known x0 ends on x0: the loop feeds the UNet what EDM
    training feeds it."""
    import helpers
    import mask_helpers

    if kind == "unconditional":
        pipe, call = helpers.tiny_unconditional_pipeline(), {"batch_size": 2}
    elif kind in ("label", "latent_label"):
        pipe = helpers.tiny_label_pipeline(latent=kind == "latent_label")
        call = {"labels": ["normal", "pneumonia"], "guidance_scale": 2.0}
    elif kind == "text":
        pipe, call = helpers.tiny_text_pipeline(), {"prompt": "small left pleural effusion", "num_images_per_prompt": 2}
    else:
        pipe = mask_helpers.tiny_mask_pipeline(mask_generator=False)
        call = {"masks": [mask_helpers.square_mask()] * 2, "labels": ["normal", "tuberculosis"], "guidance_scale": 2.0}
    config = DiffusionConfig(objective="edm")
    pipe.scheduler = build_sampler(build_objective(config).scheduler, config.sampler)
    unet = pipe.unet
    channels = unet.config.out_channels
    size = unet.config.sample_size
    x0 = torch.linspace(-0.8, 0.8, channels * size * size).reshape(1, channels, size, size)
    oracle = edm_oracle(x0, config.edm_sigma_data)
    seen = []

    def answer(module, args, kwargs, output):
        model_input, timestep = args[0], args[1] if len(args) > 1 else kwargs["timestep"]
        seen.append(float(torch.as_tensor(timestep).flatten()[0]))
        return type(output)(sample=oracle(model_input[:, :channels], timestep))

    unet.register_forward_hook(answer, with_kwargs=True)
    latents = pipe(**call, num_inference_steps=6, output_type="latent", generator=torch.Generator().manual_seed(0))
    latents = latents.images if hasattr(latents, "images") else latents[0]
    assert torch.isfinite(latents).all()
    assert torch.allclose(latents.float(), x0.expand_as(latents), atol=1e-3)
    assert seen == pytest.approx(pipe.scheduler.timesteps.tolist(), abs=1e-6)  # c_noise = ln(sigma) / 4, sigma 80 first


def test_edm_trains_and_its_saved_pipeline_samples_with_a_stock_scheduler(pneumoniamnist_npz, tmp_path):
    output_dir = tmp_path / "edm"
    config = load_config(TINY, [*tiny_overrides(pneumoniamnist_npz, output_dir), "diffusion.objective=edm"])
    main(config)

    scheduler_config = json.loads((output_dir / "scheduler" / "scheduler_config.json").read_text())
    assert scheduler_config["_class_name"] == "EDMDPMSolverMultistepScheduler"
    assert scheduler_config["sigma_data"] == config.diffusion.edm_sigma_data
    assert "EDM" in (output_dir / "README.md").read_text()

    pipe = load_pipeline(output_dir)
    assert isinstance(pipe, LabelConditionedPipeline) and isinstance(pipe.scheduler, EDMDPMSolverMultistepScheduler)
    first = pipe(labels=["normal", "pneumonia"], num_inference_steps=3, output_type="np",
                 generator=torch.Generator().manual_seed(0)).images
    stock = DiffusionPipeline.from_pretrained(output_dir, trust_remote_code=True, use_safetensors=True)
    assert isinstance(stock.scheduler, EDMDPMSolverMultistepScheduler)
    second = stock(labels=["normal", "pneumonia"], num_inference_steps=3, output_type="np",
                   generator=torch.Generator().manual_seed(0)).images
    assert first.shape == (2, 16, 16, 1) and torch.isfinite(torch.from_numpy(first)).all()
    assert (first == second).all()


def test_choosing_a_sampler_in_the_app_or_generate_keeps_an_edm_model_in_its_edm_form():
    """The app's sampler menu and `medgen generate --scheduler` rebuild the scheduler from the saved config; for an
    EDM model a plain DPM-Solver++ would read it as a DDPM model (timesteps 999..0, unit initial noise) and
    silently give wrong images."""
    import helpers
    from medgen.app.streaming import pipeline_with_sampler
    from medgen.commands.generate import _set_scheduler

    pipe = helpers.tiny_label_pipeline()
    config = DiffusionConfig(objective="edm", edm_sigma_data=0.5)
    pipe.scheduler = build_sampler(build_objective(config).scheduler, config.sampler)
    chosen = pipeline_with_sampler(pipe, "DPM-Solver++ (fast)").scheduler
    assert isinstance(chosen, EDMDPMSolverMultistepScheduler) and chosen.config.sigma_data == 0.5
    assert chosen is not pipe.scheduler  # a fresh one per run, as for every model
    with pytest.raises(ValueError, match="DDIMScheduler cannot sample this model.*EDM"):
        pipeline_with_sampler(pipe, "DDIM")
    assert _set_scheduler(pipe, "dpm") == "EDMDPMSolverMultistepScheduler"
    with pytest.raises(ValueError, match="UniPCMultistepScheduler cannot sample this model"):
        _set_scheduler(pipe, "unipc")
    # a DDPM-form model gets the class asked for, as before
    plain = helpers.tiny_label_pipeline()
    assert type(pipeline_with_sampler(plain, "DDIM").scheduler).__name__ == "DDIMScheduler"
    assert _set_scheduler(plain, "unipc") == "UniPCMultistepScheduler"


def test_default_objective_draws_the_same_timesteps_as_before():
    """The diffusion objective keeps the loop's random draws, so existing runs resume bit for bit."""
    objective = build_objective(DiffusionConfig())
    drawn = objective.sample_timesteps(5, "cpu", torch.Generator().manual_seed(3))
    assert torch.equal(drawn, torch.randint(0, 1000, (5,), generator=torch.Generator().manual_seed(3)))


def test_scale_shift_conditioning_reaches_the_unet():
    config = load_config(TINY, ["model.resnet_time_scale_shift=scale_shift"])
    unet = build_task(config, ["normal", "pneumonia"], multi_label=False).unet
    assert unet.config.resnet_time_scale_shift == "scale_shift"
    # the ResNet blocks project the embedding to a scale and a shift: twice the channels of an additive one
    resnet = unet.down_blocks[0].resnets[0]
    assert resnet.time_emb_proj.out_features == 2 * resnet.conv1.out_channels
    default = build_task(load_config(TINY), ["normal", "pneumonia"], multi_label=False).unet
    assert default.config.resnet_time_scale_shift == "default"


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: DiffusionConfig(objective="edm_flow"), "diffusion.objective"),
        (lambda: DiffusionConfig(objective="rectified_flow", sampler="ddim"), "diffusion.sampler 'ddim'"),
        (lambda: DiffusionConfig(flow_shift=0.0), "diffusion.flow_shift"),
        (lambda: DiffusionConfig(objective="edm", sampler="unipc"), "diffusion.sampler 'unipc' has no EDM form"),
        (lambda: DiffusionConfig(objective="edm", sampler="ddim"), "diffusion.sampler 'ddim' has no EDM form"),
        (lambda: DiffusionConfig(edm_sigma_data=0.0), "diffusion.edm_sigma_data"),
        (lambda: DiffusionConfig(edm_p_std=-1.0), "diffusion.edm_p_std"),
        (lambda: DiffusionConfig(edm_p_mean=float("nan")), "diffusion.edm_p_mean"),
        (lambda: DiffusionConfig(guidance_scale=-1.0), "diffusion.guidance_scale"),
        (lambda: ModelConfig(resnet_time_scale_shift="film"), "model.resnet_time_scale_shift"),
        (lambda: OptimConfig(lr_scheduler="constant_warmup"), "optim.lr_scheduler"),
    ],
)
def test_bad_recipe_values_are_errors_naming_the_field(build, message):
    with pytest.raises(ValueError, match=message.replace(".", r"\.")):
        build()


def test_a_config_typo_in_a_recipe_field_is_refused():
    with pytest.raises(ValueError, match="diffusion.objective"):
        load_config(TINY, ["diffusion.objective=flow"])


def test_constant_learning_rate_with_warmup_holds_after_the_warmup():
    from medgen.training.optim import build_lr_scheduler, build_optimizer

    config = load_config(TINY, ["optim.lr_scheduler=constant_with_warmup", "optim.lr_warmup_steps=4",
                                "optim.learning_rate=1e-3", "max_train_steps=20"])
    optimizer = build_optimizer([torch.nn.Parameter(torch.zeros(1))], config.optim)
    scheduler = build_lr_scheduler(optimizer, config, steps_per_epoch=5, num_processes=1)
    rates = []
    for _ in range(20):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert rates[0] < rates[3] < 1e-3
    assert all(rate == pytest.approx(1e-3) for rate in rates[4:])


# ---------------------------------------------------------------- benchmarks/bench_recipe.py


@pytest.fixture(scope="module")
def bench_recipe():
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location("bench_recipe", REPO_ROOT / "benchmarks" / "bench_recipe.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


def test_every_recipe_variant_is_a_valid_config_and_a_stage(bench_recipe):
    for name, overrides in bench_recipe.VARIANTS.items():
        config = load_config(bench_recipe.BASE_CONFIG, overrides)  # a typo in an override fails here, not hours in
        if name == "edm":
            assert config.diffusion.objective == "edm" and config.diffusion.sampler == "dpm"
        if name == "ema_long":
            assert config.ema.power > load_config(bench_recipe.BASE_CONFIG).ema.power
    stages = bench_recipe.stage_order()
    assert set(bench_recipe.VARIANTS) <= set(stages)
    # the new variants come after the stages already run, so an existing results folder keeps its order
    assert stages[-3:] == ["edm", "ema_long", "batch_64"]


def test_the_batch_variant_sees_the_same_images_as_the_others(bench_recipe):
    assert bench_recipe.variant_budget("baseline", 100, 32, 10) == (100, 32, 10)
    steps, batch, warmup = bench_recipe.variant_budget("batch_64", 100, 32, 10)
    assert (steps, batch, warmup) == (50, 64, 5) and steps * batch == 100 * 32
    with pytest.raises(ValueError, match="batch_64.*--steps 101"):
        bench_recipe.variant_budget("batch_64", 101, 32, 10)


def test_the_report_reads_results_written_before_the_batch_size_was_recorded(bench_recipe, tmp_path):
    import argparse

    stat = {"fid": 60.0, "precision": 0.8, "recall": 0.7}
    (tmp_path / "references.json").write_text(json.dumps({"n": 128, "label_names": ["a", "b"], "floor": stat,
                                                          "ceiling": {**stat, "fid": 90.0}}))
    old = {"variant": "baseline", "change": "today's recipe", "guidance_scale": 2.0, "parameters": 2.4e6, "fid": 480.0,
           "precision": 0.0, "recall": 0.0, "training": {"loop_seconds": 600, "steps": 100, "images_seen": 3200}}
    new = {**old, "variant": "batch_64", "change": "train_batch_size=64 for 50 steps (same images seen)",
           "training": {"loop_seconds": 500, "steps": 50, "batch_size": 64, "images_seen": 3200}}
    for result in (old, new):
        (tmp_path / f"{result['variant']}.json").write_text(json.dumps(result))
    args = argparse.Namespace(steps=100, batch_size=32, warmup=10, inference_steps=15, curve_factors=[2, 4],
                              autoencoder=bench_recipe.AUTOENCODER)
    bench_recipe.write_report(tmp_path, args)
    assert json.loads((tmp_path / "recipe.json").read_text())["args"]["autoencoder"] == str(bench_recipe.AUTOENCODER)
    table = (tmp_path / "recipe.md").read_text()
    assert "| baseline | today's recipe (guidance 2) | 2.4 M | 100 x 32 | 3200 |" in table
    assert "| batch_64 | train_batch_size=64 for 50 steps (same images seen) | 2.4 M | 50 x 64 | 3200 |" in table
    assert "batch_64: 50 x 64" in table.splitlines()[0]


def test_one_output_folder_is_scored_against_one_autoencoder(bench_recipe, tmp_path):
    # the ceiling and every variant's latents come from the autoencoder; mixing two in one table would compare
    # models trained on different latents against a ceiling that belongs to neither
    stat = {"fid": 60.0, "precision": 0.8, "recall": 0.7}
    (tmp_path / "references.json").write_text(json.dumps({"n": 4, "autoencoder": str(tmp_path / "vae_c4"),
                                                          "floor": stat, "ceiling": stat}))
    np.savez(tmp_path / "references.npz", test_features=np.zeros((4, 2)), test_labels=np.zeros(4))
    refs = bench_recipe.references(tmp_path, 4, None, tmp_path / "vae_c4")
    assert refs["ceiling"] == stat and refs["test_features"].shape == (4, 2)
    with pytest.raises(SystemExit, match="vae_c4.*not .*vae_c8.*another --output"):
        bench_recipe.references(tmp_path, 4, None, tmp_path / "vae_c8")
