"""raw_photos through Dagster: partitions, Parquet output, metadata a person reads in the UI."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pandas as pd

from identity_pipeline.definitions import build_definitions
from identity_pipeline.runner import materialize_all
from identity_pipeline.storage import DataLayout
from identity_pipeline_tests.bad_inputs import build_bad_input_album


def _latest_metadata(instance: dg.DagsterInstance, partition: str) -> dict:
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("raw_photos"), asset_partitions=[partition]),
        limit=1,
    ).records
    return records[0].asset_materialization.metadata


def test_bad_input_album_materializes_and_reports_every_reason(
    layout: DataLayout, instance: dg.DagsterInstance, tmp_path: Path
) -> None:
    expected = build_bad_input_album(layout.album_dir("bad"), tmp_path / "outside")
    runs = materialize_all(
        build_definitions(), instance, ["bad"], selection=[dg.AssetKey("raw_photos")]
    )
    assert [run.success for run in runs] == [True]

    table = pd.read_parquet(layout.table_path("raw_photos", "bad"))
    assert set(table["path"]) == set(expected)
    ok_expected = sum(1 for e in expected.values() if e.status_prefix == "ok")
    assert int((table["status"] == "ok").sum()) == ok_expected

    metadata = _latest_metadata(instance, "bad")
    assert metadata["photos_ok"].value == ok_expected
    assert metadata["skipped"].value == len(expected) - ok_expected
    skipped_rows = metadata["skipped_files"].value.records
    assert {row.data["path"] for row in skipped_rows} == {
        p for p, e in expected.items() if e.status_prefix != "ok"
    }
    assert all(row.data["status"].startswith("skipped: ") for row in skipped_rows)
    assert metadata["contact_sheet"].value.startswith("![photos](data:image/jpeg;base64,")
    assert len(metadata["contact_sheet"].value) < 140_000  # small: it lives in the event log
    assert Path(metadata["contact_sheet_path"].value).is_file()

    check = instance.event_log_storage.get_latest_asset_check_execution_by_key(
        [dg.AssetCheckKey(dg.AssetKey("raw_photos"), "unique_photo_ids")]
    )
    assert (
        check[dg.AssetCheckKey(dg.AssetKey("raw_photos"), "unique_photo_ids")].status.value
        == "SUCCEEDED"
    )


def test_rerun_is_idempotent_and_follows_album_changes(
    layout: DataLayout, instance: dg.DagsterInstance, tmp_path: Path
) -> None:
    build_bad_input_album(layout.album_dir("bad"), tmp_path / "outside")
    defs = build_definitions()
    selection = [dg.AssetKey("raw_photos")]
    materialize_all(defs, instance, ["bad"], selection=selection)
    first = pd.read_parquet(layout.table_path("raw_photos", "bad"))
    materialize_all(defs, instance, ["bad"], selection=selection)
    second = pd.read_parquet(layout.table_path("raw_photos", "bad"))
    pd.testing.assert_frame_equal(first, second)

    (layout.album_dir("bad") / "good.jpg").unlink()
    materialize_all(defs, instance, ["bad"], selection=selection)
    third = pd.read_parquet(layout.table_path("raw_photos", "bad"))
    assert "good.jpg" not in set(third["path"])
    by_path = third.set_index("path")["status"]
    assert by_path["zz_copy_of_good.jpg"] == "ok"  # the copy is no longer a duplicate: kept
    assert by_path["link_inside.jpg"] == "skipped: broken symlink"
    leftovers = [
        p.name for p in layout.asset_dir("raw_photos", "bad").iterdir() if p.name.endswith(".tmp")
    ]
    assert leftovers == []


def test_missing_album_folder_fails_with_a_clear_message(
    layout: DataLayout, instance: dg.DagsterInstance
) -> None:
    instance.add_dynamic_partitions("albums", ["vanished"])
    result = dg.materialize(
        build_definitions().assets,
        selection=["raw_photos"],
        partition_key="vanished",
        instance=instance,
        resources=build_definitions().resources,
        raise_on_error=False,
    )
    assert not result.success
    failure = [e for e in result.all_events if e.is_step_failure][0]
    assert "does not exist" in failure.step_failure_data.error.message
