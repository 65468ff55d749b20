"""The app's logic called directly (no web server): loading, validation, streaming, cancel, downloads."""

from __future__ import annotations

import errno
import json
import threading
import time
import zipfile

import numpy as np
import pydicom
import pytest
from helpers import tiny_label_pipeline, tiny_unconditional_pipeline
from PIL import Image

from medgen.app import (
    MAX_IMAGES,
    SAMPLERS,
    AppService,
    ModelCatalog,
    builtin_models,
    cancel_clicked,
    default_pipeline_dir,
    describe_pipeline,
    describe_pipeline_folder,
    display_image,
    export_zip,
    load_app_pipeline,
    make_request,
    resolve_pipeline_source,
    resolve_pipeline_sources,
    run_parameters,
    select_device,
    stream_generation,
    zero_gpu,
)
from medgen.app import loading as app_loading
from medgen.app import streaming as app_streaming


class UNetCallCounter:
    """Counts UNet forward calls and remembers when each one started."""

    def __init__(self, unet):
        self.starts: list[float] = []
        self._handle = unet.register_forward_pre_hook(lambda module, args: self.starts.append(time.monotonic()))

    def calls_after(self, moment: float) -> int:
        return sum(start > moment for start in self.starts)

    def remove(self):
        self._handle.remove()


@pytest.fixture(scope="module")
def label_pipe():
    pipe = tiny_label_pipeline(labels=("normal", "pneumonia", "effusion"))
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def service(label_pipe, tmp_path_factory):
    return AppService(label_pipe, source="tiny-label", workdir=tmp_path_factory.mktemp("downloads"))


# ----------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------


def test_pipeline_source_order_cli_then_env_then_default(monkeypatch):
    env = {"MEDGEN_PIPELINE": "from/env"}
    assert resolve_pipeline_source("from/cli", env) == "from/cli"
    assert resolve_pipeline_source(None, env) == "from/env"
    assert resolve_pipeline_source(None, {}) == str(default_pipeline_dir())
    assert default_pipeline_dir().name == "chest-xray"


def test_missing_default_pipeline_says_how_to_choose_one(monkeypatch, tmp_path):
    missing_default = tmp_path / "default_pipeline"
    monkeypatch.setattr(app_loading, "default_pipeline_dir", lambda: missing_default)
    with pytest.raises(FileNotFoundError, match="--pipeline") as error:
        load_app_pipeline(missing_default, device="cpu")
    assert "MEDGEN_PIPELINE" in str(error.value)


def test_missing_or_foreign_folder_is_a_clear_startup_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does-not-exist"):
        load_app_pipeline(tmp_path / "does-not-exist", device="cpu")
    (tmp_path / "not_a_pipeline").mkdir()
    with pytest.raises(ValueError, match="model_index.json"):
        load_app_pipeline(tmp_path / "not_a_pipeline", device="cpu")


def test_saved_pipeline_loads_for_serving(label_pipe, tmp_path):
    label_pipe.save_pretrained(tmp_path / "pipe")
    pipe, device = load_app_pipeline(tmp_path / "pipe", device="cpu")
    assert device == "cpu" and pipe.labels == ["normal", "pneumonia", "effusion"]


def test_asking_for_cuda_without_a_gpu_is_an_error():
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(ValueError, match="cuda"):
        select_device("cuda")


def test_ui_description_follows_the_pipeline(label_pipe):
    info = describe_pipeline(label_pipe, "x")
    assert (info.kind, info.labels, info.multi_label, info.image_size) == (
        "label", ["normal", "pneumonia", "effusion"], False, 16
    )
    multi = describe_pipeline(tiny_label_pipeline(labels=("edema", "effusion"), multi_label=True))
    assert multi.multi_label and multi.kind == "label"
    assert describe_pipeline(tiny_unconditional_pipeline()).kind == "unconditional"


def test_zero_gpu_decorator_is_a_no_op_without_spaces():
    try:
        import spaces  # noqa: F401

        pytest.skip("the spaces package is installed")
    except ImportError:
        pass

    def fn():
        return 1

    assert zero_gpu(fn) is fn


# ----------------------------------------------------------------------------------------------
# Validation
# ----------------------------------------------------------------------------------------------


