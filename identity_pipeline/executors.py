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
Beside ``execution``, a Celery file may hold ``worker_watch`` (see ``WorkerWatch``), which the
workers ignore.

A distributed executor (``k8s``, ``celery``) runs steps on other machines, which must all see the
storage root: it needs ``$IDENTITY_PIPELINE_DATA_DIR`` set to an absolute path of an existing
folder, and refuses to load without it (a worker would otherwise write to ``./data``, where no
other step looks).

The Celery executor is dagster-celery's, with one addition: dagster-celery waits forever for a
step whose whole worker died (machine gone, ``kill -9`` of the worker), as the task's result never
comes. Here the run fails instead, naming the step and the worker, once that worker stops
answering pings (``WorkerWatch``). A worker whose step process alone dies (the OOM killer) is
reported by Celery itself (``WorkerLostError``), and the run fails with that.

dagster-k8s and dagster-celery are imported only when chosen: the local install needs neither.

The GPU steps declare themselves once (``identity_pipeline.assets.gpu``): pool ``gpu`` (honoured
by every executor through the instance's concurrency slots), ``dagster-k8s/config`` (read by the
k8s executor) and ``dagster-celery/queue`` (read by the Celery executor).
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import dagster as dg
import yaml
from dagster._core.execution.retries import RetryMode

EXECUTOR_ENV = "IDENTITY_PIPELINE_EXECUTOR"
EXECUTOR_CONFIG_ENV = "IDENTITY_PIPELINE_EXECUTOR_CONFIG"
EXECUTOR_NAMES = ("multiprocess", "k8s", "celery")
DISTRIBUTED_EXECUTORS = ("k8s", "celery")
WORKER_WATCH_KEY = "worker_watch"
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
        return watched_celery_executor(WorkerWatch())
    raise ExecutorSelectionError(
        f"unknown executor {name!r} in ${EXECUTOR_ENV}; use one of {', '.join(EXECUTOR_NAMES)}"
    )


def _load_yaml(path: Path) -> dict[str, Any]:
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as error:
        raise ExecutorSelectionError(f"cannot read executor config {path}: {error}") from error
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ExecutorSelectionError(f"{path}: expected a mapping, got {type(loaded).__name__}")
    return loaded


