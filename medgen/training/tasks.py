"""What is trained for each model kind: the denoiser, its inputs, its condition, and the pipeline it becomes.

The interface every kind implements is `DiffusionTask` (medgen.training.task_base); this module holds the
label and unconditional kinds and `build_task`, which picks the kind of a config.
"""

from __future__ import annotations

from diffusers import UNet2DConditionModel, UNet2DModel

from medgen.config import TrainConfig
from medgen.training.task_base import DiffusionTask, block_types

__all__ = ["DiffusionTask", "LabelTask", "UnconditionalTask", "block_types", "build_task"]


class UnconditionalTask(DiffusionTask):
    def build_unet(self) -> UNet2DModel:
        return UNet2DModel(**self.unet_kwargs("AttnDownBlock2D", "AttnUpBlock2D"))

    def build_pipeline(self, unet, scheduler):
        from medgen.pipelines import UnconditionalPipeline

        return UnconditionalPipeline(unet=unet, scheduler=scheduler, vae=self.vae)


class LabelTask(DiffusionTask):
    def __init__(self, config: TrainConfig, label_names: list[str], multi_label: bool):
        if not label_names:
            raise ValueError(
                "model.kind 'label' needs a labelled dataset, but the data has no labels; "
                "set data.labels / label_columns / findings_column, or use model.kind 'unconditional'."
            )
        super().__init__(config, label_names, multi_label)

    def build_unet(self) -> UNet2DConditionModel:
        return UNet2DConditionModel(
            **self.unet_kwargs("AttnDownBlock2D", "AttnUpBlock2D"),
            mid_block_type="UNetMidBlock2D",
            # the condition vector (label values + null flag) is projected into the timestep embedding
            class_embed_type="projection",
            projection_class_embeddings_input_dim=len(self.label_names) + 1,
        )

    def condition_kwargs(self, batch, drop_mask):
        from medgen.pipelines import LabelConditionedPipeline

        labels = batch["labels"].float()
        return {
            "encoder_hidden_states": None,
            "class_labels": LabelConditionedPipeline.condition_from_vectors(labels, drop_mask),
        }

    def build_pipeline(self, unet, scheduler):
        from medgen.pipelines import LabelConditionedPipeline

        return LabelConditionedPipeline(
            unet=unet,
            scheduler=scheduler,
            vae=self.vae,
            id2label={str(i): name for i, name in enumerate(self.label_names)},
            multi_label=self.multi_label,
            default_guidance_scale=self.config.diffusion.guidance_scale,  # what its sample grids were drawn with
        )

    def sample_requests(self):
        return [(name, {"labels": name}) for name in self.label_names]


def build_task(config: TrainConfig, label_names: list[str], multi_label: bool) -> DiffusionTask:
    kind = config.model.kind
    if kind == "label":
        return LabelTask(config, label_names, multi_label)
    if kind == "unconditional":
        return UnconditionalTask(config, label_names, multi_label)
    if kind in ("mask", "mask_generator"):
        from medgen.training.mask_task import MaskGeneratorTask, MaskTask

        return (MaskTask if kind == "mask" else MaskGeneratorTask)(config, label_names, multi_label)
    if kind == "text":
        from medgen.training.text_task import TextTask

        return TextTask(config, label_names, multi_label)
    raise ValueError(f"model.kind {kind!r} has no diffusion task (the 'vae' kind trains only the autoencoder).")
