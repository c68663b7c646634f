"""Run config of the launchpad over the project's settings file, for the costly GPU assets."""

from typing import Any, TypeVar

import dagster as dg

from identity_pipeline.resources import SettingsResource
from identity_pipeline.storage import DataLayout

RunConfig = TypeVar("RunConfig", bound=dg.Config)


def with_settings(
    config: RunConfig, settings: SettingsResource, layout: DataLayout, section: str
) -> RunConfig:
    """Fields set in the run config win; then ``section`` of pipeline.yaml (what sensor- and
    automation-launched runs, and the demo, use); then the config class's defaults."""
    values: dict[str, Any] = settings.sections(layout).get(section, {})
    config_type = type(config)
    unknown = sorted(set(values) - set(config_type.model_fields))
    if unknown:
        raise dg.Failure(
            description=f"[{section}] unknown setting(s) {', '.join(unknown)}; known: "
            f"{', '.join(sorted(config_type.model_fields))}"
        )
    return config_type(**{**values, **config.model_dump(include=config.model_fields_set)})
