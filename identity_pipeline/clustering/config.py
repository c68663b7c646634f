"""Clustering thresholds: one frozen dataclass, filled per face backend from a YAML file.

The shipped ``thresholds.yaml`` holds one section per backend because cosine scales differ a lot
between embedding models; the ``clustering`` section of pipeline.yaml (and a user YAML of the
shipped file's shape, for the CLI) overrides any key of it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

SHIPPED_THRESHOLDS = Path(__file__).with_name("thresholds.yaml")


class ClusterConfigError(ValueError):
    """A thresholds file or override is unusable; the message says which key and why."""


@dataclass(frozen=True)
class ClusterConfig:
    """Every knob of ``cluster_faces``; cosines are dot products of L2-normalised embeddings."""

    backend: str = ""  # the section these values came from (shown in metadata)
    # Round 1 takes only faces at least this good and this big.
    min_quality: float = 0.45
    min_face_px: float = 32.0
    min_cluster_size: int = 2
    min_samples: int = 2
    member_min_cosine: float = 0.40  # to the centroid of the other members
    # Round 2.
    merge_min_mean_cosine: float = 0.40
    attach_min_cosine: float = 0.45
    low_quality_attach_min_cosine: float = 0.50
    attach_margin: float = 0.10
    leftover_pair_min_cosine: float = 0.55
    # Stats.
    outlier_below_cosine: float = 0.40
    representatives: int = 4

    def __post_init__(self) -> None:
        if self.min_cluster_size < 2:
            raise ClusterConfigError("min_cluster_size must be at least 2")
        if self.min_samples < 1:
            raise ClusterConfigError("min_samples must be at least 1")
        if self.representatives < 1:
            raise ClusterConfigError("representatives must be at least 1")
        for name in (
            "member_min_cosine",
            "merge_min_mean_cosine",
            "attach_min_cosine",
            "low_quality_attach_min_cosine",
            "leftover_pair_min_cosine",
            "outlier_below_cosine",
        ):
            value = getattr(self, name)
            if not -1.0 <= value <= 1.0:
                raise ClusterConfigError(f"{name} is a cosine and must lie in [-1, 1], got {value}")
        if not 0.0 <= self.attach_margin <= 2.0:
            raise ClusterConfigError(f"attach_margin must lie in [0, 2], got {self.attach_margin}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_FIELD_TYPES: dict[str, type] = {
    field.name: (int if field.type in ("int", int) else float)
    for field in dataclasses.fields(ClusterConfig)
    if field.name != "backend"
}


def backend_family(backend: str) -> str:
    """``insightface-buffalo_l`` -> ``insightface``: the section other packs of a family share."""
    return backend.split("-", 1)[0]


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as error:
        raise ClusterConfigError(f"cannot read clustering thresholds {path}: {error}") from error
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ClusterConfigError(f"{path}: expected a mapping with 'defaults' and/or 'backends'")
    unknown = set(loaded) - {"defaults", "backends"}
    if unknown:
        raise ClusterConfigError(f"{path}: unknown top-level key(s) {sorted(unknown)}")
    return loaded


def _checked_values(values: Mapping[str, Any], where: str) -> dict[str, Any]:
    """Known keys only, coerced to the field's type; a typo is an error, not a silent default."""
    checked: dict[str, Any] = {}
    for key, value in values.items():
        if key not in _FIELD_TYPES:
            raise ClusterConfigError(
                f"{where}: unknown threshold {key!r}; known: {', '.join(sorted(_FIELD_TYPES))}"
            )
        wanted = _FIELD_TYPES[key]
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ClusterConfigError(f"{where}: {key} must be a number, got {value!r}")
        if wanted is int and float(value) != int(value):
            raise ClusterConfigError(f"{where}: {key} must be a whole number, got {value!r}")
        checked[key] = wanted(value)
    return checked


def _section(document: Mapping[str, Any], backend: str, where: str) -> tuple[str | None, dict]:
    backends = document.get("backends") or {}
    if not isinstance(backends, dict):
        raise ClusterConfigError(f"{where}: 'backends' must be a mapping of backend -> thresholds")
    for key in (backend, backend_family(backend)):
        if key in backends:
            section = backends[key] or {}
            if not isinstance(section, dict):
                raise ClusterConfigError(f"{where}: backends.{key} must be a mapping")
            return key, _checked_values(section, f"{where} backends.{key}")
    return None, {}


def load_cluster_config(
    backend: str,
    override_path: Path | str | None = None,
    *,
    shipped_path: Path = SHIPPED_THRESHOLDS,
    **overrides: Any,
) -> ClusterConfig:
    """Thresholds for ``backend``: shipped defaults < shipped backend section < override file
    (its defaults, then its backend section) < keyword ``overrides``.

    A backend with no section in either file is refused: guessing cosine thresholds for an
    unknown embedding space would silently merge or split people.
    """
    shipped = _read_yaml(shipped_path)
    values = _checked_values(shipped.get("defaults") or {}, f"{shipped_path} defaults")
    found, section = _section(shipped, backend, str(shipped_path))
    values.update(section)
    if override_path is not None:
        user = _read_yaml(Path(override_path))
        values.update(_checked_values(user.get("defaults") or {}, f"{override_path} defaults"))
        user_found, user_section = _section(user, backend, str(override_path))
        values.update(user_section)
        found = found or user_found
    if found is None:
        raise ClusterConfigError(
            f"no clustering thresholds for face backend {backend!r}: add a 'backends: "
            f"{backend}:' section to a thresholds YAML (see {shipped_path})"
        )
    values.update(_checked_values(overrides, "overrides"))
    return ClusterConfig(backend=found, **values)
