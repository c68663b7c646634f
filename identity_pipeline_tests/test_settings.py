"""pipeline.yaml: sections map onto stage configs; run config beats the file; typos fail loudly."""

from __future__ import annotations

import dagster as dg
import pytest

from identity_pipeline.assets.lora import LoraTrainingConfig
from identity_pipeline.assets.run_config import with_settings
from identity_pipeline.dataset import DatasetConfig
from identity_pipeline.resources import SettingsResource
from identity_pipeline.settings import SettingsError, load_settings, section_config
from identity_pipeline.storage import DataLayout


def test_sections_become_stage_configs_with_tuples(layout: DataLayout) -> None:
    (layout.root / "pipeline.yaml").write_text(
        "dataset:\n  target_pixels: 4096\n  exclude_identities: [Bob]\n"
    )
    config = section_config(load_settings(layout.root / "pipeline.yaml"), "dataset", DatasetConfig)
    assert config.target_pixels == 4096 and config.exclude_identities == ("Bob",)
    assert section_config({}, "dataset", DatasetConfig) == DatasetConfig()


def test_unknown_keys_and_bad_yaml_name_the_problem(layout: DataLayout) -> None:
    path = layout.root / "pipeline.yaml"
    path.write_text("dataset:\n  target_pixel: 4096\n")
    with pytest.raises(SettingsError, match=r"\[dataset\] unknown setting\(s\) target_pixel"):
        section_config(load_settings(path), "dataset", DatasetConfig)
    path.write_text("dataset: [unclosed\n")
    with pytest.raises(SettingsError, match="not valid YAML"):
        load_settings(path)


def test_run_config_beats_settings_file_beats_defaults(layout: DataLayout) -> None:
    (layout.root / "pipeline.yaml").write_text("training:\n  max_steps: 20\n  rank: 8\n")
    settings = SettingsResource()
    merged = with_settings(LoraTrainingConfig(rank=4), settings, layout, "training")
    assert (merged.max_steps, merged.rank, merged.alpha) == (20, 4, LoraTrainingConfig().alpha)
    (layout.root / "pipeline.yaml").write_text("training:\n  max_step: 20\n")
    with pytest.raises(dg.Failure, match="max_step"):
        with_settings(LoraTrainingConfig(), settings, layout, "training")
