"""What medgen's Gradio app does, as plain functions and small classes that tests can call directly.

`app.py` (at the repository root) only lays out the UI and wires it to :class:`AppService` and the
text helpers here. Nothing in this package imports gradio, so the logic runs (and is tested) without
a web server. The modules, in import order:

- `models`: the models served (listed up front from their JSON configs, loaded on first use, LRU-cached);
- `request`: the limits and samplers, and one checked click on Generate (`make_request`);
- `status`: every line of text shown about a model or a run (notice, details line, status lines, Cancel);
- `loading`: where models come from (`--pipeline`, `$MEDGEN_PIPELINE`, built-ins) and loading one to a device;
- `streaming`: a run in small batched pipeline calls in a worker thread, reported per step, cancellable;
- `display`: gallery images (8-bit, enlarged by a whole factor); `downloads`: the ZIP of PNG + DICOM + params;
- `service`: `AppService`, which puts these together for the UI.
"""

from medgen.app.display import DISPLAY_MIN_SIZE, display_image, display_pair
from medgen.app.downloads import export_zip, run_parameters
from medgen.app.loading import (
    ENV_PIPELINE,
    default_pipeline_dir,
    load_app_pipeline,
    resolve_pipeline_source,
    resolve_pipeline_sources,
    select_device,
    zero_gpu,
)
from medgen.app.models import (
    ModelCatalog,
    PipelineInfo,
    builtin_models,
    describe_pipeline,
    describe_pipeline_folder,
    model_name,
    split_sources,
)
from medgen.app.request import (
    DEFAULT_SAMPLER,
    EXAMPLE_PROMPTS,
    MAX_GUIDANCE,
    MAX_IMAGES,
    MAX_STEPS,
    RANDOM_SEED,
    SAMPLERS,
    GenerationRequest,
    make_request,
)
from medgen.app.service import AppService, RunResult
from medgen.app.status import NOTHING_TO_CANCEL, NOTICE, cancel_clicked, count_of, mask_help
from medgen.app.streaming import DEFAULT_BATCH_SIZE, GenerationUpdate, pipeline_with_sampler, stream_generation

__all__ = [
    "DEFAULT_BATCH_SIZE", "DEFAULT_SAMPLER", "DISPLAY_MIN_SIZE", "ENV_PIPELINE", "EXAMPLE_PROMPTS", "MAX_GUIDANCE",
    "MAX_IMAGES", "MAX_STEPS", "NOTHING_TO_CANCEL", "NOTICE", "RANDOM_SEED", "SAMPLERS", "AppService",
    "GenerationRequest", "GenerationUpdate", "ModelCatalog", "PipelineInfo", "RunResult", "builtin_models", "mask_help",
    "cancel_clicked", "count_of", "default_pipeline_dir", "describe_pipeline", "describe_pipeline_folder",
    "display_image", "display_pair", "export_zip", "load_app_pipeline", "make_request", "model_name", "pipeline_with_sampler",
    "resolve_pipeline_source", "resolve_pipeline_sources", "run_parameters", "select_device", "split_sources",
    "stream_generation", "zero_gpu",
]
