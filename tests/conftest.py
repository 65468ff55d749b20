"""Shared test fixtures: where the real data lives, and skips when it is absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# huggingface_hub reads these once, at import: set them before anything imports it.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("MEDGEN_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


def _require(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"real data not found at {path} (set MEDGEN_SHARED_DATA to the shared data folder)")
    return path


@pytest.fixture(scope="session")
def pneumoniamnist_npz() -> Path:
    return _require(SHARED_DATA / "pneumoniamnist" / "pneumoniamnist.npz")


@pytest.fixture(scope="session")
def covid_notes_dir() -> Path:
    return _require(SHARED_DATA / "covid-cxr-notes")


@pytest.fixture(scope="session")
def iu_reports_dir() -> Path:
    return _require(SHARED_DATA / "iu-xray-reports")


@pytest.fixture(scope="module")
def single_thread():
    """Torch on one thread for a module's tests: tiny models run fastest so, and several test processes share
    few cores (`pytestmark = pytest.mark.usefixtures("single_thread")`)."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(autouse=True)
def _offline_hub(monkeypatch):
    # Tests never reach the Hub: every model they load is local.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)


@pytest.fixture(autouse=True)
def _frd_only_in_its_own_tests(request, monkeypatch):
    # With medgen[frd] installed, every evaluation would also extract radiomic features (~0.1-0.2 s per image
    # per core); only tests/test_frd.py measures FRD, the other evaluation tests get its "not installed" entry.
    if request.module.__name__ != "test_frd":
        monkeypatch.setattr("medgen.evaluation.frd.missing_packages", lambda: ["frd-score (left out of this test)"])
