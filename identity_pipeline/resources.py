"""Dagster resources: where the data lives, the stage settings, the face model."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING

import dagster as dg

from identity_pipeline.storage import DataLayout

if TYPE_CHECKING:
    from identity_pipeline.faces import FaceBackend, FaceConfig
    from identity_pipeline.settings import Settings


class StorageResource(dg.ConfigurableResource):
    """The storage root. Unset: ``$IDENTITY_PIPELINE_DATA_DIR``, else ``./data``.

    Resolved when used, not when the code location loads, so one deployment can point runs at
    another root through the environment alone.
    """

    data_dir: str | None = None

    @property
    def layout(self) -> DataLayout:
        return DataLayout.from_env(self.data_dir)


class SettingsResource(dg.ConfigurableResource):
    """Stage settings from ``<data root>/pipeline.yaml`` (or ``$IDENTITY_PIPELINE_SETTINGS``).

    Read on every use, so an edited file applies to the next run without reloading the code.
    """

    path: str | None = None

    def load(self, layout: DataLayout) -> Settings:
        from identity_pipeline.settings import load_settings, settings_path

        return load_settings(Path(self.path) if self.path else settings_path(layout.root))


class FaceBackendResource(dg.ConfigurableResource):
    """The face detector + embedder named by the ``faces`` settings (``backend``,
    ``insightface_pack``, ``insightface_root``), loaded once per process and shared by every
    asset that finds faces (photo_tiles' face evidence, face_embeddings, identity_fidelity)."""

    def get(self, config: FaceConfig) -> FaceBackend:
        from identity_pipeline.faces import FaceConfig, default_backend_name

        # Keyed by the model choice only: a threshold change must not reload the models.
        return _load_face_backend(
            FaceConfig(
                backend=config.backend or default_backend_name(),
                insightface_pack=config.insightface_pack,
                insightface_root=config.insightface_root,
            )
        )


@functools.lru_cache(maxsize=4)
def _load_face_backend(config: FaceConfig) -> FaceBackend:
    """One backend per process and model: loading ONNX models is not free."""
    from identity_pipeline.faces import backend_for

    return backend_for(config)
