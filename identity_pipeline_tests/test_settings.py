"""pipeline.yaml: one section per stage dataclass; run config beats the file; typos fail loudly,
naming the line."""

from __future__ import annotations

import dataclasses

import dagster as dg
import pytest

from identity_pipeline.assets.settings import run_config_class, stage_settings
from identity_pipeline.cli import main
from identity_pipeline.dataset import DatasetConfig
from identity_pipeline.resources import SettingsResource
from identity_pipeline.settings import (
    SECTIONS,
    SettingsError,
    build_config,
    effective_settings,
    load_settings,
    section_type,
)
from identity_pipeline.storage import DataLayout
from identity_pipeline.training.config import TrainingConfig


def test_sections_become_stage_configs_with_tuples(layout: DataLayout) -> None:
    (layout.root / "pipeline.yaml").write_text(
        "dataset:\n  target_pixels: 4096\n  exclude_identities: [Bob]\n"
    )
    config = load_settings(layout.root / "pipeline.yaml").section("dataset", DatasetConfig)
    assert config.target_pixels == 4096 and config.exclude_identities == ("Bob",)
    assert load_settings(layout.root / "absent.yaml").section("dataset") == DatasetConfig()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("dataset:\n  target_pixel: 4096\n", r"line 2: unknown key\(s\) 'target_pixel' in dataset"),
        ("dataset:\n  target_pixels: many\n", r"line 2: dataset.target_pixels: must be a whole"),
        ("dataset:\n  max_upscale: yes\n", r"line 2: dataset.max_upscale: must be a number"),
        ("dataset:\n  crop_centre: body\n", r"line 2: dataset.crop_centre: must be one of"),
        ("masks:\n  pose_runtime: tflite\n", r"line 2: masks.pose_runtime: must be one of"),
        ("dataset:\n\n  max_repeats: 0\n", r"line 1: dataset: invalid DatasetConfig"),
        ("training:\n  lora:\n    rnak: 4\n", r"line 3: unknown key\(s\) 'rnak' in training.lora"),
        (
            "training:\n  base_model: x/y\n",
            r"line 2: unknown key\(s\) 'base_model' in training \(base_model is now model.source\)",
        ),
        ("fidelity:\n  seeds: 3\n", r"line 2: fidelity.seeds: must be a list"),
    ],
)
def test_bad_values_name_the_line_and_the_key(layout: DataLayout, text: str, message: str) -> None:
    path = layout.root / "pipeline.yaml"
    path.write_text(text)
    section = text.split(":")[0]
    with pytest.raises(SettingsError, match=message):
        load_settings(path).section(section)


def test_bad_files_are_refused_with_the_line(layout: DataLayout) -> None:
    path = layout.root / "pipeline.yaml"
    path.write_text("dataset: [unclosed\n")
    with pytest.raises(SettingsError, match="not valid YAML"):
        load_settings(path)
    path.write_text("dataset: {}\ntrainig:\n  max_steps: 3\n")
    with pytest.raises(SettingsError, match=r"line 2: unknown section 'trainig'"):
        load_settings(path)


def test_run_config_beats_settings_file_beats_defaults(layout: DataLayout) -> None:
    (layout.root / "pipeline.yaml").write_text(
        "training:\n  max_steps: 20\n  lora: {rank: 8, alpha: 8}\n"
    )
    settings = SettingsResource()
    RunConfig = run_config_class(TrainingConfig)
    run_config = RunConfig(lora={"rank": 4})
    merged = stage_settings(settings, layout, "training", run_config)
    assert (merged.max_steps, merged.lora.rank, merged.lora.alpha) == (20, 4, 8.0)
    assert merged.optimizer == TrainingConfig().optimizer
    # Dagster checks the types; a value the stage refuses is named as the run config's.
    with pytest.raises(dg.Failure, match="run config: training.mixed_precision: must be one of"):
        stage_settings(settings, layout, "training", RunConfig(mixed_precision="fp64"))
    (layout.root / "pipeline.yaml").write_text("training:\n  max_step: 20\n")
    with pytest.raises(dg.Failure, match="max_step"):
        stage_settings(settings, layout, "training", RunConfig())


@pytest.mark.parametrize("section", list(SECTIONS))
def test_every_section_has_a_run_config_of_the_same_schema(section: str) -> None:
    config_type = section_type(section)
    run_config = run_config_class(config_type)
    names = {field.name for field in dataclasses.fields(config_type) if field.init}
    assert set(run_config.model_fields) == names
    # Nothing set in the launchpad overrides nothing.
    assert run_config().model_dump(exclude_none=True) == {}


def test_settings_round_trip_through_plain_values() -> None:
    config = build_config(TrainingConfig, {"lora": {"rank": 4}, "optimizer": {"betas": [0.8, 0.9]}})
    assert config.optimizer.betas == (0.8, 0.9)
    assert build_config(TrainingConfig, config.to_dict()) == config


def test_settings_command_prints_every_section(
    layout: DataLayout, capsys: pytest.CaptureFixture[str]
) -> None:
    (layout.root / "pipeline.yaml").write_text("faces:\n  min_face_px: 30\n")
    assert main(["settings"]) == 0
    printed = capsys.readouterr().out
    assert "min_face_px: 30.0" in printed
    assert all(f"\n{section}:" in printed for section in SECTIONS)
    effective = effective_settings(load_settings(layout.root / "pipeline.yaml"))
    assert effective["faces"]["min_face_px"] == 30.0 and effective["clustering"]["min_quality"]
    (layout.root / "pipeline.yaml").write_text("faces:\n  min_face_px: big\n")
    assert main(["settings"]) == 2
    assert "line 2: faces.min_face_px: must be a number" in capsys.readouterr().err


def test_the_shipped_settings_file_is_valid_for_every_section(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from identity_pipeline_tests.conftest import REPO_ROOT

    shipped = REPO_ROOT / "data" / "pipeline.yaml"
    assert main(["settings", "--settings", str(shipped)]) == 0
    assert "source: models/tiny-qwen-image" in capsys.readouterr().out
