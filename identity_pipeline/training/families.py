"""One adapter per model family: everything the trainer needs to know about a diffusers model.

Loading goes through the family's own diffusers pipeline class (``from_pretrained`` on a local
folder or a hub id), and prompts are encoded with that pipeline's ``encode_prompt``, so the
embeddings the LoRA is trained on are exactly the ones the pipeline feeds the model at inference.

Latents are handled in the spatial layout (B, C, h, w) everywhere in the trainer; an adapter packs
them into the denoiser's layout (Qwen-Image / Flux 2x2 patch tokens) inside ``predict`` and unpacks
the prediction, so masks and losses never depend on the family.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from identity_pipeline.training.config import TimestepConfig

TextEmbeds = dict[str, torch.Tensor]  # one prompt's tensors, no batch dimension

ENCODE_CHUNK = 8  # prompts per text-encoder call while caching


@dataclass(frozen=True)
class LoadOptions:
    source: str
    revision: str | None = None
    variant: str | None = None

    def kwargs(self) -> dict[str, Any]:
        extra: dict[str, Any] = {}
        if self.revision:
            extra["revision"] = self.revision
        if self.variant:
            extra["variant"] = self.variant
        return extra


# Joint attention of MMDiT transformers (Qwen-Image, SD3, Flux): diffusers names the image and
# text streams' projections alike in all three.
JOINT_ATTENTION_TARGETS = (
    "to_q",
    "to_k",
    "to_v",
    "to_out.0",
    "add_q_proj",
    "add_k_proj",
    "add_v_proj",
    "to_add_out",
)


@dataclass
class FamilyAdapter:
    """Base class; subclasses fill in the class attributes and the family-specific methods."""

    family: ClassVar[str]
    pipeline_class_name: ClassVar[str]
    denoiser_name: ClassVar[str] = "transformer"  # the pipeline component being adapted
    denoiser_class_name: ClassVar[str]
    objective: ClassVar[str] = "flow"  # "flow" or "ddpm"
    attention_targets: ClassVar[tuple[str, ...]]
    mlp_targets: ClassVar[tuple[str, ...]]
    # Kohya-style key prefix that ComfyUI maps onto this family's modules.
    kohya_prefix: ClassVar[str]
    default_max_text_tokens: ClassVar[int]
    # Text-encoder components, left out when the denoiser and VAE are loaded for sampling.
    text_components: ClassVar[tuple[str, ...]]
    # Read from the model's configs by ``read_configs`` before anything else.
    patch_size: int = field(default=1)
    vae_scale: int = field(default=8)
    scheduler_config: dict[str, Any] = field(default_factory=dict)
    # Small per-shape tensors built once on the device (creating them each step would sync).
    _time_ids: dict[tuple, torch.Tensor] = field(default_factory=dict, repr=False)

    # -- loading ---------------------------------------------------------------------------

    @property
    def pipeline_class(self) -> type:
        import diffusers

        return getattr(diffusers, self.pipeline_class_name)

    def load_text_pipeline(self, options: LoadOptions, dtype: torch.dtype, device: torch.device):
        """The family's pipeline with only tokenizers and text encoders loaded."""
        skip: dict[str, Any] = {self.denoiser_name: None, "vae": None}
        pipe = self.pipeline_class.from_pretrained(
            options.source, dtype=dtype, **skip, **options.kwargs()
        )
        return pipe.to(device)

    def load_vae(self, options: LoadOptions, dtype: torch.dtype):
        import diffusers

        vae_class = getattr(diffusers, self.vae_class_name())
        return vae_class.from_pretrained(
            options.source, subfolder="vae", dtype=dtype, **options.kwargs()
        )

    def vae_class_name(self) -> str:
        return "AutoencoderKL"

    def read_configs(self, options: LoadOptions) -> None:
        """Geometry and scheduler settings from the config files alone (no weights loaded)."""
        import diffusers

        revision = {"revision": options.revision} if options.revision else {}
        vae_config = getattr(diffusers, self.vae_class_name()).load_config(
            options.source, subfolder="vae", **revision
        )
        denoiser_config = getattr(diffusers, self.denoiser_class_name).load_config(
            options.source, subfolder=self.denoiser_name, **revision
        )
        self.configure(
            vae_config,
            denoiser_config,
            # Any scheduler class reads scheduler_config.json; the dict is what matters.
            diffusers.DDPMScheduler.load_config(options.source, subfolder="scheduler", **revision),
        )

    def configure(
        self,
        vae_config: dict[str, Any],
        denoiser_config: dict[str, Any],
        scheduler_config: dict[str, Any],
    ) -> None:
        """Geometry and scheduler settings from config dicts (files, or a pipeline in memory)."""
        self.vae_scale = self.vae_scale_factor(vae_config)
        self.patch_size = int(denoiser_config.get("patch_size", 1) or 1)
        self.scheduler_config = dict(scheduler_config)

    def load_denoiser(self, options: LoadOptions, dtype: torch.dtype) -> torch.nn.Module:
        import diffusers

        denoiser_class = getattr(diffusers, self.denoiser_class_name)
        return denoiser_class.from_pretrained(
            options.source, subfolder=self.denoiser_name, dtype=dtype, **options.kwargs()
        )

    def build_pipeline(
        self, options: LoadOptions, denoiser: torch.nn.Module, vae, dtype: torch.dtype
    ):
        """The full pipeline for sampling, around the trained denoiser, without text encoders."""
        components: dict[str, Any] = {name: None for name in self.text_components}
        components[self.denoiser_name] = denoiser
        components["vae"] = vae
        pipe = self.pipeline_class.from_pretrained(
            options.source, dtype=dtype, **components, **options.kwargs()
        )
        pipe.set_progress_bar_config(disable=True)
        return pipe

    def lora_target_modules(self, include_mlp: bool) -> list[str]:
        return list(self.attention_targets) + (list(self.mlp_targets) if include_mlp else [])

    def save_lora(
        self, directory: str, state_dict: dict[str, torch.Tensor], metadata: dict, weight_name: str
    ) -> None:
        self.pipeline_class.save_lora_weights(
            directory,
            weight_name=weight_name,
            safe_serialization=True,
            **{
                f"{self.denoiser_name}_lora_layers": state_dict,
                f"{self.denoiser_name}_lora_adapter_metadata": metadata,
            },
        )

    # -- geometry --------------------------------------------------------------------------

    def vae_scale_factor(self, vae_config: dict[str, Any]) -> int:
        return 2 ** (len(vae_config["block_out_channels"]) - 1)

    def pixel_multiple(self) -> int:
        """Image sides must be multiples of this (VAE stride x the denoiser's 2x2 packing)."""
        return self.vae_scale * 2

    def image_seq_len(self, latent_h: int, latent_w: int) -> int:
        return (latent_h // 2) * (latent_w // 2)

    # -- encoding (caching time) -----------------------------------------------------------

    def encode_prompts(
        self, pipe, prompts: Sequence[str], max_tokens: int, device: torch.device
    ) -> list[TextEmbeds]:
        embeds: list[TextEmbeds] = []
        for start in range(0, len(prompts), ENCODE_CHUNK):
            chunk = list(prompts[start : start + ENCODE_CHUNK])
            with torch.no_grad():
                embeds.extend(self._encode_chunk(pipe, chunk, max_tokens, device))
        return embeds

    def _encode_chunk(
        self, pipe, prompts: list[str], max_tokens: int, device: torch.device
    ) -> list[TextEmbeds]:
        raise NotImplementedError

    def encode_images(self, vae, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [-1, 1] -> normalised latents (B, C, h, w): the distribution's mode."""
        with torch.no_grad():
            latents = vae.encode(pixels.to(vae.dtype)).latent_dist.mode()
        config = vae.config
        mean = getattr(config, "latents_mean", None)
        std = getattr(config, "latents_std", None)
        if mean is not None and std is not None:
            mean_t = torch.tensor(mean, device=latents.device).view(1, -1, 1, 1)
            std_t = torch.tensor(std, device=latents.device).view(1, -1, 1, 1)
            return ((latents.float() - mean_t) * config.scaling_factor / std_t).float()
        shift = getattr(config, "shift_factor", None) or 0.0
        return ((latents.float() - shift) * config.scaling_factor).float()

    # -- training time ---------------------------------------------------------------------

    def collate_text(self, items: Sequence[TextEmbeds], device: torch.device) -> dict[str, Any]:
        """Stack one batch of prompt tensors (all the same shapes for fixed-length encoders)."""
        return {
            key: torch.stack([item[key] for item in items]).to(device, non_blocking=True)
            for key in items[0]
        }

    def predict(
        self,
        denoiser: torch.nn.Module,
        noisy: torch.Tensor,
        model_t: torch.Tensor,
        text: dict[str, Any],
        guidance: float,
        pixel_size: tuple[int, int],
    ) -> torch.Tensor:
        """The denoiser's prediction in the spatial layout (B, C, h, w).

        ``model_t`` is t in [0, 1] for flow families and integer DDPM timesteps for SDXL.
        """
        raise NotImplementedError

    def sample_kwargs(
        self, positive: TextEmbeds, negative: TextEmbeds | None, guidance: float
    ) -> dict[str, Any]:
        raise NotImplementedError

    # -- conventions shared with the pipelines (each one checked in ``consistency``) ---------

    def make_objective(self, timesteps: TimestepConfig):
        """The noising and target the pipeline's scheduler integrates: rectified flow with the
        model's shift, or SDXL's own DDPM objective."""
        from identity_pipeline.training.flow_matching import (
            DdpmObjective,
            FlowObjective,
            ShiftSchedule,
        )

        if self.objective == "ddpm":
            return DdpmObjective(timesteps, self.scheduler_config)
        shift = ShiftSchedule.from_scheduler_config(self.scheduler_config, timesteps)
        return FlowObjective(timesteps, shift)

    def pack(self, latents: torch.Tensor) -> torch.Tensor:
        """Spatial latents -> the denoiser's layout (2x2 patch tokens for Qwen-Image / Flux)."""
        return pack_latents(latents)

    def unpack(self, tokens: torch.Tensor, height: int, width: int) -> torch.Tensor:
        return unpack_latents(tokens, height, width)


def pack_latents(latents: torch.Tensor) -> torch.Tensor:
    """(B, C, h, w) -> (B, h/2 * w/2, 4C) 2x2 patch tokens, as Qwen-Image and Flux pipelines do."""
    batch, channels, height, width = latents.shape
    latents = latents.view(batch, channels, height // 2, 2, width // 2, 2)
    latents = latents.permute(0, 2, 4, 1, 3, 5)
    return latents.reshape(batch, (height // 2) * (width // 2), channels * 4)


def unpack_latents(tokens: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Inverse of ``pack_latents`` for latent size (height, width)."""
    batch, _, packed_channels = tokens.shape
    channels = packed_channels // 4
    tokens = tokens.view(batch, height // 2, width // 2, channels, 2, 2)
    tokens = tokens.permute(0, 3, 1, 4, 2, 5)
    return tokens.reshape(batch, channels, height, width)


def _pad_sequences(items: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Right-pad (L_i, D) tensors to (B, L_max, D) and the matching 0/1 mask (None: no padding)."""
    lengths = [item.shape[0] for item in items]
    longest = max(lengths)
    if all(length == longest for length in lengths):
        return torch.stack(list(items)), None
    # Built where the embeddings live: fills and slice copies, no host round trip.
    padded = items[0].new_zeros(len(items), longest, items[0].shape[-1])
    mask = torch.zeros(len(items), longest, dtype=torch.long, device=items[0].device)
    for index, item in enumerate(items):
        padded[index, : item.shape[0]] = item
        mask[index, : item.shape[0]] = 1
    return padded, mask


def _ones_mask(embeds: torch.Tensor) -> torch.Tensor:
    return torch.ones(1, embeds.shape[0], dtype=torch.long, device=embeds.device)


class QwenImageAdapter(FamilyAdapter):
    family = "qwen-image"
    pipeline_class_name = "QwenImagePipeline"
    denoiser_class_name = "QwenImageTransformer2DModel"
    attention_targets = JOINT_ATTENTION_TARGETS
    mlp_targets = ("img_mlp.net.0.proj", "img_mlp.net.2", "txt_mlp.net.0.proj", "txt_mlp.net.2")
    # musubi-tuner's Qwen-Image format; ComfyUI and diffusers both load it.
    kohya_prefix = "lora_unet"
    default_max_text_tokens = 512
    text_components = ("text_encoder", "tokenizer")

    def vae_class_name(self) -> str:
        return "AutoencoderKLQwenImage"

    def vae_scale_factor(self, vae_config):
        return 2 ** len(vae_config["temperal_downsample"])

    def _encode_chunk(self, pipe, prompts, max_tokens, device):
        embeds, mask = pipe.encode_prompt(
            prompt=prompts, device=device, max_sequence_length=max_tokens
        )
        lengths = mask.sum(dim=1).tolist() if mask is not None else [embeds.shape[1]] * len(prompts)
        return [
            {"prompt_embeds": embeds[index, : int(length)].float().cpu()}
            for index, length in enumerate(lengths)
        ]

    def encode_images(self, vae, pixels):
        # The Qwen-Image VAE is a video VAE: one frame, then its per-channel mean/std.
        with torch.no_grad():
            latents = vae.encode(pixels.to(vae.dtype)[:, :, None]).latent_dist.mode()[:, :, 0]
        mean = torch.tensor(vae.config.latents_mean, device=latents.device).view(1, -1, 1, 1)
        std = torch.tensor(vae.config.latents_std, device=latents.device).view(1, -1, 1, 1)
        return ((latents.float() - mean) / std).float()

    def collate_text(self, items, device):
        embeds, mask = _pad_sequences([item["prompt_embeds"] for item in items])
        return {
            "prompt_embeds": embeds.to(device, non_blocking=True),
            "prompt_embeds_mask": None if mask is None else mask.to(device, non_blocking=True),
        }

    def predict(self, denoiser, noisy, model_t, text, guidance, pixel_size):
        batch, _, height, width = noisy.shape
        output = denoiser(
            hidden_states=self.pack(noisy),
            timestep=model_t,
            encoder_hidden_states=text["prompt_embeds"],
            encoder_hidden_states_mask=text["prompt_embeds_mask"],
            img_shapes=self.img_shapes(batch, height, width),
            return_dict=False,
        )[0]
        return self.unpack(output, height, width)

    def img_shapes(self, batch: int, latent_h: int, latent_w: int) -> list:
        """(frames, token rows, token columns) per sample, as the pipeline passes them."""
        return [[(1, latent_h // 2, latent_w // 2)]] * batch

    def sample_kwargs(self, positive, negative, guidance):
        # All-ones masks: cached embeddings carry no padding (the pipeline then drops the mask).
        kwargs: dict[str, Any] = {
            "prompt_embeds": positive["prompt_embeds"][None],
            "prompt_embeds_mask": _ones_mask(positive["prompt_embeds"]),
        }
        if negative is not None and guidance > 1:
            kwargs["negative_prompt_embeds"] = negative["prompt_embeds"][None]
            kwargs["negative_prompt_embeds_mask"] = _ones_mask(negative["prompt_embeds"])
            kwargs["true_cfg_scale"] = guidance
        else:
            kwargs["true_cfg_scale"] = 1.0
        return kwargs


class FluxAdapter(FamilyAdapter):
    family = "flux"
    pipeline_class_name = "FluxPipeline"
    denoiser_class_name = "FluxTransformer2DModel"
    attention_targets = tuple(f"attn.{name}" for name in JOINT_ATTENTION_TARGETS)
    mlp_targets = (
        "ff.net.0.proj",
        "ff.net.2",
        "ff_context.net.0.proj",
        "ff_context.net.2",
        "proj_mlp",
    )
    # OneTrainer's Flux format (diffusers module names); ComfyUI maps it onto the fused layers.
    kohya_prefix = "lora_transformer"
    default_max_text_tokens = 512
    text_components = ("text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2")

    def _encode_chunk(self, pipe, prompts, max_tokens, device):
        embeds, pooled, _ = pipe.encode_prompt(
            prompt=prompts, prompt_2=None, device=device, max_sequence_length=max_tokens
        )
        return per_prompt_pooled(embeds, pooled)

    def predict(self, denoiser, noisy, model_t, text, guidance, pixel_size):
        batch, _, height, width = noisy.shape
        image_ids = self.image_ids(height // 2, width // 2, noisy.device, noisy.dtype)
        text_ids = torch.zeros(text["prompt_embeds"].shape[1], 3, device=noisy.device)
        guidance_t = None
        if denoiser.config.guidance_embeds:
            guidance_t = torch.full((batch,), guidance, device=noisy.device, dtype=torch.float32)
        output = denoiser(
            hidden_states=self.pack(noisy),
            timestep=model_t,
            guidance=guidance_t,
            pooled_projections=text["pooled_prompt_embeds"],
            encoder_hidden_states=text["prompt_embeds"],
            txt_ids=text_ids,
            img_ids=image_ids,
            return_dict=False,
        )[0]
        return self.unpack(output, height, width)

    def image_ids(self, rows: int, columns: int, device: torch.device, dtype: torch.dtype):
        """(rows * columns, 3) position ids of the image tokens: (0, row, column)."""
        return _flux_image_ids(rows, columns, device, dtype)

    def sample_kwargs(self, positive, negative, guidance):
        kwargs: dict[str, Any] = {
            "prompt_embeds": positive["prompt_embeds"][None],
            "pooled_prompt_embeds": positive["pooled_prompt_embeds"][None],
            # Flux.1-dev is guidance-distilled: the scale is an input, not two passes.
            "guidance_scale": guidance,
        }
        return kwargs


def _flux_image_ids(height: int, width: int, device: torch.device, dtype: torch.dtype):
    ids = torch.zeros(height, width, 3, device=device)
    ids[..., 1] = torch.arange(height, device=device)[:, None]
    ids[..., 2] = torch.arange(width, device=device)[None, :]
    return ids.reshape(height * width, 3).to(dtype)


class SD3Adapter(FamilyAdapter):
    family = "sd3"
    pipeline_class_name = "StableDiffusion3Pipeline"
    denoiser_class_name = "SD3Transformer2DModel"
    attention_targets = JOINT_ATTENTION_TARGETS
    mlp_targets = ("ff.net.0.proj", "ff.net.2", "ff_context.net.0.proj", "ff_context.net.2")
    kohya_prefix = "lora_transformer"  # OneTrainer's SD3 format, mapped by ComfyUI
    default_max_text_tokens = 256
    text_components = (
        "text_encoder",
        "tokenizer",
        "text_encoder_2",
        "tokenizer_2",
        "text_encoder_3",
        "tokenizer_3",
    )

    def pixel_multiple(self):
        return self.vae_scale * self.patch_size

    def image_seq_len(self, latent_h, latent_w):
        return (latent_h // self.patch_size) * (latent_w // self.patch_size)

    def _encode_chunk(self, pipe, prompts, max_tokens, device):
        embeds, _, pooled, _ = pipe.encode_prompt(
            prompt=prompts,
            prompt_2=None,
            prompt_3=None,
            device=device,
            do_classifier_free_guidance=False,
            max_sequence_length=max_tokens,
        )
        return per_prompt_pooled(embeds, pooled)

    def predict(self, denoiser, noisy, model_t, text, guidance, pixel_size):
        # SD3's transformer takes the scheduler's timesteps, sigma * 1000.
        return denoiser(
            hidden_states=noisy,
            timestep=model_t * 1000,
            encoder_hidden_states=text["prompt_embeds"],
            pooled_projections=text["pooled_prompt_embeds"],
            return_dict=False,
        )[0]

    def sample_kwargs(self, positive, negative, guidance):
        return pooled_sample_kwargs(positive, negative, guidance)


class SDXLAdapter(FamilyAdapter):
    family = "sdxl"
    pipeline_class_name = "StableDiffusionXLPipeline"
    denoiser_name = "unet"
    denoiser_class_name = "UNet2DConditionModel"
    objective = "ddpm"
    attention_targets = ("to_q", "to_k", "to_v", "to_out.0")
    mlp_targets = ("ff.net.0.proj", "ff.net.2")
    kohya_prefix = "lora_unet"  # kohya keys with diffusers UNet names; ComfyUI maps them
    default_max_text_tokens = 77
    text_components = ("text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2")

    def pixel_multiple(self):
        # The UNet halves the latent once per down block but the last (SDXL: 4x).
        return self.vae_scale * 4

    def image_seq_len(self, latent_h, latent_w):
        return latent_h * latent_w

    def _encode_chunk(self, pipe, prompts, max_tokens, device):
        embeds, _, pooled, _ = pipe.encode_prompt(
            prompt=prompts,
            device=device,
            num_images_per_prompt=1,
            do_classifier_free_guidance=False,
        )
        return per_prompt_pooled(embeds, pooled)

    def predict(self, denoiser, noisy, model_t, text, guidance, pixel_size):
        batch = noisy.shape[0]
        # Training images are exactly their bucket: original size = target size, no crop.
        pixel_h, pixel_w = pixel_size
        key = (pixel_h, pixel_w, noisy.device, noisy.dtype)
        if key not in self._time_ids:  # built once per bucket: a host-to-device copy syncs
            self._time_ids[key] = noisy.new_tensor(self.time_ids(pixel_h, pixel_w))
        time_ids = self._time_ids[key].expand(batch, 6)
        return denoiser(
            noisy,
            model_t,
            encoder_hidden_states=text["prompt_embeds"],
            added_cond_kwargs={"text_embeds": text["pooled_prompt_embeds"], "time_ids": time_ids},
            return_dict=False,
        )[0]

    def time_ids(self, pixel_h: int, pixel_w: int) -> list[int]:
        """SDXL's size conditioning: original size, crop top-left, target size, as (h, w)."""
        return [pixel_h, pixel_w, 0, 0, pixel_h, pixel_w]

    def sample_kwargs(self, positive, negative, guidance):
        return pooled_sample_kwargs(positive, negative, guidance)


def per_prompt_pooled(embeds, pooled) -> list[dict[str, Any]]:
    """One cache entry per prompt for families with embeddings + pooled embeddings (SD3, SDXL)."""
    return [
        {"prompt_embeds": embeds[i].float().cpu(), "pooled_prompt_embeds": pooled[i].float().cpu()}
        for i in range(embeds.shape[0])
    ]


def pooled_sample_kwargs(positive, negative, guidance) -> dict[str, Any]:
    """Pipeline kwargs for families whose text conditioning is embeddings + pooled (SD3, SDXL);
    classifier-free guidance only when a negative prompt was encoded."""
    kwargs: dict[str, Any] = {
        "prompt_embeds": positive["prompt_embeds"][None],
        "pooled_prompt_embeds": positive["pooled_prompt_embeds"][None],
        "guidance_scale": guidance if negative is not None else 1.0,
    }
    if negative is not None:
        kwargs["negative_prompt_embeds"] = negative["prompt_embeds"][None]
        kwargs["negative_pooled_prompt_embeds"] = negative["pooled_prompt_embeds"][None]
    return kwargs


ADAPTERS: dict[str, type[FamilyAdapter]] = {
    adapter.family: adapter for adapter in (QwenImageAdapter, FluxAdapter, SD3Adapter, SDXLAdapter)
}


def get_adapter(family: str) -> FamilyAdapter:
    try:
        return ADAPTERS[family]()
    except KeyError:
        raise ValueError(f"unknown model family {family!r}; known: {', '.join(ADAPTERS)}") from None
