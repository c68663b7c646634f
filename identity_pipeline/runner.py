"""Materialize the whole graph from Python, in the order a person would click it in the UI.

Album-partitioned and all-album assets alternate in the graph (faces per album -> clusters over
all albums -> masks per album -> ...), so one run cannot hold everything. The graph is cut into
stages of consecutive assets with the same partitioning; partitioned stages run once per album.
Runs go through the given Dagster instance, so they show up in the UI like any other run.
"""

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

import dagster as dg

from identity_pipeline.partitions import ALBUMS_PARTITION_NAME


@dataclass(frozen=True)
class Stage:
    asset_keys: tuple[dg.AssetKey, ...]
    partitioned: bool


@dataclass(frozen=True)
class StageRun:
    stage: Stage
    album: str | None
    run_id: str
    success: bool


def plan_stages(
    defs: dg.Definitions,
    selection: Sequence[dg.AssetKey] | None = None,
    split_before: Collection[dg.AssetKey] = (),
) -> list[Stage]:
    """Consecutive runs of topologically sorted assets that share their partitioning; a new
    stage also starts at each key of ``split_before``."""
    graph = defs.resolve_asset_graph()
    wanted = set(selection) if selection is not None else None
    stages: list[Stage] = []
    current: list[dg.AssetKey] = []
    current_partitioned: bool | None = None
    for key in graph.toposorted_asset_keys:
        node = graph.get(key)
        if not node.is_materializable or (wanted is not None and key not in wanted):
            continue
        partitioned = node.is_partitioned
        if current and (partitioned != current_partitioned or key in split_before):
            stages.append(Stage(tuple(current), bool(current_partitioned)))
            current = []
        current.append(key)
        current_partitioned = partitioned
    if current:
        stages.append(Stage(tuple(current), bool(current_partitioned)))
    return stages


def materialize_all(
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    albums: Sequence[str],
    selection: Sequence[dg.AssetKey] | None = None,
    on_run: Callable[[StageRun], None] | None = None,
    raise_on_error: bool = True,
    before_stage: Callable[[Stage], None] | None = None,
    split_before: Collection[dg.AssetKey] = (),
    console_log_level: str = "DEBUG",
) -> list[StageRun]:
    """Register ``albums`` as partitions and materialize every stage, in process.

    ``before_stage`` runs before each stage (the demo names faces there, as a person would).
    """
    existing = set(instance.get_dynamic_partitions(ALBUMS_PARTITION_NAME))
    missing = [album for album in albums if album not in existing]
    if missing:
        instance.add_dynamic_partitions(ALBUMS_PARTITION_NAME, missing)
    assets = list(defs.assets or [])
    resources = dict(defs.resources or {})
    runs: list[StageRun] = []
    for stage in plan_stages(defs, selection, split_before):
        if before_stage:
            before_stage(stage)
        for album in albums if stage.partitioned else [None]:
            result = dg.materialize(
                assets,
                selection=list(stage.asset_keys),
                partition_key=album,
                instance=instance,
                resources=resources,
                raise_on_error=raise_on_error,
                run_config={"loggers": {"console": {"config": {"log_level": console_log_level}}}},
                tags={"identity_pipeline/launched_by": "runner"},
            )
            run = StageRun(stage, album, result.run_id, result.success)
            runs.append(run)
            if on_run:
                on_run(run)
    return runs
