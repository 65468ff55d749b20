"""medgen's Gradio app: pick a finding (or type a prompt), ask for N synthetic images, download them.

    python app.py                                  # the embedded default pipeline
    python app.py --pipeline path/to/pipeline      # or MEDGEN_PIPELINE=path/to/pipeline
    GRADIO_SERVER_NAME=0.0.0.0 GRADIO_SERVER_PORT=8080 python app.py

This file only lays out the UI and wires it to `medgen.app_logic`, which holds the logic
(validation, streaming with real cancellation, downloads) and is tested without a browser.
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

from medgen.app_logic import (
    DEFAULT_SAMPLER,
    EXAMPLE_PROMPTS,
    MAX_GUIDANCE,
    MAX_IMAGES,
    MAX_STEPS,
    NOTICE,
    RANDOM_SEED,
    SAMPLERS,
    AppService,
    zero_gpu,
)
from medgen.postprocess import get_preset, list_presets

MIN_GRADIO = "6.7"  # CVE-2026-28414 is fixed there; gradio 5 lacks what the layout uses (Gallery fit_columns)
if Version(gr.__version__) < Version(MIN_GRADIO):
    raise ImportError(f"the medgen app needs gradio>={MIN_GRADIO}; found {gr.__version__}: pip install 'gradio>={MIN_GRADIO}'")

CSS = """
#notice { border-left: 4px solid #d97706; background: rgba(217, 119, 6, 0.08); padding: 6px 12px; border-radius: 4px; }
#notice p { margin: 0; }
"""


def build_demo(service: AppService) -> gr.Blocks:
    """The Blocks UI for `service`'s pipeline: condition or prompt inputs follow the pipeline kind."""
    info = service.info

    def stop(message: str, log_traceback: bool) -> Iterator[tuple[Any, Any, Any, Any]]:
        """Replaces the status line with `message` (so no stale status stays under the error), then fails the event."""
        yield gr.skip(), gr.skip(), message, gr.skip()
        raise gr.Error(message, print_exception=log_traceback)

    def generate(
        condition: str | list[str] | None = None,
        prompt: str = "",
        negative_prompt: str = "",
        count: int = 4,
        num_inference_steps: int = 25,
        guidance_scale: float = info.default_guidance,
        seed: int = RANDOM_SEED,
        sampler: str = DEFAULT_SAMPLER,
        postprocess: str = "none",
        progress: gr.Progress = gr.Progress(),
    ) -> Iterator[tuple[Any, Any, Any, Any]]:
        """Generates `count` images; streams each as it finishes. Returns (gallery, zip, status, seed used)."""
        try:
            request = service.request(
                condition=condition, prompt=prompt, negative_prompt=negative_prompt, count=count,
                num_inference_steps=num_inference_steps, guidance_scale=guidance_scale, seed=seed,
                sampler=sampler, postprocess=postprocess,
            )
        except ValueError as error:
            # A typing mistake, not a fault: a short message, no traceback in the server log.
            yield from stop(f"Not started: {error}", log_traceback=False)
        service.prune_downloads()
        progress((0, request.count * request.num_inference_steps), desc="Denoising", unit="steps")
        shown = -1
        # closing(): when gradio closes this generator (Cancel, closed tab), the run's worker is stopped too.
        with contextlib.closing(service.run(request)) as results:
            try:
                for result in results:
                    progress((result.steps_done, result.steps_total), desc="Denoising", unit="steps")
                    if len(result.gallery) == shown and not result.finished:
                        # A denoising step: yielding lets gradio's Cancel close this generator within one step.
                        yield gr.skip(), gr.skip(), gr.skip(), gr.skip()
                        continue
                    shown = len(result.gallery)
                    download = str(result.download) if result.download else None
                    yield result.gallery, download, result.status, result.seed
            except (ValueError, RuntimeError) as error:  # bad pipeline input, out of memory
                yield from stop(f"Generation failed: {error}", log_traceback=True)

    with gr.Blocks(title="medgen: synthetic medical images", delete_cache=(3600, 7200)) as demo:
        gr.Markdown("# medgen: synthetic medical images")
        gr.Markdown(f"**{NOTICE}**", elem_id="notice")
        with gr.Row():
            with gr.Column(scale=2, min_width=300):
                condition = gr.Dropdown(
                    choices=info.labels,
                    value=[] if info.multi_label else (info.labels[0] if info.labels else None),
                    multiselect=info.multi_label,
                    label="Findings" if info.multi_label else "Condition",
                    info=("Pick any number of findings; none means 'no finding'." if info.multi_label
                          else "The finding the images should show."),
                    visible=info.kind == "label",
                    elem_id="condition",
                )
                with gr.Column(visible=info.kind == "text"):
                    prompt = gr.Textbox(value="", label="Prompt", placeholder=EXAMPLE_PROMPTS[1], lines=2, elem_id="prompt")
                    gr.Examples(examples=[[text] for text in EXAMPLE_PROMPTS], inputs=[prompt], label="Example prompts")
                    negative_prompt = gr.Textbox(value="", label="Negative prompt", placeholder="what the images should not show")
                if info.kind == "unconditional":
                    gr.Markdown("This model is unconditional: it draws images like its training set, without a condition.")
                count = gr.Slider(1, MAX_IMAGES, value=4, step=1, label="Number of images", elem_id="count")
                with gr.Accordion("Sampling settings", open=False):
                    num_inference_steps = gr.Slider(
                        1, MAX_STEPS, value=25, step=1, label="Denoising steps",
                        info="20-30 suit DPM-Solver++; DDPM needs many more (its training schedule).",
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
                    sampler = gr.Radio(list(SAMPLERS), value=DEFAULT_SAMPLER, label="Sampler")
                    postprocess = gr.Dropdown(
                        choices=[(f"{name}: {get_preset(name).description}", name) for name in list_presets()],
                        value="none", label="Post-processing",
                    )
                with gr.Row():
                    generate_button = gr.Button("Generate", variant="primary", elem_id="generate")
                    cancel_button = gr.Button("Cancel", variant="stop", elem_id="cancel")
                gr.Markdown(
                    f"Model: `{info.source}` ({info.class_name}, {info.image_size} px, on {service.device}). "
                    "Runs are queued; Cancel stops the current run within one denoising step and keeps finished images."
                )
            with gr.Column(scale=3, min_width=360):
                gallery = gr.Gallery(
                    label="Generated images", format="png", columns=4, fit_columns=False, height=480, object_fit="contain", preview=False,
                    buttons=["download", "fullscreen"], elem_id="gallery", interactive=False,
                )
                status = gr.Markdown(
                    "Choose settings and press **Generate**.", label="Status", elem_id="status",
                    min_height=70, container=True, padding=True,
                )
                with gr.Row():
                    seed_used = gr.Number(
                        value=None, label="First seed used", precision=0, interactive=False, elem_id="seed-used", scale=3
                    )
                    reuse_seed = gr.Button("Reuse this seed", size="sm", scale=1)
                download = gr.File(label="Download ZIP", interactive=False, height=90, elem_id="download")

        generate_event = generate_button.click(
            zero_gpu(generate),
            inputs=[condition, prompt, negative_prompt, count, num_inference_steps, guidance_scale, seed, sampler, postprocess],
            outputs=[gallery, download, status, seed_used],
            # Inputs reach `generate` as sent and are checked by `service.request` alone: gradio's own
            # checks would refuse "Pneumonia" (labels match case-insensitively) and answer "abc" with a
            # traceback instead of a message naming the input.
            preprocess=False,
            api_name="generate",
            concurrency_limit=service.concurrency_limit,
            concurrency_id="generate",
            # The progress bar goes on the status line so that finished images stay visible during a run.
            show_progress_on=[status],
        )
        cancel_button.click(
            lambda: "Cancelled: the images finished before the cancel are kept.",
            outputs=status, cancels=[generate_event], queue=False, api_visibility="private",
        )
        reuse_seed.click(lambda used: used, inputs=seed_used, outputs=seed, queue=False, api_visibility="private")
    return demo


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="medgen Gradio app: synthetic medical images for research and teaching (not for diagnosis). "
        "Host and port follow GRADIO_SERVER_NAME / GRADIO_SERVER_PORT unless given here.",
    )
    parser.add_argument(
        "--pipeline", default=None,
        help="Built-in pipeline name (default), saved medgen pipeline folder or Hugging Face Hub repo id (default: $MEDGEN_PIPELINE, then the embedded default).",
    )
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="Default: CUDA (fp16) if available, else CPU.")
    parser.add_argument("--max-queue", type=int, default=32, help="Requests that may wait in the queue (default 32).")
    parser.add_argument("--concurrency", type=int, default=None, help="Simultaneous runs (default: 1 on CPU, 2 on CUDA).")
    parser.add_argument("--server-name", default=None, help="Interface to listen on (default: $GRADIO_SERVER_NAME or 127.0.0.1).")
    parser.add_argument("--server-port", type=int, default=None, help="Port (default: $GRADIO_SERVER_PORT or the first free from 7860).")
    parser.add_argument("--share", action="store_true", help="Also create a temporary public gradio.live link.")
    args = parser.parse_args(argv)
    if args.max_queue < 1:
        parser.error(f"--max-queue must be >= 1; got {args.max_queue}")
    if args.concurrency is not None and args.concurrency < 1:
        parser.error(f"--concurrency must be >= 1; got {args.concurrency}")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        service = AppService.from_source(args.pipeline, device=args.device)
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
