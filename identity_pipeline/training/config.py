"""The trainer's configuration: nested dataclasses with a default for every knob.

Loaded from YAML or JSON (``TrainingConfig.load``), saved beside the weights as YAML. Unknown keys
are errors, so a typo never silently trains with a default.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from identity_pipeline.storage import atomic_write_text, content_id

Family = Literal["qwen-image", "flux", "sd3", "sdxl"]


@dataclass
class ModelConfig:
    family: Family = "qwen-image"
    # A local diffusers folder or a hub id; passed to ``from_pretrained`` as is.
    source: str = "Qwen/Qwen-Image"
    revision: str | None = None
    variant: str | None = None
    # Frozen base weights. "auto": bfloat16 when training in bf16 on a GPU, else float32.
    weight_dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    # The VAE and text encoders only run while caching. "auto": bfloat16 on a GPU (Qwen-Image's
    # 7B text encoder would need ~30 GB in float32), float32 on the CPU. float16 is allowed but
    # the SDXL VAE overflows in it.
    encoder_dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"


@dataclass
class DataConfig:
    manifest: str = ""
    # Relative image/mask paths are resolved against this; unset: the manifest's folder.
    data_root: str | None = None
    split: str = "train"
    # Latent/text-embedding cache; unset: <output_dir>/cache.
    cache_dir: str | None = None
    # Text tokens kept per caption; unset: the family's default.
    max_text_tokens: int | None = None
    # Images per VAE call while caching (same-size images only).
    encode_batch_size: int = 4
    # Keep all latents/masks/text embeddings on the accelerator while training when they fit in
    # this many GiB (no host-to-device copy per step); else pinned host memory, copied async.
    device_cache_max_gib: float = 4.0


@dataclass
class LoraConfig:
    rank: int = 16
    alpha: float = 16.0
    dropout: float = 0.0
    # Attention projections are always adapted; MLP projections too when this is set.
    include_mlp: bool = False
    # Overrides the family's module names entirely when given.
    target_modules: list[str] | None = None
    init: Literal["default", "gaussian"] = "default"


@dataclass
class OptimizerConfig:
    name: Literal["adamw", "adamw8bit"] = "adamw"
    learning_rate: float = 1e-4
    weight_decay: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    max_grad_norm: float = 1.0
    # diffusers.optimization schedule names: constant, constant_with_warmup, linear, cosine, ...
    lr_scheduler: str = "constant_with_warmup"
    warmup_steps: int = 0


@dataclass
class TimestepConfig:
    """How the training noise level t in [0, 1] is drawn (flow families; SDXL uses the range)."""

    distribution: Literal["logit_normal", "uniform"] = "logit_normal"
    logit_mean: float = 0.0
    logit_std: float = 1.0
    # "auto": the shift the model's scheduler uses at inference (resolution-dependent for
    # Qwen-Image/Flux, fixed for SD3); "resolution"/"fixed"/"none" force one.
    shift: Literal["auto", "resolution", "fixed", "none"] = "auto"
    fixed_shift: float = 3.0
    # Final range of t after the shift: t = t_min + (t_max - t_min) * t_shifted.
    t_min: float = 0.0
    t_max: float = 1.0


@dataclass
class LossConfig:
    # Weight of the unmasked region (its own area-normalised mean) next to the masked one (1.0).
    background_weight: float = 0.1
    # Weight of "match the frozen base model outside the mask"; costs a second forward pass.
    prior_preservation_weight: float = 0.0
    # Masks smaller than this fraction of the latent are normalised as if they had this area, so
    # a near-empty mask cannot blow the loss up.
    min_mask_fraction: float = 0.002


@dataclass
class CheckpointConfig:
    every_steps: int = 100
    keep_last: int = 2
    # Continue from <output_dir>/checkpoints/latest when it exists.
    resume: bool = True


@dataclass
class SampleConfig:
    enabled: bool = True
    prompt_template: str = "A photo of {identity}"
    seeds: list[int] = field(default_factory=lambda: [0, 1])
    num_inference_steps: int = 20
    # Classifier-free guidance for the samples (Qwen-Image true_cfg, SD3/SDXL cfg, Flux guidance).
    guidance_scale: float = 4.0
    negative_prompt: str = ""
    # Unset: the most frequent training bucket.
    width: int | None = None
    height: int | None = None
    max_identities: int = 8


@dataclass
class SpeedConfig:
    """Speed and memory switches for the training step (issue 10); every default is the plain path.

    ``identity_pipeline.training.speed`` applies them; each one is checked against the plain path
    on tiny models in ``identity_pipeline_tests/test_training_speed.py``.
    """

    # Frozen base nn.Linear weights of the repeated blocks stored in float8 e4m3 with one float32
    # scale per output row (half the bytes of bf16). "weights": dequantised to the compute dtype
    # for each matmul (any device). "matmul": the forward matmuls themselves in fp8
    # (torch._scaled_mm, row-wise scaled activations; Ada/Hopper GPUs, and the CPU), the backward
    # in the compute dtype. LoRA weights stay float32 either way.
    fp8_base: Literal["off", "weights", "matmul"] = "off"
    # Regional compilation: torch.compile of each repeated block (transformer blocks), not the
    # whole model, so compile time stays that of one block.
    compile: Literal["off", "blocks"] = "off"
    compile_backend: str = "inductor"
    # With gradient_checkpointing: "full" recomputes whole blocks (diffusers' default);
    # "save_attention" keeps the attention kernels' outputs (recomputing them is the O(n^2) part);
    # "save_matmuls" keeps every matmul and attention output and recomputes only pointwise ops.
    checkpoint_policy: Literal["full", "save_attention", "save_matmuls"] = "full"
    # Share of the checkpointable blocks that are checkpointed (the first ones in module order);
    # the others keep their activations: less recompute, more memory.
    checkpoint_fraction: float = 1.0
    # Frozen weights of this many repeated blocks live in (pinned) host memory and are copied in
    # before each use; only for when the weights alone do not fit. Offloaded blocks are always
    # checkpointed and never compiled.
    offload_blocks: int = 0
    # torch.optim.AdamW(fused=True): one kernel for the whole update (optimizer.name "adamw").
    fused_optimizer: bool = False
    # Which SDPA kernels attention may use ("auto": torch's own choice).
    attention_backend: Literal["auto", "flash", "efficient", "cudnn", "math"] = "auto"
    # Hand each attention kernel's backward a contiguous output gradient. Flux's single-stream
    # blocks concatenate the attention output with the MLP branch, so its gradient arrives as a
    # strided slice; "auto": on for Flux (an identity in value, one copy per block in backward).
    contiguous_attention_grad: Literal["auto", "on", "off"] = "auto"


# Speed settings that change the numbers a run produces (and so belong in the fingerprint).
TRAJECTORY_SPEED_KEYS = ("fp8_base",)


@dataclass
class TrainingConfig:
    output_dir: str = "lora_output"
    seed: int = 42
    max_steps: int = 1000
    batch_size: int = 1
    gradient_accumulation_steps: int = 1
    mixed_precision: Literal["bf16", "fp16", "no"] = "bf16"
    gradient_checkpointing: bool = True
    # Guidance value fed to guidance-distilled models (Flux.1-dev) during training.
    train_guidance_scale: float = 1.0
    log_every_steps: int = 10
    # torch intra-op threads when training on the CPU (unset: torch's default). Tiny models on a
    # busy 2-core machine run several times faster with 1: OpenMP threads spin on tiny ops.
    cpu_threads: int | None = None
    # Precision of the exported LoRA files (checkpoints always keep float32).
    export_dtype: Literal["float32", "bfloat16", "float16"] = "bfloat16"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    timesteps: TimestepConfig = field(default_factory=TimestepConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    samples: SampleConfig = field(default_factory=SampleConfig)
    speed: SpeedConfig = field(default_factory=SpeedConfig)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> TrainingConfig:
        config = _build(cls, raw, "config")
        config.validate()
        return config

    @classmethod
    def load(cls, path: str | Path) -> TrainingConfig:
        text = Path(path).read_text(encoding="utf-8")
        raw = json.loads(text) if str(path).endswith(".json") else yaml.safe_load(text)
        return cls.from_dict(raw or {})

    def to_dict(self) -> dict[str, Any]:
        return _plain(dataclasses.asdict(self))

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def save(self, path: str | Path) -> Path:
        return atomic_write_text(Path(path), self.to_yaml())

    def fingerprint(self) -> str:
        """What a checkpoint must match to be resumed: everything that changes the trajectory.

        Output, logging and sampling settings may change between a run and its resume.
        """
        relevant = self.to_dict()
        for key in (
            "output_dir",
            "log_every_steps",
            "export_dtype",
            "cpu_threads",
            "samples",
            "checkpoint",
        ):
            relevant.pop(key)
        relevant["data"].pop("cache_dir")
        relevant["data"].pop("encode_batch_size")
        relevant["data"].pop("device_cache_max_gib")
        # Only speed switches that change the numbers count, and only when not at their default,
        # so configs written before the speed section existed keep their fingerprint.
        speed, defaults = relevant.pop("speed"), dataclasses.asdict(SpeedConfig())
        changed = {k: speed[k] for k in TRAJECTORY_SPEED_KEYS if speed[k] != defaults[k]}
        if changed:
            relevant["speed"] = changed
        return content_id(json.dumps(relevant, sort_keys=True))

    def validate(self) -> None:
        problems: list[str] = []
        if self.max_steps < 1:
            problems.append("max_steps must be >= 1")
        if self.batch_size < 1 or self.gradient_accumulation_steps < 1:
            problems.append("batch_size and gradient_accumulation_steps must be >= 1")
        if self.lora.rank < 1:
            problems.append("lora.rank must be >= 1")
        if not 0.0 <= self.timesteps.t_min < self.timesteps.t_max <= 1.0:
            problems.append("timesteps need 0 <= t_min < t_max <= 1")
        if self.timesteps.logit_std <= 0:
            problems.append("timesteps.logit_std must be > 0")
        if self.checkpoint.every_steps < 1 or self.checkpoint.keep_last < 1:
            problems.append("checkpoint.every_steps and checkpoint.keep_last must be >= 1")
        if self.loss.background_weight < 0 or self.loss.prior_preservation_weight < 0:
            problems.append("loss weights must be >= 0")
        if not 0.0 <= self.speed.checkpoint_fraction <= 1.0:
            problems.append("speed.checkpoint_fraction must be in [0, 1]")
        if self.speed.offload_blocks < 0:
            problems.append("speed.offload_blocks must be >= 0")
        if self.speed.fused_optimizer and self.optimizer.name != "adamw":
            problems.append("speed.fused_optimizer needs optimizer.name 'adamw'")
        if not self.data.manifest:
            problems.append("data.manifest is required")
        if "{identity}" not in self.samples.prompt_template:
            problems.append("samples.prompt_template must contain {identity}")
        if problems:
            raise ValueError("invalid training config: " + "; ".join(problems))


def _build(cls: type, raw: Any, where: str) -> Any:
    if not isinstance(raw, dict):
        raise ValueError(f"{where} must be a mapping, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ValueError(f"unknown key(s) in {where}: {', '.join(unknown)}")
    values: dict[str, Any] = {}
    for name, value in raw.items():
        values[name] = _coerce(hints[name], value, f"{where}.{name}")
    return cls(**values)


def _coerce(hint: Any, value: Any, where: str) -> Any:
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, where)
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [arg for arg in typing.get_args(hint) if arg is not type(None)]
        if value is None:
            return None
        return _coerce(args[0], value, where)
    if origin is Literal:
        allowed = typing.get_args(hint)
        if value not in allowed:
            raise ValueError(f"{where} must be one of {allowed}, got {value!r}")
        return value
    if origin is tuple:
        return tuple(
            _coerce(arg, item, where)
            for arg, item in zip(typing.get_args(hint), value, strict=True)
        )
    if origin is list:
        (item_type,) = typing.get_args(hint)
        return [_coerce(item_type, item, where) for item in value]
    if hint is float and not isinstance(value, bool):
        # PyYAML reads "1e-4" (no dot) as a string; accept it as the number it obviously is.
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ValueError(f"{where} must be a number, got {value!r}") from None
    if hint in (int, str, bool) and not isinstance(value, hint):
        raise ValueError(f"{where} must be {hint.__name__}, got {value!r}")
    return value


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value
