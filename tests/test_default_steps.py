"""A label model's own sampler and step count: stored with the model (`medgen models ship --scheduler
--num-inference-steps`), used by a call that gives none (medgen's loader and stock diffusers alike), by generate,
evaluate and the app, and recorded with what they made."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from medgen.cli import main as cli
from medgen.pipelines import load_pipeline
from medgen.pipelines.catalog import describe, ship
from medgen.sampling import DEFAULT_INFERENCE_STEPS, effective_inference_steps, sampler_text
from helpers import tiny_label_pipeline


def _unet_calls(pipe, **kwargs) -> int:
    calls = []
    handle = pipe.unet.register_forward_pre_hook(lambda module, args: calls.append(1))
    try:
        pipe(labels=["pneumonia"], generator=torch.Generator().manual_seed(0), output_type="np", **kwargs)
    finally:
        handle.remove()
    return len(calls)


def test_a_stored_step_count_is_used_by_a_call_that_gives_none_and_a_given_one_wins(tmp_path):
    folder = tmp_path / "pipe"
    tiny_label_pipeline(default_num_inference_steps=3).save_pretrained(folder)
    assert json.loads((folder / "model_index.json").read_text())["default_num_inference_steps"] == 3
    pipe = load_pipeline(folder)
    assert pipe.default_num_inference_steps == 3
    assert _unet_calls(pipe) == 3 and _unet_calls(pipe, num_inference_steps=5) == 5
    assert effective_inference_steps(pipe) == 3 and effective_inference_steps(pipe, 7) == 7


def test_a_folder_saved_before_the_field_samples_with_the_shared_default(tmp_path):
    folder = tmp_path / "pipe"
    tiny_label_pipeline().save_pretrained(folder)
    index = json.loads((folder / "model_index.json").read_text())
    index.pop("default_num_inference_steps", None)
    (folder / "model_index.json").write_text(json.dumps(index))
    pipe = load_pipeline(folder)
    assert pipe.default_num_inference_steps == DEFAULT_INFERENCE_STEPS
    assert _unet_calls(pipe) == DEFAULT_INFERENCE_STEPS


@pytest.mark.parametrize("bad", [0, -3, 2.5, "10", True, float("nan")])
def test_a_bad_stored_step_count_is_refused_naming_it(bad):
    with pytest.raises(ValueError, match="default_num_inference_steps"):
        tiny_label_pipeline(default_num_inference_steps=bad)


def test_stock_diffusers_samples_with_the_stored_sampler_and_step_count(tmp_path):
    from diffusers import DDPMScheduler

    pipe = tiny_label_pipeline(default_num_inference_steps=3)
    pipe.scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    pipe.save_pretrained(tmp_path / "pipe")
    script = textwrap.dedent(
        """
        import sys
        sys.modules["medgen"] = None  # stock diffusers only
        import torch
        from diffusers import DiffusionPipeline

        pipe = DiffusionPipeline.from_pretrained(sys.argv[1], trust_remote_code=True)
        calls = []
        pipe.unet.register_forward_pre_hook(lambda module, args: calls.append(1))
        pipe.set_progress_bar_config(disable=True)
        pipe(labels="normal", generator=torch.Generator().manual_seed(0), output_type="np")
        print(type(pipe.scheduler).__name__, len(calls))
        """
    )
    result = subprocess.run([sys.executable, "-c", script, str(tmp_path / "pipe")], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["DDPMScheduler", "3"]


def test_ship_stores_the_sampler_and_step_count_and_models_lists_them(tmp_path):
    from medgen.commands.models import _detail_lines

    run = tmp_path / "run"
    tiny_label_pipeline(latent=True).save_pretrained(run)
    (run / "training_config.yaml").write_text("seed: 5\nnum_sample_images: 2\ndiffusion:\n  num_inference_steps: 2\n")
    out = ship(run, "busi", "breast ultrasound", "BUSI", output=tmp_path / "shipped", scheduler="ddpm", num_inference_steps=4)
    index = json.loads((out / "model_index.json").read_text())
    assert index["default_num_inference_steps"] == 4 and index["scheduler"] == ["diffusers", "DDPMScheduler"]
    shipped = load_pipeline(out)
    assert type(shipped.scheduler).__name__ == "DDPMScheduler" and shipped.default_num_inference_steps == 4
    # the noise schedule is the run's own
    assert shipped.scheduler.config.beta_schedule == load_pipeline(run).scheduler.config.beta_schedule
    assert ("sampler", "DDPMScheduler, 4 steps by default") in _detail_lines(describe(out))
    assert "| Default sampler | `DDPMScheduler`, 4 steps |" in (out / "README.md").read_text()
    assert (out / "samples.png").is_file()  # drawn with the shipped sampler


def test_reshipping_a_shipped_folder_in_place_keeps_its_record_and_drops_its_old_evaluation(tmp_path):
    run = tmp_path / "run"
    tiny_label_pipeline(latent=True).save_pretrained(run)
    (run / "training_config.yaml").write_text("seed: 5\nnum_sample_images: 2\ndiffusion:\n  num_inference_steps: 2\n")
    out = ship(run, "busi", "breast ultrasound", "BUSI", output=tmp_path / "shipped")
    (out / "evaluation.json").write_text("{}")  # measured with the old sampler
    weights = sorted(path.read_bytes() for path in out.rglob("*.safetensors"))
    trained_in = json.loads((out / "medgen_model.json").read_text())["trained_in"]
    assert trained_in.endswith("run")
    ship(out, "busi", "breast ultrasound", "BUSI", output=out, overwrite=True, scheduler="ddpm", num_inference_steps=3)
    assert json.loads((out / "medgen_model.json").read_text())["trained_in"] == trained_in  # not the folder itself
    assert json.loads((out / "unet" / "config.json").read_text())["_name_or_path"].endswith("run/unet")
    assert not (out / "evaluation.json").exists()
    assert sorted(path.read_bytes() for path in out.rglob("*.safetensors")) == weights  # same weights
    assert load_pipeline(out).default_num_inference_steps == 3


@pytest.mark.parametrize("bad", [{"scheduler": "euler-x"}, {"num_inference_steps": 0}, {"timestep_spacing": "Trailing"}])
def test_ship_refuses_a_bad_sampler_or_step_count_before_writing(tmp_path, bad):
    run = tmp_path / "run"
    tiny_label_pipeline().save_pretrained(run)
    with pytest.raises(ValueError, match="--scheduler|--num-inference-steps|--timestep-spacing"):
        ship(run, "busi", "breast ultrasound", "BUSI", output=tmp_path / "shipped", **bad)
    assert not (tmp_path / "shipped").exists()


def test_generate_and_evaluate_sample_with_and_record_the_models_own(pneumoniamnist_npz, tmp_path):
    from diffusers import DDPMScheduler

    pipe = tiny_label_pipeline(default_num_inference_steps=3)
    pipe.scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    pipe.save_pretrained(tmp_path / "pipe")
    generate = ["generate", "--pipeline", str(tmp_path / "pipe"), "--labels", "pneumonia", "--count", "1", "--seed", "0",
                "--device", "cpu"]
    assert cli([*generate, "--output", str(tmp_path / "own")]) == 0
    params = json.loads((tmp_path / "own" / "params.json").read_text())
    assert params["num_inference_steps"] == 3 and params["scheduler"] == "DDPMScheduler"
    assert cli([*generate, "--output", str(tmp_path / "two"), "--num-inference-steps", "2"]) == 0
    assert json.loads((tmp_path / "two" / "params.json").read_text())["num_inference_steps"] == 2
    evaluate = ["evaluate", "--pipeline", str(tmp_path / "pipe"), "--data", str(pneumoniamnist_npz), "--num-samples", "4",
                "--feature-extractor", "pixel", "--no-classifier", "--max-real", "50", "--no-cache", "--device", "cpu",
                "--no-progress", "--no-feature-memorization", "--no-frd", "--output", str(tmp_path / "report"),
                "--store-in-pipeline"]
    assert cli(evaluate) == 0
    sampling = json.loads((tmp_path / "report" / "report.json").read_text())["sampling"]
    assert sampling["num_inference_steps"] == 3 and sampling["sampler"] == "DDPMScheduler"
    stored = json.loads((tmp_path / "pipe" / "evaluation.json").read_text())["sampling"]  # what the card and gate read
    assert stored["num_inference_steps"] == 3 and stored["sampler"] == "DDPMScheduler"
    assert "DDPMScheduler, 3 steps" in (tmp_path / "pipe" / "README.md").read_text()


def test_the_app_starts_at_the_models_own_sampler_and_step_count(tmp_path):
    from diffusers import DDPMScheduler

    from medgen.app import DEFAULT_SAMPLER, make_request
    from medgen.app.models import describe_pipeline, describe_pipeline_folder
    from medgen.app.streaming import pipeline_with_sampler

    pipe = tiny_label_pipeline(default_num_inference_steps=3)
    pipe.scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    pipe.save_pretrained(tmp_path / "pipe")
    info = describe_pipeline_folder(tmp_path / "pipe")
    assert (info.sampler, info.default_steps) == ("DDPMScheduler", 3)
    assert (describe_pipeline(pipe).sampler, describe_pipeline(pipe).default_steps) == ("DDPMScheduler", 3)
    request = make_request(info, condition="normal", count=1, seed=0)
    assert request.num_inference_steps == 3 and request.sampler == DEFAULT_SAMPLER
    run_pipe = pipeline_with_sampler(pipe, DEFAULT_SAMPLER)
    assert type(run_pipe.scheduler).__name__ == "DDPMScheduler" and run_pipe.scheduler is not pipe.scheduler
    assert make_request(info, condition="normal", count=1, seed=0, num_inference_steps=7).num_inference_steps == 7


def test_sampler_text_names_a_stochastic_dpm_solver():
    from diffusers import DPMSolverMultistepScheduler

    ode = DPMSolverMultistepScheduler()
    assert sampler_text(ode) == "DPMSolverMultistepScheduler"
    sde = DPMSolverMultistepScheduler.from_config(ode.config, algorithm_type="sde-dpmsolver++")
    assert sampler_text(sde) == "DPMSolverMultistepScheduler (sde-dpmsolver++)"
    assert sampler_text("DDPMScheduler", {}) == "DDPMScheduler"
    assert sampler_text("DDPMScheduler", {"timestep_spacing": "linspace"}) == "DDPMScheduler"
    trailing_sde = DPMSolverMultistepScheduler.from_config(sde.config, timestep_spacing="trailing")
    assert sampler_text(trailing_sde) == "DPMSolverMultistepScheduler (sde-dpmsolver++, trailing timesteps)"


def test_ship_stores_trailing_timesteps_that_every_loader_and_a_sampler_swap_keep(tmp_path):
    from medgen.commands.models import _detail_lines
    from medgen.sampling import SCHEDULERS, replacement_scheduler

    run = tmp_path / "run"
    tiny_label_pipeline().save_pretrained(run)
    cli(["models", "ship", str(run), "--name", "m", "--modality", "chest X-ray", "--training-data", "tiny",
         "--output", str(tmp_path / "shipped"), "--scheduler", "euler-a", "--timestep-spacing", "trailing",
         "--num-inference-steps", "4"])
    out = tmp_path / "shipped"
    assert json.loads((out / "scheduler" / "scheduler_config.json").read_text())["timestep_spacing"] == "trailing"
    pipe = load_pipeline(out)
    pipe.scheduler.set_timesteps(4)
    last = pipe.scheduler.config.num_train_timesteps - 1
    step = (last + 1) // 4
    assert pipe.scheduler.timesteps.tolist() == [last - k * step for k in range(4)]  # back from the last, none at t = 0
    assert ("sampler", "EulerAncestralDiscreteScheduler (trailing timesteps), 4 steps by default") in _detail_lines(describe(out))
    assert "`EulerAncestralDiscreteScheduler (trailing timesteps)`, 4 steps" in (out / "README.md").read_text()
    swapped = replacement_scheduler(pipe.scheduler, SCHEDULERS["ddpm"])  # generate --scheduler, the app's menu
    assert swapped.config.timestep_spacing == "trailing"
    unchanged = ship(run, "m", "chest X-ray", "tiny", output=tmp_path / "plain", scheduler="euler-a")
    plain = load_pipeline(unchanged).scheduler
    plain.set_timesteps(4)
    assert plain.timesteps.tolist()[-1] == 0 and plain.config.timestep_spacing == "linspace"  # the saved spacing kept


def test_timestep_spacing_is_refused_for_a_scheduler_without_it():
    from diffusers import EDMDPMSolverMultistepScheduler
    from medgen.sampling import with_timestep_spacing

    with pytest.raises(ValueError, match="--timestep-spacing: EDMDPMSolverMultistepScheduler"):
        with_timestep_spacing(EDMDPMSolverMultistepScheduler(), "trailing")


def test_a_model_shipped_with_euler_ancestral_samples_reproducibly_from_its_seed(tmp_path):
    run = tmp_path / "run"
    tiny_label_pipeline().save_pretrained(run)
    out = ship(run, "m", "chest X-ray", "tiny", output=tmp_path / "shipped", scheduler="euler-a", num_inference_steps=3)
    pipe = load_pipeline(out)
    assert type(pipe.scheduler).__name__ == "EulerAncestralDiscreteScheduler"

    def images(seed):
        return pipe(labels=["normal", "normal"], generator=[torch.Generator().manual_seed(s) for s in (seed, seed + 1)],
                    output_type="np").images

    first = images(0)
    assert np.isfinite(first).all() and not np.array_equal(first[0], first[1])
    np.testing.assert_array_equal(first, images(0))  # its per-step noise comes from the image's own generator


def _step_budget_calls():
    from helpers import tiny_text_pipeline, tiny_unconditional_pipeline
    from mask_helpers import square_mask, tiny_mask_pipeline

    return {
        "label": lambda steps: tiny_label_pipeline()(labels=["pneumonia"], num_inference_steps=steps, output_type="np"),
        "unconditional": lambda steps: tiny_unconditional_pipeline()(num_inference_steps=steps, output_type="np"),
        "text": lambda steps: tiny_text_pipeline()("effusion", num_inference_steps=steps, output_type="np"),
        "mask": lambda steps: tiny_mask_pipeline()(masks=[square_mask()], labels=["normal"], num_inference_steps=steps, output_type="np"),
        "mask generator": lambda steps: tiny_mask_pipeline().sample_masks(labels=["normal"], num_inference_steps=steps),
    }


@pytest.mark.parametrize("kind", ["label", "unconditional", "text", "mask", "mask generator"])
def test_more_steps_than_the_model_was_trained_with_is_refused_naming_both(kind):
    # the tiny models are trained on 100 timesteps; DPM-Solver++ would index past its tables at 101 (IndexError)
    call = _step_budget_calls()[kind]
    with pytest.raises(ValueError, match=r"\(101\) must be at most the scheduler's `num_train_timesteps` \(100\)"):
        call(101)
    call(100)  # the largest step count the model allows still samples
