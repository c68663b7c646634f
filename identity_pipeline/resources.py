"""Dagster resources: where the data lives."""

import functools
from pathlib import Path

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


class FaceBackendResource(dg.ConfigurableResource):
    """The face detector + embedder, loaded once per process and shared by every asset using it.

    ``backend``: ``offline`` (YuNet + SFace from a registry wheel, runs anywhere), ``insightface``
    (a model pack such as buffalo_l in ``<insightface_root>/models/<pack>/``), or empty for the
    default: insightface where onnxruntime has CUDA, offline elsewhere.
    """

    backend: str = ""
    insightface_pack: str = "buffalo_l"
    insightface_root: str | None = None

    def get(self):  # -> identity_pipeline.faces.FaceBackend (imported lazily: onnxruntime is heavy)
        from identity_pipeline.faces import default_backend_name

        name = self.backend or default_backend_name()
        return _load_face_backend(name, self.insightface_pack, self.insightface_root)


@functools.lru_cache(maxsize=4)
def _load_face_backend(name: str, pack: str, root: str | None):
    """One backend per process and settings: loading ONNX models is not free."""
    from identity_pipeline.faces import INSIGHTFACE, get_backend

    if name != INSIGHTFACE:
        return get_backend(name)
    return get_backend(name, pack=pack, **({"root": root} if root else {}))


class SettingsResource(dg.ConfigurableResource):
    """Stage settings from ``<data root>/pipeline.yaml`` (or ``$IDENTITY_PIPELINE_SETTINGS``).

    Read on every use, so an edited file applies to the next run without reloading the code.
    """

    path: str | None = None

    def sections(self, layout: DataLayout) -> dict:
        from identity_pipeline.settings import load_settings, settings_path

        return load_settings(Path(self.path) if self.path else settings_path(layout.root))

    def section(self, layout: DataLayout, name: str, config_type: type):
        from identity_pipeline.settings import section_config

        return section_config(self.sections(layout), name, config_type)
