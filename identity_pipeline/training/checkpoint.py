"""Checkpoints that survive ``kill -9`` and resume to the same weights: safetensors + JSON only.

A checkpoint folder holds everything the next step depends on:

    lora.safetensors        trainable (LoRA) parameters, float32, by parameter name
    optimizer.safetensors   every tensor of the optimizer state (AdamW moments and step counts)
    optimizer.json          the rest of the optimizer state dict (param groups, hyper-parameters)
    scheduler.json          the LR scheduler's state dict (plain numbers)
    state.json              step, loss history, config fingerprint; written last

No RNG state is stored because the trainer draws every random number from generators seeded with
(seed, step, micro-step, process): resuming at step N replays exactly the same noise.

Writes are atomic at the folder level: the checkpoint is assembled in a hidden temporary folder,
fsynced, renamed into place, and only then is ``latest`` (a one-line text file) switched to it.
A kill at any moment leaves ``latest`` pointing at a complete checkpoint.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from identity_pipeline.storage import atomic_write_text

LATEST_FILE = "latest"
STATE_FILE = "state.json"


@dataclass
class TrainerState:
    step: int = 0
    fingerprint: str = ""
    losses: list[float] = field(default_factory=list)
    train_seconds: float = 0.0


def checkpoint_name(step: int) -> str:
    return f"step-{step:07d}"


def latest_checkpoint(root: Path) -> Path | None:
    pointer = Path(root) / LATEST_FILE
    if not pointer.is_file():
        return None
    candidate = Path(root) / pointer.read_text(encoding="utf-8").strip()
    return candidate if (candidate / STATE_FILE).is_file() else None


def save_checkpoint(
    root: Path,
    state: TrainerState,
    lora_parameters: dict[str, torch.Tensor],
    optimizer: torch.optim.Optimizer,
    lr_scheduler: Any,
    keep_last: int,
) -> Path:
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    final = root / checkpoint_name(state.step)
    staging = root / f".{final.name}.{uuid.uuid4().hex[:8]}.tmp"
    staging.mkdir()
    try:
        _save_tensors(staging / "lora.safetensors", lora_parameters)
        tensors, rest = _split_optimizer_state(optimizer.state_dict())
        _save_tensors(staging / "optimizer.safetensors", tensors)
        _write_json(staging / "optimizer.json", rest)
        _write_json(staging / "scheduler.json", lr_scheduler.state_dict())
        _write_json(staging / STATE_FILE, asdict(state))
        _fsync_dir(staging)
        if final.exists():  # left by a run killed between the rename and the pointer update
            shutil.rmtree(final)
        os.replace(staging, final)
        _fsync_dir(root)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    atomic_write_text(root / LATEST_FILE, final.name + "\n")
    _prune(root, keep=keep_last, current=final.name)
    return final


def load_checkpoint(
    path: Path,
    lora_parameters: dict[str, torch.nn.Parameter],
    optimizer: torch.optim.Optimizer,
    lr_scheduler: Any,
) -> TrainerState:
    """Restore parameters, optimizer and scheduler in place; return the trainer state."""
    path = Path(path)
    saved = load_file(str(path / "lora.safetensors"))
    if set(saved) != set(lora_parameters):
        raise ValueError(
            f"{path} holds a different set of LoRA parameters than this model "
            f"({len(saved)} vs {len(lora_parameters)}): was the rank or target list changed?"
        )
    with torch.no_grad():
        for name, parameter in lora_parameters.items():
            parameter.copy_(saved[name].to(parameter.device, parameter.dtype))
    rest = json.loads((path / "optimizer.json").read_text(encoding="utf-8"))
    tensors = load_file(str(path / "optimizer.safetensors"))
    optimizer.load_state_dict(_join_optimizer_state(tensors, rest))
    lr_scheduler.load_state_dict(json.loads((path / "scheduler.json").read_text(encoding="utf-8")))
    return TrainerState(**json.loads((path / STATE_FILE).read_text(encoding="utf-8")))


def read_state(path: Path) -> TrainerState:
    return TrainerState(**json.loads((Path(path) / STATE_FILE).read_text(encoding="utf-8")))


# Optimizer state dicts are {"state": {index: {name: tensor | number}}, "param_groups": [...]}:
# tensors go to safetensors as "state.<index>.<name>", everything else to JSON.


def _split_optimizer_state(
    state_dict: dict[str, Any],
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, entries in state_dict["state"].items():
        for name, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state.{index}.{name}"] = value
            else:
                scalars.setdefault(str(index), {})[name] = value
    return tensors, {"param_groups": state_dict["param_groups"], "scalars": scalars}


def _join_optimizer_state(tensors: dict[str, torch.Tensor], rest: dict[str, Any]) -> dict:
    state: dict[int, dict[str, Any]] = {}
    for key, tensor in tensors.items():
        _, index, name = key.split(".", 2)
        state.setdefault(int(index), {})[name] = tensor
    for index, entries in rest["scalars"].items():
        state.setdefault(int(index), {}).update(entries)
    return {"state": state, "param_groups": rest["param_groups"]}


def _save_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(path))


def _write_json(path: Path, value: Any) -> None:
    path.write_text(json.dumps(value, indent=1, default=_json_default), encoding="utf-8")


def _json_default(value: Any) -> Any:
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return value.item()
    if isinstance(value, set | tuple):
        return list(value)
    raise TypeError(f"cannot store {type(value).__name__} in a checkpoint's JSON")


def _fsync_dir(folder: Path) -> None:
    for entry in folder.iterdir():
        if entry.is_file():
            with open(entry, "rb") as handle:
                os.fsync(handle.fileno())
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _prune(root: Path, keep: int, current: str) -> None:
    finished = sorted(entry.name for entry in root.iterdir() if entry.name.startswith("step-"))
    for name in finished[:-keep]:
        if name != current:
            shutil.rmtree(root / name, ignore_errors=True)
    for entry in root.iterdir():
        if entry.name.startswith(".step-") and entry.name.endswith(".tmp"):
            shutil.rmtree(entry, ignore_errors=True)  # staging folders of killed runs
