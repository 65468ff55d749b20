"""The default sampling settings every entry point shares (no heavy imports).

The saved pipelines sample with DPM-Solver++ (multistep, second order). Its default step count was chosen
by `benchmarks/bench_sampling.py --quality`: at 15 steps its FID stays within 1.1x of DDPM over the full
1,000-step schedule at over 40x DDPM's wall-clock speed on the chest-xray model; 25 steps gave no better FID
and missed the speed goal (docs/pipelines.md, "Sampler quality"). Each `pipeline_*.py` file repeats the
value as its `__call__` default, since a saved folder ships that file alone; a test keeps them equal.
"""

DEFAULT_INFERENCE_STEPS = 15

# The samplers a command names (`medgen generate --scheduler`, `medgen models ship --scheduler`): name -> diffusers
# scheduler class, built from the model's own noise schedule by `replacement_scheduler`.
SCHEDULERS = {
    "dpm": "DPMSolverMultistepScheduler",
    "ddim": "DDIMScheduler",
    "ddpm": "DDPMScheduler",
    "unipc": "UniPCMultistepScheduler",
    "euler-a": "EulerAncestralDiscreteScheduler",  # stochastic: fresh noise at every step
}

# Where a sampler places its steps (diffusers' `timestep_spacing`; `medgen models ship --timestep-spacing`).
TIMESTEP_SPACINGS = ("linspace", "leading", "trailing")


def effective_guidance_scale(pipe, requested: float | None) -> float | None:
    """The classifier-free guidance scale a call of `pipe` with `requested` samples with: `requested`, else the
    model's stored `default_guidance_scale` (label models), else its `__call__` default; None for a pipeline
    without guidance. What generate and evaluate record, so that "the default" is never ambiguous."""
    import inspect

    parameters = inspect.signature(pipe.__call__).parameters
    if "guidance_scale" not in parameters:
        return None
    if requested is not None:
        return float(requested)
    stored = getattr(pipe, "default_guidance_scale", None)
    if stored is not None:
        return float(stored)
    default = parameters["guidance_scale"].default
    return None if default in (None, inspect.Parameter.empty) else float(default)


def effective_inference_steps(pipe, requested: int | None = None) -> int:
    """The step count a call of `pipe` with `requested` samples with: `requested`, else the model's stored
    `default_num_inference_steps` (label models), else DEFAULT_INFERENCE_STEPS. What generate, evaluate and
    downstream record, so that "the default" is never ambiguous."""
    if requested is not None:
        return int(requested)
    stored = getattr(pipe, "default_num_inference_steps", None)
    return DEFAULT_INFERENCE_STEPS if stored is None else int(stored)


def sampler_text(scheduler, config: dict | None = None) -> str:
    """A scheduler as reports, the app and `medgen models` name it: its diffusers class (an instance, or a class name
    with its `config`), with DPM-Solver's algorithm when it is not the default ODE one
    ("DPMSolverMultistepScheduler (sde-dpmsolver++)") and trailing timesteps when it uses them
    ("EulerAncestralDiscreteScheduler (trailing timesteps)")."""
    name = scheduler if isinstance(scheduler, str) else type(scheduler).__name__
    if config is None:
        config = getattr(scheduler, "config", None) or {}
    details = []
    algorithm = config.get("algorithm_type")
    if algorithm and algorithm != "dpmsolver++" and "DPMSolver" in name:
        details.append(algorithm)
    if config.get("timestep_spacing") == "trailing":
        details.append("trailing timesteps")
    return f"{name} ({', '.join(details)})" if details else name


def with_timestep_spacing(scheduler, spacing: str):
    """A fresh copy of `scheduler` that places its sampling timesteps by `spacing` (diffusers' `timestep_spacing`:
    "linspace" spreads them evenly from the last training timestep to 0, "trailing" counts back from the last one
    and spends no step at t = 0, "leading" counts up from 0). A bad name, or a scheduler without the option (the
    EDM family), is a ValueError naming `--timestep-spacing`."""
    if spacing not in TIMESTEP_SPACINGS:
        raise ValueError(f"--timestep-spacing: unknown spacing {spacing!r}; choose one of {', '.join(TIMESTEP_SPACINGS)}")
    if "timestep_spacing" not in scheduler.config:
        raise ValueError(f"--timestep-spacing: {type(scheduler).__name__} has no timestep spacing to set")
    return type(scheduler).from_config(scheduler.config, timestep_spacing=spacing)


