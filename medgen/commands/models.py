"""`medgen models`: list the pretrained pipelines shipped with medgen, and ship a training run as one.

    medgen models                       # per model: what it is, its folder, labels, training data, evaluation
    medgen models --json                # the same for scripts (name, aliases, folder, evaluation figures, ...)
    medgen models ship outputs/chest_xray_128 --name chest-xray --modality "chest X-ray" \\
        --training-data "Kermany pediatric CXR, train split (5,216 images)"
"""

from __future__ import annotations

import argparse
import json

from medgen.sampling import SCHEDULERS, TIMESTEP_SPACINGS, guidance_interval_text


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "models",
        help="list the pretrained pipelines shipped with medgen (or ship a training run as one)",
        description="List the built-in pretrained pipelines: name, modality, resolution, size, folder (which "
        "stock diffusers loads), labels, training data and stored evaluation figures.",
    )
    parser.add_argument(
        "--json", action="store_true",
        help="print a JSON list for scripts (name, aliases, folder, labels, evaluation figures, ...)",
    )
    actions = parser.add_subparsers(dest="models_action", metavar="ACTION")
    ship = actions.add_parser(
        "ship",
        help="turn a training output into a shipped pipeline folder (fp16, current pipeline.py, model card)",
        description="Re-save the pipeline trained in RUN_DIR as a shipped folder (default medgen/pretrained/NAME): "
        "current pipeline.py, fp16 safetensors, training config and samples, medgen_model.json. Then store its "
        "evaluation with `medgen evaluate --pipeline <folder> --config RUN_DIR/training_config.yaml --split test "
        "--store-in-builtin` (--store-in-pipeline for a folder outside medgen/pretrained).",
    )
    ship.add_argument("run_dir", help="training output folder (holds model_index.json)")
    ship.add_argument("--name", required=True, help="model name, e.g. chest-xray")
    ship.add_argument("--modality", required=True, help="imaging modality, e.g. 'chest X-ray'")
    ship.add_argument("--training-data", required=True, help="what it was trained on (set, split, image count)")
    ship.add_argument("--output", help="shipped folder (default medgen/pretrained/NAME)")
    ship.add_argument("--overwrite", action="store_true", help="replace an existing shipped folder")
    ship.add_argument(
        "--text-encoder-from",
        metavar="ENCODER",
        help="text pipelines: leave out the frozen text encoder's weights and load them from ENCODER (e.g. "
        "minilm-offline) instead; refused unless the pipeline's encoder holds exactly those weights",
    )
    ship.add_argument(
        "--guidance-scale", type=float, metavar="SCALE",
        help="label models: store SCALE as the model's default guidance scale (what a call without one uses; "
        "choose it with benchmarks/bench_guidance.py); default: keep the run's",
    )
    ship.add_argument(
        "--guidance-interval", type=float, nargs=2, metavar=("START", "STOP"),
        help="label models: store the sampling steps that are guided by default, fractions of the steps from the "
        "noisiest (0) to the last (1) (choose it with benchmarks/bench_guidance.py --interval); default: every step",
    )
    ship.add_argument(
        "--scheduler", choices=sorted(SCHEDULERS),
        help="the model's saved sampler, built from its own noise schedule (choose it with "
        "benchmarks/bench_guidance.py --sampler); default: keep the run's",
    )
    ship.add_argument(
        "--timestep-spacing", choices=TIMESTEP_SPACINGS,
        help="where the saved sampler places its steps: linspace (evenly from the last training timestep to 0), "
        "trailing (back from the last, no step at 0) or leading; default: keep the saved scheduler's",
    )
    ship.add_argument(
        "--num-inference-steps", type=int, metavar="STEPS",
        help="label models: store STEPS as the model's default step count (what a call without one uses); default: 15",
    )
    ship.add_argument(
        "--mask-guidance-scale", type=float, metavar="SCALE",
        help="mask models: store SCALE as the model's default mask guidance (what a call without one uses; choose it "
        "with benchmarks/bench_mask_guidance.py); default: keep the run's (1, none)",
    )
    ship.add_argument(
        "--mask-generator-guidance-scale", type=float, metavar="SCALE",
        help="mask models with a mask generator: store SCALE as the label guidance it draws masks with (what a call "
        "without one uses; choose it with benchmarks/bench_mask_generator.py); default: keep the run's (1, none)",
    )
    ship.add_argument(
        "--vae", metavar="DIR",
        help="latent models: ship the autoencoder saved in DIR instead of the run's, e.g. one whose decoder was "
        "trained further (vae.train_decoder_only); refused unless its configuration and encoder equal the run's "
        "(the UNet was trained on those latents); samples.png is redrawn",
    )
    parser.set_defaults(run=run)
    return parser


