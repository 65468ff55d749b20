"""What the docs and the repository files state about defaults and layout matches the code."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from medgen.sampling import DEFAULT_INFERENCE_STEPS

REPO_ROOT = Path(__file__).resolve().parents[1]


def test_export_docs_state_the_step_count_the_cli_uses():
    text = (REPO_ROOT / "docs" / "export.md").read_text()
    row = next(line for line in text.splitlines() if line.startswith("| `--num-inference-steps"))
    # the model's own count first, else the shared one
    assert re.search(r"\(default: the model's own, .*else (\d+)", row).group(1) == str(DEFAULT_INFERENCE_STEPS), row
    # the dataset example made with `--num-inference-steps 15` shows the steps it recorded
    assert f"'num_inference_steps': {DEFAULT_INFERENCE_STEPS}," in text


@pytest.mark.parametrize("folder", ["out", "eval"])
def test_the_readmes_example_output_folders_are_ignored_by_git(folder):
    # `medgen generate --output out/...` and `medgen evaluate --output eval/...` in the README
    assert f"--output {folder}/" in (REPO_ROOT / "README.md").read_text()
    result = subprocess.run(
        ["git", "check-ignore", "--no-index", "-q", f"{folder}/example/image.png"], cwd=REPO_ROOT, capture_output=True
    )
    if result.returncode == 128:
        pytest.skip("not a git checkout")
    assert result.returncode == 0, f"{folder}/ is not in .gitignore"


@pytest.mark.parametrize("card", sorted((REPO_ROOT / "medgen" / "pretrained").glob("*/README.md")), ids=lambda p: p.parent.name)
def test_each_shipped_model_card_names_the_task_of_its_pipeline_kind(card):
    import json

    from huggingface_hub import ModelCard

    data = ModelCard.load(card).data
    index = json.loads((card.parent / "model_index.json").read_text())
    labelled = bool(index.get("id2label"))
    if index["_class_name"][1] == "MaskConditionedPipeline":  # an image drawn from a mask image
        assert data.pipeline_tag == "image-to-image"
    elif index["_class_name"][1] == "TextToImagePipeline":
        assert data.pipeline_tag == "text-to-image"
    else:
        assert data.pipeline_tag == (None if labelled else "unconditional-image-generation")
    assert ("class-conditional-image-generation" in data.tags) == labelled
