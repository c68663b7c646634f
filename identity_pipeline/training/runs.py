"""A training run's folder: what it trains on, who trains in it, and what is wrong before it starts.

* ``TrainingInputError``: a problem with the trainer's inputs, said in one sentence (no empty
  training set, no missing base model ever gets as far as a stack trace in the trainer).
* ``RunLock``: one trainer per run folder. An ``flock`` on ``<run>/trainer.lock``, held for the
  trainer's life and released by the kernel however it ends (``kill -9`` included), so a second
  trainer in the same folder is refused with who holds it instead of corrupting checkpoints.
* ``write_snapshot``: the exact manifest a run trains on, with the content hash of every file,
  copied into the run folder; the trainer and the fidelity evaluation read only that copy.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import socket
import time
from pathlib import Path

import pandas as pd
import pyarrow as pa

from identity_pipeline.storage import atomic_write_table

LOCK_FILE = "trainer.lock"
SNAPSHOT_FILE = "training_set.parquet"
SPLIT_TRAIN = "train"
NAME_PEOPLE_FIRST = "name people first: make label"

# "org/name" as on the Hugging Face hub (one slash, no leading dot or tilde).
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


class TrainingInputError(ValueError):
    """What is wrong with the trainer's inputs, as one sentence a person can act on."""


# ----------------------------------------------------------------------------------------------
# Early checks


def check_training_set(
    manifest: pd.DataFrame,
    input_samples: int | None = None,
    removed_by_rule: dict[str, int] | None = None,
    split: str = SPLIT_TRAIN,
) -> None:
    """Refuse a manifest with nothing to train on, saying why (``input_samples`` and
    ``removed_by_rule``: what the training set was built from, when known)."""
    if manifest.empty:
        if not input_samples:
            raise TrainingInputError(
                f"Nobody is named yet, so the training set is empty: {NAME_PEOPLE_FIRST}"
            )
        removed = ", ".join(
            f"{rule}: {count}" for rule, count in (removed_by_rule or {}).items() if count
        )
        raise TrainingInputError(
            f"The training set is empty: its selection rules removed all {input_samples} "
            f"samples ({removed or 'see training_set'}); relax them in the dataset section of "
            "pipeline.yaml"
        )
    if not (manifest["split"] == split).any():
        photos = manifest["photo_id"].nunique() if "photo_id" in manifest.columns else "all"
        raise TrainingInputError(
            f"Every sample of the training set is held out ({len(manifest)} samples, {photos} "
            "photos): nothing to train on; add photos or lower dataset.holdout_fraction"
        )


def is_local_path(source: str) -> bool:
    """Whether a model source names a folder on this machine rather than a hub id."""
    if not HUB_ID.match(source):
        return True
    return Path(source).exists() or Path(source.split("/")[0]).is_dir()


def check_model_source(source: str, base: Path | None = None) -> None:
    """Refuse a local base-model path that does not exist or is not a diffusers folder (a hub
    id is left to ``from_pretrained``)."""
    if not source:
        raise TrainingInputError("No base model is set: set training.model.source")
    if not is_local_path(source):
        return
    path = Path(source).expanduser()
    if base is not None and not path.is_absolute():
        path = base / path
    if not path.exists():
        raise TrainingInputError(
            f"The base model path {source} does not exist (training.model.source): point it at "
            "a diffusers folder or a hub id such as Qwen/Qwen-Image (`make demo` builds the tiny "
            "demo model)"
        )
    if not (path / "model_index.json").is_file():
        raise TrainingInputError(
            f"The base model path {source} is not a diffusers model folder (no "
            "model_index.json): point training.model.source at the folder save_pretrained wrote"
        )


# ----------------------------------------------------------------------------------------------
# The training set a run trains on


def write_snapshot(run_dir: Path, snapshot: pd.DataFrame) -> Path:
    """``<run>/training_set.parquet``, written once: a run folder is keyed by its content, so an
    existing copy already holds exactly these rows."""
    path = Path(run_dir) / SNAPSHOT_FILE
    if not path.is_file():
        atomic_write_table(path, pa.Table.from_pandas(snapshot, preserve_index=False))
    return path


# ----------------------------------------------------------------------------------------------
# One trainer per run folder


class RunFolderBusy(RuntimeError):
    pass


class RunLock:
    """An exclusive, non-blocking lock on a run folder, held until ``release`` or process exit."""

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / LOCK_FILE
        self._handle = None

    def acquire(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+", encoding="utf-8")  # noqa: SIM115 - held open for life
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(handle)
            handle.close()
            raise RunFolderBusy(busy_message(self.path.parent, holder)) from None
        handle.seek(0)
        handle.truncate()
        holder = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}
        handle.write(json.dumps(holder))
        handle.flush()
        self._handle = handle
        return self

    def release(self) -> None:
        if self._handle is not None:
            fcntl.flock(self._handle, fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def lock_holder(run_dir: Path) -> dict | None:
    """Who holds the run folder's lock now (pid, host, since), or None when it is free."""
    path = Path(run_dir) / LOCK_FILE
    if not path.is_file():
        return None
    with open(path, encoding="utf-8") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read_holder(handle) or {}
        fcntl.flock(handle, fcntl.LOCK_UN)
    return None


def busy_message(run_dir: Path, holder: dict | None) -> str:
    who = ""
    if holder and holder.get("pid"):
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.get("since", 0)))
        who = f" (pid {holder['pid']} on {holder.get('host', '?')}, since {since})"
    return (
        f"Another trainer is already training in {run_dir}{who}: wait for it to finish or stop "
        "its run; two trainers in one folder would overwrite each other's checkpoints"
    )


def _read_holder(handle) -> dict | None:
    try:
        handle.seek(0)
        return json.loads(handle.read() or "null")
    except (OSError, ValueError):
        return None