def run(args: argparse.Namespace) -> int:
    if getattr(args, "models_action", None) == "ship":
        from medgen.pipelines.catalog import ship

        folder = ship(
            args.run_dir, args.name, args.modality, args.training_data, args.output, args.overwrite,
            text_encoder_from=args.text_encoder_from, guidance_scale=args.guidance_scale,
            guidance_interval=args.guidance_interval, scheduler=args.scheduler, num_inference_steps=args.num_inference_steps,
            timestep_spacing=args.timestep_spacing, vae=args.vae, mask_guidance_scale=args.mask_guidance_scale,
            mask_generator_guidance_scale=args.mask_generator_guidance_scale,
        )
        print(f"Shipped {args.name} to {folder}")
        from medgen.evaluation.provenance import is_builtin_folder

        store = "--store-in-builtin" if is_builtin_folder(folder) else "--store-in-pipeline"
        text = "tokenizer" in json.loads((folder / "model_index.json").read_text())
        print(
            f"Next: medgen evaluate --pipeline {folder} --config {args.run_dir}/training_config.yaml "
            + ("--prompt-groups --num-samples 540 " if text else "--split test --num-samples 256 ")
            + f"--output <report folder> {store}"
        )
        return 0
    descriptions = list_models()
    if args.json:
        print(json.dumps([description.to_dict() for description in descriptions], indent=2))
    else:
        print(format_table(descriptions))
    return 0


def list_models():
    from medgen.pipelines.catalog import describe
    from medgen.pipelines.hub import BUILTIN_PIPELINES, builtin_pipeline_path

    seen, descriptions = set(), []
    for name in BUILTIN_PIPELINES:
        folder = builtin_pipeline_path(name)
        if folder in seen or not (folder / "model_index.json").is_file():
            continue
        seen.add(folder)
        names = [other for other, path in BUILTIN_PIPELINES.items() if builtin_pipeline_path(other) == folder]
        # the model's own name (`chest-xray`) first; generic aliases (`default`) beside it
        primary = next((other for other in names if other != "default"), names[0])
        description = describe(folder, name=primary)
        description.aliases = [other for other in names if other != primary]
        descriptions.append(description)
    return descriptions


WIDTH = 100  # a terminal's columns
LABEL_WIDTH = 14
INTERVAL_NOTE = (
    "[low, high]: the stored evaluation's {level} interval, where the figure falls for another draw of as many "
    "images (bootstrap over the generated images; docs/evaluation.md)."
)
RECALL_ZERO_NOTE = (
    "* recall 0.00: no real test image lies within the k-nearest-neighbour radius (k = 3, Inception features) "
    "of any generated image: the generated images cover none of the real images' variety as that metric sees "
    "it. With precision near 0 as well, they are off at fine scale (blotchy: every generated feature outside "
    "the real manifold) rather than collapsed onto a few modes. See docs/models.md and docs/evaluation.md."
)


def _number(value: float, digits: int = 2) -> str:
    return f"{value:.{digits}f}"


def _span(bounds: list[float], digits: int) -> str:
    """A stored interval, e.g. "[52.8, 57.2]": where the figure would fall for another draw of images."""
    return f"[{bounds[0]:.{digits}f}, {bounds[1]:.{digits}f}]"


def _is_zero(value) -> bool:
    return value is not None and round(value, 2) == 0