def test_request_resolves_condition_case_insensitively_and_random_seed(service):
    request = service.request(condition="Pneumonia", count=3, num_inference_steps=2, seed=-1)
    assert request.condition == "pneumonia"
    assert 0 <= request.seed < 2**32 and request.seeds == [request.seed + i for i in range(3)]
    assert service.request(condition="normal", seed=41).seed == 41


@pytest.mark.parametrize(
    ("inputs", "named"),
    [
        ({"condition": "banana"}, "banana"),
        ({"condition": ["normal", "effusion"]}, "exactly one"),
        ({"condition": "normal", "count": 0}, "count"),
        ({"condition": "normal", "count": MAX_IMAGES + 1}, "count"),
        ({"condition": "normal", "count": 2.5}, "count"),
        ({"condition": "normal", "num_inference_steps": 0}, "num_inference_steps"),
        ({"condition": "normal", "guidance_scale": -1}, "guidance_scale"),
        ({"condition": "normal", "seed": -2}, "seed"),
        ({"condition": "normal", "seed": "abc"}, "seed"),
        ({"condition": "normal", "sampler": "Euler"}, "Euler"),
        ({"condition": "normal", "postprocess": "sepia"}, "sepia"),
    ],
)
def test_bad_inputs_are_rejected_naming_the_input(service, inputs, named):
    with pytest.raises(ValueError, match=named):
        service.request(**inputs)


def test_multi_label_condition_takes_a_set_of_findings():
    info = describe_pipeline(tiny_label_pipeline(labels=("edema", "effusion"), multi_label=True))
    assert make_request(info, condition=["Effusion", "edema"]).condition == ["effusion", "edema"]
    assert make_request(info, condition=[]).condition == []
    with pytest.raises(ValueError, match="banana"):
        make_request(info, condition=["edema", "banana"])


# ----------------------------------------------------------------------------------------------
# Streaming and cancel
# ----------------------------------------------------------------------------------------------


def test_stream_makes_the_count_in_small_batched_calls_and_reports_every_step(service, label_pipe):
    request = service.request(condition="effusion", count=3, num_inference_steps=2, seed=5)
    counter = UNetCallCounter(label_pipe.unet)
    try:
        updates = list(service.stream(request))
    finally:
        counter.remove()
    # Batches of 2 (the default): 2 + 1 images, one UNet call per step for each batch, not one per image.
    assert len(counter.starts) == 4
    kinds = [update.kind for update in updates]
    assert kinds.count("step") == 4 and kinds.count("image") == 2 and kinds[-1] == "done"
    assert [update.steps_done for update in updates if update.kind == "step"] == [1, 2, 3, 4]
    assert [len(update.images) for update in updates if update.kind == "image"] == [2, 3]
    final = updates[-1]
    assert not final.cancelled and final.seeds == [5, 6, 7] and len(final.images) == 3
    assert final.images[0].shape == (16, 16, 1)
    # Image i is exactly what the pipeline gives for seed + i.
    import torch

    direct = label_pipe(
        labels=["effusion"], num_inference_steps=2, guidance_scale=request.guidance_scale,
        generator=torch.Generator().manual_seed(6), output_type="np", callback_on_step_end_tensor_inputs=[],
    ).images[0]
    np.testing.assert_allclose(final.images[1], direct, atol=1e-5)
    # Batches of any size give the same images: each image has its own generator.
    in_one = list(stream_generation(label_pipe, request, batch_size=3))
    assert [u.steps_done for u in in_one if u.kind == "step"] == [1, 2] and in_one[-1].steps_total == 2
    np.testing.assert_allclose(np.stack(in_one[-1].images), np.stack(final.images), atol=1e-5)


def test_at_default_settings_images_reach_the_gallery_as_they_finish_and_cancel_keeps_them(label_pipe, tmp_path):
    """Issue: one run was one batch, so Cancel at default settings kept nothing."""
    service = AppService(label_pipe, source="tiny-label", workdir=tmp_path)
    request = service.request(condition="normal", count=4, num_inference_steps=80, seed=4)
    cancel = threading.Event()
    results = []
    for result in service.run(request, cancel=cancel):
        results.append(result)
        if result.gallery:
            cancel.set()  # Cancel as soon as the first images are shown
    assert len(results[0].gallery) == 0 and results[-1].finished
    assert len(results[-1].gallery) == 2
    assert results[-1].status.startswith("Cancelled") and "kept 2 of 4 images" in results[-1].status
    with zipfile.ZipFile(results[-1].download) as archive:
        assert sum(name.endswith(".png") for name in archive.namelist()) == 2
        assert json.loads(archive.read("medgen-images/params.json"))["seeds"] == [4, 5]


