"""Launches `app.py` on a tiny seeded pipeline for the end-to-end app tests (API client and browser)."""

from __future__ import annotations

import importlib.util
import socket
from pathlib import Path

from helpers import tiny_label_pipeline

from medgen.app_logic import AppService

REPO_ROOT = Path(__file__).resolve().parent.parent


def load_app_module(name: str = "medgen_app_under_test"):
    """`app.py` lives at the repository root, outside the package: load it by path."""
    spec = importlib.util.spec_from_file_location(name, REPO_ROOT / "app.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def serve_tiny_app(app_module, tmp_path_factory):
    """Serves the app on a 3-label tiny pipeline; returns (service, demo, url). Close with `demo.close()`."""
    folder = tmp_path_factory.mktemp("pipeline")
    tiny_label_pipeline(labels=("normal", "pneumonia", "effusion")).save_pretrained(folder)
    service = AppService.from_source(str(folder), device="cpu", workdir=tmp_path_factory.mktemp("downloads"))
    demo = app_module.build_demo(service)
    port = free_port()
    app_module.launch(demo, service, server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    return service, demo, f"http://127.0.0.1:{port}/"
