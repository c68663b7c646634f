"""The Pipes client that launches the trainer: its process tree stops with the step.

``dg.PipesSubprocessClient`` sends SIGINT to the process it started when the run is terminated,
and nothing more: under ``accelerate launch`` that is the launcher, and the trainer it started
keeps the GPU. This client starts the command in a process group of its own and, when the step
is interrupted or fails for any reason, stops the whole group (SIGTERM, SIGKILL after
``termination_timeout_seconds``). A step killed outright runs no code: for that case the trainer
watches the step itself (``identity_pipeline.training.supervision``).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping, Sequence

import dagster as dg

from identity_pipeline.training.supervision import stop_process_group


class ProcessGroupPipesClient(dg.PipesSubprocessClient):
    def run(  # type: ignore[override]
        self,
        *,
        context: dg.OpExecutionContext | dg.AssetExecutionContext,
        extras: Mapping | None = None,
        command: str | Sequence[str],
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
    ) -> dg.PipesClientCompletedInvocation:
        with dg.open_pipes_session(
            context=context,
            context_injector=self.context_injector,
            message_reader=self.message_reader,
            extras=extras,
        ) as session:
            process = subprocess.Popen(
                command,
                cwd=cwd or self.cwd,
                env={
                    **os.environ,
                    **self.env,
                    **(env or {}),
                    **session.get_bootstrap_env_vars(),
                },
                start_new_session=True,
            )
            try:
                process.wait()
            except BaseException:  # terminated from the UI (interrupt), or anything else
                if process.poll() is None:
                    context.log.info("[pipes] step stopped: stopping the trainer's process group")
                    stop_process_group(process, self.termination_timeout_seconds)
                raise
            if process.returncode != 0:
                raise dg.Failure(
                    description=f"The trainer failed with exit status {process.returncode}: "
                    "its last log lines above say why."
                )
        return dg.PipesClientCompletedInvocation(session)
