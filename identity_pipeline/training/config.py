"""The trainer's configuration, and the ``training`` settings: nested dataclasses with a default
for every knob.

The ``training`` section of pipeline.yaml is this schema (minus the paths lora_checkpoint sets);
the standalone trainer loads the same schema from YAML or JSON (``TrainingConfig.load``), and it is
saved beside the weights as YAML. Unknown keys are errors, so a typo never silently trains with a
default.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml

from identity_pipeline.settings import build_config, config_dict, load_config_file
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


@dataclass
class LaunchConfig:
    """How the lora_checkpoint asset starts the trainer, and when it trains by itself (the
    trainer itself ignores this part)."""

    # An accelerate config file (multi-GPU / multi-node); unset: one process on this machine.
    accelerate_config_file: str | None = None
    # Start the trainer with `accelerate launch` when accelerate is installed; off: `python -m`.
    use_accelerate: bool = True
    # Also train by itself at each tick of this cron schedule (e.g. "0 3 * * *") when the
    # training set changed since the last LoRA; unset: only when launched. Read when the code
    # location loads (reload it in the UI after a change).
    cron: str | None = None
    timezone: str = "UTC"


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
    launch: LaunchConfig = field(default_factory=LaunchConfig)

    # Keys of the flat ``training`` section of earlier versions, and where they live now.
    RENAMED: ClassVar[dict[str, str]] = {
        "base_model": "model.source",
        "family": "model.family",
        "rank": "lora.rank",
        "alpha": "lora.alpha",
        "include_mlp": "lora.include_mlp",
        "learning_rate": "optimizer.learning_rate",
        "checkpoint_every_steps": "checkpoint.every_steps",
        "background_weight": "loss.background_weight",
        "prior_preservation_weight": "loss.prior_preservation_weight",
        "max_text_tokens": "data.max_text_tokens",
        "sample_steps": "samples.num_inference_steps",
        "sample_seeds": "samples.seeds",
        "sample_size": "samples.width and samples.height",
        "trainer_overrides_yaml": "its own keys, written in place",
        "accelerate_config_file": "launch.accelerate_config_file",
        "use_accelerate_launcher": "launch.use_accelerate",
    }

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> TrainingConfig:
        config = build_config(cls, raw)
        config.validate()
        return config

    @classmethod
    def load(cls, path: str | Path) -> TrainingConfig:
        """A YAML or JSON file of this schema; a mistake names its line."""
        config = load_config_file(Path(path), cls)
        config.validate()
        return config

    def to_dict(self) -> dict[str, Any]:
        return config_dict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def save(self, path: str | Path) -> Path:
        return atomic_write_text(Path(path), self.to_yaml())

    def fingerprint(self) -> str:
        """What a checkpoint must match to be resumed: everything that changes the trajectory.

        Output, logging, sampling and launch settings may change between a run and its resume.
        """
        relevant = self.to_dict()
        for key in (
            "output_dir",
            "log_every_steps",
            "export_dtype",
            "cpu_threads",
            "samples",
            "checkpoint",
            "launch",
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