def _detail_lines(description) -> list[tuple[str, str]]:
    e = description.evaluation
    star = "*"
    prompts = description.example_prompts
    condition = (
        ("prompts", f"free text; {len(prompts)} example prompts (its trained facts), e.g. " + "; ".join(repr(p) for p in prompts[:3]))
        if prompts else ("labels", (", ".join(description.labels) or "none (unconditional)") + (
            f"; samples at guidance {description.default_guidance:g} by default" if description.default_guidance is not None else "")
            + (f", guided on steps {guidance_interval_text(description.default_guidance_interval)} of the way"
               if description.default_guidance_interval is not None else "")
            + (f"; mask guidance {description.default_mask_guidance:g} by default"
               if description.default_mask_guidance is not None else "")
            + (f"; masks drawn at label guidance {description.default_mask_generator_guidance:g} by default"
               if description.default_mask_generator_guidance is not None else ""))
    )
    rows = [("folder", description.folder), condition, ("trained on", description.training_data)]
    if description.sampler:
        rows.insert(2, ("sampler", f"{description.sampler}, {description.default_steps} steps by default"))
    if "fid" in e:
        intervals = e.get("intervals") or {}
        fidelity = f"FID {e['fid']:.1f}" + (f" {_span(intervals['fid'], 1)}" if "fid" in intervals else "")
        fidelity += f" at N = {e['n_generated']}" if e.get("n_generated") else ""
        if e.get("fid_real_baseline") is not None:
            fidelity += f" (real-vs-real floor {e['fid_real_baseline']:.1f})"
        if e.get("precision") is not None:
            fidelity += f", precision {_number(e['precision'])}"
        if e.get("recall") is not None:
            fidelity += f", recall {_number(e['recall'])}{star if _is_zero(e['recall']) else ''}"
            fidelity += f" {_span(intervals['recall'], 2)}" if "recall" in intervals else ""
        rows.append(("fidelity", fidelity))
        per_label = e.get("recall_per_label") or {}
        if per_label:
            rows.append(("recall/label", ", ".join(
                f"{name} {_number(value)}{star if _is_zero(value) else ''}" for name, value in per_label.items()
            )))
        usefulness = []
        if e.get("modality_accuracy") is not None:
            usefulness.append(f"modality accuracy {_number(e['modality_accuracy'])}")
            usefulness += [f"{name} finding accuracy {_number(value)}" for name, value in e["finding_accuracy"].items()
                           if value is not None]
        if e.get("label_accuracy") is not None:
            usefulness.append(f"label accuracy {_number(e['label_accuracy'])}")
        if e.get("tstr_auc") is not None and e.get("trtr_auc"):
            usefulness.append(f"TSTR/TRTR AUROC {e['tstr_auc']:.3f}/{e['trtr_auc']:.3f}")
        if e.get("mask_dice_ratio") is not None:
            usefulness.append(f"mask faithfulness (Dice ratio) {_number(e['mask_dice_ratio'])}")
        if usefulness:
            rows.append(("usefulness", ", ".join(usefulness)))
        if "memorization_alarm" in e:
            rows.append(("memorization", "ALARM" if e["memorization_alarm"] else "no alarm"))
    else:
        rows.append(("evaluation", "none stored (medgen evaluate --pipeline NAME ...)"))
    return rows


def format_table(descriptions) -> str:
    """One block per model, every line within `WIDTH` columns: name and what it is, then its folder (which
    stock diffusers loads), labels, training data and stored evaluation; a note explains a recall of 0."""
    import textwrap

    lines: list[str] = []
    for d in descriptions:
        title = d.name + (f" (also {', '.join(d.aliases)})" if d.aliases else "")
        kind = f"{d.modality}, {d.resolution} px{' latent' if d.latent else ''}, {d.size_mb:.1f} MB"
        lines.extend(textwrap.wrap(f"{title}: {kind}", WIDTH, subsequent_indent=" " * 2))
        for label, text in _detail_lines(d):
            head = f"  {label:<{LABEL_WIDTH}}"
            lines.extend(textwrap.wrap(
                text, WIDTH, initial_indent=head, subsequent_indent=" " * len(head),
                break_long_words=label == "folder", break_on_hyphens=False,
            ) or [head.rstrip()])
        lines.append("")
    if any(_is_zero(d.evaluation.get("recall")) or any(_is_zero(v) for v in (d.evaluation.get("recall_per_label") or {}).values())
           for d in descriptions):
        lines.extend(textwrap.wrap(RECALL_ZERO_NOTE, WIDTH, subsequent_indent="  "))
    levels = {d.evaluation["intervals"].get("level") for d in descriptions if d.evaluation.get("intervals")}
    if levels:
        level = "/".join(f"{value:.0%}" for value in sorted(levels) if value is not None)
        lines.extend(textwrap.wrap(INTERVAL_NOTE.format(level=level), WIDTH, subsequent_indent="  "))
    lines += [
        "Load one by name: medgen.load_pipeline(NAME), medgen generate --pipeline NAME; with stock diffusers,",
        "by its folder: DiffusionPipeline.from_pretrained(FOLDER, trust_remote_code=True). Scripts: --json.",
    ]
    return "\n".join(lines)
