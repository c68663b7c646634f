"""Stage settings: one frozen dataclass per stage, one section of ``pipeline.yaml`` per dataclass.

Runs started by sensors and automation carry no run config, so the settings a person tunes live in
a file: ``<data root>/pipeline.yaml`` (or ``$IDENTITY_PIPELINE_SETTINGS``). A missing file,
section or key means the dataclass's default. Every value is checked against the dataclass's
field types on load (nested dataclasses become nested mappings); a typo or a wrong type is an
error that names the file, the line and the key, so nothing silently falls back to a default.

Dagster run config, where an asset offers it, is an override of the same schema (generated from
the dataclass in ``identity_pipeline.assets.settings``): defaults < file < run config.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import importlib
import json
import os
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml

SETTINGS_ENV = "IDENTITY_PIPELINE_SETTINGS"
SETTINGS_FILE = "pipeline.yaml"

# Section name -> the stage's settings dataclass ("module:Class", imported when used: the stage
# packages pull in image and model libraries).
SECTIONS: dict[str, str] = {
    "photos": "identity_pipeline.photos.inspect:PhotoLimits",
    "collage": "identity_pipeline.collage.album_tiles:TilingConfig",
    "faces": "identity_pipeline.faces.config:FaceConfig",
    "clustering": "identity_pipeline.clustering.config:ClusterConfig",
    "masks": "identity_pipeline.masks.config:MaskConfig",
    "dataset": "identity_pipeline.dataset.config:DatasetConfig",
    "training": "identity_pipeline.training.config:TrainingConfig",
    "fidelity": "identity_pipeline.evaluation.config:FidelityConfig",
}

Config = TypeVar("Config")
KeyPath = tuple[str, ...]
# Where a key path was written, for error messages ("pipeline.yaml line 12").
Locator = Callable[[KeyPath], str]


class SettingsError(ValueError):
    """The settings are malformed or name something a stage does not know."""


def settings_path(data_root: Path) -> Path:
    explicit = os.environ.get(SETTINGS_ENV)
    return Path(explicit).expanduser() if explicit else data_root / SETTINGS_FILE


def section_type(section: str) -> type:
    """The settings dataclass of ``section``."""
    if section not in SECTIONS:
        raise SettingsError(f"unknown settings section {section!r}; known: {', '.join(SECTIONS)}")
    module, name = SECTIONS[section].split(":")
    return getattr(importlib.import_module(module), name)


@dataclass(frozen=True)
class Settings:
    """The parsed settings file: raw sections, and the line each key was written on."""

    path: Path | None = None
    sections: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    lines: Mapping[KeyPath, int] = field(default_factory=dict)

    def locate(self, key_path: KeyPath) -> str:
        """``<path>/pipeline.yaml line 12`` for the deepest written part of ``key_path``."""
        name = str(self.path) if self.path else SETTINGS_FILE
        for end in range(len(key_path), 0, -1):
            line = self.lines.get(key_path[:end])
            if line is not None:
                return f"{name} line {line}"
        return name

    def values(self, section: str) -> dict[str, Any]:
        return dict(self.sections.get(section) or {})

    def section(
        self,
        section: str,
        config_type: type[Config] | None = None,
        overrides: Mapping[str, Any] | None = None,
    ) -> Config:
        """The ``section`` as its dataclass: defaults < this file < ``overrides`` (run config)."""
        given = dict(overrides or {})

        def locate(key_path: KeyPath) -> str:
            return "run config" if _written(given, key_path[1:]) else self.locate(key_path)

        values = deep_merge(self.values(section), given)
        return build_config(config_type or section_type(section), values, (section,), locate)


def load_settings(path: Path) -> Settings:
    """The settings file (empty settings when it does not exist); sections are checked by name."""
    if not path.exists():
        return Settings(path=path)
    loaded, lines = read_yaml(path)
    if loaded is None:
        return Settings(path=path)
    if not isinstance(loaded, dict):
        raise SettingsError(f"{path}: expected a mapping of section name -> settings")
    for name, values in loaded.items():
        where = f"{path} line {lines.get((str(name),), '?')}"
        if str(name) not in SECTIONS:
            raise SettingsError(f"{where}: unknown section {name!r}; known: {', '.join(SECTIONS)}")
        if not isinstance(values, dict | None):
            raise SettingsError(f"{where}: section {name!r} must be a mapping of settings")
    sections = {str(name): dict(values or {}) for name, values in loaded.items()}
    return Settings(path=path, sections=sections, lines=lines)


def read_yaml(path: Path) -> tuple[Any, dict[KeyPath, int]]:
    """A YAML (or JSON) file's values, and the line of every mapping key in it."""
    text = path.read_text(encoding="utf-8")
    try:
        return yaml.safe_load(text), _key_lines(yaml.compose(text))
    except yaml.YAMLError as error:
        raise SettingsError(f"{path}: not valid YAML: {error}") from error


