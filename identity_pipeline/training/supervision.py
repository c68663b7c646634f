"""A trainer that stops with the step that launched it.

The ``lora_checkpoint`` step starts the trainer (through ``accelerate launch``) in a process group
of its own and kills that group when the run is terminated. A step that is killed outright
(``kill -9``, an OOM kill, a lost node) runs no code at all, so the trainer also watches the step:
the step passes its pid and its start time (``step_environment``) and every trainer process checks
them once a second (``watch_step``); when the step is gone, the trainer exits. The start time
guards against a reused pid. Checkpoints are written atomically, so stopping at any moment
leaves the last complete one to resume from.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from pathlib import Path

STEP_PID_ENV = "IDENTITY_PIPELINE_STEP_PID"
STEP_START_ENV = "IDENTITY_PIPELINE_STEP_START"
CHECK_SECONDS = 1.0


def process_start(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux), None if it does not exist."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Field 2 (the command) may hold spaces and parentheses: split after its closing one.
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] == "Z":  # a zombie has exited; only its exit status is left
        return None
    return fields[19]  # field 22, starttime


def step_environment(pid: int | None = None) -> dict[str, str]:
    """What the step puts in the trainer's environment so the trainer can watch it."""
    pid = os.getpid() if pid is None else pid
    start = process_start(pid)
    return {STEP_PID_ENV: str(pid), STEP_START_ENV: start or ""}


def step_alive(pid: int, start: str) -> bool:
    if Path("/proc").is_dir():
        return process_start(pid) == start if start else process_start(pid) is not None
    try:  # no /proc: existence only
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def watch_step(interval: float = CHECK_SECONDS) -> threading.Thread | None:
    """Exit this process when the step named in the environment is gone; None when there is
    no step to watch (the trainer was started by hand)."""
    raw_pid = os.environ.get(STEP_PID_ENV)
    if not raw_pid:
        return None
    pid, start = int(raw_pid), os.environ.get(STEP_START_ENV, "")

    def watch() -> None:
        stopped = threading.Event()
        while not stopped.wait(interval):
            if not step_alive(pid, start):
                print(
                    f"[trainer] the step that launched this trainer (pid {pid}) is gone: stopping",
                    file=sys.stderr,
                    flush=True,
                )
                os.kill(os.getpid(), signal.SIGTERM)
                stopped.wait(10)
                os._exit(143)  # SIGTERM was caught somewhere and the process is still here

    thread = threading.Thread(target=watch, name="step-watchdog", daemon=True)
    thread.start()
    return thread


def stop_process_group(process, timeout: float) -> None:
    """SIGTERM to ``process``'s whole group (it was started in a session of its own), then
    SIGKILL to whatever is left after ``timeout`` seconds."""
    import subprocess

    try:
        group = os.getpgid(process.pid)
    except ProcessLookupError:
        return
    if group == os.getpgrp():  # never signal our own group
        process.terminate()
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(group, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=timeout)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(group, signal.SIGKILL)  # the launcher's children too, if it left any
    process.wait()
