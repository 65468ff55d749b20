"""medgen's Gradio app: pick a model and a finding (or type a prompt), ask for N synthetic images, download them.

    python app.py                                  # every built-in pipeline, the default one selected
    python app.py --pipeline path/to/pipeline      # or MEDGEN_PIPELINE=path/to/pipeline; listed first, selected
    python app.py --pipeline a,b --pipeline c      # several of your own next to the built-ins
    GRADIO_SERVER_NAME=0.0.0.0 GRADIO_SERVER_PORT=8080 python app.py

This file only lays out the UI and wires it to the `medgen.app` package, which holds the logic
(models, validation, streaming with real cancellation, status text, downloads) and is tested without a browser.
Scripts can call the `/generate` endpoint with `gradio_client`; see docs/app.md.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Iterator, Sequence
from typing import Any

import gradio as gr
from packaging.version import Version

from medgen.app import (
    DEFAULT_SAMPLER,
    EXAMPLE_PROMPTS,
    MAX_GUIDANCE,
    MAX_IMAGES,
    MAX_STEPS,
    NOTHING_TO_CANCEL,
    NOTICE,
    RANDOM_SEED,
    SAMPLERS,
    AppService,
    PipelineInfo,
    cancel_clicked,
    count_of,
    mask_help,
    resolve_pipeline_sources,
    zero_gpu,
)
from medgen.postprocess import get_preset, list_presets

MIN_GRADIO = "6.7"  # CVE-2026-28414 is fixed there; gradio 5 lacks what the layout uses (Gallery fit_columns)
if Version(gr.__version__) < Version(MIN_GRADIO):
    raise ImportError(f"the medgen app needs gradio>={MIN_GRADIO}; found {gr.__version__}: pip install 'gradio>={MIN_GRADIO}'")

CSS = """
#notice { border-left: 4px solid #d97706; background: rgba(217, 119, 6, 0.08); padding: 6px 12px; border-radius: 4px; }
#notice p { margin: 0; }
/* Synthetic images are small (32-128 px): show their pixels sharp when the browser scales them. */
#gallery img, #mask img { image-rendering: pixelated; }
/* An uploaded mask is as small as the images (e.g. 16-64 px): fill its box so that it can be seen. */
#mask img { width: 100%; height: 100%; object-fit: contain; }
/* Captions name the condition and the seed needed to regenerate an image: never cut them off, and put them under
   the image (gradio lays them over its bottom edge, where a two-line caption hides part of the image). */
/* As many columns of at least 140 px as fit: four on a wide page, two on a narrow one (never cut off at the side). */
#gallery .grid-container { grid-template-columns: repeat(auto-fill, minmax(140px, 1fr)); grid-template-rows: none; }
#gallery .thumbnail-item { display: flex; flex-direction: column; aspect-ratio: auto; height: auto; }
#gallery .thumbnail-item > img { aspect-ratio: 1 / 1; height: auto; min-height: 0; flex: 0 0 auto; }
#gallery .caption-label {
    position: static; max-width: 100%; white-space: normal; overflow: visible; text-overflow: clip;
    border: none; border-top: 1px solid var(--border-color-primary); border-radius: 0; opacity: 1;
}
"""


def condition_props(info: PipelineInfo) -> dict[str, Any]:
    """The condition dropdown for a model: its labels, single or multi-select, hidden for other kinds."""
    return {
        "choices": info.labels,
        "value": [] if info.multi_label else (info.labels[0] if info.labels else None),
        "multiselect": info.multi_label,
        "label": "Findings" if info.multi_label else "Condition",
        "info": ("Pick any number of findings; none means 'no finding'." if info.multi_label
                 else "The finding the images should show."),
        "visible": info.kind == "label" or (info.kind == "mask" and bool(info.labels)),
    }


def example_mask_props(info: PipelineInfo) -> dict[str, Any]:
    """The example mask dropdown for a model: its stored held-out masks, hidden when it has none."""
    return {
        "choices": [(f"{name} ({label})" if label and not name.startswith(label) else name, name)
                    for name, label in info.example_masks],
        "value": None,
        "visible": info.kind == "mask" and bool(info.example_masks),
    }


def example_prompts(info: PipelineInfo) -> list[str]:
    """The example prompts offered for a text model: those saved with it (what it was trained to follow, one per
    modality and finding for the built-in), else generic chest X-ray findings."""
    return list(info.example_prompts) or list(EXAMPLE_PROMPTS)


def prompt_example_props(info: PipelineInfo) -> dict[str, Any]:
    """The clickable example prompts of a model, one per row."""
    return {"samples": [[text] for text in example_prompts(info)]}


def sampler_info(info: PipelineInfo) -> str:
    """The sampler radio's help line: what "The model's own" runs for the selected model."""
    return f"The model's own: {info.sampler or 'its saved scheduler'}, {info.default_steps} steps by default."


