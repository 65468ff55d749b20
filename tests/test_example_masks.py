"""Example masks stored with a mask pipeline: chosen only from the held-out split of its recorded training data,
deterministic, carried by save/ship, offered by the app, and usable for a run like an uploaded mask."""

from __future__ import annotations

import io
import json
import logging
import zipfile
from pathlib import Path

import numpy as np
import pytest
import yaml
from mask_helpers import tiny_mask_pipeline
from PIL import Image

from medgen.app import AppService, describe_pipeline_folder
from medgen.data import DataConfig, build_dataset
from medgen.pipelines import load_pipeline
from medgen.pipelines.example_masks import read_example_masks
from medgen.training.mask_task import main as mask_task_main
from medgen.training.mask_task import store_example_masks

LABELS = ("normal", "tuberculosis")


pytestmark = pytest.mark.usefixtures("single_thread")  # tiny models run fastest on one thread


@pytest.fixture(scope="module")
def pairs(tmp_path_factory) -> Path:
    """32 image + mask pairs at 32 px (16 per label): a bright disc (the mask) on a dark noisy background."""
    folder = tmp_path_factory.mktemp("pairs")
    (folder / "images").mkdir()
    (folder / "masks").mkdir()
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:32, :32]
    rows = ["file_name,mask_file_name,label"]
    for index in range(32):
        cy, cx, radius = rng.integers(10, 22), rng.integers(10, 22), rng.integers(4, 9)
        mask = ((yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2).astype(np.uint8) * 255
        image = np.clip(mask * 0.8 + rng.normal(30, 10, mask.shape), 0, 255).astype(np.uint8)
        Image.fromarray(image).save(folder / "images" / f"{index}.png")
        Image.fromarray(mask).save(folder / "masks" / f"{index}.png")
        rows.append(f"images/{index}.png,masks/{index}.png,{LABELS[index % 2]}")
    (folder / "metadata.csv").write_text("\n".join(rows) + "\n")
    return folder


def data_config(pairs: Path, **overrides) -> DataConfig:
    values = dict(
        source="csv", path=str(pairs), findings_column="label", resolution=32, mask_column="mask_file_name",
        cache_dir=str(pairs / "cache"), normalization="range", holdout_fraction=0.25, holdout_order="random",
    )
    values.update(overrides)
    return DataConfig(**values)


def save_mask_pipeline(folder: Path, config: DataConfig) -> Path:
    """The tiny mask pipeline (16 px images, one class "lung") with the training config it records."""
    tiny_mask_pipeline(labels=LABELS).save_pretrained(folder)
    (folder / "training_config.yaml").write_text(yaml.safe_dump({"data": config.to_dict()}, sort_keys=False))
    return folder


@pytest.fixture(scope="module")
def pipeline(pairs, tmp_path_factory) -> Path:
    """A saved tiny mask pipeline with two held-out example masks per label."""
    folder = save_mask_pipeline(tmp_path_factory.mktemp("pipelines") / "tiny-mask", data_config(pairs))
    store_example_masks(folder, per_label=2, seed=0)
    return folder


def split_rows(pairs: Path, split: str) -> set[str]:
    dataset = build_dataset(data_config(pairs, split=split)).dataset.with_format(None)
    return {str(Path(source).relative_to(pairs)) for source in dataset["source"]}


def test_examples_come_only_from_the_held_out_split_at_the_pipeline_size(pipeline, pairs):
    index = json.loads((pipeline / "example_masks" / "index.json").read_text())
    assert (index["split"], index["seed"], index["per_label"]) == ("test", 0, 2)
    assert [entry["file"] for entry in index["examples"]] == [
        "normal_0.png", "normal_1.png", "tuberculosis_0.png", "tuberculosis_1.png"
    ]
    test_rows, training_rows = split_rows(pairs, "test"), split_rows(pairs, "train")
    assert len(test_rows) == 8 and not test_rows & training_rows
    labels = dict(line.split(",")[0::2] for line in (pairs / "metadata.csv").read_text().splitlines()[1:])
    for entry in index["examples"]:
        assert entry["split"] == "test" and entry["source"] in test_rows and entry["source"] not in training_rows
        assert labels[entry["source"]] == entry["label"]  # `source` names the data row, relative to the data folder
        with Image.open(pipeline / "example_masks" / entry["file"]) as stored:
            assert (stored.mode, stored.size) == ("L", (16, 16))  # 8 bit, the pipeline's image size (data: 32 px)
            mask_file = pairs / entry["source"].replace("images/", "masks/")
            with Image.open(mask_file) as real:
                expected = np.asarray(real.resize((16, 16), Image.Resampling.NEAREST))
            assert np.array_equal(np.asarray(stored), expected)  # the row's own mask, 0/255 for one class
    assert len({entry["source"] for entry in index["examples"]}) == 4


def test_the_choice_is_seeded_and_deterministic(pipeline, pairs, tmp_path):
    chosen = {}
    for seed in (0, 0, 1, 2, 3):
        folder = save_mask_pipeline(tmp_path / f"seed-{seed}-{len(chosen)}", data_config(pairs))
        store_example_masks(folder, per_label=2, seed=seed)
        chosen.setdefault(seed, []).append(json.loads((folder / "example_masks" / "index.json").read_text()))
    assert chosen[0][0] == chosen[0][1] == json.loads((pipeline / "example_masks" / "index.json").read_text())
    assert len({json.dumps(runs[0]["examples"]) for runs in chosen.values()}) > 1  # the seed changes the choice


def test_an_existing_example_folder_is_kept_unless_overwrite(pipeline, pairs, tmp_path, capsys):
    folder = save_mask_pipeline(tmp_path / "pipe", data_config(pairs))
    store_example_masks(folder, per_label=1, seed=0)
    before = {path.name: path.read_bytes() for path in (folder / "example_masks").iterdir()}
    with pytest.raises(FileExistsError, match="--overwrite"):
        store_example_masks(folder, per_label=2, seed=1)
    with pytest.raises(SystemExit) as stopped:
        mask_task_main(["examples", str(folder), "--per-label", "2"])
    assert stopped.value.code == 2 and "already exists; pass --overwrite" in capsys.readouterr().err
    assert {path.name: path.read_bytes() for path in (folder / "example_masks").iterdir()} == before
    mask_task_main(["examples", str(folder), "--per-label", "2", "--seed", "0", "--overwrite"])
    assert [item.name for item in read_example_masks(folder)] == [
        "normal_0", "normal_1", "tuberculosis_0", "tuberculosis_1"
    ]
    assert not [path for path in folder.iterdir() if path.name.startswith(".example_masks")]  # no staging left


def test_data_without_a_held_out_split_is_refused_naming_the_row(pairs, tmp_path):
    """Without holdout_fraction or a split column, `split: test` reads every row: each is a training row."""
    folder = save_mask_pipeline(tmp_path / "pipe", data_config(pairs, holdout_fraction=None))
    with pytest.raises(ValueError, match=r"held-out row images/\d+\.png of .* is also a training row"):
        store_example_masks(folder)
    assert not (folder / "example_masks").exists()


def test_bad_inputs_are_errors_naming_them(pipeline, pairs, tmp_path):
    folder = tmp_path / "no-record"
    tiny_mask_pipeline(labels=LABELS).save_pretrained(folder)
    with pytest.raises(ValueError, match="no training_config.yaml.*--config"):
        store_example_masks(folder)
    config = tmp_path / "train.yaml"
    config.write_text(yaml.safe_dump({"data": data_config(pairs).to_dict()}))
    assert store_example_masks(folder, per_label=1, config=config).is_dir()  # --config names the data instead
    other = save_mask_pipeline(tmp_path / "other-labels", data_config(pairs))
    tiny_mask_pipeline(labels=("a", "b")).save_pretrained(other)
    with pytest.raises(ValueError, match=r"labels \['normal', 'tuberculosis'\].*\['a', 'b'\]"):
        store_example_masks(other)
    with pytest.raises(ValueError, match="per_label"):
        store_example_masks(pipeline, per_label=0, overwrite=True)
    index = folder / "example_masks" / "index.json"
    index.write_text('{"examples": [{"file": "../../model_index.json"}]}')
    with pytest.raises(ValueError, match="not a PNG file name inside"):
        read_example_masks(folder)
    index.write_text("{not json")
    with pytest.raises(ValueError, match="index.json is not a readable example mask index"):
        read_example_masks(folder)


def test_examples_travel_with_save_pretrained_ship_and_attach(pipeline, tmp_path):
    from medgen.pipelines.catalog import ship

    stored = {path.name: path.read_bytes() for path in (pipeline / "example_masks").iterdir()}
    saved = load_pipeline(pipeline).save_pretrained(tmp_path / "saved")
    shipped = ship(pipeline, "tiny-mask", "chest x-ray", "tiny pairs", output=tmp_path / "shipped")
    # a mask generator attached beside (a new folder) or in place keeps them too
    from mask_helpers import tiny_conditioned_unet, tiny_scheduler

    from medgen.pipelines import LabelConditionedPipeline
    from medgen.training.mask_task import attach_mask_generator

    LabelConditionedPipeline(
        unet=tiny_conditioned_unet(1, 1, len(LABELS), sample_size=8, seed=5), scheduler=tiny_scheduler(),
        id2label={str(i): name for i, name in enumerate(LABELS)},
    ).save_pretrained(tmp_path / "generator")
    beside = attach_mask_generator(pipeline, tmp_path / "generator", tmp_path / "attached")
    in_place = attach_mask_generator(saved, tmp_path / "generator")
    for folder in (saved, shipped, beside, in_place):
        assert {path.name: path.read_bytes() for path in (folder / "example_masks").iterdir()} == stored
    assert [item.name for item in read_example_masks(shipped)] == [item.name for item in read_example_masks(pipeline)]


def test_retraining_over_the_folder_removes_the_earlier_examples(pipeline, tmp_path):
    from medgen.training.run_folder import remove_earlier_run

    folder = load_pipeline(pipeline).save_pretrained(tmp_path / "run")
    assert (folder / "example_masks").is_dir()
    remove_earlier_run(folder)
    assert not (folder / "example_masks").exists()


@pytest.fixture(scope="module")
def service(pipeline, tmp_path_factory):
    return AppService.from_sources([str(pipeline)], device="cpu", include_builtins=False,
                                   workdir=tmp_path_factory.mktemp("downloads"), batch_size=2)


def test_the_app_lists_the_examples_with_their_labels(service, pipeline, caplog):
    info = service.info
    assert info.example_masks == (
        ("normal_0", "normal"), ("normal_1", "normal"), ("tuberculosis_0", "tuberculosis"),
        ("tuberculosis_1", "tuberculosis"),
    )
    assert not service.catalog.is_loaded(service.default_model)  # listed from the folder, no weights loaded
    from medgen.app import mask_help

    assert "**example mask**" in mask_help(info)
    (pipeline / "example_masks" / "index.json").rename(pipeline / "example_masks" / "index.bak")
    try:
        with caplog.at_level(logging.WARNING):
            assert describe_pipeline_folder(pipeline).example_masks == ()  # the model is still served
        assert "no example masks offered" in caplog.text
    finally:
        (pipeline / "example_masks" / "index.bak").rename(pipeline / "example_masks" / "index.json")


def test_generating_from_an_example_shows_and_zips_it_beside_each_image(service, pipeline):
    path, label = service.example_mask(example="tuberculosis_1")
    assert label == "tuberculosis"
    with Image.open(path) as given, Image.open(pipeline / "example_masks" / "tuberculosis_1.png") as stored:
        mask = np.asarray(given)
        assert np.array_equal(mask, np.asarray(stored))
    request = service.request(condition=label, mask=str(path), count=2, num_inference_steps=2, seed=3)
    *_, result = service.run(request)
    assert result.finished and len(result.gallery) == 2
    image, caption = result.gallery[0]
    assert image.shape[1] > image.shape[0] and "seed 3" in caption  # the image beside its mask outline
    with zipfile.ZipFile(result.download) as archive:
        for index in range(2):
            with Image.open(io.BytesIO(archive.read(f"medgen-images/medgen_0000{index}_mask.png"))) as saved:
                assert np.array_equal(np.asarray(saved), mask)
            assert f"medgen-images/medgen_0000{index}.png" in archive.namelist()
    with pytest.raises(ValueError, match="Unknown example mask 'lung_9'.*normal_0, normal_1"):
        service.example_mask(example="lung_9")


def test_without_a_mask_generator_the_app_asks_for_an_upload_or_an_example(pipeline, tmp_path):
    import shutil

    from medgen.app import make_request

    shutil.copytree(pipeline, tmp_path / "no-generator")
    tiny_mask_pipeline(labels=LABELS, mask_generator=False).save_pretrained(tmp_path / "no-generator")
    info = describe_pipeline_folder(tmp_path / "no-generator")
    assert not info.mask_generator and len(info.example_masks) == 4
    with pytest.raises(ValueError, match="upload a mask .* or pick an example mask"):
        make_request(info, condition="normal", mask=None)


def test_a_model_without_examples_offers_none(tmp_path):
    tiny_mask_pipeline(labels=LABELS).save_pretrained(tmp_path / "plain")
    plain = AppService.from_sources([str(tmp_path / "plain")], device="cpu", include_builtins=False, workdir=tmp_path)
    assert plain.info.example_masks == ()
    with pytest.raises(ValueError, match="has no example masks"):
        plain.example_mask(example="normal_0")


@pytest.mark.slow
def test_the_app_endpoint_gives_the_example_and_its_label_for_a_run(pipeline, tmp_path_factory):
    gradio_client = pytest.importorskip("gradio_client")
    from app_server import free_port, load_app_module

    app = load_app_module("medgen_app_examples_under_test")
    service = AppService.from_sources(
        [str(pipeline)], device="cpu", include_builtins=False, workdir=tmp_path_factory.mktemp("app"), batch_size=2
    )
    props = app.example_mask_props(service.info)
    assert props["visible"] and props["choices"][0] == ("normal_0", "normal_0")
    demo = app.build_demo(service)
    port = free_port()
    app.launch(demo, service, server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    client = gradio_client.Client(f"http://127.0.0.1:{port}/", verbose=False)
    try:
        mask_file, condition = client.predict(model="tiny-mask", example="normal_1", api_name="/example_mask")
        assert condition == "normal"
        with Image.open(mask_file) as given, Image.open(pipeline / "example_masks" / "normal_1.png") as stored:
            mask = np.asarray(given)
            assert np.array_equal(mask, np.asarray(stored))
        gallery, download, status, seed = client.predict(
            model="tiny-mask", condition=condition, mask=gradio_client.handle_file(mask_file), count=1,
            num_inference_steps=2, seed=5, api_name="/generate",
        )
        assert status.startswith("Done: 1 image") and seed == 5 and gallery[0]["caption"] == "normal · seed 5"
        with Image.open(gallery[0]["image"]) as shown:
            assert shown.size == (2 * 256 + 4, 256)  # the image beside its mask's outline
        with zipfile.ZipFile(download) as archive:
            with Image.open(io.BytesIO(archive.read("medgen-images/medgen_00000_mask.png"))) as saved:
                assert np.array_equal(np.asarray(saved), mask)
        with pytest.raises(gradio_client.exceptions.AppError, match="Unknown example mask"):
            client.predict(model="tiny-mask", example="../model_index", api_name="/example_mask")
    finally:
        client.close()
        demo.close()


@pytest.mark.slow
def test_in_the_browser_an_example_fills_the_mask_box_and_the_label_unless_one_was_chosen(pipeline, tmp_path_factory):
    import shutil

    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(chromium).exists():
        pytest.skip("no Chromium installed (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    from app_server import free_port, load_app_module
    from test_browser import CHROMIUM_ARGS, set_count

    app = load_app_module("medgen_app_examples_in_browser")
    service = AppService.from_sources(
        [str(pipeline)], device="cpu", include_builtins=False, workdir=tmp_path_factory.mktemp("app"), batch_size=2
    )
    demo = app.build_demo(service)
    port = free_port()
    app.launch(demo, service, server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        with sync_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.set_default_timeout(120_000)
            page.goto(f"http://127.0.0.1:{port}/")
            page.wait_for_selector("#generate")
            condition = page.locator("#condition input")
            assert condition.input_value() == "normal"
            page.locator("#example-mask input").click()
            page.locator("#example-mask [role=option]", has_text="tuberculosis_0").click()
            page.wait_for_selector("#mask img")
            page.wait_for_function("() => document.querySelector('#condition input')?.value === 'tuberculosis'")
            set_count(page, 1)
            steps = page.locator("input[aria-label='number input for Denoising steps']")
            if not steps.is_visible():
                page.get_by_text("Sampling settings").click()
            steps.fill("2")
            steps.press("Enter")
            page.locator("#generate").click()
            page.wait_for_function("() => document.querySelector('#status')?.innerText.includes('Done: 1 image')")
            assert "tuberculosis" in page.locator("#gallery").inner_text()
            # Another example brings its own label; once the user picks a condition, examples keep it.
            for example, picked, expected in [("normal_0", None, "normal"), ("tuberculosis_1", "normal", "normal")]:
                if picked:
                    condition.click()
                    page.locator("#condition [role=option]", has_text=picked).click()
                shown = page.locator("#mask img").get_attribute("src")
                page.locator("#example-mask input").click()
                page.locator("#example-mask [role=option]", has_text=example).click()
                page.wait_for_function(f"() => document.querySelector('#mask img')?.getAttribute('src') !== {shown!r}")
                assert example in page.locator("#mask img").get_attribute("src")
                assert condition.input_value() == expected
            browser.close()
    finally:
        demo.close()