def load_config_file(path: Path, config_type: type[Config]) -> Config:
    """A whole file of one settings dataclass (e.g. the standalone trainer's config), checked
    like a section of pipeline.yaml."""
    loaded, lines = read_yaml(path)
    settings = Settings(path=path, lines={("file", *key): line for key, line in lines.items()})
    return build_config(config_type, loaded or {}, (), lambda key: settings.locate(("file", *key)))


def _key_lines(node: yaml.Node | None, prefix: KeyPath = ()) -> dict[KeyPath, int]:
    """Key path -> 1-based line of the key, for every mapping key in the document."""
    found: dict[KeyPath, int] = {}
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            path = (*prefix, str(key_node.value))
            found[path] = key_node.start_mark.line + 1
            found.update(_key_lines(value_node, path))
    return found


def _written(values: Mapping[str, Any], key_path: KeyPath) -> bool:
    """Whether ``values`` sets ``key_path`` (a section's own problems belong to the file)."""
    if not key_path:
        return False
    current: Any = values
    for key in key_path:
        if not isinstance(current, Mapping) or key not in current:
            return False
        current = current[key]
    return True


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``override`` laid over it; mappings merge key by key, anything else replaces."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


# ----------------------------------------------------------------------------------------------
# Typed construction of a settings dataclass from plain values (YAML, JSON, run config)


def build_config(
    config_type: type[Config],
    values: Mapping[str, Any],
    key_path: KeyPath = (),
    locate: Locator | None = None,
) -> Config:
    """``config_type`` from plain values, each checked against its field's type.

    Nested dataclasses take nested mappings; lists become tuples where the field is a tuple; an
    int is taken for a float (and "1e-4", which YAML reads as a string). Unknown keys, wrong types
    and the dataclass's own validation errors raise ``SettingsError`` naming the key and, with
    ``locate``, where it was written.
    """
    return _build(config_type, values, key_path, locate or (lambda _path: ""))


def _error(locate: Locator, key_path: KeyPath, message: str) -> SettingsError:
    where = locate(key_path)
    name = ".".join(key_path)
    prefix = f"{where}: " if where else ""
    return SettingsError(f"{prefix}{name}: {message}" if name else f"{prefix}{message}")


def _build(config_type: type, values: Any, key_path: KeyPath, locate: Locator) -> Any:
    converted = _checked_fields(config_type, values, key_path, locate)
    try:
        return config_type(**converted)
    except (TypeError, ValueError) as error:
        raise _error(locate, key_path, str(error)) from error


