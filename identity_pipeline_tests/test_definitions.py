"""The code location loads, and its sensors start RUNNING."""

from __future__ import annotations

import importlib.metadata

import dagster as dg

from identity_pipeline.definitions import defs


def test_definitions_load() -> None:
    dg.Definitions.validate_loadable(defs)
    graph = defs.resolve_asset_graph()
    assert dg.AssetKey("raw_photos") in graph.get_all_asset_keys()


def test_sensors_start_running() -> None:
    for name in ["album_sensor", "pipeline_automation"]:
        sensor = defs.resolve_sensor_def(name)
        assert sensor.default_status == dg.DefaultSensorStatus.RUNNING


def test_exactly_one_opencv_distribution_installed() -> None:
    names = {
        (dist.metadata["Name"] or "").lower()
        for dist in importlib.metadata.distributions()
        if (dist.metadata["Name"] or "").lower().startswith("opencv")
    }
    assert names == {"opencv-python-headless"}
