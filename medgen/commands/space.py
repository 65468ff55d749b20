"""`medgen space build`: assemble a Hugging Face Space folder that serves medgen's app with every built-in model.

    medgen space build --output build/space                                      # all built-in pipelines
    medgen space build --pipeline runs/chestxray/pipeline --output build/space   # plus yours, weights copied in
    medgen space build --pipeline my-org/medgen-chestxray --output build/space   # plus a Hub model
    medgen space build --pipeline runs/a/pipeline --no-builtins --output build/space   # only yours

The folder holds the Space `README.md` (front matter: sdk, sdk_version, app_file, license,
models, tags; a table of the models served, with modality, resolution and labels), `requirements.txt`,
the entry point `app.py`, the app itself (`medgen_app.py`, a copy of the repository's `app.py`), a copy
of the `medgen` package with the built-in pipelines it serves (so the Space needs no medgen release),
`space_config.json` naming the extra pipelines, and `pipelines/<name>/` for each local one.
Upload it with `hf upload <user>/<space> OUT . --repo-type space`.

Privacy gate (`medgen.pipelines.publishing.check_before_publishing`, shared with `push_to_hub`): every local
pipeline, built-ins included, must hold a stored evaluation of its weights (`medgen evaluate --pipeline DIR`
writes `evaluation.json`) without a memorization alarm. A Hub repo id cannot be checked here without
downloading its weights, so it needs `--allow-unevaluated` (a pipeline published with `push_to_hub` passed
the gate then).
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

SPACE_CONFIG = "space_config.json"
LOCAL_PIPELINES_DIR = "pipelines"
MODELS_MARKER = "<!-- medgen-models -->"
# Model card tags that name a modality, most specific first.
MODALITY_TAGS = {
    "chest-x-ray": "chest X-ray", "brain-mri": "brain MRI", "breast-ultrasound": "breast ultrasound",
    "lung-ct": "lung CT", "x-ray": "X-ray", "mri": "MRI", "ultrasound": "ultrasound", "ct": "CT",
}
HUB_ID_PATTERN = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$")


def source_root() -> Path:
    """The medgen source checkout (holding `app.py` and `space/`) this package was installed from."""
    import medgen

    return Path(medgen.__file__).resolve().parent.parent


def _template_files() -> tuple[Path, Path]:
    root = source_root()
    app_file, template_dir = root / "app.py", root / "space"
    missing = [str(path) for path in (app_file, template_dir / "app.py", template_dir / "README.md") if not path.exists()]
    if missing:
        raise FileNotFoundError(
            f"`medgen space build` needs a medgen source checkout (app.py and space/); not found: {', '.join(missing)}. "
            "Install medgen from its repository with `pip install -e .`."
        )
    return app_file, template_dir


def _check_pipeline(pipeline: str) -> tuple[Path | None, str]:
    """`(local folder, class name)` for a built-in name or a local pipeline, `(None, "")` for a Hub repo id."""
    from medgen.pipelines.hub import BUILTIN_PIPELINES, builtin_pipeline_path

    path = builtin_pipeline_path(pipeline) if pipeline.lower() in BUILTIN_PIPELINES else Path(pipeline).expanduser()
    if path.is_dir():
        from medgen.pipelines import PIPELINE_CLASSES
        from medgen.pipelines.hub import pipeline_class_name, read_model_index, resolve_pipeline_folder

        folder = resolve_pipeline_folder(path)
        class_name = pipeline_class_name(read_model_index(folder))
        known = set(PIPELINE_CLASSES) | {"TextToImagePipeline"}
        if class_name not in known:
            raise ValueError(f"--pipeline {path} holds a {class_name}, not a medgen pipeline ({', '.join(sorted(known))}).")
        return folder, class_name
    if path.exists():
        raise ValueError(f"--pipeline {path} is a file; give a pipeline folder (with model_index.json) or a Hub repo id.")
    if not HUB_ID_PATTERN.match(pipeline):
        raise FileNotFoundError(
            f"--pipeline {pipeline!r} is neither an existing pipeline folder nor a Hub repo id like 'org/name'."
        )
    return None, ""


def _front_matter(readme: str) -> tuple[dict[str, Any], str]:
    import yaml

    match = re.match(r"^---\n(.*?)\n---\n?(.*)$", readme, flags=re.DOTALL)
    if not match:
        raise ValueError("space/README.md must start with the Spaces YAML front matter between '---' lines.")
    return yaml.safe_load(match.group(1)) or {}, match.group(2)


@dataclass(frozen=True)
class SpaceModel:
    """One model the Space serves: how the app names it, where it comes from, what the README says of it."""

    name: str
    source: str
    folder: Path | None  # None for a Hub repo id
    builtin: str | None = None  # the built-in name, for a built-in pipeline


def model_card_modality(folder: Path) -> str:
    """The modality a pipeline states: a shipped folder's `medgen_model.json` (`medgen models ship`), else its
    model card (a "Modality" table row, else a modality tag), or "not recorded"."""
    info = folder / "medgen_model.json"
    if info.is_file():
        try:
            modality = json.loads(info.read_text()).get("modality")
        except (OSError, ValueError):
            modality = None
        if isinstance(modality, str) and modality.strip():
            return modality.strip()
    card = folder / "README.md"
    if not card.is_file():
        return "not recorded"
    text = card.read_text(errors="replace")
    row = re.search(r"^\|\s*Modality\s*\|\s*([^|]+?)\s*\|", text, flags=re.MULTILINE | re.IGNORECASE)
    if row:
        return row.group(1)
    try:
        meta, _ = _front_matter(text)
    except ValueError:
        return "not recorded"
    tags = {str(tag).lower() for tag in meta.get("tags") or []}
    return next((modality for tag, modality in MODALITY_TAGS.items() if tag in tags), "not recorded")


def models_table(models: list[SpaceModel]) -> str:
    """The README's markdown table of the served models, read from each folder's configs and model card."""
    from medgen.app.models import describe_pipeline_folder

    lines = ["| model | modality | resolution | labels |", "|---|---|---|---|"]
    for model in models:
        if model.folder is None:
            lines.append(f"| `{model.name}` | see [its model card](https://huggingface.co/{model.source}) | | |")
            continue
        info = describe_pipeline_folder(model.folder)
        labels = ", ".join(info.labels) if info.labels else {"text": "free-text prompt", "mask": "", "unconditional": "none"}[info.kind]
        if info.kind == "mask":  # a mask model: its mask classes too (the app asks for, or samples, such a mask)
            labels = "; ".join(part for part in (labels, f"mask: {', '.join(info.mask_classes)}") if part)
        lines.append(f"| `{model.name}` | {model_card_modality(model.folder)} | {info.image_size} px | {labels} |")
    return "\n".join(lines)


def render_readme(template: str, hub_ids: list[str] | str | None, title: str | None, models: list[SpaceModel] = ()) -> str:
    """The Space README with `models` (the Hub ids), the title and the table of served models filled in."""
    import yaml

    if isinstance(hub_ids, str):
        hub_ids = [hub_ids]
    meta, body = _front_matter(template)
    meta["models"] = list(hub_ids or [])
    if title:
        meta["title"] = title
    if models:
        table = "## Models\n\n" + models_table(list(models))
        body = body.replace(MODELS_MARKER, table) if MODELS_MARKER in body else body.rstrip() + "\n\n" + table + "\n"
    return "---\n" + yaml.safe_dump(meta, sort_keys=False, allow_unicode=True) + "---\n" + body


def check_space_pipeline(pipeline: str, local_folder: Path | None, allow_unevaluated: bool) -> str:
    """The privacy gate for `pipeline` (see the module docstring); returns its one-line note, or raises
    `PublishingRefused`."""
    from medgen.pipelines.publishing import PublishingRefused, check_before_publishing

    action = "build a Space"
    if local_folder is not None:
        return check_before_publishing(
            local_folder, allow_unevaluated, action=action, override="--allow-unevaluated",
            name=f"--pipeline {pipeline}", evaluate_target=pipeline,
        )
    problem = (
        f"--pipeline {pipeline} is a Hub repo id: its stored evaluation cannot be checked without downloading "
        "the model"
    )
    if allow_unevaluated:
        note = f"{action} without checking a stored evaluation (--allow-unevaluated): {problem}"
        logger.warning(note)
        return note
    raise PublishingRefused(
        f"refusing to {action}: {problem}. Pass --allow-unevaluated if the repo was evaluated (push_to_hub "
        f"refuses unevaluated pipelines), or download it (`hf download {pipeline} --local-dir DIR`), run "
        "`medgen evaluate --pipeline DIR --data REAL_DATA --output EVAL_DIR --store-in-pipeline` and build from DIR."
    )


def space_models(pipelines: list[str], include_builtins: bool) -> list[SpaceModel]:
    """The models to serve: the given pipelines first (a built-in name counts as that built-in), then the built-ins."""
    from medgen.app.models import builtin_models, model_name
    from medgen.pipelines.hub import BUILTIN_PIPELINES, builtin_pipeline_path

    builtins = builtin_models()
    by_folder = {builtin_pipeline_path(builtin): display for display, builtin in builtins.items()}
    models: list[SpaceModel] = []
    for pipeline in pipelines:
        folder, _ = _check_pipeline(pipeline)
        if pipeline.lower() in BUILTIN_PIPELINES:
            display = by_folder.get(builtin_pipeline_path(pipeline), pipeline.lower())
            models.append(SpaceModel(display, pipeline, folder, builtin=builtins.get(display, pipeline.lower())))
            continue
        name = model_name(pipeline) if folder is not None else pipeline
        if any(model.name == name for model in models) or name in builtins:
            raise ValueError(f"--pipeline {pipeline}: another model is already called {name!r}; rename its folder.")
        models.append(SpaceModel(name, pipeline, folder))
    if include_builtins:
        for display, builtin in builtins.items():
            if not any(model.builtin == builtin for model in models):
                models.append(SpaceModel(display, builtin, builtin_pipeline_path(builtin), builtin=builtin))
    if not models:
        raise ValueError("nothing to serve: give --pipeline, or leave out --no-builtins")
    return models


def build_space(
    pipelines: str | list[str] | tuple[str, ...] = (),
    output: str | Path | None = None,
    title: str | None = None,
    allow_unevaluated: bool = False,
    include_builtins: bool = True,
) -> Path:
    """
    Writes a deployable Space folder to `output` (which must not exist or be empty) and returns it.

    The Space serves every built-in pipeline (unless `include_builtins` is False) plus `pipelines`: a local
    folder is copied into `output/pipelines/<name>`; a Hub repo id is written to `space_config.json` and
    listed under `models` in the README, and the Space downloads it at start-up. Before anything is
    written, the privacy gate (`check_space_pipeline`) refuses any pipeline without a clean stored
    evaluation unless `allow_unevaluated`.
    """
    from medgen.pipelines.hub import BUILTIN_PIPELINES, builtin_pipeline_path

    if output is None:
        raise ValueError("--output is required")
    pipelines = [pipelines] if isinstance(pipelines, str) else list(pipelines)
    app_file, template_dir = _template_files()
    models = space_models(pipelines, include_builtins)
    output = Path(output).expanduser()
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise ValueError(f"--output {output} already exists and is not an empty folder; choose a new folder.")
    for model in models:
        label = model.source if model.builtin is None else f"built-in {model.name}"
        check_space_pipeline(label, model.folder, allow_unevaluated)
    output.mkdir(parents=True, exist_ok=True)

    hub_ids = [model.source for model in models if model.folder is None]
    readme = render_readme((template_dir / "README.md").read_text(), hub_ids, title, models)
    (output / "README.md").write_text(readme)
    shutil.copyfile(template_dir / "requirements.txt", output / "requirements.txt")
    shutil.copyfile(template_dir / "app.py", output / "app.py")
    shutil.copyfile(app_file, output / "medgen_app.py")
    package_dir = source_root() / "medgen"
    builtin_folders = {builtin_pipeline_path(name).resolve() for name in BUILTIN_PIPELINES}

    def leave_out(folder: str, names: list[str]) -> set[str]:
        # Built-in pipelines are copied below, only those served; caches never.
        return {
            name for name in names
            if name == "__pycache__" or name.endswith(".pyc") or (Path(folder) / name).resolve() in builtin_folders
        }

    shutil.copytree(package_dir, output / "medgen", ignore=leave_out)
    ignore = shutil.ignore_patterns(".git", ".cache", "__pycache__")
    extras: list[str] = []
    for model in models:
        if model.builtin is not None:
            relative = builtin_pipeline_path(model.builtin).resolve().relative_to(package_dir)
            shutil.copytree(model.folder, output / "medgen" / relative, ignore=ignore, dirs_exist_ok=True)
        elif model.folder is not None:
            shutil.copytree(model.folder, output / LOCAL_PIPELINES_DIR / model.name, ignore=ignore)
            extras.append(f"{LOCAL_PIPELINES_DIR}/{model.name}")
        else:
            extras.append(model.source)
    given_builtins = [model.builtin for model in models[: len(pipelines)] if model.builtin is not None]
    config = {
        # Served in this order before the built-ins; the first model is selected at start.
        "pipelines": given_builtins + extras,
        "builtins": include_builtins,
        "models": [model.name for model in models],
    }
    (output / SPACE_CONFIG).write_text(json.dumps(config, indent=2) + "\n")
    return output


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("space", help="assemble a Hugging Face Space that serves a pipeline")
    space_commands = parser.add_subparsers(dest="space_command", metavar="SUBCOMMAND", required=True)
    build = space_commands.add_parser(
        "build",
        help="write a deployable Space folder (README front matter, requirements, app)",
        description="Assemble a Hugging Face Space folder serving PIPELINE with medgen's Gradio app. "
        "A local pipeline folder is copied in; a Hub repo id is downloaded by the Space at start-up.",
    )
    build.add_argument(
        "--pipeline", action="append", default=[], metavar="SOURCE",
        help="a pipeline to serve besides the built-in ones: pipeline folder (with model_index.json), Hub repo id or "
        "built-in name; repeat it (or give a comma list) for several. The first is selected when the Space starts.",
    )
    build.add_argument("--no-builtins", action="store_true", help="serve only the --pipeline models, not the built-in ones")
    build.add_argument("--output", required=True, help="new (or empty) folder to write the Space to")
    build.add_argument("--title", default=None, help="Space title shown on the Hub (default: from space/README.md)")
    build.add_argument(
        "--allow-unevaluated", action="store_true",
        help="build even when the pipeline has no stored evaluation (medgen evaluate --pipeline DIR), its evaluation "
        "raised the memorization alarm, or it is a Hub repo id that cannot be checked here",
    )
    build.set_defaults(run=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from medgen.app.models import split_sources

    output = build_space(
        split_sources(args.pipeline), args.output, title=args.title, allow_unevaluated=args.allow_unevaluated,
        include_builtins=not args.no_builtins,
    )
    models = json.loads((output / SPACE_CONFIG).read_text())["models"]
    print(f"Space written to {output}, serving {len(models)} model(s): {', '.join(models)}. Try it: cd {output} && python app.py")
    print(f"Upload it: hf upload <user>/<space> {output} . --repo-type space")
    return 0
