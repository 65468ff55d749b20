"""Hugging Face Space entry point: serves medgen's Gradio app for the pipeline named in space_config.json.

`medgen space build` puts this file next to `medgen_app.py` (the app), `medgen/` (the library),
`space_config.json` and, for a local pipeline, `pipeline/`. Run from a medgen checkout
(`python space/app.py`) it falls back to the repository's `app.py` and its usual pipeline lookup.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def pipeline_source() -> str | None:
    """The pipeline folder inside the Space, or the Hub repo id, from space_config.json."""
    config_file = HERE / "space_config.json"
    if not config_file.is_file():
        return None
    pipeline = json.loads(config_file.read_text())["pipeline"]
    local = HERE / pipeline
    return str(local) if local.is_dir() else pipeline


def load_app_module():
    app_file = HERE / "medgen_app.py"
    if not app_file.is_file():
        app_file = HERE.parent / "app.py"  # running from a medgen source checkout
    spec = importlib.util.spec_from_file_location("medgen_app", app_file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


if __name__ == "__main__":
    source = pipeline_source()
    if source and not os.environ.get("MEDGEN_PIPELINE"):
        os.environ["MEDGEN_PIPELINE"] = source
    load_app_module().main(sys.argv[1:])
