"""Dagster resources: where the data lives."""

import dagster as dg

from identity_pipeline.storage import DataLayout


class StorageResource(dg.ConfigurableResource):
    """The storage root. Unset: ``$IDENTITY_PIPELINE_DATA_DIR``, else ``./data``.

    Resolved when used, not when the code location loads, so one deployment can point runs at
    another root through the environment alone.
    """

    data_dir: str | None = None

    @property
    def layout(self) -> DataLayout:
        return DataLayout.from_env(self.data_dir)
