"""A photo arrives in an album that is already done: what re-runs, what is reused, what waits.

The demo album is materialized once per module (as ``make demo`` does); each test works on its
own copy. Sensors and automation conditions are evaluated in process, the way the daemon does it
(``dg.evaluate_automation_conditions``, one tick at a time, each tick's requests launched as one
run per partition), so what is requested, in which order and how often is exact:

* one new photo re-runs the album's assets and the all-album assets once each, in order, and
  recomputes only the new photo's tiles and faces (the caches serve the rest);
* training is not launched by it: ``lora_checkpoint`` shows as stale (what the UI calls
  "unsynced") until it is launched, or, with ``training.launch.cron`` in pipeline.yaml, until the next
  tick of that schedule.

``benchmarks/rerun.py`` times the same +1-photo re-run against the full run.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
import yaml
from PIL import Image

from identity_pipeline.definitions import build_definitions
from identity_pipeline.resources import StorageResource
from identity_pipeline.sensors import album_sensor
from identity_pipeline.storage import DATA_DIR_ENV, DataLayout
from identity_pipeline_tests.conftest import REPO_ROOT

DEMO = "demo"
NEW_PHOTO = "2013-01 obama mirrored.jpg"
SOURCE_PHOTO = "2012-12 obama portrait.jpg"
LORA = dg.AssetKey("lora_checkpoint")
FIDELITY = dg.AssetKey("identity_fidelity")
# What one new photo in the demo album re-runs, tick after tick, and nothing else.
RERUN_TICKS = [
    {("photo_tiles", DEMO), ("face_embeddings", DEMO)},
    {("face_clusters", None), ("labeled_identities", None)},
    {("identity_masks", DEMO)},
    {("training_set", None)},
]

AssetPartition = tuple[str, str | None]


# --- helpers (benchmarks/rerun.py uses them too) ---------------------------------------------


@dataclass
class DemoState:
    """A storage root with the demo album and a Dagster home, everything materialized."""

    root: Path  # holds data/, dagster_home/, models/

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def home(self) -> Path:
        return self.root / "dagster_home"

    @property
    def layout(self) -> DataLayout:
        return DataLayout(self.data)

    def instance(self) -> dg.DagsterInstance:
        return dg.DagsterInstance.from_config(str(self.home))

    def copy_to(self, target: Path) -> DemoState:
        shutil.copytree(self.root, target, symlinks=True)
        return DemoState(target)


def prepare_demo_state(root: Path) -> DemoState:
    """The repo's demo album and CPU settings, with a tiny model built under ``root``."""

    state = DemoState(root)
    shutil.copytree(REPO_ROOT / "data" / "albums" / DEMO, state.layout.album_dir(DEMO))
    shutil.copy(REPO_ROOT / "data" / "demo_people.csv", state.data / "demo_people.csv")
    use_demo_settings(state)
    return state


def use_demo_settings(state: DemoState) -> None:
    """The CPU demo's settings with a tiny model built under the root, and a Dagster home."""
    from identity_pipeline.training.tiny_models import save_tiny_model

    settings = yaml.safe_load((REPO_ROOT / "data" / "pipeline.yaml").read_text())
    model = save_tiny_model("qwen-image", state.root / "models" / "tiny-qwen-image", 0)
    settings["training"]["model"]["source"] = str(model)
    state.data.mkdir(parents=True, exist_ok=True)
    (state.data / "pipeline.yaml").write_text(yaml.safe_dump(settings))
    state.home.mkdir(parents=True)
    shutil.copyfile(REPO_ROOT / "dagster.yaml", state.home / "dagster.yaml")


def materialize_demo(state: DemoState, on_run: Callable | None = None) -> None:
    """Everything, as ``make demo`` does it (the demo names its people before the names)."""
    from identity_pipeline.asset_names import LABELED_IDENTITIES
    from identity_pipeline.demo import seed_demo_labels
    from identity_pipeline.runner import materialize_all

    names = dg.AssetKey(LABELED_IDENTITIES)

    def before_stage(stage) -> None:
        if names in stage.asset_keys:
            seed_demo_labels(state.layout)

    defs = build_definitions(str(state.data))
    with state.instance() as instance:
        runs = materialize_all(
            defs,
            instance,
            [DEMO],
            on_run=on_run,
            before_stage=before_stage,
            split_before=[names],
        )
    assert all(run.success for run in runs)


