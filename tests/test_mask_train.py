"""Training the mask kinds: a mask-conditioned model and its mask generator train a few steps on image + mask
pairs, attach into one pipeline folder, and that folder makes pairs; resume replays the mask dropout exactly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from medgen.config import load_config
from medgen.pipelines import MaskConditionedPipeline, load_pipeline
from medgen.train import main
from medgen.training.mask_task import attach_mask_generator, preview
from medgen.sample_grid import TITLE_WIDTH

REPO_ROOT = Path(__file__).resolve().parent.parent
TINY = REPO_ROOT / "train_configs" / "tiny_mask.yaml"


pytestmark = pytest.mark.usefixtures("single_thread")  # tiny models run fastest on one thread


@pytest.fixture(scope="module")
def pairs(tmp_path_factory) -> Path:
    """24 image + mask pairs, two labels: a bright disc (the mask) on a dark noisy background."""
    folder = tmp_path_factory.mktemp("pairs")
    (folder / "images").mkdir()
    (folder / "masks").mkdir()
    rng = np.random.default_rng(0)
    rows = ["file_name,mask_file_name,label,source"]
    yy, xx = np.mgrid[:32, :32]
    for index in range(24):
        cy, cx, radius = rng.integers(10, 22), rng.integers(10, 22), rng.integers(4, 9)
        mask = ((yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2).astype(np.uint8) * 255
        image = np.clip(mask * 0.8 + rng.normal(30, 10, mask.shape), 0, 255).astype(np.uint8)
        Image.fromarray(image).save(folder / "images" / f"{index}.png")
        Image.fromarray(mask).save(folder / "masks" / f"{index}.png")
        rows.append(f"images/{index}.png,masks/{index}.png,{'small' if radius < 6 else 'large'},{'a' if index % 2 else 'b'}")
    (folder / "metadata.csv").write_text("\n".join(rows) + "\n")
    return folder


def _overrides(data: Path, output_dir: Path, kind: str, steps: int = 3) -> list[str]:
    return [
        f"data.path={data}", "data.max_samples=null", f"data.cache_dir={output_dir.parent / 'cache'}",
        f"model.kind={kind}", f"output_dir={output_dir}", f"max_train_steps={steps}", "train_batch_size=8",
        "checkpointing_steps=2", "sample_every_steps=0", "num_sample_images=2", "log_every_steps=1",
        "report_to=none", "model.block_out_channels=[8, 16]",
    ] + (["data.resolution=8"] if kind == "mask_generator" else [])


def test_mask_configs_load_with_their_kinds():
    for name, kind in [("lung_cxr_mask_128", "mask"), ("busi_mask_128", "mask"), ("lung_cxr_masks_64", "mask_generator"),
                       ("busi_masks_64", "mask_generator"), ("tiny_mask", "mask")]:
        config = load_config(REPO_ROOT / "train_configs" / f"{name}.yaml")
        assert config.model.kind == kind and config.data.mask_column == "mask_file_name"
        assert config.data.holdout_fraction == 0.2


def test_mask_kind_without_mask_column_is_an_error(pairs, tmp_path):
    config = load_config(TINY, _overrides(pairs, tmp_path / "run", "mask") + ["data.mask_column=null", "data.mask_classes=null"])
    with pytest.raises(ValueError, match="data.mask_column"):
        main(config)


def test_train_both_kinds_attach_and_make_pairs(pairs, tmp_path):
    image_run = main(load_config(TINY, _overrides(pairs, tmp_path / "image", "mask")))
    generator_run = main(load_config(TINY, _overrides(pairs, tmp_path / "generator", "mask_generator")))
    pipe = load_pipeline(image_run)
    assert isinstance(pipe, MaskConditionedPipeline) and not pipe.has_mask_generator
    assert pipe.labels == ["large", "small"] and pipe.mask_classes == ["lung"]
    assert pipe.unet.config.in_channels == 1 + 1 + 1  # pixels + lung + mask present

    attach_mask_generator(image_run, generator_run)
    pipe = load_pipeline(image_run)
    pipe.set_progress_bar_config(disable=True)
    assert pipe.has_mask_generator and pipe.mask_unet.config.sample_size == 8
    output = pipe(labels=["small", "large"], num_inference_steps=2, generator=torch.manual_seed(0), output_type="np")
    assert output.images.shape == (2, 16, 16, 1) and output.masks.shape == (2, 16, 16)
    figure = preview(image_run, tmp_path / "preview.png", count=2, steps=2)
    assert Image.open(figure).size == (TITLE_WIDTH + 2 * (16 + 2), 2 * (16 + 2))  # each row titled with its label


def test_preview_of_checkpoints_while_training(pairs, tmp_path):
    from medgen.training.mask_task import pipeline_from_checkpoint

    run = tmp_path / "image"
    main(load_config(TINY, _overrides(pairs, run, "mask", steps=2)))
    checkpoint = run / "checkpoints" / "checkpoint-2"
    pipe, config = pipeline_from_checkpoint(checkpoint)
    saved = load_pipeline(run)  # the pipeline saved at the end: the same EMA weights as the last checkpoint
    for name, value in saved.unet.state_dict().items():
        torch.testing.assert_close(pipe.unet.state_dict()[name], value, msg=name)
    figure = Image.open(preview(checkpoint, tmp_path / "checkpoint.png", count=2, steps=2))
    assert figure.mode == "RGB" and figure.size == (TITLE_WIDTH + 2 * (16 + 2), 2 * (16 + 2))
    outline = np.array(figure)
    assert ((outline[..., 0] == 255) & (outline[..., 1] == 64)).any()  # red mask outlines drawn

    generator_run = tmp_path / "generator"
    main(load_config(TINY, _overrides(pairs, generator_run, "mask_generator", steps=2)))
    masks = Image.open(preview(generator_run / "checkpoints" / "checkpoint-2", tmp_path / "masks.png", count=2, steps=2))
    assert masks.size == (TITLE_WIDTH + 2 * (8 + 2), 2 * (8 + 2))


@pytest.mark.parametrize("hflip", [False, True], ids=["plain", "hflip"])
def test_resume_replays_mask_dropout_exactly(pairs, tmp_path, hflip):
    """With `data.hflip` too: the mirroring of image and mask is drawn from the step's seed, so it replays."""
    from safetensors.torch import load_file

    extra = [f"data.hflip={str(hflip).lower()}"]
    straight = main(load_config(TINY, _overrides(pairs, tmp_path / "straight", "mask", steps=4) + extra))
    interrupted = tmp_path / "resumed"
    main(load_config(TINY, _overrides(pairs, interrupted, "mask", steps=2) + extra))
    resumed = main(
        load_config(TINY, _overrides(pairs, interrupted, "mask", steps=4) + extra), resume_from_checkpoint="latest"
    )
    first = load_file(Path(straight) / "unet" / "diffusion_pytorch_model.safetensors")
    second = load_file(Path(resumed) / "unet" / "diffusion_pytorch_model.safetensors")
    for name in first:
        torch.testing.assert_close(first[name], second[name], rtol=0, atol=1e-6, msg=name)


def test_tiny_config_trains_on_the_real_lung_masks(tmp_path):
    data = REPO_ROOT.parent / "shared" / "data" / "lung-cxr-masks"
    if not data.exists():
        pytest.skip(f"real data not found at {data}")
    config = load_config(TINY, [f"output_dir={tmp_path / 'run'}", "max_train_steps=2", f"data.cache_dir={tmp_path / 'cache'}",
                                "report_to=none", "data.max_samples=32"])
    pipe = load_pipeline(main(config))
    assert pipe.labels == ["normal", "tuberculosis"] and pipe.image_size == (16, 16)