def test_status_lines_count_one_image_in_the_singular(service):
    request = service.request(condition="normal", count=1, num_inference_steps=2, seed=3)
    statuses = [result.status for result in service.run(request)]
    assert statuses[0].startswith("Generating 1 image: step 1 of 2")
    assert statuses[-1].startswith("Done: 1 image in ") and "(seed 3)" in statuses[-1]
    assert not any("1 images" in status for status in statuses)
    request = service.request(condition="normal", count=2, num_inference_steps=1, seed=3)
    assert list(service.run(request))[-1].status.startswith("Done: 2 images in ")


def test_cancel_with_no_run_in_progress_changes_nothing():
    """Issue: Cancel when idle said "Cancelled: kept 0 of 4 images", and after a run overwrote "Done"."""
    assert cancel_clicked(None, 0) is None and cancel_clicked(0, 4) is None
    assert cancel_clicked(8, 2).startswith("Cancelled: kept 2 of 8 images.")
    assert cancel_clicked(1, 0).startswith("Cancelled: kept 0 of 1 image.")


def test_details_line_names_a_builtin_model_as_the_dropdown_does():
    """Issue: with chest-xray selected, the details line said `Model: default (...)`."""
    names = builtin_models()
    if "chest-xray" not in names:
        pytest.skip("the built-in chest-xray pipeline is not part of this install")
    service = AppService.from_sources([], device="cpu")
    details = service.model_details("chest-xray")
    assert details.startswith("Model: **chest-xray** (built-in; ") and "default" not in details
    assert service.default_model == "chest-xray" and service.model_details() == details


def test_small_images_are_enlarged_for_display_by_a_whole_factor_without_smoothing():
    image = np.random.default_rng(0).random((32, 32, 1)).astype(np.float32)
    shown = display_image(image)
    assert shown.shape == (256, 256) and shown.dtype == np.uint8
    np.testing.assert_array_equal(shown[::8, ::8], display_image(image, min_size=1))  # every 8th pixel: the image
    np.testing.assert_array_equal(shown[:8, :8], np.full((8, 8), shown[0, 0]))  # each pixel a sharp 8 x 8 block
    assert display_image(np.zeros((128, 128, 3), np.float32)).shape == (256, 256, 3)
    assert display_image(np.zeros((512, 512), np.float32)).shape == (512, 512)  # large images stay as they are


def test_samplers_and_postprocessing_are_applied(service):
    base = service.request(condition="normal", count=1, num_inference_steps=3, seed=2)
    images = {}
    for sampler in SAMPLERS:
        request = make_request(service.info, condition="normal", count=1, num_inference_steps=3, seed=2, sampler=sampler)
        images[sampler] = list(service.stream(request))[-1].images[0]
    assert not np.allclose(images["DDIM"], images["DDPM"])
    smoothed = make_request(service.info, condition="normal", count=1, num_inference_steps=3, seed=2, postprocess="soft")
    assert not np.allclose(list(service.stream(smoothed))[-1].images[0], list(service.stream(base))[-1].images[0])
    # The shared pipeline keeps its own scheduler: runs use copies.
    assert type(service.pipe.scheduler).__name__ == "DPMSolverMultistepScheduler"


def test_cancel_stops_within_one_step_keeps_finished_batches_and_drops_the_one_in_progress(service):
    steps = 30
    request = service.request(condition="pneumonia", count=6, num_inference_steps=steps, seed=1)
    cancel, worker_done = threading.Event(), threading.Event()
    counter = UNetCallCounter(service.pipe.unet)
    try:
        cancelled_at = None
        for update in stream_generation(service.pipe, request, cancel=cancel, worker_done=worker_done, batch_size=2):
            if update.kind == "step" and update.steps_done == steps + 3 and cancelled_at is None:
                cancelled_at = time.monotonic()
                cancel.set()
            final = update
        assert worker_done.wait(5)
        assert final.kind == "done" and final.cancelled
        assert len(final.images) == 2 and final.seeds == [1, 2]
        # The UNet call in flight when cancel was set may finish; no further one starts after that step.
        assert counter.calls_after(cancelled_at) <= 1
        assert len(counter.starts) <= steps + 3 + 1
    finally:
        counter.remove()


