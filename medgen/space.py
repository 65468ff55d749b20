"""`medgen space build`: assemble a Hugging Face Space folder that serves a pipeline with medgen's app.

    medgen space build --pipeline runs/chestxray/pipeline --output build/space   # weights copied in
    medgen space build --pipeline my-org/medgen-chestxray --output build/space   # loaded from the Hub

The folder holds the Space `README.md` (front matter: sdk, sdk_version, app_file, license,
models, tags), `requirements.txt`, the entry point `app.py`, the app itself (`medgen_app.py`,
a copy of the repository's `app.py`), a copy of the `medgen` package (so the Space needs no
medgen release), `space_config.json` naming the pipeline, and `pipeline/` for a local pipeline.
Upload it with `hf upload <user>/<space> OUT . --repo-type space`.

Privacy gate (`medgen.pipelines.publishing.check_before_publishing`, shared with `push_to_hub`): a local
pipeline must hold a stored evaluation of its weights (`medgen evaluate --pipeline DIR` writes
`evaluation.json`) without a memorization alarm. A Hub repo id cannot be checked here without downloading
its weights, so it needs `--allow-unevaluated` (a pipeline published with `push_to_hub` passed the gate then).
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import shutil
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

SPACE_CONFIG = "space_config.json"
LOCAL_PIPELINE_DIR = "pipeline"
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


def render_readme(template: str, hub_id: str | None, title: str | None) -> str:
    """The Space README with `models` (the Hub id, when there is one) and the title filled in."""
    import yaml

    meta, body = _front_matter(template)
    meta["models"] = [hub_id] if hub_id else []
    if title:
        meta["title"] = title
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
        "`medgen evaluate --pipeline DIR --data REAL_DATA --output EVAL_DIR` and build from DIR."
    )


def build_space(pipeline: str, output: str | Path, title: str | None = None, allow_unevaluated: bool = False) -> Path:
    """
    Writes a deployable Space folder to `output` (which must not exist or be empty) and returns it.

    A local `pipeline` folder is copied into `output/pipeline`; a Hub repo id is written to
    `space_config.json` and listed under `models` in the README, and the Space downloads it at start-up.
    Before anything is written, the privacy gate (`check_space_pipeline`) refuses a pipeline without a
    clean stored evaluation unless `allow_unevaluated`.
    """
    app_file, template_dir = _template_files()
    local_folder, class_name = _check_pipeline(pipeline)
    output = Path(output).expanduser()
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise ValueError(f"--output {output} already exists and is not an empty folder; choose a new folder.")
    check_space_pipeline(pipeline, local_folder, allow_unevaluated)
    output.mkdir(parents=True, exist_ok=True)

    hub_id = None if local_folder else pipeline
    readme = render_readme((template_dir / "README.md").read_text(), hub_id, title)
    (output / "README.md").write_text(readme)
    shutil.copyfile(template_dir / "requirements.txt", output / "requirements.txt")
    shutil.copyfile(template_dir / "app.py", output / "app.py")
    shutil.copyfile(app_file, output / "medgen_app.py")
    package_dir = Path(__file__).resolve().parent
    shutil.copytree(package_dir, output / "medgen", ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "default_pipeline"))
    if local_folder is not None:
        shutil.copytree(local_folder, output / LOCAL_PIPELINE_DIR, ignore=shutil.ignore_patterns(".git", ".cache"))
    config = {"pipeline": LOCAL_PIPELINE_DIR if local_folder else hub_id, "pipeline_class": class_name or None}
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
        "--pipeline", required=True, help="built-in pipeline name (default), pipeline folder (with model_index.json) or Hub repo id"
    )
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
    output = build_space(args.pipeline, args.output, title=args.title, allow_unevaluated=args.allow_unevaluated)
    print(f"Space written to {output}. Try it: cd {output} && python app.py")
    print(f"Upload it: hf upload <user>/<space> {output} . --repo-type space")
    return 0
