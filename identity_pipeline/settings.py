"""Project settings: one YAML file, one section per stage, each mapped onto that stage's config.

Runs started by sensors and automation carry no run config, so the thresholds a person tunes
live in a file: ``<data root>/pipeline.yaml`` (or ``$IDENTITY_PIPELINE_SETTINGS``). A missing
file or section means the stage's defaults. Unknown keys are an error naming the section, so a
typo never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml

SETTINGS_ENV = "IDENTITY_PIPELINE_SETTINGS"
SETTINGS_FILE = "pipeline.yaml"

Config = TypeVar("Config")


class SettingsError(ValueError):
    """The settings file is malformed or names something a stage does not know."""


def settings_path(data_root: Path) -> Path:
    explicit = os.environ.get(SETTINGS_ENV)
    return Path(explicit).expanduser() if explicit else data_root / SETTINGS_FILE


def load_settings(path: Path) -> dict[str, dict[str, Any]]:
    """All sections of the file (``{}`` when it does not exist)."""
    if not path.exists():
        return {}
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise SettingsError(f"{path}: not valid YAML: {error}") from error
    if loaded is None:
        return {}
    if not isinstance(loaded, dict) or not all(isinstance(v, dict | None) for v in loaded.values()):
        raise SettingsError(f"{path}: expected a mapping of section name -> mapping of settings")
    return {str(name): dict(values or {}) for name, values in loaded.items()}


def section_config(
    settings: Mapping[str, Mapping[str, Any]], section: str, config_type: type[Config]
) -> Config:
    """The ``section`` of the settings as a ``config_type`` dataclass (defaults where unset)."""
    values = dict(settings.get(section) or {})
    return dataclass_from_mapping(config_type, values, where=section)


def dataclass_from_mapping(
    config_type: type[Config], values: Mapping[str, Any], where: str
) -> Config:
    fields = {field.name: field for field in dataclasses.fields(config_type)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise SettingsError(
            f"[{where}] unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(fields))}"
        )
    converted = {name: _match_default(fields[name], value) for name, value in values.items()}
    try:
        return config_type(**converted)
    except (TypeError, ValueError) as error:
        raise SettingsError(f"[{where}] {error}") from error


def _match_default(field: dataclasses.Field, value: Any) -> Any:
    """YAML gives lists where the dataclasses (frozen, hashable) keep tuples."""
    default = field.default if field.default is not dataclasses.MISSING else None
    if isinstance(default, tuple) and isinstance(value, list):
        return tuple(value)
    return value