def test_closing_the_stream_stops_the_worker(service):
    """Closing the iterator (what gradio does on Cancel or a closed tab) frees the worker too."""
    request = service.request(condition="normal", count=2, num_inference_steps=50, seed=3)
    worker_done = threading.Event()
    counter = UNetCallCounter(service.pipe.unet)
    try:
        stream = stream_generation(service.pipe, request, worker_done=worker_done)
        for update in stream:
            if update.kind == "step" and update.steps_done == 2:
                break
        closed_at = time.monotonic()
        stream.close()
        assert worker_done.wait(5), "the worker kept running after the stream was closed"
        assert counter.calls_after(closed_at) <= 1
        assert len(counter.starts) < 10
    finally:
        counter.remove()


def test_pipeline_errors_reach_the_caller(service, monkeypatch):
    request = service.request(condition="normal", count=1, num_inference_steps=2, seed=0)

    def broken(*args, **kwargs):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(app_streaming, "pipeline_with_sampler", lambda pipe, sampler: broken)
    with pytest.raises(RuntimeError, match="out of memory"):
        list(stream_generation(service.pipe, request))


# ----------------------------------------------------------------------------------------------
# Downloads and what the UI shows
# ----------------------------------------------------------------------------------------------


def test_run_streams_gallery_and_a_zip_of_png_dicom_and_params(service, tmp_path):
    request = service.request(condition="effusion", count=2, num_inference_steps=2, seed=9)
    results = list(service.run(request))
    shown = [len(result.gallery) for result in results]
    assert shown == sorted(shown) and shown[-1] == 2 and results[-1].finished
    assert results[-1].gallery[1][1] == "effusion · seed 10"
    # The gallery shows each 16 px image enlarged 16 times (pixel blocks); the ZIP holds it at true size.
    assert results[-1].gallery[0][0].dtype == np.uint8 and results[-1].gallery[0][0].shape == (256, 256)
    assert "Done: 2 images" in results[-1].status

    with zipfile.ZipFile(results[-1].download) as archive:
        names = sorted(archive.namelist())
        archive.extractall(tmp_path)
    assert [name.rsplit("/", 1)[-1] for name in names] == [
        "medgen_00000.dcm", "medgen_00000.png", "medgen_00001.dcm", "medgen_00001.png", "params.json"
    ]
    folder = tmp_path / "medgen-images"
    params = json.loads((folder / "params.json").read_text())
    assert params["labels"] == ["effusion"] and params["seeds"] == [9, 10] and params["num_inference_steps"] == 2
    assert params["scheduler"] == "DPMSolverMultistepScheduler" and params["synthetic"] is True
    dataset = pydicom.dcmread(folder / "medgen_00001.dcm")  # no force: a valid DICOM file
    assert dataset.SyntheticData == "YES" and dataset.Rows == 16
    with Image.open(folder / "medgen_00000.png") as png:
        assert png.size == (16, 16) and png.mode == "L"
        np.testing.assert_array_equal(np.asarray(png), results[-1].gallery[0][0][::16, ::16])


def test_export_without_images_is_an_error(service, tmp_path):
    request = service.request(condition="normal", count=1, num_inference_steps=1, seed=0)
    with pytest.raises(ValueError, match="no images"):
        export_zip([], [], run_parameters(service.info, request, []), tmp_path)


def test_cancelled_run_reports_what_was_kept(label_pipe, tmp_path):
    service = AppService(label_pipe, source="tiny-label", workdir=tmp_path, batch_size=1)
    request = service.request(condition="normal", count=3, num_inference_steps=80, seed=4)
    cancel = threading.Event()
    results = []
    for result in service.run(request, cancel=cancel):
        results.append(result)
        if len(result.gallery) == 1:
            cancel.set()
    assert results[-1].finished and len(results[-1].gallery) == 1
    assert "Cancelled" in results[-1].status and "kept 1 of 3 images" in results[-1].status
    with zipfile.ZipFile(results[-1].download) as archive:
        assert sum(name.endswith(".png") for name in archive.namelist()) == 1


