"""Launches `app.py` on a tiny seeded pipeline for the end-to-end app tests (API client and browser)."""

from __future__ import annotations

import importlib.util
import socket
from pathlib import Path

from helpers import tiny_label_pipeline
from mask_helpers import tiny_mask_pipeline

from medgen.app import AppService

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


BRAIN_LABELS = ("glioma", "meningioma", "no_tumor", "pituitary")


def tiny_model_folders(tmp_path_factory) -> tuple[Path, Path, Path]:
    """Three saved tiny pipelines: `tiny-chest` (3 labels), `tiny-brain` (latent, 4 labels) and `tiny-mask` (a mask
    model with labels normal / tuberculosis, one mask class "lung" and a mask generator)."""
    root = tmp_path_factory.mktemp("pipelines")
    tiny_label_pipeline(labels=("normal", "pneumonia", "effusion")).save_pretrained(root / "tiny-chest")
    tiny_label_pipeline(labels=BRAIN_LABELS, latent=True, seed=1).save_pretrained(root / "tiny-brain")
    tiny_mask_pipeline().save_pretrained(root / "tiny-mask")
    return root / "tiny-chest", root / "tiny-brain", root / "tiny-mask"


def serve_tiny_app(app_module, tmp_path_factory, batch_size: int = 2):
    """
    Serves the app on three tiny pipelines given as `--pipeline` folders (`tiny-chest` selected at start) next to
    the built-in ones; returns (service, demo, url). Runs are made in batches of `batch_size`, so a run of
    more images shows finished batches before the end. Close with `demo.close()`.
    """
    service = AppService.from_sources(
        [str(folder) for folder in tiny_model_folders(tmp_path_factory)], device="cpu", workdir=tmp_path_factory.mktemp("downloads"), batch_size=batch_size
    )
    demo = app_module.build_demo(service)
    port = free_port()
    app_module.launch(demo, service, server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    return service, demo, f"http://127.0.0.1:{port}/"