def load_executor_config(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The executor config in a YAML file: ``execution.config`` if present, else the mapping."""
    path = Path(path).expanduser()
    loaded = _load_yaml(path)
    execution = loaded.get("execution")
    if isinstance(execution, dict) and set(loaded) <= {"execution", WORKER_WATCH_KEY}:
        config = execution.get("config", {})
        if not isinstance(config, dict):
            raise ExecutorSelectionError(f"{path}: execution.config must be a mapping")
        return config
    return loaded


def load_worker_watch(path: str | os.PathLike[str]) -> WorkerWatch:
    """The file's ``worker_watch`` block (every key a ``WorkerWatch`` field), else defaults."""
    path = Path(path).expanduser()
    block = _load_yaml(path).get(WORKER_WATCH_KEY) or {}
    known = {field.name for field in fields(WorkerWatch)}
    unknown = sorted(set(block) - known) if isinstance(block, dict) else ["(not a mapping)"]
    if unknown:
        raise ExecutorSelectionError(
            f"{path}: unknown {WORKER_WATCH_KEY} keys {unknown}; known: {sorted(known)}"
        )
    try:
        return WorkerWatch(**block)
    except (TypeError, ValueError) as error:
        raise ExecutorSelectionError(f"{path}: {WORKER_WATCH_KEY}: {error}") from error


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


def require_shared_data_root(name: str, environ: Mapping[str, str]) -> Path:
    """The storage root every machine of a distributed executor must see, from the environment:
    set, absolute and an existing folder (a missing mount fails here, not in a step)."""
    from identity_pipeline.storage import DATA_DIR_ENV

    value = (environ.get(DATA_DIR_ENV) or "").strip()
    problem = None
    if not value:
        problem = "is not set"
    elif not Path(value).expanduser().is_absolute():
        problem = f"is {value!r}, a relative path (each machine would resolve it elsewhere)"
    elif not Path(value).expanduser().is_dir():
        problem = f"is {value!r}, which is not a folder here (storage not mounted?)"
    if problem:
        raise ExecutorSelectionError(
            f"executor {name!r} runs steps on other machines, which must all see the storage "
            f"root at the same path: ${DATA_DIR_ENV} {problem}. Mount the shared storage and "
            f"set ${DATA_DIR_ENV} to its absolute path in every process (README: Scaling out)."
        )
    return Path(value).expanduser()


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
    if name.lower() in DISTRIBUTED_EXECUTORS:
        require_shared_data_root(name.lower(), environ)
    config = load_executor_config(config_path) if config_path else None
    if name.lower() == "celery" and config_path:
        executor = watched_celery_executor(load_worker_watch(config_path))
        validate_executor_config(executor, config or {}, config_path)
        if not (config or {}).get("config_source", {}).get("task_track_started"):
            raise ExecutorSelectionError(
                f"{config_path}: set config_source.task_track_started: true; without it a "
                "step's task never says which worker runs it, and a run whose worker dies waits "
                "forever"
            )
        return executor.configured(dict(config or {}))
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


# --- Celery: a step whose worker died fails the run instead of hanging it ---------------------


@dataclass(frozen=True)
class WorkerWatch:
    """When the run gives up on a step whose Celery worker went silent.

    A started step's task records the worker running it (``task_track_started``); while the step
    runs, the run pings that worker. After ``lost_after_missed_pings`` pings in a row without a
    reply, the step is lost: the run fails with the step and the worker named.
    """

    # A ping is one broadcast and reply through the broker: cheap, but every few seconds is
    # plenty for steps that run for seconds to hours.
    ping_every_seconds: float = 10.0
    # A worker's main process answers pings even while its pool process computes a step, so
    # one missing reply is already unusual; three in a row (30 s) rule out a broker hiccup.
    lost_after_missed_pings: int = 3
    # How long one ping waits for the reply (a live worker answers in milliseconds).
    reply_timeout_seconds: float = 2.0

    def __post_init__(self) -> None:
        if self.ping_every_seconds <= 0 or self.reply_timeout_seconds <= 0:
            raise ValueError("ping_every_seconds and reply_timeout_seconds must be positive")
        if self.lost_after_missed_pings < 1:
            raise ValueError("lost_after_missed_pings must be at least 1")


class StepWorkerLost(RuntimeError):
    """The worker running a step stopped answering: the step will never report back."""


class _WorkerPings:
    """Pings the workers running this run's steps, each at most once per interval."""

    def __init__(self, app: Any, watch: WorkerWatch, clock=time.monotonic) -> None:
        self.app, self.watch, self.clock = app, watch, clock
        self._last_ping: dict[str, float] = {}
        self._missed: dict[str, int] = {}

    def missed(self, worker: str) -> int:
        """Pings in a row ``worker`` left unanswered, pinging it if its interval is over."""
        now = self.clock()
        if now - self._last_ping.get(worker, -float("inf")) >= self.watch.ping_every_seconds:
            self._last_ping[worker] = now
            replies = self.app.control.ping(
                destination=[worker], timeout=self.watch.reply_timeout_seconds, limit=1
            )
            answered = any(worker in reply for reply in replies or [])
            self._missed[worker] = 0 if answered else self._missed.get(worker, 0) + 1
        return self._missed.get(worker, 0)


class _WatchedResult:
    """A step's Celery result, ``ready`` (and failing on ``get``) once its worker is lost."""

    def __init__(self, result: Any, step_key: str, pings: _WorkerPings) -> None:
        self._result, self._step_key, self._pings = result, step_key, pings
        self._lost: str | None = None

    def ready(self) -> bool:
        if self._result.ready():
            return True
        self._lost = self._lost or self._lost_reason()
        return self._lost is not None

    def _lost_reason(self) -> str | None:
        if self._result.state != "STARTED":  # queued: waiting for a worker is not an error
            return None
        started = self._result.info if isinstance(self._result.info, dict) else {}
        worker = started.get("hostname")
        if not worker:
            return None
        missed = self._pings.missed(worker)
        if missed < self._pings.watch.lost_after_missed_pings:
            return None
        watch = self._pings.watch
        return (
            f"Celery worker {worker} (step process pid {started.get('pid')}) stopped answering "
            f"while it ran step {self._step_key!r}: {missed} pings in a row unanswered, "
            f"{watch.ping_every_seconds:g} s apart. Its outputs were not committed (every write "
            "is atomic); re-execute the run once a worker serves the queue again."
        )

    def get(self, *args: Any, **kwargs: Any) -> Any:
        if self._lost is not None:
            raise StepWorkerLost(self._lost)
        return self._result.get(*args, **kwargs)

    def revoke(self, *args: Any, **kwargs: Any) -> Any:
        return self._result.revoke(*args, **kwargs)


def watched_celery_executor(watch: WorkerWatch) -> dg.ExecutorDefinition:
    """dagster-celery's executor (same name, same config schema, same workers), whose run fails
    a step as soon as ``watch`` finds the step's worker gone."""
    try:
        from dagster_celery import executor as celery_module
        from dagster_celery.core_execution_loop import core_celery_execution_loop
    except ImportError as error:
        raise ExecutorSelectionError(
            f"executor 'celery' needs dagster-celery: {_EXTRA_HINT}"
        ) from error

    class WatchedCeleryExecutor(celery_module.CeleryExecutor):
        def execute(self, plan_context, execution_plan):
            pings: _WorkerPings | None = None  # one per run: each worker pinged once per interval

            def submit(app, plan_context, step, queue, priority, known_state):
                nonlocal pings
                pings = pings or _WorkerPings(app, watch)
                result = celery_module._submit_task(  # noqa: SLF001 - the library's own submit
                    app, plan_context, step, queue, priority, known_state
                )
                return _WatchedResult(result, step.key, pings)

            return core_celery_execution_loop(
                plan_context, execution_plan, step_execution_fn=submit
            )

    @dg.executor(
        name=celery_module.celery_executor.name,
        config_schema=celery_module.CELERY_CONFIG,
        requirements=dg.multiple_process_executor_requirements(),
    )
    def celery_executor(init_context):
        config = init_context.executor_config
        return WatchedCeleryExecutor(
            broker=config.get("broker"),
            backend=config.get("backend"),
            config_source=config.get("config_source"),
            include=config.get("include"),
            retries=RetryMode.from_config(config["retries"]),
        )

    return celery_executor
