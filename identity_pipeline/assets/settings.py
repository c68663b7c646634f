"""Stage settings inside Dagster: run config generated from each stage's settings dataclass.

An asset with a settings section takes ``config: run_config_class(TheStageConfig)``: the same
schema as its section of ``pipeline.yaml`` (nested sections nest), every field optional. A field
set in the launchpad overrides the file; a field left out (or null) keeps the file's value, so a
run started by a sensor, the demo and a launchpad run with no config all use the file.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from typing import Any, Literal, TypeVar

import dagster as dg
import pydantic

from identity_pipeline.resources import SettingsResource
from identity_pipeline.settings import SettingsError, config_dict, config_hash, section_type
from identity_pipeline.storage import DataLayout

Config = TypeVar("Config")


@functools.cache
def run_config_class(config_type: type) -> type[dg.Config]:
    """A ``dg.Config`` with ``config_type``'s fields, all optional (None: not overridden)."""
    hints = typing.get_type_hints(config_type)
    fields: dict[str, Any] = {}
    for item in dataclasses.fields(config_type):
        if not item.init:
            continue
        default = (
            item.default
            if item.default is not dataclasses.MISSING
            else (
                item.default_factory() if item.default_factory is not dataclasses.MISSING else None
            )
        )
        shown = "see the nested fields" if dataclasses.is_dataclass(default) else repr(default)
        fields[item.name] = (
            _run_config_type(hints[item.name]) | None,
            pydantic.Field(default=None, description=f"Unset: pipeline.yaml, else {shown}."),
        )
    return pydantic.create_model(  # type: ignore[call-overload]
        f"{config_type.__name__}Override", __base__=dg.Config, **fields
    )


def _run_config_type(hint: Any) -> Any:
    """The Dagster-config type of a settings field (Literal -> str, tuple -> list)."""
    if dataclasses.is_dataclass(hint):
        return run_config_class(hint)
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = [arg for arg in typing.get_args(hint) if arg is not type(None)]
        return _run_config_type(options[0])
    if origin is Literal:
        return str
    if origin in (tuple, list):
        args = [arg for arg in typing.get_args(hint) if arg is not Ellipsis]
        item = _run_config_type(args[0]) if args else str
        return list[item]  # type: ignore[valid-type]
    return hint


def run_config_overrides(config: dg.Config | None) -> dict[str, Any]:
    """What the launchpad set (nested), leaving out every field it did not."""
    return config.model_dump(exclude_none=True) if config is not None else {}


def stage_settings(
    settings: SettingsResource,
    layout: DataLayout,
    section: str,
    run_config: dg.Config | None = None,
    config_type: type[Config] | None = None,
) -> Config:
    """The effective settings of ``section``: defaults < pipeline.yaml < run config.

    A malformed file or value fails the step at once with the file, line and key.
    """
    try:
        return settings.load(layout).section(
            section, config_type or section_type(section), run_config_overrides(run_config)
        )
    except SettingsError as error:
        raise dg.Failure(description=str(error)) from error


def settings_metadata(config: Any, name: str = "settings") -> dict[str, dg.MetadataValue]:
    """The effective settings and their hash, for the materialization's metadata."""
    return {
        name: dg.MetadataValue.json(config_dict(config)),
        f"{name}_hash": dg.MetadataValue.text(config_hash(config)),
    }
