"""lora_checkpoint through Dagster: Pipes subprocess (accelerate launch), metadata, GPU tags."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from identity_pipeline.assets.gpu import GPU_OP_TAGS, GPU_POOL
from identity_pipeline.assets.lora_checkpoint import (
    build_trainer_config,
    launch_command,
    lora_checkpoint,
)
from identity_pipeline.resources import SettingsResource, StorageResource
from identity_pipeline.settings import build_config
from identity_pipeline.storage import DataLayout
from identity_pipeline.training.config import LaunchConfig, TrainingConfig
from identity_pipeline.training.tiny_models import save_tiny_model
from identity_pipeline_tests.training_fixtures import write_manifest, write_training_set


def _materialize(layout: DataLayout, instance: dg.DagsterInstance, config: dict[str, Any]):
    return dg.materialize(
        [lora_checkpoint],
        instance=instance,
        resources={
            "storage": StorageResource(),
            "settings": SettingsResource(),
            "pipes_subprocess_client": dg.PipesSubprocessClient(),
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

    trainer = build_trainer_config(config, layout)
    assert trainer.lora.rank == 8 and trainer.model.source == "some/model"
    assert trainer.data.manifest == str(layout.table_path("training_set"))
    same = build_trainer_config(_settings(model={"source": "some/model"}, lora={"rank": 8}), layout)
    other = build_trainer_config(
        _settings(model={"source": "some/model"}, lora={"rank": 4}), layout
    )
    assert same.output_dir == trainer.output_dir != other.output_dir
    overridden = build_trainer_config(
        _settings(timesteps={"t_min": 0.1}, lora={"dropout": 0.05}), layout
    )
    assert overridden.timesteps.t_min == 0.1 and overridden.lora.dropout == 0.05
    assert overridden.lora.rank == 16  # untouched fields keep the defaults
    # How the trainer is launched, and when, is not part of what it trains: same run folder.
    relaunched = _settings(
        model={"source": "some/model"}, lora={"rank": 8}, launch={"use_accelerate": False}
    )
    assert build_trainer_config(relaunched, layout).output_dir == trainer.output_dir
    # The paths the asset sets for every run cannot be set in the settings.
    with pytest.raises(ValueError, match="training.data.manifest is set by lora_checkpoint"):
        build_trainer_config(_settings(data={"manifest": "elsewhere.parquet"}), layout)