def uploaded_file(value: Any, name: str) -> str | None:
    """The server path of a file the page (or `gradio_client.handle_file`) uploaded, or None for no file.

    The generate event skips gradio's preprocessing (see below). Gradio 6 still refuses a file path sent by a
    client outside its upload folder before the event runs; the app checks it again, so that no client can make
    it read another file of the server whatever gradio does there."""
    path = value.get("path") if isinstance(value, dict) else value
    if path in (None, ""):
        return None
    if not isinstance(path, str) or not gr.utils.is_in_or_equal(path, gr.utils.get_upload_folder()):
        raise ValueError(f"{name} must be a file uploaded with the request (gradio_client: handle_file(path))")
    return path


def cancel_outputs(running: int | None, shown: list | None) -> tuple[Any, Any, int]:
    """Cancel's answer: (status, run in progress, the cancelled run's image count for `after_cancel`, 0 if none).
    With no run in progress it leaves the status as it is (e.g. "Done: ...")."""
    status = cancel_clicked(running, len(shown or []))
    if status is None:
        return gr.skip(), 0, 0
    return status, 0, int(running)


def recount_cancelled(cancelled: int, shown: list | None) -> Any:
    """The cancelled status, counted again when the gallery changes after Cancel; nothing while no run is cancelled."""
    if not cancelled:
        return gr.skip()
    return cancel_clicked(cancelled, len(shown or []))


def after_cancel(cancelled: int, shown: list | None) -> Any:
    """Writes the cancelled status again, counting the gallery as it is now: a batch (or a step update) already
    on its way at the click may have landed since. When there was nothing to cancel, says so in a pop-up and
    leaves the status alone."""
    if not cancelled:
        gr.Info(NOTHING_TO_CANCEL)
    return recount_cancelled(cancelled, shown)


