"""The real denoiser architectures, written out by hand, and a trainer step on synthetic data.

Nothing can be downloaded here, so the benchmark (``benchmarks/train_step.py``), the memory
estimate (``identity_pipeline.training.memory``) and the speed tests build the denoisers from
these configs with random weights: the published configs of Qwen-Image (20B), Flux.1-dev (12B)
and the SDXL base UNet (2.6B), which are also the diffusers class defaults for the transformers,
and the same tiny variants as the team's shared baseline,
``../shared/benchmarks/baseline_lora_step.py --tiny``.

``StepHarness`` wires one of them into the trainer's own ``TrainingLoop`` (LoRA via ``add_lora``,
the speed switches, the family adapter's ``predict``, the objective, the masked loss, the
optimizer, gradient clipping, the LR schedule) with synthetic latents, masks and text embeddings
of the real shapes, so a benchmarked step is the trainer's step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

# Published scheduler settings (scheduler_config.json of each model).
QWEN_SCHEDULER = {
    "_class_name": "FlowMatchEulerDiscreteScheduler",
    "base_image_seq_len": 256,
    "base_shift": 0.5,
    "max_image_seq_len": 8192,
    "max_shift": 0.9,
    "shift": 1.0,
    "shift_terminal": 0.02,
    "use_dynamic_shifting": True,
    "time_shift_type": "exponential",
    "num_train_timesteps": 1000,
}
FLUX_SCHEDULER = {
    "_class_name": "FlowMatchEulerDiscreteScheduler",
    "base_image_seq_len": 256,
    "base_shift": 0.5,
    "max_image_seq_len": 4096,
    "max_shift": 1.15,
    "shift": 3.0,
    "use_dynamic_shifting": True,
    "num_train_timesteps": 1000,
}
SDXL_SCHEDULER = {
    "_class_name": "EulerDiscreteScheduler",
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "num_train_timesteps": 1000,
    "prediction_type": "epsilon",
    "steps_offset": 1,
    "timestep_spacing": "leading",
}

SDXL_UNET = {
    "sample_size": 128,
    "in_channels": 4,
    "out_channels": 4,
    "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    "block_out_channels": (320, 640, 1280),
    "transformer_layers_per_block": (1, 2, 10),
    "cross_attention_dim": 2048,
    "attention_head_dim": (5, 10, 20),
    "use_linear_projection": True,
    "addition_embed_type": "text_time",
    "addition_time_embed_dim": 256,
    "projection_class_embeddings_input_dim": 2816,
}


@dataclass(frozen=True)
class ModelSpec:
    """One benchmarked model: its diffusers class, config, adapter family and text shapes."""

    name: str  # the baseline script's name: qwen, flux, sdxl
    family: str  # the trainer's family
    class_name: str
    config: dict[str, Any]
    scheduler: dict[str, Any]
    text_tokens: int  # as in the baseline script
    text_dim: int
    pooled_dim: int | None
    latent_channels: int
    tiny: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


def model_spec(name: str, tiny: bool = False) -> ModelSpec:
    if name in ("qwen", "qwen-image"):
        config: dict[str, Any] = {}  # diffusers' defaults are Qwen-Image's published config
        if tiny:
            config = {
                "num_layers": 2,
                "attention_head_dim": 16,
                "num_attention_heads": 2,
                "joint_attention_dim": 32,
                "axes_dims_rope": (4, 6, 6),
            }
        return ModelSpec(
            "qwen",
            "qwen-image",
            "QwenImageTransformer2DModel",
            config,
            QWEN_SCHEDULER,
            text_tokens=256,
            text_dim=config.get("joint_attention_dim", 3584),
            pooled_dim=None,
            latent_channels=16,
            tiny=tiny,
        )
    if name == "flux":
        config = {"guidance_embeds": True}  # defaults otherwise = Flux.1-dev
        if tiny:
            config.update(
                num_layers=1,
                num_single_layers=1,
                attention_head_dim=16,
                num_attention_heads=2,
                joint_attention_dim=32,
                pooled_projection_dim=16,
                axes_dims_rope=(4, 6, 6),
            )
        return ModelSpec(
            "flux",
            "flux",
            "FluxTransformer2DModel",
            config,
            FLUX_SCHEDULER,
            text_tokens=512,
            text_dim=config.get("joint_attention_dim", 4096),
            pooled_dim=config.get("pooled_projection_dim", 768),
            latent_channels=16,
            tiny=tiny,
        )
    if name == "sdxl":
        config = dict(SDXL_UNET)
        if tiny:
            config.update(
                block_out_channels=(32, 64, 64),
                transformer_layers_per_block=(1, 1, 1),
                cross_attention_dim=32,
                attention_head_dim=(2, 2, 2),
                addition_time_embed_dim=8,
                projection_class_embeddings_input_dim=80,
            )
        pooled = (
            config["projection_class_embeddings_input_dim"] - 6 * config["addition_time_embed_dim"]
        )
        return ModelSpec(
            "sdxl",
            "sdxl",
            "UNet2DConditionModel",
            config,
            SDXL_SCHEDULER,
            text_tokens=77,
            text_dim=config["cross_attention_dim"],
            pooled_dim=pooled,
            latent_channels=4,
            tiny=tiny,
        )
    raise ValueError(f"unknown model {name!r}: qwen, flux or sdxl")


def build_denoiser(
    spec: ModelSpec, device: torch.device | str, dtype: torch.dtype, seed: int = 0
) -> torch.nn.Module:
    """Random weights of the real (or tiny) architecture, built directly on ``device``."""
    import diffusers

    model_class = getattr(diffusers, spec.class_name)
    torch.manual_seed(seed)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = model_class(**spec.config)
    finally:
        torch.set_default_dtype(previous)
    if any(parameter.dtype != dtype for parameter in model.parameters()):
        model = model.to(dtype)
    return model


def synthetic_text(spec: ModelSpec, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """One prompt's cached tensors, shaped as the family's encoder makes them (no batch dim)."""
    text = {"prompt_embeds": torch.randn(spec.text_tokens, spec.text_dim, generator=generator)}
    if spec.pooled_dim is not None:
        text["pooled_prompt_embeds"] = torch.randn(spec.pooled_dim, generator=generator)
    return text


def face_mask(height: int, width: int, generator: torch.Generator) -> torch.Tensor:
    """(1, h, w) soft disc, the shape of a cached identity mask at latent resolution."""
    cy, cx = (torch.rand(2, generator=generator) * 0.4 + 0.3).tolist()
    radius = 0.25 * min(height, width)
    ys = torch.arange(height).view(-1, 1).float()
    xs = torch.arange(width).view(1, -1).float()
    distance = ((ys - cy * height) ** 2 + (xs - cx * width) ** 2).sqrt()
    return (radius + 0.5 - distance).clamp(0.0, 1.0)[None]


@dataclass
class StepHarness:
    """The trainer's ``TrainingLoop`` around a denoiser built from a spec, on synthetic data."""

    spec: ModelSpec
    config: Any  # TrainingConfig
    loop: Any  # TrainingLoop
    denoiser: torch.nn.Module  # unwrapped
    lora_parameters: dict[str, torch.nn.Parameter]
    summary: dict[str, Any]
    step_index: int = 0

    @classmethod
    def create(
        cls,
        spec: ModelSpec,
        config,
        accelerator,
        resolution: int,
        num_samples: int = 4,
        seed: int = 0,
        denoiser: torch.nn.Module | None = None,
        lora_hook=None,
    ) -> StepHarness:
        from identity_pipeline.training.checkpoint import TrainerState  # noqa: F401
        from identity_pipeline.training.data import BatchSchedule, Sample
        from identity_pipeline.training.families import get_adapter
        from identity_pipeline.training.pipes import ConsoleReporter
        from identity_pipeline.training.speed import finish_denoiser, prepare_denoiser
        from identity_pipeline.training.trainer import (
            TrainingData,
            TrainingLoop,
            add_lora,
            build_lr_scheduler,
            build_objective,
            build_optimizer,
            resolve_weight_dtype,
        )

        device = accelerator.device
        adapter = get_adapter(spec.family)
        adapter.scheduler_config = dict(spec.scheduler)
        if denoiser is None:
            denoiser = build_denoiser(spec, device, resolve_weight_dtype(config, device), seed)
        lora = add_lora(denoiser, adapter, config)
        if lora_hook is not None:
            lora_hook(lora)
        summary = prepare_denoiser(denoiser, spec.family, config, device)
        denoiser.train()
        optimizer = build_optimizer(config, list(lora.values()))
        lr_scheduler = build_lr_scheduler(config, optimizer)
        wrapped, optimizer = accelerator.prepare(denoiser, optimizer)
        finish_denoiser(accelerator.unwrap_model(wrapped), config, device)

        generator = torch.Generator().manual_seed(seed + 1)
        latent = resolution // 8
        samples = [
            Sample(
                sample_id=f"synthetic{index}",
                image_path=Path("synthetic.png"),
                mask_path=Path("synthetic_mask.png"),
                caption=f"caption {index}",
                identity="synthetic",
                repeats=1,
                width=resolution,
                height=resolution,
            )
            for index in range(num_samples)
        ]

        def on_device(tensor: torch.Tensor) -> torch.Tensor:
            return tensor.to(device)

        data = TrainingData(
            samples=samples,
            latents=[
                on_device(torch.randn(spec.latent_channels, latent, latent, generator=generator))
                for _ in samples
            ],
            masks=[on_device(face_mask(latent, latent, generator)) for _ in samples],
            text=[
                {k: on_device(v) for k, v in synthetic_text(spec, generator).items()}
                for _ in samples
            ],
        )
        loop = TrainingLoop(
            config=config,
            adapter=adapter,
            accelerator=accelerator,
            denoiser=wrapped,
            optimizer=optimizer,
            lr_scheduler=lr_scheduler,
            objective=build_objective(config, adapter),
            schedule=BatchSchedule(samples, config.batch_size, config.seed),
            data=data,
            lora_parameters=lora,
            reporter=ConsoleReporter(),
            checkpoints_dir=Path("unused"),
        )
        return cls(spec, config, loop, denoiser, lora, summary)

    def step(self) -> torch.Tensor:
        """One full optimizer step; returns the loss on the device (no host sync)."""
        loss, _ = self.loop.step(self.step_index)
        self.step_index += 1
        return loss

    def loss_and_grads(self, step: int = 0) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The first micro-step's loss and LoRA gradients, without an optimizer update."""
        for parameter in self.lora_parameters.values():
            parameter.grad = None
        loss = self.loop.micro_step(step, 0)
        self.loop.accelerator.backward(loss)
        grads = {
            name: (torch.zeros_like(p) if p.grad is None else p.grad.detach().clone())
            for name, p in self.lora_parameters.items()
        }
        return loss.detach(), grads


def tokens(spec: ModelSpec, resolution: int) -> int:
    latent = resolution // 8
    if spec.family == "sdxl":
        return latent * latent
    return math.ceil(latent / 2) ** 2 + spec.text_tokens