def effective_guidance_interval(pipe, requested=None) -> list[float] | None:
    """The guidance interval `[start, stop]` (fractions of the sampling steps) a call of `pipe` with `requested`
    samples with: `requested`, else the model's stored `default_guidance_interval`; None for a pipeline that takes
    no interval. A bad `requested` is a ValueError naming `--guidance-interval`."""
    import inspect

    if "guidance_interval" not in inspect.signature(pipe.__call__).parameters:
        if requested is not None:
            raise ValueError(f"--guidance-interval: a {type(pipe).__name__} takes no guidance interval (label pipelines do)")
        return None
    if requested is not None:
        return pipe.check_guidance_interval(requested, "--guidance-interval")
    return list(pipe.default_guidance_interval)


def _checked_scale(requested: float, flag: str) -> float:
    import math

    if not (math.isfinite(requested) and requested >= 0):
        raise ValueError(f"{flag} must be a finite number >= 0; got {requested}")
    return float(requested)


def effective_mask_guidance_scale(pipe, requested: float | None = None) -> float | None:
    """The mask guidance a call of `pipe` with `requested` samples with: `requested`, else the model's stored
    `default_mask_guidance_scale` (1.0 when it stores none); None for a pipeline that takes no mask. A
    `requested` scale for such a pipeline, or a negative or non-finite one, is a ValueError naming
    `--mask-guidance-scale`."""
    import inspect

    if "mask_guidance_scale" not in inspect.signature(pipe.__call__).parameters:
        if requested is not None:
            raise ValueError(f"--mask-guidance-scale: a {type(pipe).__name__} takes no mask (mask pipelines do)")
        return None
    if requested is None:
        return float(pipe.default_mask_guidance_scale)
    return _checked_scale(requested, "--mask-guidance-scale")


def effective_mask_generator_guidance_scale(pipe, requested: float | None = None) -> float | None:
    """The label guidance of the mask generator a call of `pipe` with `requested` draws its masks with:
    `requested`, else the model's stored `default_mask_generator_guidance_scale` (1.0 when it stores none); None
    for a pipeline without a mask generator. A `requested` scale for such a pipeline, or a negative or non-finite
    one, is a ValueError naming `--mask-generator-guidance-scale`."""
    if not getattr(pipe, "has_mask_generator", False):
        if requested is not None:
            raise ValueError(
                f"--mask-generator-guidance-scale: this {type(pipe).__name__} has no mask generator "
                "(mask pipelines with an attached mask generator have one)"
            )
        return None
    if requested is None:
        return float(pipe.default_mask_generator_guidance_scale)
    return _checked_scale(requested, "--mask-generator-guidance-scale")


def guidance_interval_text(interval) -> str:
    """`[0.25, 1.0]` as "25-100%": the guided steps as the card, `medgen models` and the benchmark print them."""
    start, stop = interval
    return f"{start * 100:g}-{stop * 100:g}%"


def replacement_scheduler(saved, class_name: str):
    """A fresh scheduler of the diffusers class `class_name` for the model whose saved scheduler is `saved` (the
    app's sampler menu, `medgen generate --scheduler`).

    `<class>.from_config(saved.config)` keeps the noise schedule of a DDPM-form model, and a rectified-flow
    model's flow form for DPM-Solver++ / UniPC. An EDM model (`diffusion.objective: edm`) has its own scheduler
    family, whose timesteps are ln(sigma) / 4 and whose steps apply EDM's preconditioning: DPM-Solver++ is its
    `EDMDPMSolverMultistepScheduler`, and any other class would read it as a DDPM model and silently give wrong
    images, so it is refused."""
    import diffusers

    if type(saved).__name__.startswith("EDM"):
        edm_forms = {"DPMSolverMultistepScheduler": "EDMDPMSolverMultistepScheduler"}
        edm_class = edm_forms.get(class_name, class_name if class_name.startswith("EDM") else None)
        if edm_class is None:
            raise ValueError(
                f"{class_name} cannot sample this model: it was trained with the EDM objective and samples with "
                f"DPM-Solver++ (diffusers' EDMDPMSolverMultistepScheduler, its saved scheduler)"
            )
        return getattr(diffusers, edm_class).from_config(saved.config)
    return getattr(diffusers, class_name).from_config(saved.config)
