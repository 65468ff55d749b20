"""Hugging Face Space entry point: serves medgen's Gradio app for the built-in models and those in space_config.json.

`medgen space build` puts this file next to `medgen_app.py` (the app), `medgen/` (the library with the
built-in pipelines it serves), `space_config.json` and, for local pipelines, `pipelines/<name>/`. Run from a medgen checkout
(`python space/app.py`) it falls back to the repository's `app.py` and its usual pipeline lookup.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def config_arguments() -> list[str]:
    """`--pipeline` flags for the extra models named in space_config.json (local ones inside the Space), and
    `--no-builtins` when the Space serves only those; the built-in models come with the `medgen/` copy."""
    config_file = HERE / "space_config.json"
    if not config_file.is_file():
        return []
    config = json.loads(config_file.read_text())
    arguments: list[str] = []
    for pipeline in config.get("pipelines", []):
        local = HERE / pipeline
        arguments += ["--pipeline", str(local) if local.is_dir() else pipeline]
    if not config.get("builtins", True):
        arguments.append("--no-builtins")
    return arguments


def load_app_module():
    app_file = HERE / "medgen_app.py"
    if not app_file.is_file():
        app_file = HERE.parent / "app.py"  # running from a medgen source checkout
    spec = importlib.util.spec_from_file_location("medgen_app", app_file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


if __name__ == "__main__":
    arguments = sys.argv[1:]
    # A --pipeline on the command line or $MEDGEN_PIPELINE replaces the Space's configured models.
    if "--pipeline" not in arguments and not os.environ.get("MEDGEN_PIPELINE"):
        arguments = config_arguments() + arguments
    load_app_module().main(arguments)
