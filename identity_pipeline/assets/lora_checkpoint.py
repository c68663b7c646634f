"""lora_checkpoint: the identity LoRA, trained out of process on the GPU.

The asset only writes the trainer's config and launches ``accelerate launch -m
identity_pipeline.training`` through Dagster Pipes; the trainer streams its logs and step metrics
into the run and reports the materialization metadata (loss curve, samples, file paths) itself.

Each (trainer config, training set) pair gets its own run folder, keyed by the config's hash and
the training set's data version, under ``<data root>/assets/lora_checkpoint/runs/``:
re-materializing after a crash or a kill resumes from that folder's last checkpoint, and a changed
config or training set starts fresh. The folder keeps the exact manifest trained on, with the
content hash of every file (``training_set.parquet``); the trainer and identity_fidelity read only
that copy. Nothing to train on, a missing base model or another trainer already in the folder
fail the step at once with one sentence; stopping the step stops the trainer (its process group,
and a watchdog on the step for ``kill -9``).

Training never starts because a photo arrived: by default it runs only when launched (Materialize
in the UI), and the UI shows it stale ("unsynced": training_set has a newer version) until then.
With ``training.launch.cron`` set in pipeline.yaml when the code location loads (e.g.
``0 3 * * *``, ``training.launch.timezone``, default UTC), the automation sensor also launches it
at each tick of that schedule when the training set changed since it last trained.
"""

import importlib.util
import sys
from pathlib import Path

import dagster as dg
import pandas as pd

from identity_pipeline.asset_names import LORA_CHECKPOINT, TRAINING_SET
from identity_pipeline.assets.gpu import gpu_asset
from identity_pipeline.assets.settings import run_config_class, settings_metadata, stage_settings
from identity_pipeline.dataset.version import manifest_version, snapshot_manifest
from identity_pipeline.resources import SettingsResource, StorageResource
from identity_pipeline.settings import SettingsError, build_config, load_settings, settings_path
from identity_pipeline.storage import DATA_DIR_ENV, DataLayout, content_id
from identity_pipeline.training.config import LaunchConfig, TrainingConfig
from identity_pipeline.training.runs import (
    SNAPSHOT_FILE,
    busy_message,
    check_model_source,
    check_training_set,
    lock_holder,
    write_snapshot,
)
from identity_pipeline.training.supervision import step_environment

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


def build_trainer_config(
    settings: TrainingConfig, layout: DataLayout, data_version: str
) -> TrainingConfig:
    """The trainer config for this materialization: the ``training`` settings with the data
    root, the cache (unless set), a run folder keyed by config + training set (its data
    version), and the run folder's copy of the training set as the manifest."""
    unset = _pipeline_owned(TrainingConfig())
    for key, value in _pipeline_owned(settings).items():
        if value != unset[key]:
            raise SettingsError(
                f"training.{key} is set by lora_checkpoint; remove it from pipeline.yaml and the "
                "run config (it is for the standalone trainer only)"
            )
    values = settings.to_dict()
    values["data"].update(
        manifest=SNAPSHOT_FILE,  # a placeholder while the run key is computed
        data_root=str(layout.root),
        cache_dir=settings.data.cache_dir or str(layout.cache_dir / "training"),
    )
    trainer_config = TrainingConfig.from_dict(values)
    run_key = content_id(trainer_config.fingerprint(), data_version, length=16)
    run_dir = layout.asset_dir(LORA_CHECKPOINT) / "runs" / run_key
    trainer_config.output_dir = str(run_dir)
    trainer_config.data.manifest = str(run_dir / SNAPSHOT_FILE)
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
    manifest_path = layout.table_path(TRAINING_SET)
    if not manifest_path.is_file():
        raise dg.Failure(
            description=f"{TRAINING_SET} has not been materialized: {manifest_path} is missing."
        )
    manifest = pd.read_parquet(manifest_path)
    try:  # what is wrong before anything starts: one sentence, no trace
        check_training_set(manifest, **_training_set_counts(context))
        check_model_source(training.model.source)
        snapshot = snapshot_manifest(manifest, layout.root)
        data_version = manifest_version(snapshot)
        trainer_config = build_trainer_config(training, layout, data_version)
    except (SettingsError, ValueError) as error:
        raise dg.Failure(description=str(error)) from None
    run_dir = Path(trainer_config.output_dir)
    if (holder := lock_holder(run_dir)) is not None:
        raise dg.Failure(description=busy_message(run_dir, holder))
    write_snapshot(run_dir, snapshot)
    config_path = trainer_config.save(run_dir / "launch_config.yaml")
    command = launch_command(config_path, training.launch, trainer_config.mixed_precision)
    context.log.info(f"training in {run_dir}: {' '.join(command)}")
    invocation = pipes_subprocess_client.run(
        context=context,
        command=command,
        env={DATA_DIR_ENV: str(layout.root), **step_environment()},
    )
    result = invocation.get_materialize_result()
    metadata = {
        **(result.metadata or {}),
        "run_dir": dg.MetadataValue.path(str(run_dir)),
        "training_manifest": dg.MetadataValue.path(trainer_config.data.manifest),
        "training_data_version": data_version,
        **settings_metadata(training),
    }
    # Same config, same training set: the same LoRA, so identity_fidelity is not made stale.
    run_key = run_dir.name
    return result._replace(metadata=metadata, data_version=dg.DataVersion(run_key))


def _training_set_counts(context: dg.AssetExecutionContext) -> dict[str, object]:
    """What the training set was built from (its last materialization), to say why it is
    empty."""
    event = context.instance.get_latest_materialization_event(dg.AssetKey(TRAINING_SET))
    materialization = event.asset_materialization if event is not None else None
    if materialization is None:
        return {}
    metadata = materialization.metadata
    counts: dict[str, object] = {}
    if "input_samples" in metadata:
        counts["input_samples"] = int(metadata["input_samples"].value)
    if "removed_by_rule" in metadata:
        counts["removed_by_rule"] = dict(metadata["removed_by_rule"].value)
    return counts
