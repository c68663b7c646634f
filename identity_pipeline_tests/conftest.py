"""Shared fixtures: a throw-away storage root and a throw-away Dagster instance per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from identity_pipeline.storage import DATA_DIR_ENV, DataLayout

REPO_ROOT = Path(__file__).resolve().parents[1]
DEMO_ALBUMS_DIR = REPO_ROOT / "data" / "albums"


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