def test_text_pipeline_gets_a_prompt_and_generates(tmp_path):
    import torch
    from diffusers import DDPMScheduler, DPMSolverMultistepScheduler, UNet2DConditionModel
    from helpers import tiny_vae

    from medgen.pipelines import TextToImagePipeline
    from medgen.text_encoders import OFFLINE_TEXT_ENCODER, load_text_encoder

    tokenizer, encoder = load_text_encoder(OFFLINE_TEXT_ENCODER)
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, block_out_channels=(8, 16), layers_per_block=1,
        norm_num_groups=8, attention_head_dim=8, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=encoder.config.hidden_size,
    )
    pipe = TextToImagePipeline(
        vae=tiny_vae(), text_encoder=encoder, tokenizer=tokenizer, unet=unet, max_length=16,
        scheduler=DPMSolverMultistepScheduler.from_config(DDPMScheduler(num_train_timesteps=100).config),
    )
    service = AppService(pipe, source="tiny-text", workdir=tmp_path)
    assert service.info.kind == "text" and service.info.labels == []
    request = service.request(prompt="  small left pleural effusion ", negative_prompt="", count=2, num_inference_steps=2, seed=0)
    assert request.prompt == "small left pleural effusion" and request.negative_prompt is None
    results = list(service.run(request))
    assert len(results[-1].gallery) == 2 and results[-1].gallery[0][1] == "small left pleural effusion · seed 0"
    with zipfile.ZipFile(results[-1].download) as archive:
        assert json.loads(archive.read("medgen-images/params.json"))["prompt"] == "small left pleural effusion"


def test_closing_the_ui_run_stops_the_worker(service):
    """What happens when gradio closes the app's generator: the run's stream, and so its worker, stop."""
    request = service.request(condition="normal", count=2, num_inference_steps=50, seed=3)
    run = service.run(request)
    for result in run:
        if result.steps_done >= 2:
            break
    run.close()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(
        thread.name == "medgen-generation" and thread.is_alive() for thread in threading.enumerate()
    ):
        time.sleep(0.02)
    assert not any(thread.name == "medgen-generation" and thread.is_alive() for thread in threading.enumerate())


def test_a_full_disk_leaves_no_partial_zip_and_the_images_still_show(label_pipe, tmp_path, monkeypatch):
    def write(self, filename, arcname=None, *args, **kwargs):
        self.fp.write(b"PK\x03\x04")  # the archive had begun when the disk filled up
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(zipfile.ZipFile, "write", write)
    service = AppService(label_pipe, source="tiny-label", workdir=tmp_path / "downloads")
    request = service.request(condition="normal", count=2, num_inference_steps=1, seed=0)

    with pytest.raises(OSError, match=r"cannot write .*medgen-images\.zip: No space left on device"):
        export_zip([np.zeros((16, 16, 1), np.float32)], [0], run_parameters(service.info, request, [0]), service.workdir)
    assert list(service.workdir.iterdir()) == []  # no half-written ZIP, no leftover PNG/DICOM folder

    results = list(service.run(request))
    assert len(results[-1].gallery) == 2 and results[-1].download is None
    assert results[-1].status.startswith("Done: 2 images") and "No space left on device" in results[-1].status
    assert list(service.workdir.iterdir()) == []


# ----------------------------------------------------------------------------------------------
# Several models
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model_folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    tiny_label_pipeline(labels=("normal", "pneumonia", "effusion")).save_pretrained(root / "chest")
    tiny_label_pipeline(labels=("glioma", "meningioma", "no_tumor", "pituitary"), latent=True).save_pretrained(root / "brain")
    tiny_label_pipeline(labels=("edema", "effusion"), multi_label=True).save_pretrained(root / "multi")
    tiny_unconditional_pipeline().save_pretrained(root / "uncond")
    return root


@pytest.mark.parametrize("name", ["chest", "brain", "multi", "uncond"])
def test_the_page_layout_is_read_from_configs_as_the_loaded_pipeline_would_give(model_folders, name):
    folder = model_folders / name
    pipe, _ = load_app_pipeline(folder, device="cpu")
    assert describe_pipeline_folder(folder, str(folder)) == describe_pipeline(pipe, str(folder))


