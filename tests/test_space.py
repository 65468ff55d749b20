"""`medgen space build`: the assembled folder is a valid Space and its app starts and answers HTTP."""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from helpers import tiny_label_pipeline

from medgen.commands import space

REPO_ROOT = Path(__file__).resolve().parent.parent


def front_matter(readme: Path) -> dict:
    text = readme.read_text()
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n")[1])


def pinned_gradio(requirements: Path) -> str:
    pins = [line.split("==")[1].strip() for line in requirements.read_text().splitlines() if line.startswith("gradio==")]
    assert len(pins) == 1
    return pins[0]


def run_cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="medgen")
    space.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(list(argv))
    return args.run(args)


# These tests build from unevaluated pipelines on purpose, with allow_unevaluated: the privacy gate
# itself is tested in test_publishing_gate.py.
@pytest.fixture(scope="module")
def pipeline_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("pipeline")
    tiny_label_pipeline().save_pretrained(folder)
    return folder


def test_template_front_matter_matches_the_pinned_gradio():
    meta = front_matter(REPO_ROOT / "space" / "README.md")
    assert meta["sdk"] == "gradio" and meta["app_file"] == "app.py"
    assert str(meta["sdk_version"]) == pinned_gradio(REPO_ROOT / "space" / "requirements.txt")
    assert meta["license"] and "medical-imaging" in meta["tags"]


def test_build_serves_every_builtin_and_the_given_folders(pipeline_dir, tmp_path):
    from medgen.app.models import builtin_models
    from medgen.pipelines.hub import builtin_pipeline_path

    out = tmp_path / "space"
    assert run_cli("space", "build", "--pipeline", str(pipeline_dir), "--output", str(out), "--allow-unevaluated") == 0
    for name in ("README.md", "requirements.txt", "app.py", "medgen_app.py", "space_config.json", "medgen/__init__.py"):
        assert (out / name).is_file(), name
    copied = out / "pipelines" / pipeline_dir.name
    assert (copied / "model_index.json").read_text() == (pipeline_dir / "model_index.json").read_text()
    config = json.loads((out / "space_config.json").read_text())
    builtins = builtin_models()
    assert config["pipelines"] == [f"pipelines/{pipeline_dir.name}"] and config["builtins"] is True
    assert config["models"] == [pipeline_dir.name, *builtins]
    package = REPO_ROOT / "medgen"
    for builtin in builtins.values():
        # Each built-in pipeline sits where the copied package looks for it, weights included.
        relative = builtin_pipeline_path(builtin).relative_to(package)
        for file in builtin_pipeline_path(builtin).rglob("*"):
            if file.is_file():
                assert (out / "medgen" / relative / file.relative_to(builtin_pipeline_path(builtin))).is_file(), file
    meta = front_matter(out / "README.md")
    assert str(meta["sdk_version"]) == pinned_gradio(out / "requirements.txt") and meta["models"] == []


def test_space_readme_lists_each_model_with_modality_resolution_and_labels(pipeline_dir, tmp_path):
    from medgen.app.models import builtin_models, describe_pipeline_folder
    from medgen.pipelines.hub import builtin_pipeline_path

    (pipeline_dir / "README.md").write_text("---\ntags:\n- brain-mri\n---\n# tiny\n")
    out = space.build_space([str(pipeline_dir)], tmp_path / "space", allow_unevaluated=True)
    rows = [line for line in (out / "README.md").read_text().splitlines() if line.startswith("| `")]
    assert rows[0] == f"| `{pipeline_dir.name}` | brain MRI | 16 px | normal, pneumonia |"
    for row, (name, builtin) in zip(rows[1:], builtin_models().items(), strict=True):
        folder = builtin_pipeline_path(builtin)
        info = describe_pipeline_folder(folder)
        modality = json.loads((folder / "medgen_model.json").read_text())["modality"]  # what `models ship` recorded
        labels = ", ".join(info.labels) + (f"; mask: {', '.join(info.mask_classes)}" if info.kind == "mask" else "")
        if info.kind == "text":  # the built-in text model takes a prompt
            labels = "free-text prompt"
        assert row == f"| `{name}` | {modality} | {info.image_size} px | {labels} |"
    assert "| `default` | chest X-ray | 32 px | normal, pneumonia |" in rows or "default" not in builtin_models()


def test_a_mask_model_is_listed_with_its_mask_classes(tmp_path):
    from mask_helpers import tiny_mask_pipeline

    tiny_mask_pipeline(labels=()).save_pretrained(tmp_path / "masks-only")
    tiny_mask_pipeline().save_pretrained(tmp_path / "tiny-mask")
    table = space.models_table([
        space.SpaceModel("masks-only", str(tmp_path / "masks-only"), tmp_path / "masks-only"),
        space.SpaceModel("tiny-mask", str(tmp_path / "tiny-mask"), tmp_path / "tiny-mask"),
    ])
    assert "| `masks-only` | not recorded | 16 px | mask: lung |" in table
    assert "| `tiny-mask` | not recorded | 16 px | normal, tuberculosis; mask: lung |" in table


