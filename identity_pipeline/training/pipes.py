"""Progress reporting: to Dagster through Pipes when launched by the asset, else to stderr.

Only ``dagster_pipes`` (a small dependency-free package) is imported, never ``dagster``. Under
``accelerate launch`` every process inherits the Pipes environment, but only the main process
may talk to Dagster: the others get a reporter that stays silent.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator, Mapping
from typing import Any, Protocol


class Reporter(Protocol):
    def log(self, message: str) -> None: ...

    def metrics(self, step: int, values: Mapping[str, float]) -> None: ...

    def result(self, metadata: Mapping[str, Any]) -> None: ...


class ConsoleReporter:
    """Lines on stderr; the final metadata as one JSON line (handy for scripts)."""

    def __init__(self, stream=None) -> None:
        self.stream = stream or sys.stderr

    def log(self, message: str) -> None:
        print(f"[trainer] {message}", file=self.stream, flush=True)

    def metrics(self, step: int, values: Mapping[str, float]) -> None:
        self.log(f"step {step} " + " ".join(f"{k}={_fmt(v)}" for k, v in values.items()))

    def result(self, metadata: Mapping[str, Any]) -> None:
        plain = {key: _raw(value) for key, value in metadata.items() if not _is_inline(value)}
        self.log("result " + json.dumps(plain, default=str))


class SilentReporter:
    def log(self, message: str) -> None:
        pass

    def metrics(self, step: int, values: Mapping[str, float]) -> None:
        pass

    def result(self, metadata: Mapping[str, Any]) -> None:
        pass


class PipesReporter:
    """Logs and step metrics as Dagster log lines, the result as the asset's materialization."""

    def __init__(self, pipes) -> None:
        self.pipes = pipes
        self.console = ConsoleReporter()

    def log(self, message: str) -> None:
        self.pipes.log.info(message)
        self.console.log(message)

    def metrics(self, step: int, values: Mapping[str, float]) -> None:
        line = f"step {step} " + " ".join(f"{k}={_fmt(v)}" for k, v in values.items())
        self.pipes.log.info(line)
        self.console.log(line)

    def result(self, metadata: Mapping[str, Any]) -> None:
        self.pipes.report_asset_materialization(metadata=dict(metadata))


def md(text: str) -> dict[str, Any]:
    """A Markdown metadata value (rendered in the Dagster UI)."""
    return {"raw_value": text, "type": "md"}


def path_value(path: str) -> dict[str, Any]:
    return {"raw_value": path, "type": "path"}


def _raw(value: Any) -> Any:
    return value["raw_value"] if isinstance(value, dict) and "raw_value" in value else value


def _is_inline(value: Any) -> bool:
    return isinstance(value, dict) and value.get("type") == "md"


def _fmt(value: float) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)


@contextlib.contextmanager
def open_reporter(is_main_process: bool = True) -> Iterator[Reporter]:
    """A Pipes reporter when this process was launched through Dagster Pipes, else the console."""
    if not is_main_process:
        yield SilentReporter()
        return
    try:
        from dagster_pipes import PipesEnvVarParamsLoader, open_dagster_pipes
    except ImportError:  # dagster-pipes is optional for standalone use
        yield ConsoleReporter()
        return
    if not PipesEnvVarParamsLoader().is_dagster_pipes_process():
        yield ConsoleReporter()
        return
    with open_dagster_pipes() as pipes:
        yield PipesReporter(pipes)