def test_models_are_listed_at_start_and_loaded_on_first_use(model_folders, tmp_path):
    service = AppService.from_sources([str(model_folders / "chest"), str(model_folders / "brain")], device="cpu", workdir=tmp_path)
    assert service.catalog.names[:2] == ["chest", "brain"] and service.catalog.names[2:] == list(builtin_models())
    assert service.catalog.loaded_names() == []  # listing loads nothing
    assert service.catalog.info("brain").labels == ["glioma", "meningioma", "no_tumor", "pituitary"]
    request = service.request(model="brain", condition="Glioma", count=2, num_inference_steps=2, seed=0)
    results = list(service.run(request))
    assert results[0].status == "Loading model brain..."
    assert results[-1].gallery[1][1] == "glioma · seed 1" and results[-1].gallery[0][0].shape == (256, 256)
    assert service.catalog.loaded_names() == ["brain"]
    with zipfile.ZipFile(results[-1].download) as archive:
        assert json.loads(archive.read("medgen-images/params.json"))["model"] == "brain"
    with pytest.raises(ValueError, match="glioma"):
        service.request(condition="glioma")  # the model selected at start is the chest one
    with pytest.raises(ValueError, match="Unknown model 'liver'.*chest, brain"):
        service.request(model="liver", condition="normal")


def test_only_the_most_recently_used_models_stay_loaded(model_folders, tmp_path):
    loads = []

    def loader(source):
        loads.append(source)
        return load_app_pipeline(source, device="cpu")[0]

    catalog = ModelCatalog({name: str(model_folders / name) for name in ("chest", "brain", "multi")}, loader, max_loaded=2)
    first = catalog.pipeline("chest")
    assert catalog.pipeline("chest") is first and len(loads) == 1  # cached
    catalog.pipeline("brain")
    catalog.pipeline("chest")  # now the most recently used
    catalog.pipeline("multi")
    assert catalog.loaded_names() == ["chest", "multi"]  # brain, least recently used, was dropped
    catalog.pipeline("brain")
    assert len(loads) == 4


def test_a_missing_pipeline_folder_stops_the_start_naming_it(model_folders, tmp_path):
    with pytest.raises(FileNotFoundError, match="no-such-model"):
        AppService.from_sources([str(model_folders / "chest"), str(tmp_path / "no-such-model")], device="cpu")
    with pytest.raises(ValueError, match="model_index.json"):
        AppService.from_sources([str(tmp_path)], device="cpu")


def test_pipeline_sources_come_from_repeated_or_comma_separated_flags_else_the_environment():
    assert resolve_pipeline_sources(["a, b", "c", "a"], {}) == ["a", "b", "c"]
    assert resolve_pipeline_sources(None, {"MEDGEN_PIPELINE": "x,y"}) == ["x", "y"]
    assert resolve_pipeline_sources(None, {}) == []


# ----------------------------------------------------------------------------------------------
# Mask models
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mask_service(tmp_path_factory):
    from mask_helpers import tiny_mask_pipeline

    pipe = tiny_mask_pipeline()
    pipe.set_progress_bar_config(disable=True)
    return AppService(pipe, source="tiny-mask", workdir=tmp_path_factory.mktemp("mask-downloads"))


def test_a_mask_model_is_described_from_its_folder_as_when_loaded(mask_service, tmp_path):
    info = mask_service.info
    assert (info.kind, info.labels, info.mask_classes, info.mask_generator) == (
        "mask", ["normal", "tuberculosis"], ("lung",), True
    )
    mask_service.pipe.save_pretrained(tmp_path / "tiny-mask")
    assert describe_pipeline_folder(tmp_path / "tiny-mask", "tiny-mask") == info


