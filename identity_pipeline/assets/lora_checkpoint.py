"""lora_checkpoint: the identity LoRA, trained out of process on the GPU.

The asset only writes the trainer's config and launches ``accelerate launch -m
identity_pipeline.training`` through Dagster Pipes; the trainer streams its logs and step metrics
into the run and reports the materialization metadata (loss curve, samples, file paths) itself.

Each (trainer config, training-set manifest) pair gets its own run folder, keyed by their hashes,
under ``<data root>/assets/lora_checkpoint/runs/``: re-materializing after a crash or a kill
resumes from that folder's last checkpoint, and a changed config or training set starts fresh.

Training never starts because a photo arrived: by default it runs only when launched (Materialize
in the UI), and the UI shows it stale ("unsynced": training_set has a newer version) until then.
With ``$IDENTITY_PIPELINE_TRAINING_CRON`` set when the code location loads (e.g. ``0 3 * * *``,
timezone ``$IDENTITY_PIPELINE_TRAINING_TIMEZONE``, default UTC), the automation sensor also
launches it at each tick of that schedule when the training set changed since it last trained.
"""

import hashlib
import importlib.util
import os
import sys
from pathlib import Path
from typing import Any

import dagster as dg
import yaml

from identity_pipeline.assets.gpu import gpu_asset
from identity_pipeline.assets.run_config import with_settings
from identity_pipeline.resources import SettingsResource, StorageResource
from identity_pipeline.storage import DATA_DIR_ENV, DataLayout, content_id
from identity_pipeline.training.config import TrainingConfig

ASSET_NAME = "lora_checkpoint"
TRAINING_SET_ASSET = "training_set"
TRAINER_MODULE = "identity_pipeline.training"
TRAINING_CRON_ENV = "IDENTITY_PIPELINE_TRAINING_CRON"
TRAINING_TIMEZONE_ENV = "IDENTITY_PIPELINE_TRAINING_TIMEZONE"


def training_schedule_from_env() -> tuple[str | None, str]:
    """(cron, timezone) from the environment; no cron: training runs only when launched."""
    cron = os.environ.get(TRAINING_CRON_ENV, "").strip() or None
    return cron, os.environ.get(TRAINING_TIMEZONE_ENV, "").strip() or "UTC"


def training_automation_condition(
    cron: str | None, timezone: str = "UTC"
) -> dg.AutomationCondition | None:
    """When lora_checkpoint trains by itself: never (``cron`` unset), or at each tick of ``cron``
    if the training set changed since the last training (or there is no LoRA yet).

    A tick that finds training_set or its inputs still running waits for them, then trains once;
    a tick with nothing new does nothing. Not ``on_cron``: that one waits for every dependency to
    be updated *after* the tick, which a training set only is when a photo happens to arrive.
    """
    if not cron:
        return None
    condition = dg.AutomationCondition
    try:
        tick = condition.cron_tick_passed(cron, timezone)
    except Exception as error:  # dagster's check error names neither the setting nor the fix
        raise ValueError(
            f"training schedule {cron!r} (${TRAINING_CRON_ENV}) is not a cron schedule such as "
            f"'0 3 * * *': {error}"
        ) from error
    changed = condition.missing() | condition.any_deps_updated().since_last_handled()
    due = (tick & changed).since_last_handled()
    return (
        due
        & ~condition.any_deps_missing()
        & ~condition.any_deps_in_progress()
        & ~condition.in_progress()
    ).with_label(f"on cron {cron} ({timezone}) if training_set changed")


class LoraTrainingConfig(dg.Config):
    """The knobs people change per run; ``trainer_overrides_yaml`` reaches every other one."""

    base_model: str = "Qwen/Qwen-Image"  # a local diffusers folder or a hub id
    family: str = "qwen-image"  # qwen-image | flux | sd3 | sdxl
    max_steps: int = 1000
    rank: int = 16
    alpha: float = 16.0
    include_mlp: bool = False
    learning_rate: float = 1e-4
    batch_size: int = 1
    gradient_accumulation_steps: int = 1
    mixed_precision: str = "bf16"  # bf16 | fp16 | no
    gradient_checkpointing: bool = True
    optimizer: str = "adamw"  # adamw | adamw8bit (needs bitsandbytes)
    checkpoint_every_steps: int = 100
    background_weight: float = 0.1
    prior_preservation_weight: float = 0.0
    seed: int = 42
    max_text_tokens: int | None = None
    sample_steps: int = 20
    sample_seeds: list[int] = [0, 1]
    sample_size: int | None = None  # square sample images; unset: the most common bucket
    # YAML merged over the trainer config built from the fields above, e.g.
    # "timesteps: {t_min: 0.1, t_max: 0.9}" (see identity_pipeline/training/config.py).
    trainer_overrides_yaml: str = ""
    # An accelerate config file (multi-GPU / multi-node); unset: one process on this machine.
    accelerate_config_file: str | None = None
    use_accelerate_launcher: bool = True