def build_demo(service: AppService) -> gr.Blocks:
    """The Blocks UI: a model dropdown, and condition or prompt inputs that follow the selected model's kind."""
    info = service.info

    def stop(message: str, log_traceback: bool) -> Iterator[tuple[Any, ...]]:
        """Replaces the status line with `message` (so no stale status stays under the error), then fails the event."""
        yield gr.skip(), gr.skip(), message, gr.skip(), 0
        raise gr.Error(message, print_exception=log_traceback)

    def generate(
        condition: str | list[str] | None = None,
        prompt: str = "",
        negative_prompt: str = "",
        count: int = 4,
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        seed: int = RANDOM_SEED,
        sampler: str = DEFAULT_SAMPLER,
        postprocess: str = "none",
        model: str | None = None,
        mask: Any = None,
        progress: gr.Progress = gr.Progress(),
    ) -> Iterator[tuple[Any, ...]]:
        """Generates `count` images with `model` (default: the one selected at start) in small batched calls; each
        batch reaches the gallery as soon as it is finished. `mask` (mask models): an uploaded PNG every image
        follows; none: a mask is sampled per image. Returns (gallery, zip, status, seed used)."""
        try:
            request = service.request(
                model=model, condition=condition, prompt=prompt, negative_prompt=negative_prompt, count=count,
                num_inference_steps=num_inference_steps, guidance_scale=guidance_scale, seed=seed,
                sampler=sampler, postprocess=postprocess, mask=uploaded_file(mask, "mask"),
            )
        except ValueError as error:
            # A typing mistake, not a fault: a short message, no traceback in the server log.
            yield from stop(f"Not started: {error}", log_traceback=False)
        service.prune_downloads()
        # A new run starts from an empty gallery, so what the gallery shows at Cancel is what this run kept.
        yield [], None, f"Starting {count_of(request.count)}...", request.seed, request.count
        progress((0, request.num_inference_steps), desc="Denoising", unit="steps")
        shown = -1
        # closing(): when gradio closes this generator (Cancel, closed tab), the run's worker is stopped too.
        with contextlib.closing(service.run(request)) as results:
            try:
                for result in results:
                    if result.steps_total:
                        progress((result.steps_done, result.steps_total), desc="Denoising", unit="steps")
                    if len(result.gallery) == shown and not result.finished:
                        # A denoising step: the status line (with the elapsed time) moves on, and yielding lets
                        # gradio's Cancel close this generator within one step.
                        yield gr.skip(), gr.skip(), result.status, gr.skip(), gr.skip()
                        continue
                    shown = len(result.gallery)
                    download = str(result.download) if result.download else None
                    yield result.gallery, download, result.status, result.seed, 0 if result.finished else gr.skip()
            except (ValueError, RuntimeError, OSError) as error:  # bad pipeline input, out of memory, load failure
                yield from stop(f"Generation failed: {error}", log_traceback=True)

    def sample_mask(model: str | None = None, condition: Any = None, seed: Any = RANDOM_SEED) -> str:
        """A mask drawn by the mask model's mask generator for the chosen condition and seed (-1: random), put in
        the mask box: every image of the next run follows it. Returns the mask PNG."""
        try:
            path, _ = service.sample_mask(model=model, condition=condition, seed=seed)
        except ValueError as error:
            raise gr.Error(f"No mask sampled: {error}", print_exception=False) from None
        return str(path)

    def example_mask(model: str | None = None, example: str | None = None, condition_chosen: bool = False):
        """Puts one of the model's example masks (real masks of its held-out test split) in the mask box, and its
        label in the condition dropdown unless the user chose a condition. Returns (mask PNG, condition)."""
        try:
            path, label = service.example_mask(model=model, example=example)
        except ValueError as error:
            raise gr.Error(f"No example mask: {error}", print_exception=False) from None
        return str(path), label if label and not condition_chosen else gr.skip()

    def select_model(name: str):
        """Lays the inputs out for the newly selected model from its configs: nothing is loaded here."""
        try:
            selected = service.catalog.info(name)
        except ValueError as error:
            raise gr.Error(str(error), print_exception=False) from None
        return (
            gr.Dropdown(**condition_props(selected)),
            gr.Column(visible=selected.kind == "mask"),
            mask_help(selected) if selected.kind == "mask" else "",
            gr.Button(visible=selected.mask_generator),
            gr.Dropdown(**example_mask_props(selected)),
            False,
            gr.Column(visible=selected.kind == "text"),
            gr.Dataset(**prompt_example_props(selected)),
            gr.Textbox(placeholder=example_prompts(selected)[0]),
            gr.Markdown(visible=selected.kind == "unconditional"),
            gr.Slider(value=selected.default_guidance, visible=selected.kind != "unconditional"),
            gr.Slider(value=selected.default_steps),
            gr.Radio(info=sampler_info(selected)),
            service.model_details(name),
        )

    with gr.Blocks(title="medgen: synthetic medical images", delete_cache=(3600, 7200)) as demo:
        # The image count of this page's run in progress (queued or running); 0 when there is none.
        running = gr.State(0)
        cancelled = gr.State(0)  # the image count of the run last cancelled, 0 once another starts
        # Whether the user picked a condition for the selected model: an example mask then keeps it.
        condition_chosen = gr.State(False)
        gr.Markdown("# medgen: synthetic medical images")
        gr.Markdown(f"**{NOTICE}**", elem_id="notice")
        with gr.Row():
            with gr.Column(scale=2, min_width=300):
                model = gr.Dropdown(
                    choices=service.catalog.names, value=service.default_model, label="Model", elem_id="model",
                    info="Each model is loaded on its first run; switching is instant.",
                )
                condition = gr.Dropdown(**condition_props(info), elem_id="condition")
                with gr.Column(visible=info.kind == "mask") as mask_group:
                    mask = gr.Image(
                        label="Mask", type="filepath", image_mode="L", sources=["upload"], height=220, elem_id="mask",
                    )
                    mask_note = gr.Markdown(mask_help(info) if info.kind == "mask" else "", elem_id="mask-help")
                    example = gr.Dropdown(
                        **example_mask_props(info), label="Example mask (held-out)", elem_id="example-mask",
                        info="A real mask of the model's held-out test split, never one it was trained on.",
                    )
                    sample_mask_button = gr.Button(
                        "Sample a mask", size="sm", visible=info.mask_generator, elem_id="sample-mask",
                    )
                with gr.Column(visible=info.kind == "text") as prompt_group:
                    prompt = gr.Textbox(
                        value="", label="Prompt", placeholder=example_prompts(info)[0], lines=2, elem_id="prompt",
                    )
                    prompt_examples = gr.Dataset(
                        components=[prompt], **prompt_example_props(info), label="Example prompts (click one)",
                        type="values", samples_per_page=24, elem_id="prompt-examples",
                    )
                    negative_prompt = gr.Textbox(value="", label="Negative prompt", placeholder="what the images should not show")
                unconditional_note = gr.Markdown(
                    "This model is unconditional: it draws images like its training set, without a condition.",
                    visible=info.kind == "unconditional",
                )
                count = gr.Slider(1, MAX_IMAGES, value=4, step=1, label="Number of images", elem_id="count")
                with gr.Accordion("Sampling settings", open=False):
                    num_inference_steps = gr.Slider(
                        1, MAX_STEPS, value=info.default_steps, step=1, label="Denoising steps", elem_id="steps",
                        info="Starts at the model's own; 15-25 suit DPM-Solver++, DDPM wants many more.",
                    )
                    guidance_scale = gr.Slider(
                        0.0, MAX_GUIDANCE, value=info.default_guidance, step=0.5, label="Guidance scale",
                        info="Higher follows the condition more closely but gives less varied images; 1 turns guidance off.",
                        visible=info.kind != "unconditional",
                    )
                    seed = gr.Number(
                        value=RANDOM_SEED, precision=0, minimum=RANDOM_SEED, label="Seed",
                        info="-1 picks a random seed. Image i uses seed + i, so a run can be repeated exactly.",
                    )
                    sampler = gr.Radio(list(SAMPLERS), value=DEFAULT_SAMPLER, label="Sampler", info=sampler_info(info), elem_id="sampler")
                    postprocess = gr.Dropdown(
                        choices=[(f"{name}: {get_preset(name).description}", name) for name in list_presets()],
                        value="none", label="Post-processing",
                    )
                with gr.Row():
                    generate_button = gr.Button("Generate", variant="primary", elem_id="generate")
                    cancel_button = gr.Button("Cancel", variant="stop", elem_id="cancel")
                details = gr.Markdown(service.model_details(), elem_id="model-details")
                gr.Markdown(
                    "Runs are queued; images are made a few at a time and appear as they are finished. Cancel stops "
                    "the current run within one denoising step: finished images are kept, those in progress dropped."
                )
            with gr.Column(scale=3, min_width=360):
                # The progress bar has a place of its own, so it covers neither the images nor the status line.
                progress_slot = gr.HTML("", elem_id="progress", min_height=48, padding=False)
                status = gr.Markdown(
                    "Choose settings and press **Generate**.", label="Status", elem_id="status",
                    min_height=50, container=True, padding=True,
                )
                gallery = gr.Gallery(
                    label="Generated images", format="png", columns=4, fit_columns=False, height=480,
                    # Native size (never blurred by upscaling); click an image to zoom, pixels kept sharp by CSS.
                    object_fit="scale-down", allow_preview=True, preview=False,
                    buttons=["download", "fullscreen"], elem_id="gallery", interactive=False,
                )
                with gr.Row():
                    # The API returns the seed as a number; a disabled gr.Number would show 0 before any run, so the
                    # page shows it in a text box that stays empty until a run.
                    seed_used = gr.Number(value=None, precision=0, visible=False, elem_id="seed-used")
                    seed_shown = gr.Textbox(
                        value="", label="First seed used", placeholder="shown after a run", interactive=False,
                        elem_id="seed-shown", scale=3,
                    )
                    reuse_seed = gr.Button("Reuse this seed", size="sm", scale=1)
                download = gr.File(label="Download ZIP", interactive=False, height=90, elem_id="download")

        prompt_examples.click(
            lambda sample: sample[0], inputs=prompt_examples, outputs=prompt, queue=False, api_visibility="private",
        )
        model.change(
            select_model, inputs=model,
            outputs=[
                condition, mask_group, mask_note, sample_mask_button, example, condition_chosen, prompt_group,
                prompt_examples, prompt, unconditional_note, guidance_scale, num_inference_steps, sampler, details,
            ],
            queue=False, api_visibility="private",
        )
        # At the click the page marks a run as in progress (a queued run can be cancelled too) and empties the
        # gallery, so that what it shows at Cancel is what this run kept; then the run is queued.
        generate_event = generate_button.click(
            lambda requested: (requested, [], 0), inputs=count, outputs=[running, gallery, cancelled], queue=False,
            api_visibility="private",
        ).then(
            zero_gpu(generate),
            inputs=[
                condition, prompt, negative_prompt, count, num_inference_steps, guidance_scale, seed, sampler, postprocess,
                model, mask,
            ],
            outputs=[gallery, download, status, seed_used, running],
            # Inputs reach `generate` as sent and are checked by `service.request` alone: gradio's own
            # checks would refuse "Pneumonia" (labels match case-insensitively) and answer "abc" with a
            # traceback instead of a message naming the input.
            preprocess=False,
            api_name="generate",
            concurrency_limit=service.concurrency_limit,
            concurrency_id="generate",
            show_progress_on=[progress_slot],
        )
        # The follow-up is queued (it is not waited for: Cancel has acted already), so that its pop-up can reach
        # the page; events outside the queue cannot show one. preprocess=False: the gallery is only counted.
        cancel_button.click(
            cancel_outputs, inputs=[running, gallery], outputs=[status, running, cancelled], cancels=[generate_event],
            queue=False, api_visibility="private", preprocess=False,
        ).then(
            after_cancel, inputs=[cancelled, gallery], outputs=status, api_visibility="private", show_progress="hidden",
            preprocess=False,
        )
        # A batch already on its way at Cancel can land after the follow-up has counted the gallery: the status
        # of a cancelled run follows the gallery until the next run starts (which sets `cancelled` back to 0).
        gallery.change(
            recount_cancelled, inputs=[cancelled, gallery], outputs=status, queue=False, api_visibility="private",
            preprocess=False, show_progress="hidden",
        )
        # Runs on the same workers as Generate (one model call at a time on CPU).
        sample_mask_button.click(
            zero_gpu(sample_mask), inputs=[model, condition, seed], outputs=mask, api_name="sample_mask",
            concurrency_id="generate", concurrency_limit=service.concurrency_limit, preprocess=False,
        )
        condition.input(lambda: True, outputs=condition_chosen, queue=False, api_visibility="private")
        # preprocess=False: the example is checked against the model sent (an API call names any model).
        example.input(
            example_mask, inputs=[model, example, condition_chosen], outputs=[mask, condition], api_name="example_mask",
            preprocess=False,
        )
        # A mask uploaded or sampled instead is no longer the example shown.
        for event in (mask.upload, mask.clear, sample_mask_button.click):
            event(lambda: None, outputs=example, queue=False, api_visibility="private")
        seed_used.change(
            lambda used: "" if used is None else str(int(used)), inputs=seed_used, outputs=seed_shown, queue=False,
            api_visibility="private",
        )
        reuse_seed.click(
            lambda used: RANDOM_SEED if used is None else used, inputs=seed_used, outputs=seed, queue=False,
            api_visibility="private",
        )
    return demo


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="medgen Gradio app: synthetic medical images for research and teaching (not for diagnosis). "
        "Host and port follow GRADIO_SERVER_NAME / GRADIO_SERVER_PORT unless given here.",
    )
    parser.add_argument(
        "--pipeline", action="append", default=None, metavar="SOURCE",
        help="Built-in pipeline name, saved medgen pipeline folder or Hugging Face Hub repo id; repeat it or give a "
        "comma list for several. Listed before the built-in pipelines, the first selected at start "
        "(default: $MEDGEN_PIPELINE, then the built-in default).",
    )
    parser.add_argument(
        "--no-builtins", action="store_true", help="List only the --pipeline models, not the built-in pipelines."
    )
    parser.add_argument(
        "--max-loaded", type=int, default=4, help="Models kept loaded at once; the least recently used is dropped (default 4)."
    )
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="Default: CUDA (fp16) if available, else CPU.")
    parser.add_argument("--max-queue", type=int, default=32, help="Requests that may wait in the queue (default 32).")
    parser.add_argument("--concurrency", type=int, default=None, help="Simultaneous runs (default: 1 on CPU, 2 on CUDA).")
    parser.add_argument(
        "--batch-size", type=int, default=None,
        help="Images per pipeline call; each batch shows as soon as it is finished and is kept on Cancel "
        "(default: 2 on CPU, 8 on CUDA).",
    )
    parser.add_argument("--server-name", default=None, help="Interface to listen on (default: $GRADIO_SERVER_NAME or 127.0.0.1).")
    parser.add_argument("--server-port", type=int, default=None, help="Port (default: $GRADIO_SERVER_PORT or the first free from 7860).")
    parser.add_argument("--share", action="store_true", help="Also create a temporary public gradio.live link.")
    args = parser.parse_args(argv)
    if args.max_queue < 1:
        parser.error(f"--max-queue must be >= 1; got {args.max_queue}")
    if args.concurrency is not None and args.concurrency < 1:
        parser.error(f"--concurrency must be >= 1; got {args.concurrency}")
    if args.max_loaded < 1:
        parser.error(f"--max-loaded must be >= 1; got {args.max_loaded}")
    if args.batch_size is not None and args.batch_size < 1:
        parser.error(f"--batch-size must be >= 1; got {args.batch_size}")
    args.pipeline = resolve_pipeline_sources(args.pipeline)
    if args.no_builtins and not args.pipeline:
        parser.error("--no-builtins needs at least one --pipeline (or $MEDGEN_PIPELINE)")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        service = AppService.from_sources(
            args.pipeline, device=args.device, include_builtins=not args.no_builtins, max_loaded=args.max_loaded,
            batch_size=args.batch_size,
        )
    except (ValueError, FileNotFoundError) as error:
        sys.exit(f"medgen app: error: {error}")
    if args.concurrency is not None:
        service.concurrency_limit = args.concurrency
    demo = build_demo(service)
    launch(demo, service, max_queue=args.max_queue, server_name=args.server_name, server_port=args.server_port, share=args.share)


def launch(demo: gr.Blocks, service: AppService, max_queue: int = 32, **launch_kwargs: Any):
    """Queues and starts `demo`; unset host/port fall back to gradio's GRADIO_SERVER_NAME / GRADIO_SERVER_PORT."""
    demo.queue(max_size=max_queue, default_concurrency_limit=service.concurrency_limit)
    return demo.launch(css=CSS, **launch_kwargs)


if __name__ == "__main__":
    main()
