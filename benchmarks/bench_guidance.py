"""Classifier-free guidance scale against fidelity and label accuracy of a label model, side by side in one run.

Guidance trades diversity (recall, FID) for faithfulness to the label (label accuracy, precision). This scores
one label pipeline (a built-in name or a folder) at several guidance scales on its training config's held-out
test split, with everything else fixed: the same N, seeds, sampler and steps, the same
Inception features and real-trained classifier (`medgen.evaluation.evaluate`, cached between scales), test
images that are training images left out. The floor (real training images against the test split at the same
N) is printed beside FID, so the scale that a model's default should use can be read off one table.
`--interval START STOP` (repeatable) crosses each scale with guidance applied to part of the sampling steps only
(fractions from the noisiest, 0, to the last, 1: the label pipeline's `guidance_interval`). `--sampler NAME:STEPS`
(repeatable) crosses them with samplers built from the model's own noise schedule: the names of `medgen generate
--scheduler` (dpm, ddim, ddpm, unipc, euler-a: Euler ancestral), dpm-sde (DPM-Solver++ 2M SDE) and euler-a-trailing
(Euler ancestral on trailing timesteps); without it the pipeline's own sampler and step count are used.
`--seed` with several values repeats every setting on disjoint seeds (image i uses seed + i) and adds the mean and
standard deviation of each figure over them: how far one evaluation's figures move with the draw alone, the yardstick
for any difference between two settings or two models.

    python benchmarks/bench_guidance.py --pipeline chest-xray --guidance 1 1.5 2 3 --n 256
    python benchmarks/bench_guidance.py --pipeline brain-mri --guidance 3 4 --interval 0 1 --interval 0.25 1 --n 512
    python benchmarks/bench_guidance.py --pipeline runs/my_model --config train_configs/chest_xray_128.yaml --json out.json
    python benchmarks/bench_guidance.py --pipeline brain-mri --guidance 3 --sampler dpm:15 --sampler ddpm:100 --n 512
    python benchmarks/bench_guidance.py --pipeline breast-ultrasound --guidance 6 --n 156 --seed 0 100000 200000
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from medgen.config import load_config
from medgen.evaluation.api import evaluate
from medgen.pipelines.hub import builtin_pipeline_path
from medgen.pipelines import load_pipeline
from medgen.sampling import SCHEDULERS, guidance_interval_text, replacement_scheduler

# --sampler names: medgen's own, DPM-Solver++ in its stochastic (SDE) form, and Euler ancestral on "trailing"
# timesteps (the first step at the last training timestep, none spent at t = 0): a class and its config overrides
SAMPLERS = {
    **{name: (class_name, {}) for name, class_name in SCHEDULERS.items()},
    "dpm-sde": ("DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++"}),
    "euler-a-trailing": ("EulerAncestralDiscreteScheduler", {"timestep_spacing": "trailing"}),
}


def pipeline_folder(pipeline: str) -> Path:
    folder = Path(pipeline)
    return folder if folder.is_dir() else builtin_pipeline_path(pipeline)


def sampler_spec(text: str) -> tuple[str, int]:
    """`NAME:STEPS` of --sampler, checked."""
    name, _, steps = text.partition(":")
    if name not in SAMPLERS or not steps.isdigit() or int(steps) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give NAME:STEPS, NAME one of {', '.join(SAMPLERS)}, e.g. ddpm:100")
    return name, int(steps)


def with_sampler(pipeline: str, sampler: tuple[str, int] | None):
    """The pipeline (loaded) with the named sampler in place of its own, and the step count; the name and None
    without one (the pipeline's own sampler and step count)."""
    if sampler is None:
        return pipeline, None
    pipe = load_pipeline(pipeline)
    class_name, overrides = SAMPLERS[sampler[0]]
    scheduler = replacement_scheduler(pipe.scheduler, class_name)
    pipe.scheduler = type(scheduler).from_config(scheduler.config, **overrides)
    return pipe, sampler[1]


def score(pipeline: str, config_path: Path, guidance: float, n: int, steps: int | None, seed: int, cache_dir: str | None,
          interval: list[float] | None = None, sampler: tuple[str, int] | None = None) -> dict:
    config = load_config(config_path)
    start = time.perf_counter()
    pipe, sampler_steps = with_sampler(pipeline, sampler)
    steps = sampler_steps or steps
    report = evaluate(
        pipeline=pipe, data=config.data, split="test", num_samples=n, num_inference_steps=steps, seed=seed,
        guidance_scale=guidance, guidance_interval=interval,
        exclude_training_overlap=True, frd=False, autoencoder_ceiling=False, memorization_features=False,
        cache_dir=cache_dir,
    )
    accuracy = report.get("label_accuracy") or {}
    floor = ((report.get("baselines") or {}).get("training") or {}).get("fid")
    sampling = report.get("sampling") or {}
    return {
        "sampler": sampler[0] if sampler else sampling.get("sampler"), "num_inference_steps": sampling.get("num_inference_steps"),
        "guidance_scale": guidance, "guidance_interval": sampling.get("guidance_interval"), "seed": seed,
        "n_generated": report.get("n_generated"), "n_real": report.get("n_real"),
        "fid": report.get("fid"), "floor_fid": floor, "precision": report.get("precision"), "recall": report.get("recall"),
        "recall_per_label": {name: figures.get("recall") for name, figures in (report.get("per_label") or {}).items()},
        "label_accuracy": accuracy.get("accuracy"), "label_accuracy_per_label": accuracy.get("per_label"),
        "real_test_accuracy_per_label": accuracy.get("real_test_per_label"),
        "tstr_auc": (report.get("tstr") or {}).get("synthetic_trained_auc"),
        "real_auc": (report.get("tstr") or {}).get("real_trained_auc"),
        "memorization_alarm": (report.get("memorization") or {}).get("alarm"),
        # the bootstrap standard errors of this one draw (medgen.evaluation.uncertainty), beside the spread over seeds
        "se": {name: entry["se"] for name, entry in (report.get("uncertainty") or {}).items() if isinstance(entry, dict)},
        "recall_se_per_label": {name: ((figures.get("uncertainty") or {}).get("recall") or {}).get("se")
                                for name, figures in (report.get("per_label") or {}).items()},
        "seconds": time.perf_counter() - start,
    }


def interval_text(interval: list[float] | None) -> str:
    """The guided steps as a percentage range ("25-100%"); "-" for a pipeline without an interval."""
    return "-" if interval is None else guidance_interval_text(interval)


def spread(values: list[float | None]) -> str:
    """`mean ± sd` of one figure over seeds (sample standard deviation); "-" when a seed lacks it."""
    if any(value is None for value in values):
        return "-"
    return f"{statistics.fmean(values):.3f} ± {statistics.stdev(values):.3f}"


def mean_se(group: list[dict], name: str, label: str | None = None) -> str:
    """The mean over seeds of one figure's bootstrap standard error (each seed's own draw); "-" without it."""
    values = [row["se"].get(name) if label is None else row["recall_se_per_label"].get(label) for row in group]
    return "-" if any(value is None for value in values) else f"{statistics.fmean(values):.3f}"


def print_spread(rows: list[dict], n_seeds: int, labels: list[str]) -> None:
    """Mean ± standard deviation of every figure over the seeds of each setting (rows come grouped by setting),
    and beside FID, precision and recall the mean bootstrap standard error one evaluation reports for itself."""
    print(f"\nspread over {n_seeds} seeds (mean ± sample standard deviation; [bootstrap se of one draw, mean over seeds]):")
    for start in range(0, len(rows), n_seeds):
        group = rows[start : start + n_seeds]
        first = group[0]
        ratios = [row["fid"] / row["floor_fid"] if row["fid"] and row["floor_fid"] else None for row in group]
        figures = {
            "FID": [row["fid"] for row in group], "FID / floor": ratios,
            "precision": [row["precision"] for row in group], "recall": [row["recall"] for row in group],
            **{f"recall {name}": [row["recall_per_label"].get(name) for row in group] for name in labels},
            "label accuracy": [row["label_accuracy"] for row in group], "TSTR AUC": [row["tstr_auc"] for row in group],
        }
        se = {"FID": mean_se(group, "fid"), "precision": mean_se(group, "precision"), "recall": mean_se(group, "recall"),
              **{f"recall {name}": mean_se(group, "recall", name) for name in labels}}
        print(f"  {first['sampler']}, {first['num_inference_steps']} steps, guidance {first['guidance_scale']:g} on "
              f"{interval_text(first['guidance_interval'])}: " + "; ".join(
                  f"{name} {spread(values)}" + (f" [{se[name]}]" if name in se else "") for name, values in figures.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pipeline", required=True, help="built-in name or pipeline folder (label-conditioned)")
    parser.add_argument("--config", help="training config whose data is scored (default: the pipeline's training_config.yaml)")
    parser.add_argument("--guidance", type=float, nargs="+", default=[1.0, 1.5, 2.0, 3.0])
    parser.add_argument("--interval", type=float, nargs=2, action="append", metavar=("START", "STOP"),
                        help="guide only these fractions of the steps (repeatable; default: the pipeline's own)")
    parser.add_argument("--n", type=int, default=256, help="generated images per scale (split evenly over the labels)")
    parser.add_argument("--num-inference-steps", type=int, default=None, help="sampler steps (default: the pipeline's own)")
    parser.add_argument("--sampler", type=sampler_spec, action="append", metavar="NAME:STEPS",
                        help=f"sample with NAME ({', '.join(SAMPLERS)}) at STEPS steps (repeatable; default: the pipeline's own)")
    parser.add_argument("--seed", type=int, nargs="+", default=[0],
                        help="first sampling seed; several: repeat every setting per seed and add the spread over them")
    parser.add_argument("--cache-dir", help="feature and classifier cache (default: medgen's)")
    parser.add_argument("--json", help="also write the rows here")
    args = parser.parse_args()

    config_path = Path(args.config) if args.config else pipeline_folder(args.pipeline) / "training_config.yaml"
    if not config_path.is_file():
        parser.error(f"--config: {config_path} is not a file")
    rows = []
    for sampler in args.sampler or [None]:
        for interval in args.interval or [None]:
            for guidance in args.guidance:
                for seed in args.seed:
                    row = score(args.pipeline, config_path, guidance, args.n, args.num_inference_steps, seed, args.cache_dir,
                                interval, sampler)
                    rows.append(row)
                    print(f"{row['sampler']}, {row['num_inference_steps']} steps, guidance {guidance:g} on "
                          f"{interval_text(row['guidance_interval'])}, seed {seed}: FID {row['fid']:.1f}, "
                          f"label accuracy {row['label_accuracy']}, {row['seconds'] / 60:.1f} min", flush=True)
        if args.json:
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")

    def cell(value, width, digits=3):
        return f"{'-':>{width}}" if value is None else f"{value:>{width}.{digits}f}"

    seeds = ", ".join(str(seed) for seed in args.seed)
    print(f"\n{args.pipeline}: held-out test split of {config_path}, N = {rows[0]['n_generated']} generated "
          f"against {rows[0]['n_real']} test images, seed{'s' if len(args.seed) > 1 else ''} {seeds}")
    labels = list(rows[0]["recall_per_label"])
    print(f"{'sampler':>34}{'guidance':>9}{'guided':>9}{'seed':>8}{'FID':>8}{'/floor':>8}{'prec.':>7}{'recall':>7}{'label acc.':>11}{'TSTR AUC':>9}  recall per label")
    for row in rows:
        ratio = row["fid"] / row["floor_fid"] if row["fid"] and row["floor_fid"] else None
        per_label = ", ".join(f"{name} {cell(row['recall_per_label'][name], 0, 2)}" for name in labels)
        sampler = f"{row['sampler']}, {row['num_inference_steps']}"
        print(f"{sampler:>34}{row['guidance_scale']:>9g}{interval_text(row['guidance_interval']):>9}{row['seed']:>8}{cell(row['fid'], 8, 1)}{cell(ratio, 8, 2)}{cell(row['precision'], 7, 2)}"
              f"{cell(row['recall'], 7, 2)}{cell(row['label_accuracy'], 11)}{cell(row['tstr_auc'], 9)}  {per_label}")
    print("label accuracy per label: " + "; ".join(
        f"{row['sampler']} {row['num_inference_steps']}, guidance {row['guidance_scale']:g} on {interval_text(row['guidance_interval'])}: " + ", ".join(f"{name} {value:.2f}" for name, value in (row["label_accuracy_per_label"] or {}).items())
        for row in rows))
    if len(args.seed) > 1:
        print_spread(rows, len(args.seed), labels)
    real_auc, real_per_label = rows[0]["real_auc"], rows[0]["real_test_accuracy_per_label"]
    if real_auc is not None:
        print(f"real-trained classifier AUC on the test split: {real_auc:.3f}")
    if real_per_label:
        print("its accuracy on real test images per label: " + ", ".join(f"{name} {value:.2f}" for name, value in real_per_label.items()))


if __name__ == "__main__":
    main()
