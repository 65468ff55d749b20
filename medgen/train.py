"""Train a medgen diffusion pipeline.

    # one process (CPU or one GPU)
    accelerate launch medgen/train.py --config train_configs/tiny.yaml --output_dir outputs/tiny
    # 8 GPUs, bf16
    accelerate launch --multi_gpu --num_processes 8 --mixed_precision bf16 medgen/train.py \
        --config train_configs/chexpert_label.yaml --output_dir outputs/chexpert
    # resume, and override any config field
    accelerate launch medgen/train.py --config train_configs/tiny.yaml --output_dir outputs/tiny \
        --resume_from_checkpoint latest optim.learning_rate=2e-4 max_train_steps=2000

The pipeline is saved to `--output_dir` (model_index.json at its root), with checkpoints in
`output_dir/checkpoints`, sample grids in `output_dir/samples` and TensorBoard logs in `output_dir/logs`.
A folder that already holds a run is refused unless `--resume_from_checkpoint` continues it or
`--overwrite_output_dir` removes it; a non-finite loss stops the run (exit 1) before it reaches a
checkpoint or the pipeline. See docs/training.md.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    # `accelerate launch medgen/train.py` runs this file as a script; the installed package is imported
    # by name, so drop the script's own folder (medgen/) from the path, where `medgen/data` etc. would
    # shadow top-level packages such as `datasets`.
    sys.path = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import torch
from accelerate import Accelerator, PartialState
from accelerate.logging import get_logger
from accelerate.utils import DataLoaderConfiguration, ProjectConfiguration, set_seed

from medgen.config import TrainConfig, config_to_dict, save_config
from medgen.training import checkpoints, run_folder
from medgen.training.arguments import add_arguments, resolve_config
from medgen.training.diffusion import build_objective, build_sampler
from medgen.training.divergence import DivergenceGuard, TrainingStopped, current_learning_rate
from medgen.training.optim import build_lr_scheduler, build_optimizer, restart_schedule, warmup_outlasts_run
from medgen.sample_grid import save_sample_grid

logger = get_logger("medgen.train")


def main(config: TrainConfig, resume_from_checkpoint: str | None = None, overwrite_output_dir: bool = False) -> Path:
    """Trains `config` and returns the folder of the saved pipeline (or autoencoder, `model.kind: vae`).

    Raises `ValueError` for an output folder holding another run (see `run_folder`) and
    `TrainingDiverged` at the first non-finite loss or gradient norm."""
    output_dir = Path(config.output_dir)
    # refusals and a finished run are answered before any data is read
    checkpoint, run_id = run_folder.resolve_run(output_dir, resume_from_checkpoint, overwrite_output_dir)
    resumed_step = checkpoints.read_state(checkpoint)["step"] if checkpoint else 0
    if resumed_step >= config.max_train_steps and saved_pipeline_step(output_dir) == resumed_step:
        PartialState().print(finished_message(resumed_step, config))
        return output_dir
    record_precision(config)
    accelerator = Accelerator(
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        mixed_precision=config.mixed_precision,
        log_with=config.report_to if config.report_to != "none" else None,
        project_config=ProjectConfiguration(project_dir=str(output_dir), logging_dir=str(output_dir / "logs")),
        # a seedable sampler makes the data order a function of (seed, epoch): resuming mid-epoch replays it
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True),
    )
    set_seed(config.seed)
    if overwrite_output_dir:
        if accelerator.is_main_process:
            for path in run_folder.remove_earlier_run(output_dir):
                accelerator.print(f"Removed {path} (earlier run; --overwrite_output_dir)")
        accelerator.wait_for_everyone()

    # 1. Data (decoded once and cached by `datasets`; the main process builds the cache first)
    from medgen.data import build_dataset, write_data_summary
    from medgen.data.summary import data_summary_name

    with accelerator.main_process_first():
        data = build_dataset(config.data)
        extra_data = [build_dataset(extra) for extra in config.extra_data]
    if accelerator.is_main_process:
        # what this run reads: images per label, files left out and why (also kept in the output folder)
        for index, source in enumerate([data, *extra_data]):
            accelerator.print(source.summary())
            accelerator.print(f"Data summary: {write_data_summary(source, output_dir, data_summary_name(index))}")

    # 2. An optional autoencoder stage, then the denoiser
    if data.streaming and (config.model.kind in ("vae", "text") or config.model.pretrained_vae or config.class_balance > 0):
        raise ValueError(
            "data.streaming reads images in stream order: autoencoders, latent models and class_balance need the "
            "cached data (data.streaming: false; `medgen prepare-data` builds the cache)"
        )
    if config.model.kind in ("vae", "text") and not config.model.pretrained_vae:
        from medgen.training.vae import train_autoencoder

        vae_dir = train_autoencoder(config, data, accelerator, extra_data)
        if config.model.kind == "vae":
            accelerator.end_training()
            return vae_dir
        config.model.pretrained_vae = str(vae_dir)
    if extra_data:  # a text model across several sets: one training set, labels `<set>/<label>`
        from medgen.data.multisource import combine_datasets

        data = combine_datasets([data, *extra_data])
    from medgen.training.tasks import build_task

    task = build_task(config, data.label_names, data.multi_label)
    init = None
    if config.model.init_from:
        from medgen.training.initial_weights import init_record

        init = init_record(config.model.init_from, config.model.kind)
    unet = task.unet
    if config.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    objective = build_objective(config.diffusion)  # forward process + loss (diffusion or rectified flow)
    noise_scheduler = objective.scheduler

    ema = None
    if config.ema.use_ema:
        from diffusers.training_utils import EMAModel

        ema = EMAModel(
            unet.parameters(), decay=config.ema.decay, use_ema_warmup=config.ema.warmup, power=config.ema.power
        )

    train_set = data.dataset
    if task.vae is not None:
        # latent diffusion: encode the training set once (cached) instead of at every step
        from medgen.training.latents import LatentDataset, training_posteriors

        task.to(accelerator.device)
        train_set = LatentDataset(
            data.dataset,
            training_posteriors(task.vae, config.model.pretrained_vae, data, accelerator, config.data.hflip),
        )
    if config.class_balance > 0:
        from medgen.training.balance import balanced_indices

        labels = data.dataset.with_format("numpy", columns=["labels"])["labels"]
        train_set = torch.utils.data.Subset(train_set, balanced_indices(labels, config.class_balance, config.seed))
        accelerator.print(f"class_balance {config.class_balance}: {len(train_set)} images per epoch (oversampled)")
    dataloader = torch.utils.data.DataLoader(
        train_set,
        batch_size=config.train_batch_size,
        shuffle=not data.streaming,  # a stream is shuffled through its buffer (build_dataset)
        num_workers=config.dataloader_num_workers,
        drop_last=len(data if data.streaming else train_set) >= config.train_batch_size,
        persistent_workers=config.dataloader_num_workers > 0,
    )
    batches = max(1, len(data) // config.train_batch_size) if data.streaming else len(dataloader)  # stream: planned
    steps_per_epoch = math.ceil(batches / config.gradient_accumulation_steps)
    num_epochs = math.ceil(config.max_train_steps / steps_per_epoch)
    # modules that train beside the UNet (a text encoder with unfrozen last layers): optimised, synced and
    # checkpointed with it; EMA covers the UNet only
    extra_modules = task.trainable_modules()
    trained = [*unet.parameters(), *(p for module in extra_modules for p in module.parameters() if p.requires_grad)]
    optimizer = build_optimizer(trained, config.optim)
    lr_scheduler = build_lr_scheduler(optimizer, config, steps_per_epoch, accelerator.num_processes)
    unet, *extra_modules, optimizer, dataloader, lr_scheduler = accelerator.prepare(
        unet, *extra_modules, optimizer, dataloader, lr_scheduler
    )
    task.use_prepared_modules(extra_modules)
    task.to(accelerator.device)
    if ema is not None:
        ema.to(accelerator.device)

    # 3. Resume: model, optimizer, LR schedule and RNG from accelerate; EMA and the step from our state
    global_step, carried = 0, {}
    guard = DivergenceGuard(accelerator, "optim.learning_rate")
    if resume_from_checkpoint:
        if checkpoint is None:
            accelerator.print(f"No checkpoint in {checkpoints.checkpoint_dir(output_dir)} yet: starting from step 0.")
        else:
            state = checkpoints.read_state(checkpoint)
            accelerator.load_state(str(checkpoint))
            global_step, guard.last_checkpoint = state["step"], checkpoint
            carried = state.get("progress") or {}  # the run's figures up to that step (older checkpoints: none)
            # the weights the run started from, as they were then (the folder may have been re-shipped since)
            init = carried.get("init_from", init)
            if ema is not None:
                checkpoints.load_ema(ema, checkpoint)
                ema.to(accelerator.device)
            # the schedule of this config at the restored step (see docs/training.md, "Extending a run")
            learning_rate = restart_schedule(lr_scheduler, optimizer, config.optim.learning_rate)
            planned = state.get("max_train_steps", config.max_train_steps)
            accelerator.print(
                f"Resuming from {checkpoint} at step {global_step} of {config.max_train_steps}"
                + (f" (planned {planned}: the learning-rate schedule is rebuilt over {config.max_train_steps} steps)"
                   if planned != config.max_train_steps else "")
                + f", learning rate {learning_rate:.3g}."
            )
    finished = global_step >= config.max_train_steps
    warmup_warning = warmup_outlasts_run(config, steps_per_epoch, global_step)
    if warmup_warning:
        logger.warning(warmup_warning, main_process_only=True)
    if finished:  # but the pipeline of this step was never saved: stopped after the last checkpoint, or a longer
        # run stopped early and exported at its newest checkpoint (max_train_steps = that step)
        accelerator.print(finished_message(global_step, config) + " Saving its pipeline.")

    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        save_config(config, output_dir / "training_config.yaml")
        accelerator.init_trackers("medgen", config=_flat_hparams(config))

    # 4. Training loop
    from tqdm.auto import tqdm

    progress = tqdm(
        total=config.max_train_steps, initial=global_step, desc="train", disable=not accelerator.is_local_main_process
    )
    first_epoch = global_step // steps_per_epoch
    resume_batches = (global_step % steps_per_epoch) * config.gradient_accumulation_steps
    micro_step = global_step * config.gradient_accumulation_steps
    loss_sum, loss_count, images_seen, window_start = 0.0, 0, 0, time.perf_counter()
    grad_norm, step_lr = torch.tensor(0.0), current_learning_rate(optimizer)
    loop_start, start_step, last_loss = time.perf_counter(), global_step, float("nan")
    peak_lr = max(carried.get("peak_learning_rate") or 0.0, 0.0 if global_step < config.max_train_steps else step_lr)

    def progress_so_far(loop_seconds: float) -> dict:
        """What a checkpoint records of the run up to its step (`loop_seconds` into this process's loop), so that
        a later export can still report it."""
        return {
            "training_seconds": (carried.get("training_seconds") or 0.0) + loop_seconds,
            "last_loss": last_loss if math.isfinite(last_loss) else carried.get("last_loss"),
            "peak_learning_rate": peak_lr,
            **({"init_from": init} if init is not None else {}),
        }
    try:
        for epoch in range(first_epoch, num_epochs):
            if global_step >= config.max_train_steps:
                break
            unet.train()
            dataloader.set_epoch(epoch)
            batches = dataloader
            if epoch == first_epoch and resume_batches:
                batches = accelerator.skip_first_batches(dataloader, resume_batches)
            for batch in batches:
                with accelerator.accumulate(unet, *extra_modules):
                    # Randomness drawn from (seed, micro-step, process) alone, so a resumed run replays it exactly.
                    step_seed = config.seed * 2**40 + micro_step * 1024 + accelerator.process_index
                    generator = torch.Generator(device=accelerator.device).manual_seed(step_seed)
                    torch.manual_seed(step_seed)  # dropout (UNet, fine-tuned encoder layers) draws from the global RNG
                    micro_step += 1
                    batch = task.augment(batch, generator)
                    clean = task.model_input(batch, generator=generator)
                    noise = torch.randn(clean.shape, generator=generator, device=clean.device, dtype=clean.dtype)
                    timesteps = objective.sample_timesteps(clean.shape[0], clean.device, generator)
                    noisy = objective.add_noise(clean, noise, timesteps)
                    drop_mask = (
                        torch.rand(clean.shape[0], device=clean.device, generator=generator)
                        < config.diffusion.condition_dropout
                    )
                    # 1. predict noise (or v, x0, flow velocity), 2. weighted MSE against the matching target
                    # kinds whose UNet sees more than the noisy sample (mask channels: mask_task.py) extend it here
                    unet_input = task.unet_input(noisy, batch) if hasattr(task, "unet_input") else noisy
                    prediction = unet(unet_input, timesteps, **task.condition_kwargs(batch, drop_mask)).sample
                    loss = objective.loss(prediction, clean, noise, timesteps)
                    loss_sum += guard.observe_loss(loss)
                    accelerator.backward(loss)
                    if accelerator.sync_gradients:
                        grad_norm = accelerator.clip_grad_norm_(trained, config.optim.max_grad_norm)
                        step_lr = current_learning_rate(optimizer)  # the rate this update uses (logged as `lr`)
                        peak_lr = max(peak_lr, step_lr)
                        # before the update: a diverged step never reaches the weights, a checkpoint or the pipeline
                        guard.check(global_step + 1, step_lr, grad_norm)
                    optimizer.step()
                    lr_scheduler.step()
                    optimizer.zero_grad(set_to_none=True)
                loss_count += 1
                images_seen += clean.shape[0] * accelerator.num_processes
                if not accelerator.sync_gradients:
                    continue

                global_step += 1
                progress.update(1)
                if ema is not None:
                    ema.step(unet.parameters())
                if global_step % config.log_every_steps == 0 or global_step == config.max_train_steps:
                    elapsed = time.perf_counter() - window_start
                    logs = {
                        "loss": loss_sum / max(loss_count, 1),
                        "lr": step_lr,
                        "grad_norm": float(grad_norm),
                        "images_per_second": images_seen / max(elapsed, 1e-9),
                    }
                    progress.set_postfix(loss=f"{logs['loss']:.4f}", lr=f"{logs['lr']:.2e}")
                    last_loss = logs["loss"]
                    accelerator.log(logs, step=global_step)
                    loss_sum, loss_count, images_seen, window_start = 0.0, 0, 0, time.perf_counter()
                if global_step % config.checkpointing_steps == 0 or global_step == config.max_train_steps:
                    guard.last_checkpoint = save_checkpoint(accelerator, config, global_step, ema, run_id, progress_so_far(time.perf_counter() - loop_start))
                sample_now = config.sample_every_steps and global_step % config.sample_every_steps == 0
                if accelerator.is_main_process and sample_now:
                    sample(accelerator, task, unet, ema, noise_scheduler, config, global_step)
                if global_step >= config.max_train_steps:
                    break
            if global_step >= config.max_train_steps:
                break
    finally:
        progress.close()  # also when the run stops: the error is the last line printed
    loop_seconds, steps_this_run = time.perf_counter() - loop_start, global_step - start_step
    # the run's own figures over every process that trained it; an export at a checkpoint (nothing trained here)
    # reports those the checkpoint recorded, None where it recorded none (a checkpoint older than these fields)
    so_far = progress_so_far(loop_seconds) if steps_this_run else carried
    training_seconds = so_far.get("training_seconds")
    images_per_step = config.train_batch_size * config.gradient_accumulation_steps * accelerator.num_processes
    summary = {
        "run_id": run_id,
        "steps": global_step,
        "steps_this_run": steps_this_run,
        "loop_seconds": loop_seconds,
        "training_seconds": training_seconds,
        "final_loss": so_far.get("last_loss"),
        "final_learning_rate": step_lr,
        "peak_learning_rate": peak_lr,
        "mixed_precision": config.mixed_precision,
        # this process's rate; an export at a checkpoint: the rate of the processes that trained it
        "images_per_second": (steps_this_run * images_per_step / max(loop_seconds, 1e-9) if steps_this_run
                              else global_step * images_per_step / training_seconds if training_seconds else None),
    }
    if init is not None:  # a fine-tuning run: what it started from, and the steps of both together
        summary["init_from"] = init
        summary["total_steps"] = global_step + (init["steps"] or 0)

    # 5. Save the pipeline (EMA weights when trained with EMA)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        pipeline = build_final_pipeline(accelerator, task, unet, ema, noise_scheduler, config)
        pipeline.save_pretrained(output_dir, model_card=model_card_info(config, data, global_step, init))
        if not finished or saved_pipeline_step(output_dir) != global_step:  # else: that run's summary is there
            (output_dir / "training_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        sample_path = sample(accelerator, task, unet, ema, noise_scheduler, config, global_step)
        if not finished:
            accelerator.print(
                f"Trained {global_step} steps in {summary['loop_seconds'] / 60:.1f} min "
                f"({summary['images_per_second']:.1f} images/s), final loss "
                + (f"{summary['final_loss']:.4f}, " if summary["final_loss"] is not None else "not logged, ")
                + f"learning rate peaked at {peak_lr:.3g} (optim.learning_rate {config.optim.learning_rate:g}), "
                f"final {summary['final_learning_rate']:.3g}."
            )
        accelerator.print(f"Pipeline saved to {output_dir.resolve()}")
        accelerator.print(f"Samples: {sample_path}")
        hint = generate_command(output_dir, task)
        if hint:
            accelerator.print(f"Generate: {hint}")
    accelerator.end_training()
    return output_dir


def generate_command(output_dir: Path, task) -> str | None:
    """The `medgen generate` command for the saved pipeline, with the condition its first sample-grid row used
    (`--labels` for label models, `--prompt` for text models), so that it runs as printed; None for a task
    whose condition the command line cannot give."""
    import shlex

    requests = task.sample_requests()
    condition = requests[0][1] if requests else {}
    flags: list[str] = []
    for key, flag in (("labels", "--labels"), ("prompt", "--prompt")):
        value = condition.get(key)
        if value is None:
            continue
        if isinstance(value, dict):
            value = ",".join(f"{name}={weight:g}" for name, weight in value.items())
        elif isinstance(value, (list, tuple)):
            value = ",".join(map(str, value))
        flags += [flag, str(value)]
    if set(condition) - {"labels", "prompt"}:
        return None
    return shlex.join(
        ["medgen", "generate", "--pipeline", str(output_dir), *flags, "--count", "8", "--output", str(output_dir / "generated")]
    )


def saved_pipeline_step(output_dir: Path) -> int | None:
    """The training step of the pipeline saved in `output_dir` (its `training_summary.json`), None if none is saved."""
    summary = output_dir / "training_summary.json"
    if not (output_dir / "model_index.json").is_file() or not summary.is_file():
        return None
    try:
        return json.loads(summary.read_text()).get("steps")
    except (json.JSONDecodeError, AttributeError):
        return None


def finished_message(step: int, config: TrainConfig) -> str:
    return (
        f"Run already finished at step {step} (max_train_steps {config.max_train_steps}): nothing to train. "
        f"Raise max_train_steps to train it further."
    )


def record_precision(config: TrainConfig) -> None:
    """fp16 needs a GPU: on a CPU accelerate silently runs fp32. Say so once, and record what actually runs in the
    config saved with checkpoints and the pipeline, so it never claims fp16 for an fp32 run."""
    if config.mixed_precision == "fp16" and PartialState().device.type == "cpu":
        logger.warning(
            "mixed_precision: fp16 needs a GPU; this run trains in fp32 on the CPU and records mixed_precision: no "
            "(bf16 runs on CPUs).",
            main_process_only=True,
        )
        config.mixed_precision = "no"


def save_checkpoint(
    accelerator: Accelerator, config: TrainConfig, step: int, ema, run_id: str | None = None, progress: dict | None = None
) -> Path:
    """All processes write their accelerate state into a temporary folder; the main process then renames it.
    `progress` (the run's training time, last logged loss and peak learning rate so far) goes into its state
    file. Returns the checkpoint's folder (on every process)."""
    started = time.perf_counter()
    temporary = checkpoints.temporary_path(config.output_dir, step)
    if accelerator.is_main_process:
        checkpoints.clear(temporary)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(temporary), safe_serialization=True)
    if accelerator.is_main_process:
        if ema is not None:
            checkpoints.save_ema(ema, temporary)
        save_config(config, temporary / "training_config.yaml")
        final = checkpoints.finalize(temporary, step, run_id, max_train_steps=config.max_train_steps, progress=progress)
        removed = checkpoints.prune(config.output_dir, config.checkpoints_total_limit, run_id)
        # said in a line of its own: saving can pause the progress bar for many seconds
        from tqdm.auto import tqdm

        tqdm.write(
            f"Saved checkpoint {final} ({time.perf_counter() - started:.1f} s)"
            + (f"; removed {', '.join(path.name for path in removed)} (checkpoints_total_limit "
               f"{config.checkpoints_total_limit})" if removed else "")
        )
    accelerator.wait_for_everyone()
    return checkpoints.checkpoint_dir(config.output_dir) / f"checkpoint-{step}"


def build_final_pipeline(accelerator, task, unet, ema, noise_scheduler, config: TrainConfig):
    """A pipeline around a copy of the UNet carrying the EMA weights, with the fast sampler as its scheduler."""
    import copy

    model = copy.deepcopy(accelerator.unwrap_model(unet)).float().eval()
    if ema is not None:
        ema.copy_to(model.parameters())
    return task.build_pipeline(model, build_sampler(noise_scheduler, config.diffusion.sampler))


def sample(accelerator, task, unet, ema, noise_scheduler, config: TrainConfig, step: int) -> Path:
    """Saves `samples/step-XXXXXX.png`: one row per label (or prompt) with a fixed seed, so grids compare across steps."""
    pipeline = build_final_pipeline(accelerator, task, unet, ema, noise_scheduler, config).to(accelerator.device)
    pipeline.set_progress_bar_config(disable=True)
    rows = []
    for title, kwargs in task.sample_requests():
        generator = torch.Generator(device="cpu").manual_seed(config.seed)
        images = pipeline(
            num_images_per_prompt=config.num_sample_images,
            num_inference_steps=config.diffusion.num_inference_steps,
            generator=generator,
            output_type="np",
            **({"guidance_scale": config.diffusion.guidance_scale} if title != "samples" else {}),
            **kwargs,
        ).images
        rows.append((title, images))
    path = Path(config.output_dir) / "samples" / f"step-{step:06d}.png"
    save_sample_grid(rows, path)
    return path


def model_card_info(config: TrainConfig, data, steps: int, init: dict | None = None) -> dict:
    from medgen.data.summary import summarize_dataset
    from medgen.pipelines.model_card import steps_line

    schedule = config.diffusion
    split = summarize_dataset(data)["split"]  # None when the data has no splits: every image was read
    read = f"split `{split}`" if split is not None else "every image: the data has no split column, so none was held out"
    return {
        "dataset": f"`{config.data.source}` data from `{Path(config.data.path).name}` ({read})",
        "num_train_images": len(data),
        "train_steps": steps_line(steps, init, f"batch {config.train_batch_size} x {config.gradient_accumulation_steps} accumulation"),
        **schedule.card_lines(),  # noise_schedule, prediction_type
        "ema": config.ema.use_ema,
        "license": config.license,
        "repo_id": config.hub_model_id,
        **_several_sets_card(config, data),
    }


def _several_sets_card(config: TrainConfig, data) -> dict:
    """The card's data line for a model trained on several sets, and its Prompts section (medgen.data.prompts)."""
    from medgen.data.prompts import prompt_card_section

    card: dict = {}
    if config.extra_data:
        names = ", ".join(f"`{Path(d.path).name}` ({d.split})" for d in [config.data, *config.extra_data])
        card["dataset"] = f"{len(config.extra_data) + 1} image sets: {names}; labels {', '.join(data.label_names)}"
    section = prompt_card_section([config.data, *config.extra_data])
    if section:
        card["extra"] = section
    return card


def _flat_hparams(config: TrainConfig) -> dict:
    flat = {}

    def walk(prefix: str, value):
        if isinstance(value, dict):
            for key, item in value.items():
                walk(f"{prefix}{key}.", item)
        elif isinstance(value, (int, float, str, bool)):
            flat[prefix.rstrip(".")] = value
        elif value is not None:
            flat[prefix.rstrip(".")] = str(value)

    walk("", config_to_dict(config))
    return flat


if __name__ == "__main__":
    arguments = add_arguments(argparse.ArgumentParser(description=__doc__.split("\n")[0])).parse_args()
    try:
        main(
            resolve_config(arguments), resume_from_checkpoint=arguments.resume_from_checkpoint,
            overwrite_output_dir=arguments.overwrite_output_dir,
        )
    except (ValueError, FileNotFoundError) as error:
        print(f"medgen train: error: {error}", file=sys.stderr)
        sys.exit(2)
    except TrainingStopped as error:
        print(f"medgen train: error: {error}", file=sys.stderr)
        sys.exit(1)