def add_photo(state: DemoState) -> Path:
    """A new photo of a known person (a mirrored portrait: new bytes, new face)."""
    album = state.layout.album_dir(DEMO)
    target = album / NEW_PHOTO
    with Image.open(album / SOURCE_PHOTO) as image:
        image.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(target, quality=90)
    return target


def tick_album_sensor(
    instance: dg.DagsterInstance, data: Path, cursor: str | None
) -> dg.SensorResult:
    context = dg.build_sensor_context(
        instance=instance, cursor=cursor, resources={"storage": StorageResource(data_dir=str(data))}
    )
    return album_sensor(context)


def run_request(
    defs: dg.Definitions, instance: dg.DagsterInstance, request: dg.RunRequest
) -> dg.ExecuteInProcessResult:
    """Launch a sensor's run request in process, as the daemon would launch it."""
    return dg.materialize(
        list(defs.assets or []),
        selection=list(request.asset_selection or []),
        partition_key=request.partition_key,
        instance=instance,
        resources=dict(defs.resources or {}),
        tags=dict(request.tags),
    )


def requested(defs: dg.Definitions, result) -> set[AssetPartition]:
    return {
        (key.to_user_string(), partition)
        for key in defs.resolve_asset_graph().get_all_asset_keys()
        for partition in result.get_requested_partitions(key)
    }


def run_automation_until_quiet(
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    cursor,
    evaluation_times: Iterator[datetime] | None = None,
    max_ticks: int = 12,
    on_run: Callable[[set[AssetPartition], float], None] | None = None,
):
    """Evaluate the automation conditions like the daemon's ticks, launching each tick's
    requests (one run per partition key, like its run requests) before the next tick, until a
    tick requests nothing. Returns (requests per tick, cursor)."""
    import time

    ticks: list[set[AssetPartition]] = []
    for _ in range(max_ticks):
        result = dg.evaluate_automation_conditions(
            defs=defs,
            instance=instance,
            cursor=cursor,
            evaluation_time=next(evaluation_times) if evaluation_times else None,
        )
        cursor = result.cursor
        wanted = requested(defs, result)
        if not wanted:
            return ticks, cursor
        ticks.append(wanted)
        for partition in sorted({p for _, p in wanted}, key=lambda p: p or ""):
            selection = sorted(asset for asset, p in wanted if p == partition)
            started = time.perf_counter()
            outcome = dg.materialize(
                list(defs.assets or []),
                selection=selection,
                partition_key=partition,
                instance=instance,
                resources=dict(defs.resources or {}),
                tags={"identity_pipeline/launched_by": "test automation tick"},
            )
            assert outcome.success, selection
            if on_run:
                on_run({(asset, partition) for asset in selection}, time.perf_counter() - started)
    raise AssertionError(f"automation still requesting after {max_ticks} ticks: {ticks[-3:]}")


def latest_metadata(
    instance: dg.DagsterInstance, asset: str, partition: str | None = None
) -> dict[str, object]:
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(
            asset_key=dg.AssetKey(asset), asset_partitions=[partition] if partition else None
        ),
        limit=1,
    ).records
    assert records, f"{asset}[{partition}] was never materialized"
    return {k: v.value for k, v in records[0].asset_materialization.metadata.items()}


STALE_QUERY = """
query Stale($key: AssetKeyInput!) {
  assetNodeOrError(assetKey: $key) {
    ... on AssetNode {
      staleStatus
      staleCauses { key { path } reason }
    }
  }
}
"""


@contextlib.contextmanager
def ui_api(instance: dg.DagsterInstance, data: Path) -> Iterator[Callable]:
    """The GraphQL API the UI reads (its code location served out of process, as under
    ``dagster dev``): yields ``stale(asset) -> (status, [(asset, reason), ...])``, the
    ``staleStatus`` and ``staleCauses`` the UI shows as "Unsynced" and why."""
    from dagster_graphql.test.utils import (
        define_out_of_process_workspace,
        execute_dagster_graphql,
    )

    previous = os.environ.get(DATA_DIR_ENV)
    os.environ[DATA_DIR_ENV] = str(data)  # the code server is started with this environment
    try:
        with define_out_of_process_workspace(
            str(REPO_ROOT / "workspace.yaml"), None, instance
        ) as workspace:

            def stale(asset: str) -> tuple[str, list[tuple[str, str]]]:
                context = workspace.create_request_context()  # one per request, as the server
                result = execute_dagster_graphql(context, STALE_QUERY, {"key": {"path": [asset]}})
                assert not result.errors, result.errors
                node = result.data["assetNodeOrError"]
                causes = [("/".join(c["key"]["path"]), c["reason"]) for c in node["staleCauses"]]
                return node["staleStatus"], causes

            yield stale
    finally:
        if previous is None:
            os.environ.pop(DATA_DIR_ENV, None)
        else:
            os.environ[DATA_DIR_ENV] = previous


