"""Training recipe options: rectified flow, scale-shift conditioning, constant LR with warm-up, and their validation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from diffusers import DiffusionPipeline, DPMSolverMultistepScheduler, FlowMatchEulerDiscreteScheduler

from medgen.config import DiffusionConfig, ModelConfig, OptimConfig, load_config
from medgen.pipelines import LabelConditionedPipeline, load_pipeline
from medgen.train import main
from medgen.training.diffusion import RectifiedFlowObjective, build_objective, build_sampler
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
