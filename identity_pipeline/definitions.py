"""The Definitions object Dagster loads (workspace.yaml / `dagster dev`)."""

import dagster as dg

from identity_pipeline.asset_names import LORA_CHECKPOINT
from identity_pipeline.assets import ALL_ASSETS
from identity_pipeline.assets.lora_checkpoint import (
    training_automation_condition,
    training_schedule,
)
from identity_pipeline.assets.pipes import ProcessGroupPipesClient
from identity_pipeline.executors import select_executor
from identity_pipeline.io_manager import TableIOManager
from identity_pipeline.resources import FaceBackendResource, SettingsResource, StorageResource
from identity_pipeline.sensors import album_sensor, automation_sensor, labels_sensor
from identity_pipeline.storage import DataLayout


def build_definitions(
    data_dir: str | None = None,
    training_cron: str | None = None,
    training_timezone: str | None = None,
    executor: str | dg.ExecutorDefinition | None = None,
) -> dg.Definitions:
    """All assets, sensors and resources; ``data_dir`` overrides the storage root (tests).

    ``training_cron``: when lora_checkpoint trains by itself (see
    ``training_automation_condition``); unset: ``training.launch.cron`` of the settings file,
    and without it only when launched. ``executor``: a definition or a name (multiprocess | k8s |
    celery); unset: ``$IDENTITY_PIPELINE_EXECUTOR`` (+ ``$IDENTITY_PIPELINE_EXECUTOR_CONFIG``),
    and without it Dagster's default (see executors.py).
    """
    file_cron, file_timezone = training_schedule(DataLayout.from_env(data_dir))
    training = training_automation_condition(
        training_cron or file_cron, training_timezone or file_timezone
    )
    assets = [
        asset.with_attributes(automation_condition=training)
        if training is not None and asset.key == dg.AssetKey(LORA_CHECKPOINT)
        else asset
        for asset in ALL_ASSETS
    ]
    return dg.Definitions(
        assets=assets,
        sensors=[album_sensor, labels_sensor, automation_sensor],
        resources={
            "storage": StorageResource(data_dir=data_dir),
            "io_manager": TableIOManager(data_dir=data_dir),
            "settings": SettingsResource(),
            "face_backend": FaceBackendResource(),
            "pipes_subprocess_client": ProcessGroupPipesClient(),
        },
        executor=select_executor(executor),
    )


defs = build_definitions()