def _checked_fields(
    config_type: type, values: Any, key_path: KeyPath, locate: Locator
) -> dict[str, Any]:
    if not isinstance(values, Mapping):
        raise _error(locate, key_path, f"expected a mapping, got {values!r}")
    hints = typing.get_type_hints(config_type)
    fields = {f.name for f in dataclasses.fields(config_type) if f.init}
    unknown = sorted(set(values) - fields)
    if unknown:
        where = locate((*key_path, unknown[0]))
        listed = ", ".join(repr(key) for key in unknown)
        # A dataclass may list keys of its older layout (``RENAMED``: old key -> where it went).
        renamed = getattr(config_type, "RENAMED", {})
        moved = [f"{key} is now {renamed[key]}" for key in unknown if key in renamed]
        raise SettingsError(
            f"{where + ': ' if where else ''}unknown key(s) {listed} in "
            f"{'.'.join(key_path) or 'settings'}"
            + (f" ({'; '.join(moved)})" if moved else "")
            + f"; known: {', '.join(sorted(fields))}"
        )
    return {
        name: _coerce(hints[name], value, (*key_path, name), locate)
        for name, value in values.items()
    }


def _coerce(hint: Any, value: Any, key_path: KeyPath, locate: Locator) -> Any:
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, key_path, locate)
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in typing.get_args(hint):
            return None
        options = [arg for arg in typing.get_args(hint) if arg is not type(None)]
        errors: list[SettingsError] = []
        for option in options:
            try:
                return _coerce(option, value, key_path, locate)
            except SettingsError as error:
                errors.append(error)
        raise errors[0]
    if origin is Literal:
        allowed = typing.get_args(hint)
        if value not in allowed:
            raise _error(locate, key_path, f"must be one of {list(allowed)}, got {value!r}")
        return value
    if origin in (tuple, list):
        if not isinstance(value, list | tuple):
            raise _error(locate, key_path, f"must be a list, got {value!r}")
        args = typing.get_args(hint)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise _error(locate, key_path, f"must have {len(args)} items, got {value!r}")
            items = [
                _coerce(arg, item, key_path, locate) for arg, item in zip(args, value, strict=True)
            ]
        else:
            item_type = args[0] if args else Any
            items = [_coerce(item_type, item, key_path, locate) for item in value]
        return tuple(items) if origin is tuple else items
    if hint is float:
        if isinstance(value, bool):
            raise _error(locate, key_path, f"must be a number, got {value!r}")
        try:
            return float(value)  # YAML reads "1e-4" (no dot) as a string
        except (TypeError, ValueError):
            raise _error(locate, key_path, f"must be a number, got {value!r}") from None
    if hint is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise _error(locate, key_path, f"must be a whole number, got {value!r}")
    if hint in (str, bool) and not isinstance(value, hint):
        raise _error(locate, key_path, f"must be {hint.__name__}, got {value!r}")
    return value


def config_dict(config: Any) -> dict[str, Any]:
    """Plain values of a settings dataclass (tuples as lists): YAML, JSON and metadata."""
    return _plain(dataclasses.asdict(config))


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value


def stable_hash(values: Mapping[str, Any], length: int = 16) -> str:
    """A short, stable digest of plain values (key order does not matter)."""
    payload = json.dumps(values, sort_keys=True)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:length]


def config_hash(config: Any) -> str:
    """The digest of every value of a settings dataclass: what the UI shows beside them."""
    return stable_hash(config_dict(config))


def add_settings_option(parser: argparse.ArgumentParser) -> None:
    """``--settings YAML`` on a command that runs a stage on plain files."""
    parser.add_argument(
        "--settings",
        metavar="YAML",
        help="stage settings (default: $IDENTITY_PIPELINE_SETTINGS or <data root>/pipeline.yaml)",
    )


def command_settings(args: argparse.Namespace) -> Settings:
    """The settings a command reads: ``--settings``, else the pipeline's own file (of
    ``--data-dir`` where the command has it), so a command and its asset agree."""
    from identity_pipeline.storage import resolve_data_root

    explicit = getattr(args, "settings", None)
    if explicit:
        return load_settings(Path(explicit))
    return load_settings(settings_path(resolve_data_root(getattr(args, "data_dir", None))))


def effective_settings(settings: Settings) -> dict[str, dict[str, Any]]:
    """Every section as the stages see it (defaults filled in)."""
    return {name: config_dict(settings.section(name)) for name in SECTIONS}
