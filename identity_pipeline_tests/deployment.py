"""What the Postgres and Celery tests share: the servers (or the reason they cannot run), a Dagster
home on Postgres, and a storage root holding the demo album.

The servers are Debian's (``postgresql``, ``redis-server``; ``.ci/run`` installs them). Where
they are missing the tests skip with the reason (``pytest -ra`` prints it), never silently.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
import yaml

from identity_pipeline import local_services
from identity_pipeline.labeling import update_labels
from identity_pipeline.settings import deep_merge
from identity_pipeline.storage import DataLayout
from identity_pipeline_tests.conftest import REPO_ROOT

DEMO = "demo"
POSTGRES_INSTANCE_YAML = REPO_ROOT / "deploy" / "postgres" / "dagster.yaml"
CELERY_INSTANCE_YAML = REPO_ROOT / "deploy" / "celery" / "dagster.yaml"


def services_or_skip(*names: str) -> None:
    """Skip the calling module, naming what is missing, unless every server in ``names``
    ("postgres", "redis") can run here."""
    checks = {
        "postgres": local_services.postgres_bin_dir,
        "redis": local_services.redis_server_binary,
    }
    try:
        for name in names:
            checks[name]()
        local_services._service_user()  # noqa: SLF001 - as root: is there a user to run them as?
    except local_services.ServiceUnavailable as error:
        pytest.skip(f"scale-out servers unavailable: {error}", allow_module_level=True)


@contextlib.contextmanager
def service_folder(prefix: str) -> Iterator[Path]:
    """A fresh folder under the system's temporary folder: the servers' user must reach it,
    which pytest's per-user (0700) temporary folders do not allow when we are root."""
    folder = Path(tempfile.mkdtemp(prefix=f"identity-pipeline-{prefix}-"))
    folder.chmod(0o711)  # mkdtemp's 0700 would keep the servers' user out
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def dagster_home(folder: Path, instance_yaml: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(instance_yaml, folder / "dagster.yaml")
    return folder


def demo_storage_root(folder: Path, settings_overrides: dict | None = None) -> DataLayout:
    """The repo's demo album and CPU settings (``settings_overrides`` laid over them, nested
    sections key by key)."""
    layout = DataLayout(folder)
    shutil.copytree(REPO_ROOT / "data" / "albums" / DEMO, layout.album_dir(DEMO))
    shutil.copy(REPO_ROOT / "data" / "demo_people.csv", layout.root / "demo_people.csv")
    settings = yaml.safe_load((REPO_ROOT / "data" / "pipeline.yaml").read_text())
    settings = deep_merge(settings, settings_overrides or {})
    (layout.root / "pipeline.yaml").write_text(yaml.safe_dump(settings))
    return layout


def name_single_person_photos(layout: DataLayout) -> int:
    """Name the face of every demo photo known to show one person (``demo_people.csv``), as a
    person would on the labeling page; the clusters take the names of their named faces.
    Needs raw_photos and face_embeddings; returns the faces named."""
    people = pd.read_csv(layout.root / "demo_people.csv")
    photos = pd.read_parquet(layout.table_path("raw_photos", DEMO), columns=["photo_id", "path"])
    faces = pd.read_parquet(
        layout.table_path("face_embeddings", DEMO), columns=["face_id", "photo_id"]
    )
    named = faces.merge(photos, on="photo_id").merge(people, on="path")
    names = dict(zip(named["face_id"].astype(str), named["person"].astype(str), strict=True))
    update_labels(layout.labels_path, set_names=names)
    return len(names)


def table_ids(layout: DataLayout, asset: str, column: str, partition: str | None) -> list[str]:
    return sorted(pd.read_parquet(layout.table_path(asset, partition), columns=[column])[column])


def run_events(instance: dg.DagsterInstance, run_id: str) -> list[dg.EventLogEntry]:
    return [entry for entry in instance.all_logs(run_id) if entry.dagster_event is not None]


def environment(**values: str) -> dict[str, str]:
    """This process's environment with ``values``; no inherited Dagster/pipeline settings."""
    inherited = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("DAGSTER_", "IDENTITY_PIPELINE_"))
    }
    return {**inherited, **values}