def test_build_without_builtins_serves_only_the_given_pipeline(pipeline_dir, tmp_path):
    from medgen.pipelines.hub import BUILTIN_PIPELINES

    out = tmp_path / "space"
    assert run_cli("space", "build", "--pipeline", str(pipeline_dir), "--no-builtins", "--output", str(out), "--allow-unevaluated") == 0
    config = json.loads((out / "space_config.json").read_text())
    assert config["models"] == [pipeline_dir.name] and config["builtins"] is False
    for folder in BUILTIN_PIPELINES.values():
        assert not (out / "medgen" / folder).exists()


def test_builtins_with_a_clean_stored_evaluation_pass_the_privacy_gate(tmp_path):
    from medgen.app.models import builtin_models
    from medgen.pipelines.hub import builtin_pipeline_path
    from medgen.pipelines.publishing import PublishingRefused, stored_evaluation

    unevaluated = [name for name, builtin in builtin_models().items() if stored_evaluation(builtin_pipeline_path(builtin))[1]]
    if unevaluated:
        with pytest.raises(PublishingRefused, match=unevaluated[0]):
            space.build_space([], tmp_path / "space")
    else:
        out = space.build_space([], tmp_path / "space")  # no --allow-unevaluated needed
        assert json.loads((out / "space_config.json").read_text())["models"] == list(builtin_models())


def test_an_unevaluated_extra_pipeline_is_refused_by_the_gate(pipeline_dir, tmp_path):
    from medgen.pipelines.publishing import PublishingRefused

    with pytest.raises(PublishingRefused, match=str(pipeline_dir)):
        space.build_space([str(pipeline_dir)], tmp_path / "space")
    assert not (tmp_path / "space").exists()


def test_build_with_a_hub_id_names_the_model(tmp_path):
    out = space.build_space(
        "my-org/medgen-chestxray", tmp_path / "space", title="Chest X-ray demo", allow_unevaluated=True, include_builtins=False
    )
    assert json.loads((out / "space_config.json").read_text())["pipelines"] == ["my-org/medgen-chestxray"]
    meta = front_matter(out / "README.md")
    assert meta["models"] == ["my-org/medgen-chestxray"] and meta["title"] == "Chest X-ray demo"
    assert not (out / "pipelines").exists()


def test_build_refuses_bad_inputs(pipeline_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match="not-a-folder"):
        space.build_space(str(tmp_path / "not-a-folder"), tmp_path / "a")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="model_index.json"):
        space.build_space(str(tmp_path / "empty"), tmp_path / "b")
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "keep.txt").write_text("mine")
    with pytest.raises(ValueError, match="occupied"):
        space.build_space(str(pipeline_dir), occupied)
    assert (occupied / "keep.txt").read_text() == "mine"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_assembled_space_starts_and_answers_http(pipeline_dir, tmp_path):
    out = space.build_space(str(pipeline_dir), tmp_path / "space", allow_unevaluated=True)
    port = free_port()
    env = {
        **os.environ, "GRADIO_SERVER_PORT": str(port), "GRADIO_SERVER_NAME": "127.0.0.1",
        "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1", "PYTHONPATH": "",
    }
    env.pop("MEDGEN_PIPELINE", None)
    process = subprocess.Popen(
        [sys.executable, "app.py"], cwd=out, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        deadline = time.monotonic() + 240
        answered = False
        while time.monotonic() < deadline and process.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/config", timeout=5) as response:
                    config = json.loads(response.read())
                answered = True
                break
            except OSError:
                time.sleep(1)
        if not answered:
            process.kill()
            pytest.fail(f"the Space app did not answer on port {port}:\n{process.communicate()[0][-3000:]}")
        labels = [c for c in config["components"] if c.get("props", {}).get("elem_id") == "condition"]
        assert labels and [choice[1] for choice in labels[0]["props"]["choices"]] == ["normal", "pneumonia"]
        models = [c for c in config["components"] if c.get("props", {}).get("elem_id") == "model"][0]["props"]
        served = json.loads((out / "space_config.json").read_text())["models"]
        assert [choice[1] for choice in models["choices"]] == served and models["value"] == pipeline_dir.name
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()


def test_every_gradio_requirement_excludes_versions_before_6_7():
    """gradio < 6.7 has CVE-2026-28414 and lacks what the app uses: no requirement file may allow it."""
    tomllib = pytest.importorskip("tomllib")
    from packaging.requirements import Requirement

    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    lines = [*project["dependencies"], *(dep for deps in project["optional-dependencies"].values() for dep in deps)]
    for requirements in [REPO_ROOT / "requirements.txt", *sorted((REPO_ROOT / "space").glob("requirements*.txt"))]:
        lines += [line.split("#")[0].strip() for line in requirements.read_text().splitlines()]
    gradio = [Requirement(line) for line in lines if line and not line.startswith("-") and Requirement(line).name == "gradio"]
    assert len(gradio) >= 2  # pyproject and the Space
    for requirement in gradio:
        assert requirement.specifier, requirement  # unpinned would admit any old version
        assert not any(requirement.specifier.contains(old) for old in ("5.50.0", "6.0.0", "6.6.9")), requirement
