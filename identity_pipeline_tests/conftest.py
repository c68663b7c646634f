"""Shared fixtures: a throw-away storage root and a throw-away Dagster instance per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from identity_pipeline.storage import DATA_DIR_ENV, DataLayout

REPO_ROOT = Path(__file__).resolve().parents[1]
DEMO_ALBUMS_DIR = REPO_ROOT / "data" / "albums"
# Debian's chromium for the browser tests, headless and quiet (no network calls of its own).
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]


@pytest.fixture
def layout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> DataLayout:
    """An empty storage root, also exported as $IDENTITY_PIPELINE_DATA_DIR."""
    root = tmp_path / "data"
    (root / "albums").mkdir(parents=True)
    monkeypatch.setenv(DATA_DIR_ENV, str(root))
    return DataLayout(root)


@pytest.fixture
def instance(tmp_path: Path) -> Iterator[dg.DagsterInstance]:
    home = tmp_path / "dagster_home"
    home.mkdir()
    with dg.instance_for_test(temp_dir=str(home)) as test_instance:
        yield test_instance


def materialize_graph(
    layout: DataLayout,
    instance: dg.DagsterInstance,
    selection: list[str],
    partition: str | None = None,
) -> dg.ExecuteInProcessResult:
    """Materialize ``selection`` of the project's definitions over ``layout``; failures are
    reported in the result, not raised."""
    from identity_pipeline.definitions import build_definitions

    defs = build_definitions(str(layout.root))
    return dg.materialize(
        list(defs.assets or []),
        selection=selection,
        partition_key=partition,
        instance=instance,
        resources=dict(defs.resources or {}),
        raise_on_error=False,
    )