# --- fixtures -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def materialized_demo(tmp_path_factory: pytest.TempPathFactory) -> DemoState:
    state = prepare_demo_state(tmp_path_factory.mktemp("demo") / "state")
    materialize_demo(state)
    return state


@pytest.fixture
def demo(materialized_demo: DemoState, tmp_path: Path) -> DemoState:
    return materialized_demo.copy_to(tmp_path / "state")


# --- tests ----------------------------------------------------------------------------------


@pytest.mark.slow
def test_one_new_photo_reruns_each_asset_once_from_the_caches(demo: DemoState) -> None:
    defs = build_definitions(str(demo.data), training_cron=None)
    graph = defs.resolve_asset_graph()
    assert graph.get(LORA).automation_condition is None, "default: training only when launched"
    tiles_before = pd.read_parquet(demo.layout.table_path("photo_tiles", DEMO))
    photos_before = pd.read_parquet(demo.layout.table_path("raw_photos", DEMO))

    with demo.instance() as instance, ui_api(instance, demo.data) as stale:
        assert stale("lora_checkpoint") == ("FRESH", [])
        masks_before = latest_metadata(instance, "identity_masks", DEMO)
        quiet = dg.evaluate_automation_conditions(defs=defs, instance=instance)
        assert requested(defs, quiet) == set(), "nothing to do after the demo"
        # The sensor has been watching: it knows the album as it was.
        seen = tick_album_sensor(instance, demo.data, None)
        assert tick_album_sensor(instance, demo.data, seen.cursor).run_requests == []

        add_photo(demo)
        changed = tick_album_sensor(instance, demo.data, seen.cursor)
        assert [(r.partition_key, r.asset_selection) for r in changed.run_requests] == [
            (DEMO, [dg.AssetKey("raw_photos")])
        ]
        assert not changed.dynamic_partitions_requests
        assert run_request(defs, instance, changed.run_requests[0]).success

        ticks, cursor = run_automation_until_quiet(defs, instance, quiet.cursor)
        assert ticks == RERUN_TICKS  # each once, in order; never lora_checkpoint or fidelity

        # Only the new photo was split, detected and embedded.
        tiles_after = pd.read_parquet(demo.layout.table_path("photo_tiles", DEMO))
        new_tiles = tiles_after[tiles_after["source_path"] == NEW_PHOTO]
        assert len(new_tiles) == 1
        assert len(tiles_after) == len(tiles_before) + 1
        tiles = latest_metadata(instance, "photo_tiles", DEMO)
        assert tiles["photos_split"] == 1
        assert tiles["photos_reused_from_cache"] == len(photos_before)
        faces = latest_metadata(instance, "face_embeddings", DEMO)
        assert (faces["cache_hits"], faces["cache_misses"]) == (len(tiles_before), 1)
        masks = latest_metadata(instance, "identity_masks", DEMO)
        assert (masks["tiles_built"], masks["tiles_reused_from_cache"]) == (
            1,
            masks_before["tiles_built"] + masks_before["tiles_reused_from_cache"],
        ), "only the new photo's tile needs new masks"
        embeddings = pd.read_parquet(demo.layout.table_path("face_embeddings", DEMO))
        new_face_ids = embeddings.loc[embeddings["tile_id"].isin(new_tiles["tile_id"]), "face_id"]
        identities = pd.read_parquet(demo.layout.table_path("labeled_identities"))
        new_faces = identities[identities["face_id"].isin(new_face_ids)]
        assert list(new_faces["identity"]) == ["Barack Obama"], "the name reached the new face"

        # Training waits, and says so: stale because training_set changed (its data version:
        # the new photo's person is named, so its rows did change).
        assert stale("lora_checkpoint") == (
            "STALE",
            [("training_set", "has a new data version")],
        )
        again = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=cursor)
        assert requested(defs, again) == set()

        # Launched (Materialize in the UI): fresh again, and its evaluation follows.
        assert dg.materialize(
            list(defs.assets or []),
            selection=[LORA],
            instance=instance,
            resources=dict(defs.resources or {}),
        ).success
        assert stale("lora_checkpoint") == ("FRESH", [])
        after = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=again.cursor)
        assert requested(defs, after) == {("identity_fidelity", None)}


