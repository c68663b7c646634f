"""lora_checkpoint: the identity LoRA, trained out of process on the GPU.

The asset only writes the trainer's config and launches ``accelerate launch -m
identity_pipeline.training`` through Dagster Pipes; the trainer streams its logs and step metrics
into the run and reports the materialization metadata (loss curve, samples, file paths) itself.

Each (trainer config, training-set manifest) pair gets its own run folder, keyed by their hashes,
under ``<data root>/assets/lora_checkpoint/runs/``: re-materializing after a crash or a kill
resumes from that folder's last checkpoint, and a changed config or training set starts fresh.

Training never starts because a photo arrived: by default it runs only when launched (Materialize
in the UI), and the UI shows it stale ("unsynced": training_set has a newer version) until then.
With ``training.launch.cron`` set in pipeline.yaml when the code location loads (e.g.
``0 3 * * *``, ``training.launch.timezone``, default UTC), the automation sensor also launches it
at each tick of that schedule when the training set changed since it last trained.
"""

import hashlib
import importlib.util
import sys
from pathlib import Path

import dagster as dg

from identity_pipeline.asset_names import LORA_CHECKPOINT, TRAINING_SET
from identity_pipeline.assets.gpu import gpu_asset
from identity_pipeline.assets.settings import run_config_class, settings_metadata, stage_settings
from identity_pipeline.resources import SettingsResource, StorageResource
from identity_pipeline.settings import SettingsError, build_config, load_settings, settings_path
from identity_pipeline.storage import DATA_DIR_ENV, DataLayout, content_id
from identity_pipeline.training.config import LaunchConfig, TrainingConfig

TRAINER_MODULE = "identity_pipeline.training"
SECTION = "training"
TrainingRunConfig = run_config_class(TrainingConfig)


def training_schedule(layout: DataLayout) -> tuple[str | None, str]:
    """(cron, timezone) of ``training.launch`` in the settings file; no cron: training runs
    only when launched."""
    settings = load_settings(settings_path(layout.root))
    # Only this part of the section: a mistake elsewhere in it fails the training step with
    # its line, not the loading of the code location.
    values = settings.values(SECTION).get("launch") or {}
    launch = build_config(LaunchConfig, values, (SECTION, "launch"), settings.locate)
    return launch.cron, launch.timezone


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
        raise SettingsError(
            f"training schedule {cron!r} (training.launch.cron) is not a cron schedule such as "
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


def _pipeline_owned(config: TrainingConfig) -> dict[str, str | None]:
    """What lora_checkpoint sets for every run: the training set, the data root, the run folder."""
    return {
        "output_dir": config.output_dir,
        "data.manifest": config.data.manifest,
        "data.data_root": config.data.data_root,
    }


def build_trainer_config(settings: TrainingConfig, layout: DataLayout) -> TrainingConfig:
    """The trainer config for this materialization: the ``training`` settings with the training
    set, the data root, the cache (unless set) and a run folder keyed by config + training set."""
    unset = _pipeline_owned(TrainingConfig())
    for key, value in _pipeline_owned(settings).items():
        if value != unset[key]:
            raise SettingsError(
                f"training.{key} is set by lora_checkpoint; remove it from pipeline.yaml and the "
                "run config (it is for the standalone trainer only)"
            )
    manifest = layout.table_path(TRAINING_SET)
    values = settings.to_dict()
    values["data"].update(
        manifest=str(manifest),
        data_root=str(layout.root),
        cache_dir=settings.data.cache_dir or str(layout.cache_dir / "training"),
    )
    trainer_config = TrainingConfig.from_dict(values)
    run_key = content_id(trainer_config.fingerprint(), _file_digest(manifest), length=16)
    trainer_config.output_dir = str(layout.asset_dir(LORA_CHECKPOINT) / "runs" / run_key)
    return trainer_config


def launch_command(config_path: Path, launch: LaunchConfig, mixed_precision: str) -> list[str]:
    """``accelerate launch`` when available (it owns multi-GPU/multi-node), else plain python."""
    trainer = ["-m", TRAINER_MODULE, "--config", str(config_path)]
    if not launch.use_accelerate or importlib.util.find_spec("accelerate") is None:
        return [sys.executable, *trainer]
    launcher = [sys.executable, "-m", "accelerate.commands.launch"]
    if launch.accelerate_config_file:
        launcher += ["--config_file", launch.accelerate_config_file]
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
    name=LORA_CHECKPOINT,
    deps=[TRAINING_SET],
    group_name="training",
    kinds={"pytorch", "safetensors"},
    description="A LoRA that learned the faces of the training set's identities: masked "
    "flow-matching loss on the identity masks, trained out of process (accelerate) on the GPU. "
    "Files: the LoRA in diffusers and ComfyUI layouts, its training config, samples per "
    "identity and the loss curve.",
)
def lora_checkpoint(
    context: dg.AssetExecutionContext,
    config: TrainingRunConfig,  # type: ignore[valid-type]
    storage: StorageResource,
    settings: SettingsResource,
    pipes_subprocess_client: dg.PipesSubprocessClient,
):
    layout = storage.layout
    training = stage_settings(settings, layout, SECTION, config, TrainingConfig)
    manifest = layout.table_path(TRAINING_SET)
    if not manifest.is_file():
        raise dg.Failure(
            description=f"{TRAINING_SET} has not been materialized: {manifest} is missing."
        )
    try:
        trainer_config = build_trainer_config(training, layout)
    except (SettingsError, ValueError) as error:
        raise dg.Failure(description=str(error)) from error
    run_dir = Path(trainer_config.output_dir)
    config_path = trainer_config.save(run_dir / "launch_config.yaml")
    command = launch_command(config_path, training.launch, trainer_config.mixed_precision)
    context.log.info(f"training in {run_dir}: {' '.join(command)}")
    invocation = pipes_subprocess_client.run(
        context=context,
        command=command,
        env={DATA_DIR_ENV: str(layout.root)},
    )
    result = invocation.get_materialize_result()
    return result._replace(metadata={**(result.metadata or {}), **settings_metadata(training)})


def _file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "missing"
