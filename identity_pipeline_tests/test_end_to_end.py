"""The whole graph, materialized on the bundled demo album, through the demo command itself."""

from __future__ import annotations

import shutil
import tomllib
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
import yaml
from safetensors import safe_open

from identity_pipeline.demo import run_demo
from identity_pipeline.storage import DataLayout
from identity_pipeline.training.tiny_models import save_tiny_model
from identity_pipeline_tests.conftest import REPO_ROOT
from identity_pipeline_tests.consumer_schemas import musubi_items, sd_scripts_items

DEMO_DATA = REPO_ROOT / "data"
EXPECTED_PEOPLE = {"Barack Obama", "Joe Biden", "Eileen Collins", "Grace Hopper"}


@pytest.fixture
def demo_root(layout: DataLayout, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> DataLayout:
    """A copy of the repo's demo data with the tiny model built in the test's own folder."""
    shutil.copytree(DEMO_DATA / "albums" / "demo", layout.album_dir("demo"))
    shutil.copy(DEMO_DATA / "demo_people.csv", layout.root / "demo_people.csv")
    settings = yaml.safe_load((DEMO_DATA / "pipeline.yaml").read_text())
    model = save_tiny_model("qwen-image", tmp_path / "models" / "tiny-qwen-image", 0)
    settings["training"]["model"]["source"] = str(model)
    (layout.root / "pipeline.yaml").write_text(yaml.safe_dump(settings))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    return layout


@pytest.mark.slow
def test_demo_materializes_the_whole_graph(demo_root: DataLayout) -> None:
    runs = run_demo(str(demo_root.root), print_fn=lambda *_: None)
    assert runs and all(run.success for run in runs)

    with dg.DagsterInstance.get() as instance:
        for key in ["raw_photos", "photo_tiles", "face_embeddings", "identity_masks"]:
            records = instance.fetch_materializations(
                dg.AssetRecordsFilter(asset_key=dg.AssetKey(key), asset_partitions=["demo"]),
                limit=1,
            ).records
            assert records, f"{key}[demo] was not materialized"
        for key in [
            "face_clusters",
            "labeled_identities",
            "training_set",
            "lora_checkpoint",
            "identity_fidelity",
        ]:
            assert instance.fetch_materializations(dg.AssetKey(key), limit=1).records, key
        checks = instance.event_log_storage.get_latest_asset_check_execution_by_key(
            [
                dg.AssetCheckKey(dg.AssetKey("photo_tiles"), "tiles_inside_photo_and_disjoint"),
                dg.AssetCheckKey(dg.AssetKey("face_clusters"), "no_two_faces_of_one_tile"),
                dg.AssetCheckKey(dg.AssetKey("identity_masks"), "no_empty_kept_mask"),
                dg.AssetCheckKey(dg.AssetKey("identity_masks"), "other_faces_blurred"),
                dg.AssetCheckKey(dg.AssetKey("training_set"), "holdout_never_trained"),
            ]
        )
        assert {key.name: record.status.value for key, record in checks.items()} == {
            key.name: "SUCCEEDED" for key in checks
        }

    photos = pd.read_parquet(demo_root.table_path("raw_photos", "demo"))
    assert (photos["status"] == "ok").all()
    tiles = pd.read_parquet(demo_root.table_path("photo_tiles", "demo"))
    kinds = tiles.groupby("source_path")["layout_kind"].first()
    assert kinds["collages/grid 2x2 white gutters.jpg"] == "grid 2x2"
    assert kinds["collages/borderless 1x3.jpg"] == "grid 1x3"
    identities = pd.read_parquet(demo_root.table_path("labeled_identities"))
    assert set(identities["identity"].dropna()) == EXPECTED_PEOPLE
    manifest = pd.read_parquet(demo_root.table_path("training_set"))
    assert set(manifest["identity"]) == EXPECTED_PEOPLE
    assert set(manifest["caption"]) >= {"A group photo of Joe Biden and other people"}
    for path in manifest["image_path"]:
        assert (demo_root.root / path).is_file()
    loras = list(
        demo_root.asset_dir("lora_checkpoint").glob("runs/*/lora/pytorch_lora_weights.safetensors")
    )
    assert len(loras) == 1
    with safe_open(str(loras[0].with_name("lora_comfyui.safetensors")), "pt") as handle:
        lora_metadata = handle.metadata()
    assert lora_metadata["ss_network_module"] == "networks.lora_qwen_image"
    assert float(lora_metadata["ss_network_alpha"]) != float(lora_metadata["ss_network_dim"])

    # The demo's export, read as sd-scripts (masked loss) and musubi-tuner read it.
    kohya = demo_root.asset_dir("training_set") / "export" / "kohya"
    train_captions = sorted(manifest.loc[manifest["split"] == "train", "caption"])
    masked = tomllib.loads((kohya / "sd_scripts_masked_dataset.toml").read_text("utf-8"))
    items = sd_scripts_items(masked, masked_loss=True)
    assert sorted(item["caption"] for item in items) == train_captions
    assert all(item["mask"] for item in items)
    musubi = tomllib.loads((kohya / "musubi_dataset.toml").read_text("utf-8"))
    assert sorted(item["caption"] for item in musubi_items(musubi)) == train_captions


def test_demo_labels_never_overwrite_a_persons_labels(demo_root: DataLayout) -> None:
    from identity_pipeline.demo import seed_demo_labels

    demo_root.labels_path.write_text("face_id,name\n")
    assert seed_demo_labels(demo_root) == 0
    assert demo_root.labels_path.read_text() == "face_id,name\n"