def test_an_uploaded_mask_is_followed_shown_outlined_and_zipped_beside_the_image(mask_service, tmp_path):
    mask = np.zeros((16, 16), np.uint8)
    mask[4:12, 3:13] = 255  # a black-and-white PNG, as drawn in any editor
    Image.fromarray(mask).save(tmp_path / "lungs.png")
    request = mask_service.request(
        condition="Tuberculosis", mask=str(tmp_path / "lungs.png"), count=2, num_inference_steps=2, seed=1
    )
    assert request.mask.max() == 1 and request.mask.sum() == 80
    results = list(mask_service.run(request))
    shown, caption = results[-1].gallery[0]
    assert caption == "tuberculosis · seed 1"
    assert shown.shape == (256, 2 * 256 + 4, 3)  # the image, a gap, the image with the mask's outline
    assert (shown[:, :256, 0] == shown[:, :256, 1]).all()  # left: the plain (gray) image
    outline = np.any(shown[:, 260:] != shown[:, :256], axis=2)
    assert outline.any() and not outline[: 4 * 16 - 1].any()  # drawn where the mask is, nowhere above it
    with zipfile.ZipFile(results[-1].download) as archive:
        names = sorted(name.rsplit("/", 1)[-1] for name in archive.namelist())
        assert "medgen_00000_mask.png" in names and "medgen_00001_mask.png" in names and "medgen_00001.png" in names
        with Image.open(archive.open("medgen-images/medgen_00000_mask.png")) as saved:
            np.testing.assert_array_equal(np.asarray(saved), mask)  # the mask each image followed, true size
        params = json.loads(archive.read("medgen-images/params.json"))
    assert params["labels"] == ["tuberculosis"] and params["mask_classes"] == ["lung"] and params["mask"] == "given"
    assert [record["mask"] for record in params["images"]] == ["medgen_00000_mask.png", "medgen_00001_mask.png"]


def test_without_an_upload_the_mask_generator_samples_one_per_image(mask_service):
    request = mask_service.request(condition="normal", mask=None, count=2, num_inference_steps=2, seed=3)
    final = list(mask_service.stream(request))[-1]
    assert len(final.masks) == 2 and final.masks[0].shape == (16, 16)
    again = list(mask_service.stream(request))[-1]
    np.testing.assert_array_equal(final.masks[1], again.masks[1])  # seeded: the same mask again


def test_a_bad_mask_is_refused_naming_it(mask_service, tmp_path):
    Image.fromarray(np.full((16, 16), 7, np.uint8)).save(tmp_path / "seven.png")
    with pytest.raises(ValueError, match=r"mask seven.png holds the values 7.*1 = lung"):
        mask_service.request(condition="normal", mask=str(tmp_path / "seven.png"))
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="broken.png is not a readable image"):
        mask_service.request(condition="normal", mask=str(tmp_path / "broken.png"))
    with pytest.raises(ValueError, match="missing.png not found"):
        mask_service.request(condition="normal", mask=str(tmp_path / "missing.png"))


def test_a_mask_model_without_a_mask_generator_needs_an_upload():
    from mask_helpers import tiny_mask_pipeline

    service = AppService(tiny_mask_pipeline(mask_generator=False), source="no-generator")
    with pytest.raises(ValueError, match="no mask generator: upload a mask"):
        service.request(condition="normal", mask=None)


def test_a_mask_model_without_labels_takes_only_a_mask(tmp_path):
    from mask_helpers import square_mask, tiny_mask_pipeline

    service = AppService(tiny_mask_pipeline(labels=()), source="masks-only", workdir=tmp_path)
    assert service.info.labels == [] and service.info.kind == "mask"
    given = service.request(mask=square_mask().numpy(), count=3, num_inference_steps=2, seed=0)
    results = list(service.run(given))
    assert len(results[-1].gallery) == 3 and results[-1].gallery[0][1] == "given mask · seed 0"
    sampled = list(service.stream(service.request(count=3, num_inference_steps=2, seed=0)))[-1]
    assert len(sampled.images) == 3 and len(sampled.masks) == 3


def test_a_sampled_mask_is_the_one_an_image_of_that_seed_would_draw_and_can_be_used_for_every_image(mask_service):
    path, seed = mask_service.sample_mask(condition="normal", seed=7, num_inference_steps=2)
    assert seed == 7 and path.suffix == ".png"
    with Image.open(path) as saved:
        mask = np.asarray(saved)
    assert mask.shape == (16, 16) and set(np.unique(mask)) <= {0, 255}
    drawn = list(mask_service.stream(mask_service.request(condition="normal", count=1, num_inference_steps=2, seed=7)))
    np.testing.assert_array_equal(drawn[-1].masks[0] * 255, mask)
    followed = mask_service.request(condition="normal", mask=str(path), count=2, num_inference_steps=2, seed=0)
    final = list(mask_service.stream(followed))[-1]
    assert all(np.array_equal(each * 255, mask) for each in final.masks)
    with pytest.raises(ValueError, match="cannot sample a mask"):
        AppService(tiny_label_pipeline(), source="labels-only").sample_mask()
