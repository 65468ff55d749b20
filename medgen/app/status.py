"""Every line of text the app shows about a run or a model: the notice, the details line, status lines, Cancel."""

from __future__ import annotations

from medgen.app.models import PipelineInfo
from medgen.app.request import GenerationRequest

NOTICE = (
    "Synthetic images, for research and teaching only: not for diagnosis. "
    "They show what a model learned, not a real patient."
)
NOTHING_TO_CANCEL = "Nothing to cancel: no run is in progress."


def count_of(count: int, noun: str = "image") -> str:
    """`1 image`, `4 images`."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def model_details(name: str, info: PipelineInfo, device: str, builtin: bool = False) -> str:
    """The details line under the buttons: the model as the dropdown names it, where it comes from, what it is."""
    origin = "built-in; " if builtin else ("" if info.source in ("", name) else f"from `{info.source}`; ")
    return f"Model: **{name}** ({origin}{info.class_name}, {info.image_size} px, on {device})."


def mask_help(info: PipelineInfo) -> str:
    """What the mask box of a mask model asks for."""
    classes = ", ".join(f"{index} = {name}" for index, name in enumerate(info.mask_classes, start=1))
    accepted = f"a PNG of class indices (0 = background, {classes})" + (
        ", or black and white" if len(info.mask_classes) == 1 else ""
    )
    example = " or pick an **example mask** (a real mask of the held-out test split)," if info.example_masks else ""
    if info.mask_generator:
        return (
            f"Upload a mask, {accepted},{example} or press **Sample a mask** (the model draws one for the condition "
            "and seed), and every image follows it; leave it empty and the model samples a new mask for each image. "
            "Each image is shown beside its mask's outline; the ZIP holds both."
        )
    return (
        f"Upload a mask (this model needs one): {accepted}{',' + example.rstrip(',') if example else ''}. "
        "Each image is shown beside its mask's outline; the ZIP holds both."
    )


def loading_status(name: str) -> str:
    return f"Loading model {name}..."


def starting_status(request: GenerationRequest) -> str:
    return f"Starting {count_of(request.count)}..."


def progress_status(request: GenerationRequest, shown: int, steps_done: int, steps_total: int, elapsed: float) -> str:
    made = f", {shown} done" if shown else ""
    return (
        f"Generating {count_of(request.count)}{made}: step {steps_done} of {steps_total}, "
        f"{elapsed:.1f} s (first seed {request.seed})..."
    )


def done_status(request: GenerationRequest, shown: int, elapsed: float) -> str:
    seeds = f"seed {request.seed}" if shown == 1 else f"seeds {request.seed} to {request.seeds[shown - 1]}"
    return f"Done: {count_of(shown)} in {elapsed:.1f} s ({seeds})."


def cancelled_status(kept: int, requested: int, batch_dropped: bool = True, elapsed: float | None = None) -> str:
    """What Cancel ended with: the gallery keeps exactly the finished images (a run starts with an empty one)."""
    after = "" if elapsed is None else f" after {elapsed:.1f} s"
    dropped = " Images still in progress were dropped." if batch_dropped and kept < requested else ""
    return f"Cancelled{after}: kept {kept} of {count_of(requested)}.{dropped}"


def cancel_clicked(requested: int | None, kept: int) -> str | None:
    """The status after a click on Cancel. `requested` is the image count of the run in progress (queued or
    running), `None` or 0 when there is none: then Cancel changes nothing and the result is `None`."""
    if not requested:
        return None
    return cancelled_status(kept, int(requested))
