"""How many GPU seconds the evaluation may spend, and what its images cost on this device.

* ``resolve_budget``: ``budget_seconds``, else ``budget_fraction`` x the training run's own time
  (``result.json``: the trainer's whole run or its loop time over resumes, whichever is larger;
  else the last checkpoint's loop time);
* ``CostRecord``: the one-image probe's measurement (seconds per image, per inference step, per
  LoRA switch, and the fixed cost paid once per run: the real photos' faces and loading the
  pipeline, which the images' budget is what is left after) with what it depends on; stored beside the images (``cost.json``) so a re-run plans
  with the same numbers, and so finds every image it plans in the cache.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from identity_pipeline.evaluation.config import FidelityConfig
from identity_pipeline.evaluation.plan import CostModel
from identity_pipeline.storage import atomic_write_text, content_id

COST_FILE = "cost.json"
RESULT_FILE = "result.json"  # identity_pipeline.training.trainer.RESULT_FILE


@dataclass(frozen=True)
class Budget:
    seconds: float | None  # None: no budget
    training_seconds: float | None
    source: str  # in words, for the log and the metadata

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def training_seconds(run_dir: Path) -> float | None:
    """The training run's measured time on its device, if recorded: the trainer's whole last
    invocation (loading, caching, the loop, export, samples: ``total_seconds``) or its loop time
    summed over resumes (``train_seconds``), whichever is larger."""
    path = Path(run_dir) / RESULT_FILE
    if path.is_file():
        try:
            result = json.loads(path.read_text(encoding="utf-8"))
            value = max(float(result.get(key) or 0) for key in ("train_seconds", "total_seconds"))
            if value > 0:
                return value
        except (ValueError, TypeError, AttributeError):
            pass
    # The checkpoints' state files (identity_pipeline.training.checkpoint: state.json).
    for state in sorted((Path(run_dir) / "checkpoints").glob("step-*/state.json"), reverse=True):
        try:
            value = float(json.loads(state.read_text(encoding="utf-8"))["train_seconds"])
        except (ValueError, KeyError, TypeError, OSError):
            continue
        if value > 0:
            return value
    return None


def resolve_budget(config: FidelityConfig, run_dir: Path) -> Budget:
    trained = training_seconds(run_dir)
    if config.budget_seconds is not None:
        return Budget(float(config.budget_seconds), trained, "budget_seconds")
    if config.budget_fraction is None:
        return Budget(None, trained, "no budget (budget_fraction and budget_seconds unset)")
    if trained is None:
        return Budget(
            None,
            None,
            "no budget: the training run recorded no time (no result.json or checkpoint state)",
        )
    return Budget(
        round(config.budget_fraction * trained, 3),
        trained,
        f"{config.budget_fraction:g} x the training run's {trained:.1f} s",
    )


@dataclass(frozen=True)
class CostRecord:
    """A probe's measurement, valid for ``key`` (model, sampler settings, device)."""

    key: str
    seconds_per_image: float  # generation + face detection of one image
    seconds_per_switch: float  # loading one checkpoint's LoRA
    steps: int
    device: str
    model_load_seconds: float
    # Paid once per run before the first image: the real photos' faces and loading the pipeline.
    # The budget covers the whole step, so the images get what is left (0: a probe stored before
    # this was counted).
    fixed_seconds: float = 0.0

    @property
    def model(self) -> CostModel:
        return CostModel(self.seconds_per_image, self.seconds_per_switch, self.steps)

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "seconds_per_step": round(self.model.seconds_per_step, 4)}


def cost_key(settings: dict[str, Any], device: str) -> str:
    """What the probe's numbers depend on: the model, the sampler settings, the device."""
    keys = ("model", "family", "revision", "num_inference_steps", "guidance_scale", "width")
    values = {key: settings.get(key) for key in (*keys, "height")}
    return content_id(json.dumps(values, sort_keys=True), device)


def read_cost(folder: Path, key: str) -> CostRecord | None:
    path = Path(folder) / COST_FILE
    if not path.is_file():
        return None
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        raw.pop("seconds_per_step", None)
        record = CostRecord(**raw)
    except (ValueError, TypeError):
        return None
    return record if record.key == key else None


def images_budget(budget: Budget, cost: CostRecord) -> float | None:
    """What the images may spend: the budget less the run's fixed cost (at least 0: the
    smallest useful screen is then run anyway, and said)."""
    if budget.seconds is None:
        return None
    return max(0.0, round(budget.seconds - cost.fixed_seconds, 3))


def write_cost(folder: Path, record: CostRecord) -> Path:
    return atomic_write_text(Path(folder) / COST_FILE, json.dumps(record.to_json(), indent=1))