def build_trainer_config(config: LoraTrainingConfig, layout: DataLayout) -> TrainingConfig:
    """The trainer config for this materialization, output folder included."""
    manifest = layout.table_path(TRAINING_SET_ASSET)
    raw: dict[str, Any] = {
        "seed": config.seed,
        "max_steps": config.max_steps,
        "batch_size": config.batch_size,
        "gradient_accumulation_steps": config.gradient_accumulation_steps,
        "mixed_precision": config.mixed_precision,
        "gradient_checkpointing": config.gradient_checkpointing,
        "model": {"family": config.family, "source": config.base_model},
        "data": {
            "manifest": str(manifest),
            "data_root": str(layout.root),
            "cache_dir": str(layout.cache_dir / "training"),
            "max_text_tokens": config.max_text_tokens,
        },
        "lora": {"rank": config.rank, "alpha": config.alpha, "include_mlp": config.include_mlp},
        "optimizer": {"name": config.optimizer, "learning_rate": config.learning_rate},
        "loss": {
            "background_weight": config.background_weight,
            "prior_preservation_weight": config.prior_preservation_weight,
        },
        "checkpoint": {"every_steps": config.checkpoint_every_steps},
        "samples": {
            "num_inference_steps": config.sample_steps,
            "seeds": list(config.sample_seeds),
            "width": config.sample_size,
            "height": config.sample_size,
        },
    }
    overrides = (
        yaml.safe_load(config.trainer_overrides_yaml) if config.trainer_overrides_yaml else {}
    )
    merged = _deep_merge(raw, overrides or {})
    merged["output_dir"] = "pending"
    trainer_config = TrainingConfig.from_dict(merged)
    run_key = content_id(trainer_config.fingerprint(), _file_digest(manifest), length=16)
    trainer_config.output_dir = str(layout.asset_dir(ASSET_NAME) / "runs" / run_key)
    return trainer_config


def launch_command(
    config_path: Path, config: LoraTrainingConfig, mixed_precision: str
) -> list[str]:
    """``accelerate launch`` when available (it owns multi-GPU/multi-node), else plain python."""
    trainer = ["-m", TRAINER_MODULE, "--config", str(config_path)]
    if not config.use_accelerate_launcher or importlib.util.find_spec("accelerate") is None:
        return [sys.executable, *trainer]
    launcher = [sys.executable, "-m", "accelerate.commands.launch"]
    if config.accelerate_config_file:
        launcher += ["--config_file", config.accelerate_config_file]
    else:
        # Spelled out so accelerate neither warns about defaults nor reads a stray user config.
        launcher += [
            "--num_processes=1",
            "--num_machines=1",
            f"--mixed_precision={mixed_precision}",
            "--dynamo_backend=no",
        ]
    return [*launcher, *trainer]


@gpu_asset(
    deps=[TRAINING_SET_ASSET],
    group_name="training",
    kinds={"pytorch", "safetensors"},
    description="A LoRA that learned the faces of the training set's identities: masked "
    "flow-matching loss on the identity masks, trained out of process (accelerate) on the GPU. "
    "Files: the LoRA in diffusers and ComfyUI layouts, its training config, samples per "
    "identity and the loss curve.",
)
def lora_checkpoint(
    context: dg.AssetExecutionContext,
    config: LoraTrainingConfig,
    storage: StorageResource,
    settings: SettingsResource,
    pipes_subprocess_client: dg.PipesSubprocessClient,
):
    layout = storage.layout
    config = with_settings(config, settings, layout, "training")
    manifest = layout.table_path(TRAINING_SET_ASSET)
    if not manifest.is_file():
        raise dg.Failure(
            description=f"{TRAINING_SET_ASSET} has not been materialized: {manifest} is missing."
        )
    trainer_config = build_trainer_config(config, layout)
    run_dir = Path(trainer_config.output_dir)
    config_path = trainer_config.save(run_dir / "launch_config.yaml")
    command = launch_command(config_path, config, trainer_config.mixed_precision)
    context.log.info(f"training in {run_dir}: {' '.join(command)}")
    invocation = pipes_subprocess_client.run(
        context=context,
        command=command,
        env={DATA_DIR_ENV: str(layout.root)},
    )
    return invocation.get_materialize_result()


def _deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "missing"
