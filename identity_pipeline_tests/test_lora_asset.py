"""lora_checkpoint through Dagster: Pipes subprocess (accelerate launch), metadata, GPU tags."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd
import pytest

from identity_pipeline.assets.gpu import GPU_OP_TAGS, GPU_POOL
from identity_pipeline.assets.lora_checkpoint import (
    build_trainer_config,
    launch_command,
    lora_checkpoint,
)
from identity_pipeline.assets.pipes import ProcessGroupPipesClient
from identity_pipeline.dataset.version import manifest_version, snapshot_manifest
from identity_pipeline.resources import SettingsResource, StorageResource
from identity_pipeline.settings import build_config
from identity_pipeline.storage import DATA_DIR_ENV, DataLayout
from identity_pipeline.training.__main__ import main as trainer_main
from identity_pipeline.training.config import LaunchConfig, TrainingConfig
from identity_pipeline.training.runs import RunLock, lock_holder
from identity_pipeline.training.tiny_models import save_tiny_model
from identity_pipeline_tests.training_fixtures import write_manifest, write_training_set

REPO_ROOT = Path(__file__).resolve().parents[1]


def _materialize(layout: DataLayout, instance: dg.DagsterInstance, config: dict[str, Any]):
    return dg.materialize(
        [lora_checkpoint],
        instance=instance,
        resources={
            "storage": StorageResource(),
            "settings": SettingsResource(),
            "pipes_subprocess_client": ProcessGroupPipesClient(),
        },
        run_config={"ops": {"lora_checkpoint": {"config": config}}},
        raise_on_error=False,
    )


def _tiny_run_config(model: Path) -> dict[str, Any]:
    """Run config of the training settings' schema (nested like pipeline.yaml's section)."""
    return {
        "model": {"source": str(model), "family": "qwen-image"},
        "max_steps": 4,
        "lora": {"rank": 4, "alpha": 4.0},
        "optimizer": {"learning_rate": 1e-3},
        "mixed_precision": "no",
        "gradient_checkpointing": False,
        "checkpoint": {"every_steps": 2},
        "samples": {"num_inference_steps": 2, "seeds": [0]},
        "data": {"max_text_tokens": 32},
        "log_every_steps": 2,
        "export_dtype": "float32",
        "cpu_threads": 1,
    }


def _settings(**values: Any) -> TrainingConfig:
    return build_config(TrainingConfig, values, ("training",))


@pytest.mark.slow
def test_lora_checkpoint_trains_through_pipes_and_reports_metadata(
    layout: DataLayout, instance: dg.DagsterInstance, tmp_path: Path
) -> None:
    # The training_set table where the IO manager keeps it, paths relative to the data root.
    table_dir = layout.asset_dir("training_set")
    frame = write_training_set(layout.root / "training_files", count=4)
    frame["image_path"] = "training_files/" + frame["image_path"]
    frame["mask_path"] = "training_files/" + frame["mask_path"]
    write_manifest(frame, table_dir / "table.parquet")
    model = save_tiny_model("qwen-image", tmp_path / "tiny-qwen-image")

    result = _materialize(layout, instance, _tiny_run_config(model))
    assert result.success
    materialization = result.asset_materializations_for_node("lora_checkpoint")[0]
    metadata = materialization.metadata
    assert metadata["steps"].value == 4
    assert metadata["final_loss"].value > 0
    assert Path(metadata["lora_path"].value).is_file()
    assert Path(metadata["comfyui_lora_path"].value).is_file()
    assert Path(metadata["config_path"].value).is_file()
    assert metadata["loss_curve"].value.startswith("![loss curve](data:image/jpeg;base64,")
    assert metadata["samples"].value.startswith("![samples](data:image/jpeg;base64,")
    # The effective settings (run config over pipeline.yaml) are recorded beside the results.
    assert metadata["settings"].value["lora"]["rank"] == 4
    assert len(metadata["settings_hash"].value) == 16
    # Outputs live in the storage root, in a run folder keyed by config + training set.
    runs = layout.asset_dir("lora_checkpoint") / "runs"
    assert Path(metadata["lora_path"].value).is_relative_to(runs)
    # The run keeps the exact training set it trained on, every file's hash beside it.
    run_dir = Path(metadata["run_dir"].value)
    snapshot = pd.read_parquet(metadata["training_manifest"].value)
    assert Path(metadata["training_manifest"].value) == run_dir / "training_set.parquet"
    assert list(snapshot["sample_id"]) == sorted(frame["sample_id"])
    image = layout.root / snapshot["image_path"].iloc[0]
    assert snapshot["image_sha256"].iloc[0] == hashlib.sha256(image.read_bytes()).hexdigest()
    assert metadata["training_data_version"].value == manifest_version(snapshot)
    assert TrainingConfig.load(run_dir / "training_config.yaml").data.manifest == str(
        run_dir / "training_set.parquet"
    )
    assert lock_holder(run_dir) is None, "the trainer let go of its run folder"

    # Step metrics streamed into the run's logs through Pipes.
    messages = [
        event.user_message
        for event in instance.all_logs(result.run_id)
        if event.user_message and "step " in event.user_message
    ]
    assert any("loss=" in message for message in messages)

    # Same config, same training set: the second materialization resumes at the end.
    # (Launched without accelerate this time: the plain `python -m` fallback.)
    second = {**_tiny_run_config(model), "launch": {"use_accelerate": False}}
    again = _materialize(layout, instance, second)
    assert again.success
    metadata = again.asset_materializations_for_node("lora_checkpoint")[0].metadata
    assert metadata["resumed_from_step"].value == 4


def test_missing_training_set_fails_clearly(
    layout: DataLayout, instance: dg.DagsterInstance, tmp_path: Path
) -> None:
    result = _materialize(layout, instance, {"model": {"source": str(tmp_path)}})
    assert not result.success
    failure = [event for event in result.all_events if event.is_step_failure][0]
    assert "training_set has not been materialized" in failure.step_failure_data.error.message


def test_gpu_declaration() -> None:
    spec = lora_checkpoint.get_asset_spec(dg.AssetKey("lora_checkpoint"))
    assert spec.deps and spec.deps[0].asset_key == dg.AssetKey("training_set")
    node = lora_checkpoint.node_def
    assert node.pool == GPU_POOL
    assert node.tags["dagster-celery/queue"] == "gpu"
    limits = GPU_OP_TAGS["dagster-k8s/config"]["container_config"]["resources"]["limits"]
    assert limits == {"nvidia.com/gpu": "1"}
    assert "dagster-k8s/config" in node.tags


def test_launch_command_and_run_folder(layout: DataLayout, tmp_path: Path) -> None:
    config = _settings(model={"source": "some/model"}, lora={"rank": 8})
    accelerate = launch_command(tmp_path / "cfg.yaml", config.launch, "bf16")
    assert accelerate[:3] == [sys.executable, "-m", "accelerate.commands.launch"]
    assert accelerate[-4:] == [
        "-m",
        "identity_pipeline.training",
        "--config",
        str(tmp_path / "cfg.yaml"),
    ]
    plain = launch_command(tmp_path / "cfg.yaml", LaunchConfig(use_accelerate=False), "bf16")
    assert plain == [
        sys.executable,
        "-m",
        "identity_pipeline.training",
        "--config",
        str(tmp_path / "cfg.yaml"),
    ]

    trainer = build_trainer_config(config, layout, "v1")
    assert trainer.lora.rank == 8 and trainer.model.source == "some/model"
    # The trainer reads the run folder's copy of the training set, not the live table.
    assert trainer.data.manifest == str(Path(trainer.output_dir) / "training_set.parquet")
    same = build_trainer_config(
        _settings(model={"source": "some/model"}, lora={"rank": 8}), layout, "v1"
    )
    other = build_trainer_config(
        _settings(model={"source": "some/model"}, lora={"rank": 4}), layout, "v1"
    )
    new_data = build_trainer_config(
        _settings(model={"source": "some/model"}, lora={"rank": 8}), layout, "v2"
    )
    assert same.output_dir == trainer.output_dir != other.output_dir
    assert new_data.output_dir not in (trainer.output_dir, other.output_dir)
    overridden = build_trainer_config(
        _settings(timesteps={"t_min": 0.1}, lora={"dropout": 0.05}), layout, "v1"
    )
    assert overridden.timesteps.t_min == 0.1 and overridden.lora.dropout == 0.05
    assert overridden.lora.rank == 16  # untouched fields keep the defaults
    # How the trainer is launched, and when, is not part of what it trains: same run folder.
    relaunched = _settings(
        model={"source": "some/model"}, lora={"rank": 8}, launch={"use_accelerate": False}
    )
    assert build_trainer_config(relaunched, layout, "v1").output_dir == trainer.output_dir
    # The paths the asset sets for every run cannot be set in the settings.
    with pytest.raises(ValueError, match="training.data.manifest is set by lora_checkpoint"):
        build_trainer_config(_settings(data={"manifest": "elsewhere.parquet"}), layout, "v1")


# ----------------------------------------------------------------------------------------------
# What is wrong is said at once, in one sentence, before any trainer starts


def _write_live_training_set(layout: DataLayout, frame: pd.DataFrame) -> None:
    """The training_set table where the IO manager keeps it, paths relative to the data root."""
    frame = frame.copy()
    for column in ("image_path", "mask_path"):
        frame[column] = "training_files/" + frame[column]
    write_manifest(frame, layout.asset_dir("training_set") / "table.parquet")


def _failure_message(result: dg.ExecuteInProcessResult) -> str:
    assert not result.success
    failure = [event for event in result.all_events if event.is_step_failure][0]
    return failure.step_failure_data.error.message


@pytest.fixture(scope="module")
def tiny_qwen_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_model("qwen-image", tmp_path_factory.mktemp("models") / "tiny-qwen-image")


@pytest.mark.parametrize(
    ("case", "sentence"),
    [
        ("nobody_named", "name people first: make label"),
        ("all_held_out", "Every sample of the training set is held out"),
        ("no_model", "The base model path"),
        ("not_a_model", "is not a diffusers model folder"),
    ],
)
def test_nothing_to_train_on_fails_at_once_with_one_sentence(
    case: str, sentence: str, layout: DataLayout, instance: dg.DagsterInstance, tmp_path: Path
) -> None:
    frame = write_training_set(layout.root / "training_files", count=2)
    model = tmp_path / "model"
    model.mkdir()
    (model / "model_index.json").write_text("{}")
    if case == "nobody_named":  # a new album: identity_masks had no named person, no rows
        frame = frame.iloc[0:0]
    elif case == "all_held_out":
        frame["split"] = "holdout"
    elif case == "no_model":
        model = tmp_path / "no" / "such" / "model"
    elif case == "not_a_model":
        (model / "model_index.json").unlink()
    _write_live_training_set(layout, frame)
    started = time.perf_counter()
    result = _materialize(layout, instance, {"model": {"source": str(model)}})
    message = _failure_message(result)
    assert sentence in message
    assert "Traceback" not in message and "[trainer]" not in message
    assert time.perf_counter() - started < 30
    runs = layout.asset_dir("lora_checkpoint") / "runs"
    assert not list(runs.glob("*/launch_config.yaml")), "no trainer was launched"


def test_a_second_trainer_in_the_same_run_folder_is_refused(
    layout: DataLayout, instance: dg.DagsterInstance, tiny_qwen_model: Path, capfd
) -> None:
    frame = write_training_set(layout.root / "training_files", count=2)
    _write_live_training_set(layout, frame)
    live = pd.read_parquet(layout.table_path("training_set"))
    settings = _settings(**{**_tiny_run_config(tiny_qwen_model), "cpu_threads": 1})
    version = manifest_version(snapshot_manifest(live, layout.root))
    run_dir = Path(build_trainer_config(settings, layout, version).output_dir)

    with RunLock(run_dir):  # a trainer already at work in that folder
        holder = lock_holder(run_dir)
        assert holder is not None and holder["pid"] == os.getpid()
        message = _failure_message(
            _materialize(layout, instance, _tiny_run_config(tiny_qwen_model))
        )
        assert f"Another trainer is already training in {run_dir} (pid {os.getpid()}" in message
        assert not (run_dir / "launch_config.yaml").exists()
        # The trainer itself refuses too (started by hand, or racing the step's check): the
        # sentence and exit status 2, no trace.
        config = build_trainer_config(settings, layout, version)
        config.data.manifest = str(layout.table_path("training_set"))
        config_path = config.save(run_dir.parent / "by_hand.yaml")
        assert trainer_main(["--config", str(config_path)]) == 2
        err = capfd.readouterr().err
        assert "Another trainer is already training in" in err and "Traceback" not in err
    assert lock_holder(run_dir) is None


# ----------------------------------------------------------------------------------------------
# Stopping the step stops the trainer


def lora_step_child() -> None:
    """Entry point of the child process: materialize lora_checkpoint (a long training)."""
    spec = json.loads(os.environ["LORA_STEP_SPEC"])
    with dg.DagsterInstance.get() as instance:
        result = _materialize(DataLayout(Path(os.environ[DATA_DIR_ENV])), instance, spec)
    sys.exit(0 if result.success else 3)


def _trainer_processes(run_dir: Path) -> list[int]:
    """Live processes whose command line names this run's launch config (launcher + trainer)."""
    marker = str(run_dir / "launch_config.yaml").encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if marker in (entry / "cmdline").read_bytes():
                state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
                if state != "Z":
                    found.append(int(entry.name))
        except OSError:
            continue
    return found


