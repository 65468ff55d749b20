"""The Gradio app end to end: launched once per module, driven through `gradio_client` like a script would."""

from __future__ import annotations

import io
import json
import threading
import time
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
import pydicom
import pytest
from app_server import load_app_module, serve_tiny_app
from PIL import Image


gradio_client = pytest.importorskip("gradio_client")
pytestmark = pytest.mark.slow  # end-to-end: a launched app


def generation_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name == "medgen-generation" and thread.is_alive()]


@pytest.fixture(scope="module")
def app_module():
    return load_app_module()


@pytest.fixture(scope="module")
def served(app_module, tmp_path_factory):
    service, demo, url = serve_tiny_app(app_module, tmp_path_factory)
    client = gradio_client.Client(url, verbose=False)
    yield service, client
    client.close()
    demo.close()


def test_help_lists_the_app_flags(app_module, capsys):
    with pytest.raises(SystemExit) as exit_info:
        app_module.parse_args(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--pipeline", "--no-builtins", "--max-loaded", "--device", "--max-queue", "--concurrency", "--batch-size", "--server-port"):
        assert flag in text


def test_pipeline_is_repeatable_and_takes_comma_lists(app_module):
    assert app_module.parse_args(["--pipeline", "a,b", "--pipeline", "c", "--pipeline", "a"]).pipeline == ["a", "b", "c"]
    assert app_module.parse_args(["--pipeline", "only"]).pipeline == ["only"]


def test_the_model_dropdown_lists_the_given_folders_then_the_builtins(served):
    service, client = served
    from medgen.app.models import builtin_models

    names = service.catalog.names
    assert names[:3] == ["tiny-chest", "tiny-brain", "tiny-mask"] and names[3:] == list(builtin_models())
    config = client.config
    dropdown = [c for c in config["components"] if c.get("props", {}).get("elem_id") == "model"][0]["props"]
    assert [choice[1] for choice in dropdown["choices"]] == names and dropdown["value"] == "tiny-chest"
    # Listing models loaded none of them: only what was used since start-up is in memory.
    assert "default" not in service.catalog.loaded_names() or len(service.catalog.loaded_names()) <= 4


def test_a_text_model_offers_its_own_example_prompts_else_generic_ones(app_module):
    from dataclasses import replace

    from helpers import tiny_label_pipeline

    from medgen.app import describe_pipeline

    info = replace(describe_pipeline(tiny_label_pipeline()), kind="text")
    generic = app_module.prompt_example_props(info)["samples"]
    assert generic == [[text] for text in app_module.EXAMPLE_PROMPTS]  # a text model saved without examples
    trained = replace(info, example_prompts=("brain MRI, glioma", "breast ultrasound, benign lesion"))
    assert app_module.prompt_example_props(trained)["samples"] == [["brain MRI, glioma"], ["breast ultrasound, benign lesion"]]
    assert app_module.example_prompts(trained)[0] == "brain MRI, glioma"  # also the prompt box's placeholder


def test_the_steps_slider_starts_at_the_pipelines_default(served):
    from medgen.sampling import DEFAULT_INFERENCE_STEPS

    _, client = served
    props = [c for c in client.config["components"] if c.get("props", {}).get("elem_id") == "steps"][0]["props"]
    assert props["value"] == DEFAULT_INFERENCE_STEPS


def test_missing_pipeline_stops_the_app_with_a_clear_message(app_module, tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        app_module.main(["--pipeline", str(tmp_path / "no-such-pipeline"), "--device", "cpu"])
    assert "no-such-pipeline" in str(exit_info.value.code)


def test_api_generates_the_requested_count_with_the_seed_shown(served):
    _, client = served
    gallery, archive, status, seed = client.predict(
        condition="pneumonia", count=3, num_inference_steps=2, seed=11, api_name="/generate"
    )
    assert len(gallery) == 3 and seed == 11
    assert [item["caption"] for item in gallery] == [f"pneumonia · seed {s}" for s in (11, 12, 13)]
    assert "Done: 3 images" in status
    with Image.open(gallery[0]["image"]) as image:
        assert image.size == (256, 256)  # 16 px images shown enlarged 16 times; the ZIP holds them at 16 px


def test_api_is_reproducible_for_a_fixed_seed(served):
    _, client = served
    first = client.predict(condition="effusion", count=1, num_inference_steps=2, seed=5, api_name="/generate")[0]
    second = client.predict(condition="effusion", count=1, num_inference_steps=2, seed=5, api_name="/generate")[0]
    assert Path(first[0]["image"]).read_bytes() == Path(second[0]["image"]).read_bytes()


@pytest.mark.parametrize(
    "inputs",
    [{"condition": "banana"}, {"condition": "normal", "count": 0}, {"condition": "normal", "count": 17}],
)
def test_api_rejects_out_of_range_inputs(served, inputs):
    _, client = served
    with pytest.raises(gradio_client.exceptions.AppError):
        client.predict(**{"num_inference_steps": 2, **inputs}, api_name="/generate")


def test_download_zip_holds_valid_png_dicom_and_params(served):
    _, client = served
    _, archive, _, _ = client.predict(condition="effusion", count=2, num_inference_steps=2, seed=3, api_name="/generate")
    with zipfile.ZipFile(archive) as zip_file:
        names = zip_file.namelist()
        pngs = [name for name in names if name.endswith(".png")]
        dicoms = [name for name in names if name.endswith(".dcm")]
        assert len(pngs) == 2 and len(dicoms) == 2
        with Image.open(io.BytesIO(zip_file.read(pngs[0]))) as image:
            assert image.size == (16, 16)
        dataset = pydicom.dcmread(io.BytesIO(zip_file.read(dicoms[1])))  # no force: a valid DICOM file
        assert dataset.SyntheticData == "YES" and dataset.Modality == "OT"
        params = json.loads(zip_file.read("medgen-images/params.json"))
    assert params["labels"] == ["effusion"] and params["seeds"] == [3, 4]


def test_cancel_frees_the_worker_within_a_step_and_keeps_finished_images(served):
    service, client = served
    steps = 40
    job = client.submit(condition="normal", count=6, num_inference_steps=steps, seed=1, api_name="/generate")
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        outputs = [output for output in job.outputs() if output and isinstance(output[0], list) and output[0]]
        if outputs:
            break
        time.sleep(0.05)
    assert outputs, "no image arrived"
    step_starts: list[float] = []
    hook = service.pipe.unet.register_forward_pre_hook(lambda module, args: step_starts.append(time.monotonic()))
    try:
        job.cancel()
        cancelled_at = time.monotonic()
        while generation_threads() and time.monotonic() - cancelled_at < 30:
            time.sleep(0.02)
        assert not generation_threads(), "the generation worker kept running after Cancel"
        assert sum(start > cancelled_at for start in step_starts) <= 1
    finally:
        hook.remove()
    outputs = [output for output in job.outputs() if output and isinstance(output[0], list) and output[0]]
    kept = outputs[-1][0]
    assert 2 <= len(kept) < 6 and len(kept) % 2 == 0  # whole batches of 2; the batch in progress is dropped
    # The worker is free: the next request runs at once.
    started = time.monotonic()
    gallery = client.predict(condition="normal", count=1, num_inference_steps=2, seed=0, api_name="/generate")[0]
    assert len(gallery) == 1 and time.monotonic() - started < 60


def test_api_matches_the_condition_case_insensitively(served):
    _, client = served
    gallery, _, status, _ = client.predict(condition="Pneumonia", count=1, num_inference_steps=2, seed=2, api_name="/generate")
    assert [item["caption"] for item in gallery] == ["pneumonia · seed 2"] and status.startswith("Done: 1 image in ")


@pytest.mark.parametrize(
    ("inputs", "named"),
    [({"seed": "abc"}, "seed"), ({"count": 99}, "count"), ({"count": "x"}, "count"), ({"condition": "banana"}, "banana")],
)
def test_input_errors_replace_the_status_with_a_short_message_and_log_no_traceback(served, capfd, inputs, named):
    _, client = served
    job = client.submit(**{"condition": "normal", "num_inference_steps": 2, **inputs}, api_name="/generate")
    with pytest.raises(gradio_client.exceptions.AppError) as raised:
        job.result()
    message = str(raised.value)
    assert message.startswith("Not started: ") and named in message
    assert [output[2] for output in job.outputs()] == [message]  # the status line says it too
    assert "Traceback" not in capfd.readouterr().err


def test_a_nan_seed_sent_as_raw_json_is_refused_naming_the_seed(served, capfd):
    _, client = served
    body = b'{"data": ["normal", "", "", 1, 2, 2.0, NaN, "DDIM", "none", "tiny-chest", null]}'
    call = client.src.rstrip("/") + "/gradio_api/call/generate"
    request = urllib.request.Request(call, data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        event_id = json.loads(response.read())["event_id"]
    with urllib.request.urlopen(f"{call}/{event_id}", timeout=60) as response:
        events = response.read().decode()
    assert "event: error" in events and "seed must be a whole number" in events and "got nan" in events
    assert "Traceback" not in capfd.readouterr().err


def test_api_generates_with_a_non_default_model(served):
    _, client = served
    gallery, _, status, _ = client.predict(
        model="tiny-brain", condition="Pituitary", count=3, num_inference_steps=2, seed=4, api_name="/generate"
    )
    assert [item["caption"] for item in gallery] == [f"pituitary · seed {s}" for s in (4, 5, 6)]
    assert "Done: 3 images" in status
    with Image.open(gallery[0]["image"]) as image:
        assert image.size == (256, 256)  # a latent model: 8 x 8 latents, decoded to 16 px, shown enlarged


def test_a_condition_of_another_model_and_an_unknown_model_are_refused_by_name(served):
    _, client = served
    with pytest.raises(gradio_client.exceptions.AppError, match="glioma"):
        client.predict(model="tiny-chest", condition="glioma", num_inference_steps=2, api_name="/generate")
    with pytest.raises(gradio_client.exceptions.AppError, match="no-such-model"):
        client.predict(model="no-such-model", condition="normal", num_inference_steps=2, api_name="/generate")


def test_first_seed_used_is_empty_until_a_run(served):
    _, client = served
    props = [c for c in client.config["components"] if c.get("props", {}).get("elem_id") == "seed-shown"][0]["props"]
    assert props.get("value") == "" and props["placeholder"]  # empty, not 0, before any run


def test_cancel_with_no_run_in_progress_leaves_the_status_as_it_is(app_module):
    """Issue: Cancel when idle said "Cancelled: kept 0 of 4 images" (after a run: overwrote "Done")."""
    import gradio as gr

    status, running, cancelled = app_module.cancel_outputs(0, [{"image": "a.png"}] * 4)
    assert isinstance(status, type(gr.skip())) and running == 0 and cancelled == 0
    assert isinstance(app_module.after_cancel(0, [{"image": "a.png"}] * 4), type(gr.skip()))
    status, running, cancelled = app_module.cancel_outputs(8, [{"image": "a.png"}] * 2)
    assert status.startswith("Cancelled: kept 2 of 8 images.") and running == 0 and cancelled == 8
    # A batch that landed after the click is counted when the status is written again.
    assert app_module.after_cancel(8, [{"image": "a.png"}] * 4).startswith("Cancelled: kept 4 of 8 images.")


def test_a_batch_landing_after_cancel_is_counted_in_the_status(app_module):
    """Issue: a batch on its way at Cancel could land after the status was written ("kept 2", gallery showing 4)."""
    import gradio as gr

    assert app_module.recount_cancelled(8, [{"image": "a.png"}] * 6).startswith("Cancelled: kept 6 of 8 images.")
    # No run cancelled (a run in progress, or a new one started): the gallery's changes leave the status alone.
    assert isinstance(app_module.recount_cancelled(0, [{"image": "a.png"}] * 6), type(gr.skip()))


def test_the_details_line_names_the_selected_model(served):
    service, client = served
    props = [c for c in client.config["components"] if c.get("props", {}).get("elem_id") == "model-details"][0]["props"]
    assert props["value"].startswith("Model: **tiny-chest** (from `")
    assert service.model_details("chest-xray").startswith("Model: **chest-xray** (built-in; ")


def test_a_mask_model_follows_an_uploaded_mask_and_zips_it_beside_each_image(served, tmp_path):
    _, client = served
    mask = np.zeros((16, 16), np.uint8)
    mask[4:12, 4:12] = 255
    Image.fromarray(mask).save(tmp_path / "square.png")
    gallery, archive, status, _ = client.predict(
        model="tiny-mask", condition="tuberculosis", mask=gradio_client.handle_file(str(tmp_path / "square.png")),
        count=2, num_inference_steps=2, seed=0, api_name="/generate",
    )
    assert status.startswith("Done: 2 images") and gallery[0]["caption"] == "tuberculosis · seed 0"
    with Image.open(gallery[0]["image"]) as image:
        assert image.size == (2 * 256 + 4, 256)  # the image beside its mask's outline
    with zipfile.ZipFile(archive) as zip_file:
        with Image.open(io.BytesIO(zip_file.read("medgen-images/medgen_00001_mask.png"))) as saved:
            assert np.array_equal(np.asarray(saved), mask)
        with Image.open(io.BytesIO(zip_file.read("medgen-images/medgen_00001.png"))) as saved:
            assert saved.size == (16, 16)
    # No upload: the model's mask generator samples one per image.
    gallery, archive, status, _ = client.predict(
        model="tiny-mask", condition="normal", count=1, num_inference_steps=2, seed=0, api_name="/generate"
    )
    assert status.startswith("Done: 1 image in ")
    with zipfile.ZipFile(archive) as zip_file:
        assert "medgen-images/medgen_00000_mask.png" in zip_file.namelist()


def test_a_mask_path_that_was_not_uploaded_is_refused(served, app_module):
    """A client cannot make the app read a file of the server by sending its path as the mask: gradio refuses it,
    and so does the app's own check (the event skips gradio's preprocessing)."""
    _, client = served
    server_file = str(Path(__file__).resolve())
    mask = {"path": server_file, "meta": {"_type": "gradio.FileData"}}
    body = json.dumps({"data": ["normal", "", "", 1, 2, 2.0, 0, "DDIM", "none", "tiny-mask", mask]}).encode()
    call = client.src.rstrip("/") + "/gradio_api/call/generate"
    request = urllib.request.Request(call, data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        event_id = json.loads(response.read())["event_id"]
    with urllib.request.urlopen(f"{call}/{event_id}", timeout=60) as response:
        assert response.read().decode().startswith("event: error")
    with pytest.raises(ValueError, match="mask must be a file uploaded with the request"):
        app_module.uploaded_file(mask, "mask")
    assert app_module.uploaded_file(None, "mask") is None and app_module.uploaded_file({"path": ""}, "mask") is None


def test_sample_a_mask_then_every_image_follows_it(served):
    _, client = served
    mask_file = client.predict(model="tiny-mask", condition="normal", seed=7, api_name="/sample_mask")
    with Image.open(mask_file) as image:
        mask = np.asarray(image)
    assert mask.shape == (16, 16) and set(np.unique(mask)) <= {0, 255}
    _, archive, status, _ = client.predict(
        model="tiny-mask", condition="normal", mask=gradio_client.handle_file(mask_file), count=2,
        num_inference_steps=2, seed=0, api_name="/generate",
    )
    assert status.startswith("Done: 2 images")
    with zipfile.ZipFile(archive) as zip_file:
        for index in (0, 1):
            with Image.open(io.BytesIO(zip_file.read(f"medgen-images/medgen_0000{index}_mask.png"))) as saved:
                assert np.array_equal(np.asarray(saved), mask)
    with pytest.raises(gradio_client.exceptions.AppError, match="cannot sample a mask"):
        client.predict(model="tiny-chest", condition="normal", seed=0, api_name="/sample_mask")
