"""The Definitions object Dagster loads (workspace.yaml / `dagster dev`)."""

import dagster as dg

from identity_pipeline.assets import ALL_ASSETS
from identity_pipeline.io_manager import TableIOManager
from identity_pipeline.resources import FaceBackendResource, SettingsResource, StorageResource
from identity_pipeline.sensors import album_sensor, automation_sensor, labels_sensor


def build_definitions(data_dir: str | None = None) -> dg.Definitions:
    """All assets, sensors and resources; ``data_dir`` overrides the storage root (tests)."""
    return dg.Definitions(
        assets=ALL_ASSETS,
        sensors=[album_sensor, labels_sensor, automation_sensor],
        resources={
            "storage": StorageResource(data_dir=data_dir),
            "io_manager": TableIOManager(data_dir=data_dir),
            "settings": SettingsResource(),
            "face_backend": FaceBackendResource(),
            "pipes_subprocess_client": dg.PipesSubprocessClient(),
        },
    )


defs = build_definitions()