@pytest.mark.parametrize(
    ("how", "signum"),
    [("terminated", signal.SIGINT), ("killed", signal.SIGKILL)],
)
def test_stopping_the_step_stops_the_trainer(
    how: str, signum: int, layout: DataLayout, tmp_path: Path, tiny_qwen_model: Path
) -> None:
    """Terminating the run (the step is interrupted: what the UI's Terminate does) or kill -9
    of the step process: no trainer process is left, and its run folder is free again."""
    frame = write_training_set(layout.root / "training_files", count=2)
    _write_live_training_set(layout, frame)
    spec = {**_tiny_run_config(tiny_qwen_model), "max_steps": 100000}
    if how == "killed":  # no launcher in between: the trainer's own watchdog is what acts
        spec["launch"] = {"use_accelerate": False}
    live = pd.read_parquet(layout.table_path("training_set"))
    version = manifest_version(snapshot_manifest(live, layout.root))
    run_dir = Path(build_trainer_config(_settings(**spec), layout, version).output_dir)
    home = tmp_path / "dagster_home"
    home.mkdir()
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from identity_pipeline_tests.test_lora_asset import lora_step_child; "
            "lora_step_child()",
        ],
        cwd=REPO_ROOT,
        env={
            **os.environ,
            "PYTHONPATH": str(REPO_ROOT),
            "DAGSTER_HOME": str(home),
            "LORA_STEP_SPEC": json.dumps(spec),
        },
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 240
        while lock_holder(run_dir) is None:  # the trainer holds its folder once it runs
            assert child.poll() is None, child.stdout.read().decode()[-3000:]
            assert time.monotonic() < deadline, "the trainer never started"
            time.sleep(0.2)
        trainers = _trainer_processes(run_dir)
        assert trainers, "no trainer process found"
        os.kill(child.pid, signum)
        # An exiting process leaves /proc's command line before it closes its files, so the
        # lock is waited for too.
        deadline = time.monotonic() + 60
        while (_trainer_processes(run_dir) or lock_holder(run_dir) is not None) and (
            time.monotonic() < deadline
        ):
            time.sleep(0.2)
        left = _trainer_processes(run_dir)
        assert not left, f"trainer processes left after the step was {how}: {left}"
        assert lock_holder(run_dir) is None
        child.wait(timeout=60)
        log = child.stdout.read().decode()
        if how == "terminated":
            assert "stopping the trainer's process group" in log
    finally:
        for pid in [child.pid, *_trainer_processes(run_dir)]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        child.wait(timeout=30)