@pytest.mark.slow
def test_scheduled_training_runs_only_at_its_cron_tick_when_the_training_set_changed(
    demo: DemoState,
) -> None:
    defs = build_definitions(str(demo.data), training_cron="0 3 * * *")
    assert defs.resolve_asset_graph().get(LORA).automation_condition is not None
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).replace(
        hour=0, minute=0, second=0, microsecond=0
    )

    def at(day: int, hour: int, minute: int, second: int = 0) -> datetime:
        return tomorrow + timedelta(days=day, hours=hour, minutes=minute, seconds=second)

    def tick(when: datetime, cursor):
        result = dg.evaluate_automation_conditions(
            defs=defs, instance=instance, cursor=cursor, evaluation_time=when
        )
        return requested(defs, result), result.cursor

    with demo.instance() as instance, ui_api(instance, demo.data) as stale:
        wanted, cursor = tick(at(0, 0, 0), None)
        assert wanted == set()
        wanted, cursor = tick(at(0, 3, 0, 30), cursor)
        assert wanted == set(), "a tick with nothing new does nothing"

        # The training set changes (a photo came in and went through): no training yet.
        add_photo(demo)
        seen = tick_album_sensor(instance, demo.data, None)
        assert run_request(defs, instance, seen.run_requests[0]).success
        times = iter(at(0, 3, 10 + minute) for minute in range(20))
        ticks, cursor = run_automation_until_quiet(defs, instance, cursor, times)
        assert ticks == RERUN_TICKS
        assert stale("lora_checkpoint")[0] == "STALE"
        wanted, cursor = tick(at(1, 2, 59), cursor)
        assert wanted == set(), "not before the tick"

        # The next tick trains, and evaluates the new LoRA in the same run.
        wanted, cursor = tick(at(1, 3, 0, 30), cursor)
        assert wanted == {("lora_checkpoint", None), ("identity_fidelity", None)}
        assert dg.materialize(
            list(defs.assets or []),
            selection=[LORA, FIDELITY],
            instance=instance,
            resources=dict(defs.resources or {}),
        ).success
        assert stale("lora_checkpoint") == ("FRESH", [])

        wanted, cursor = tick(at(1, 3, 2), cursor)
        assert wanted == set()
        wanted, cursor = tick(at(2, 3, 0, 30), cursor)
        assert wanted == set(), "nothing new since the last training: no training"


def test_training_schedule_comes_from_the_settings_file(layout: DataLayout) -> None:
    settings = layout.root / "pipeline.yaml"
    assert build_definitions().resolve_asset_graph().get(LORA).automation_condition is None

    settings.write_text(
        "training:\n  launch:\n    cron: '30 2 * * 6'\n    timezone: Europe/Berlin\n"
    )
    condition = build_definitions().resolve_asset_graph().get(LORA).automation_condition
    assert condition is not None
    assert "30 2 * * 6" in condition.get_label() and "Europe/Berlin" in condition.get_label()

    settings.write_text("training:\n  launch:\n    cron: every night\n")
    with pytest.raises(ValueError, match="training.launch.cron"):
        build_definitions()
    # A mistake elsewhere in the section is the training step's to report, not the code
    # location's: the graph still loads.
    settings.write_text("training:\n  max_step: 3\n")
    assert build_definitions().resolve_asset_graph().get(LORA).automation_condition is None


def test_sensor_interval_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from identity_pipeline.sensors import (
        DEFAULT_SENSOR_INTERVAL_SECONDS,
        SENSOR_INTERVAL_ENV,
        sensor_interval_seconds,
    )

    monkeypatch.delenv(SENSOR_INTERVAL_ENV, raising=False)
    assert sensor_interval_seconds() == DEFAULT_SENSOR_INTERVAL_SECONDS == 15
    monkeypatch.setenv(SENSOR_INTERVAL_ENV, "5")
    assert sensor_interval_seconds() == 5
    for bad in ["0", "fast"]:
        monkeypatch.setenv(SENSOR_INTERVAL_ENV, bad)
        with pytest.raises(ValueError, match=SENSOR_INTERVAL_ENV):
            sensor_interval_seconds()
