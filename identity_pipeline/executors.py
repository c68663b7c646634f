"""Which executor runs the steps of a run, chosen by the deployment, not by the code.

``IDENTITY_PIPELINE_EXECUTOR`` picks one:

* unset: Dagster's default (multiprocess for launched runs, in process for ``materialize``);
* ``multiprocess``: every step in its own process on the machine of the run;
* ``k8s``: every step in its own Kubernetes Job (``dagster_k8s.k8s_job_executor``);
* ``celery``: every step a Celery task on a queue (``dagster_celery.celery_executor``).

``IDENTITY_PIPELINE_EXECUTOR_CONFIG`` optionally names a YAML file with the executor's config,
either bare or in run-config shape (``execution: {config: {...}}``, the shape of the files under
``deploy/``, which ``dagster-celery worker start -y`` reads too). It is validated against the
executor's schema when the code location loads, so a typo fails the deployment, not a run.
Without a file the executor takes its config from each run's ``execution`` block (launchpad).

dagster-k8s and dagster-celery are imported only when chosen: the local install needs neither.

The GPU steps declare themselves once (``identity_pipeline.assets.gpu``): pool ``gpu`` (honoured
by every executor through the instance's concurrency slots), ``dagster-k8s/config`` (read by the
k8s executor) and ``dagster-celery/queue`` (read by the Celery executor).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import dagster as dg
import yaml

EXECUTOR_ENV = "IDENTITY_PIPELINE_EXECUTOR"
EXECUTOR_CONFIG_ENV = "IDENTITY_PIPELINE_EXECUTOR_CONFIG"
EXECUTOR_NAMES = ("multiprocess", "k8s", "celery")
_EXTRA_HINT = "install the scale-out extra: pip install 'identity-pipeline[scale]'"


class ExecutorSelectionError(ValueError):
    """An unknown executor name, a missing library, or a config that does not fit the schema."""


def executor_definition(name: str) -> dg.ExecutorDefinition:
    """The unconfigured executor called ``name`` (one of ``EXECUTOR_NAMES``)."""
    key = name.strip().lower()
    if key == "multiprocess":
        return dg.multiprocess_executor
    if key == "k8s":
        try:
            from dagster_k8s import k8s_job_executor
        except ImportError as error:
            raise ExecutorSelectionError(
                f"executor 'k8s' needs dagster-k8s: {_EXTRA_HINT}"
            ) from error
        return k8s_job_executor
    if key == "celery":
        try:
            from dagster_celery import celery_executor
        except ImportError as error:
            raise ExecutorSelectionError(
                f"executor 'celery' needs dagster-celery: {_EXTRA_HINT}"
            ) from error
        return celery_executor
    raise ExecutorSelectionError(
        f"unknown executor {name!r} in ${EXECUTOR_ENV}; use one of {', '.join(EXECUTOR_NAMES)}"
    )


def load_executor_config(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The executor config in a YAML file: ``execution.config`` if present, else the mapping."""
    path = Path(path).expanduser()
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as error:
        raise ExecutorSelectionError(f"cannot read executor config {path}: {error}") from error
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ExecutorSelectionError(f"{path}: expected a mapping, got {type(loaded).__name__}")
    execution = loaded.get("execution")
    if isinstance(execution, dict) and set(loaded) == {"execution"}:
        config = execution.get("config", {})
        if not isinstance(config, dict):
            raise ExecutorSelectionError(f"{path}: execution.config must be a mapping")
        return config
    return loaded


def validate_executor_config(
    executor: dg.ExecutorDefinition, config: Mapping[str, Any], source: str = "config"
) -> dict[str, Any]:
    """``config`` with the schema's defaults filled in; every error named, with ``source``."""
    from dagster._config import process_config

    schema = executor.config_schema.config_type
    result = process_config(schema, dict(config))
    if not result.success:
        problems = "; ".join(error.message for error in result.errors or [])
        raise ExecutorSelectionError(
            f"{source} does not fit the {executor.name} executor's schema: {problems}"
        )
    return dict(result.value or {})


def build_executor(
    name: str, config: Mapping[str, Any] | None = None, source: str = "config"
) -> dg.ExecutorDefinition:
    """The executor ``name``, configured with ``config`` (validated) when one is given."""
    executor = executor_definition(name)
    if config is None:
        return executor
    validate_executor_config(executor, config, source)
    return executor.configured(dict(config))


def executor_from_env(environ: Mapping[str, str] | None = None) -> dg.ExecutorDefinition | None:
    """The executor the environment asks for; None for Dagster's default."""
    environ = os.environ if environ is None else environ
    name = (environ.get(EXECUTOR_ENV) or "").strip()
    config_path = (environ.get(EXECUTOR_CONFIG_ENV) or "").strip()
    if not name:
        if config_path:
            raise ExecutorSelectionError(
                f"${EXECUTOR_CONFIG_ENV} is set but ${EXECUTOR_ENV} is not: name the executor "
                f"({', '.join(EXECUTOR_NAMES)})"
            )
        return None
    config = load_executor_config(config_path) if config_path else None
    return build_executor(name, config, source=config_path or "config")


def select_executor(
    executor: str | dg.ExecutorDefinition | None,
) -> dg.ExecutorDefinition | None:
    """``build_definitions``' argument: a definition as is, a name, or None for the environment."""
    if executor is None:
        return executor_from_env()
    if isinstance(executor, str):
        return executor_definition(executor)
    return executor
