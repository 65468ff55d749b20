"""The `text` training task: a cross-attention UNet denoising VAE latents, conditioned on encoded prompts.

Each image's prompt (a cleaned report, clinical notes, or a prompt templated from its labels: the dataset's
`text` column) is encoded by a frozen BERT-family encoder; prompts dropped for classifier-free guidance
become the empty prompt, which is exactly what `TextToImagePipeline` feeds as the unconditional half of
its guidance batch. `train.py` trains the autoencoder first when `model.pretrained_vae` is not set.
"""

from __future__ import annotations

import random
from collections import OrderedDict
from typing import Any

import torch
from diffusers import UNet2DConditionModel

from medgen.config import TrainConfig
from medgen.data.prompts import choose_phrasing, default_sample_prompts
from medgen.text_encoders import encode_prompts, load_text_encoder
from medgen.training.task_base import DiffusionTask

# Generic rows for sample grids of unlabelled report data (a user's sample_prompts replace them).
DEFAULT_SAMPLE_PROMPTS = (
    "no acute cardiopulmonary abnormality",
    "right lower lobe pneumonia with consolidation",
    "bilateral diffuse interstitial opacities",
    "large left pleural effusion",
)
EMBEDDING_CACHE_SIZE = 4096


class TextTask(DiffusionTask):
    """Text-conditioned latent diffusion (`model.kind: text`)."""

    def __init__(self, config: TrainConfig, label_names: list[str], multi_label: bool):
        if not config.model.pretrained_vae:
            raise ValueError(
                "model.kind 'text' runs in latent space: set model.pretrained_vae to a saved autoencoder folder, or "
                "leave it empty in a train.py run, which then trains the autoencoder first."
            )
        self.tokenizer, self.text_encoder = load_text_encoder(config.text.text_encoder, config.text.train_last_layers)
        self._training_encoder: torch.nn.Module | None = None  # set by the loop when the encoder is fine-tuned
        self._truncation_warned = False  # one warning per run, not one per batch
        # A frozen encoder maps a prompt to the same states every time: cache them (templated prompts repeat).
        self._cache: OrderedDict[str, tuple[torch.Tensor, torch.Tensor]] = OrderedDict()
        super().__init__(config, label_names, multi_label)

    def build_unet(self) -> UNet2DConditionModel:
        model = self.config.model
        channels, side = self.sample_shape
        factor = 2 ** (len(model.block_out_channels) - 1)
        if side % factor:
            raise ValueError(
                f"The latent grid is {side}x{side} (data.resolution {self.config.data.resolution} / autoencoder factor), "
                f"which the UNet's {len(model.block_out_channels)} levels cannot halve {len(model.block_out_channels) - 1} "
                "times; raise data.resolution or use fewer model.block_out_channels."
            )
        hidden_size = int(self.text_encoder.config.hidden_size)
        pooled = {}
        if self.config.text.pooled_embedding:
            # an attention-pooled prompt summary added to the timestep embedding (heads of 64 dims where they fit)
            num_heads = hidden_size // 64 if hidden_size % 64 == 0 else 1
            pooled = {"addition_embed_type": "text", "addition_embed_type_num_heads": num_heads}
        return UNet2DConditionModel(
            # the prompt enters through cross-attention on the levels marked in attention_levels
            **self.unet_kwargs("CrossAttnDownBlock2D", "CrossAttnUpBlock2D"),
            mid_block_type="UNetMidBlock2DCrossAttn",
            cross_attention_dim=hidden_size,
            **pooled,
        )

    def to(self, device: torch.device) -> None:
        super().to(device)
        self.text_encoder.to(device)
        self._cache.clear()

    def trainable_modules(self) -> list[torch.nn.Module]:
        """The encoder, when `text.train_last_layers` unfroze some of its layers."""
        return [self.text_encoder] if self.config.text.train_last_layers > 0 else []

    def use_prepared_modules(self, prepared: list[torch.nn.Module]) -> None:
        if self.config.text.train_last_layers > 0:
            (self._training_encoder,) = prepared

    def _encode_uncached(self, prompts: list[str], text_encoder: torch.nn.Module | None = None):
        encoded = encode_prompts(
            self.tokenizer, self.text_encoder if text_encoder is None else text_encoder, prompts, self.config.text.max_length,
            warn=not self._truncation_warned,
        )
        self._truncation_warned = self._truncation_warned or encoded.num_truncated > 0
        return encoded

    def _encode(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        if self.config.text.train_last_layers > 0:
            if self._training_encoder is None:
                raise RuntimeError(
                    "text.train_last_layers > 0 but the training loop never passed the prepared encoder to "
                    "TextTask.use_prepared_modules(), so its layers would not be trained."
                )
            self.text_encoder.train()
            encoded = self._encode_uncached(prompts, self._training_encoder)
            return encoded.hidden_states, encoded.attention_mask
        missing = list(dict.fromkeys(p for p in prompts if p not in self._cache))
        if missing:
            with torch.no_grad():
                encoded = self._encode_uncached(missing)
            for i, prompt in enumerate(missing):
                self._cache[prompt] = (encoded.hidden_states[i], encoded.attention_mask[i])
        for prompt in prompts:
            self._cache.move_to_end(prompt)
        states = torch.stack([self._cache[p][0] for p in prompts])
        mask = torch.stack([self._cache[p][1] for p in prompts])
        while len(self._cache) > EMBEDDING_CACHE_SIZE:
            self._cache.popitem(last=False)
        return states, mask

    def condition_kwargs(self, batch: dict[str, Any], drop_mask: torch.Tensor) -> dict[str, Any]:
        texts = batch["text"]
        if isinstance(texts, str):
            texts = [texts]
        # texts with several phrasings (medgen.data.prompts): one per image, drawn from the training loop's step seed
        rng = random.Random(torch.initial_seed())
        prompts = ["" if drop else choose_phrasing(str(text), rng) for text, drop in zip(texts, drop_mask.tolist())]
        hidden_states, attention_mask = self._encode(prompts)
        return {"encoder_hidden_states": hidden_states, "encoder_attention_mask": attention_mask}

    def build_pipeline(self, unet, scheduler):
        from medgen.pipelines import TextToImagePipeline

        self.text_encoder.eval()  # no dropout while sampling; a fine-tuned encoder is put back in train mode per batch
        return TextToImagePipeline(
            vae=self.vae,
            text_encoder=self.text_encoder,
            tokenizer=self.tokenizer,
            unet=unet,
            scheduler=scheduler,
            max_length=self.config.text.max_length,
            example_prompts=self.example_prompts(),
        )

    def sample_prompts(self) -> list[str]:
        if self.config.text.sample_prompts:
            return list(self.config.text.sample_prompts)
        described = default_sample_prompts([self.config.data, *self.config.extra_data])
        if described:  # sets read with prompt sets: one canonical prompt per group
            return described
        if self.label_names:
            from medgen.data.text import template_prompt

            return [template_prompt([name], self.config.data.prompt_template) for name in self.label_names]
        return list(DEFAULT_SAMPLE_PROMPTS)

    def example_prompts(self) -> list[str]:
        """What the saved pipeline offers as examples: for described sets the canonical prompt of every group (all
        the trained facts, modality first), else the sample-grid rows."""
        return default_sample_prompts([self.config.data, *self.config.extra_data]) or self.sample_prompts()

    def sample_requests(self) -> list[tuple[str, dict[str, Any]]]:
        return [(prompt, {"prompt": prompt}) for prompt in self.sample_prompts()]
