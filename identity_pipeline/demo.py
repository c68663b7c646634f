"""`identity-pipeline demo`: materialize the whole graph for every album, then say where to look."""

import os
import shutil
import time
from pathlib import Path

import dagster as dg
import pandas as pd

from identity_pipeline.asset_names import FACE_CLUSTERS, LABELED_IDENTITIES, RAW_PHOTOS
from identity_pipeline.definitions import build_definitions
from identity_pipeline.labeling import update_labels
from identity_pipeline.photos import discover_albums
from identity_pipeline.runner import Stage, StageRun, materialize_all
from identity_pipeline.storage import DataLayout

DEFAULT_DAGSTER_HOME = ".dagster_home"
PROJECT_ROOT = Path(__file__).resolve().parents[1]
DEMO_ALBUM = "demo"
DEMO_PEOPLE_FILE = "demo_people.csv"  # beside albums/: who is in each single-person demo photo


def seed_demo_labels(layout: DataLayout) -> int:
    """Name the demo album's clusters the way a person would on the labeling page.

    Only when there is no labels file yet (your own labels are never touched) and only for the
    demo album: each cluster holding a face from a known single-person photo
    (``data/demo_people.csv``) gets that person's name for all its faces (the majority, if the
    cluster were mixed); the cameraman is marked ``ignore``. Returns the faces labelled.
    """
    people_path = layout.root / DEMO_PEOPLE_FILE
    clusters_path = layout.table_path(FACE_CLUSTERS)
    photos_path = layout.table_path(RAW_PHOTOS, DEMO_ALBUM)
    if layout.labels_path.exists() or not people_path.exists() or not clusters_path.exists():
        return 0
    if not photos_path.exists():
        return 0
    people = pd.read_csv(people_path)
    photos = pd.read_parquet(photos_path, columns=["photo_id", "path"])
    person_of_photo = photos.merge(people, on="path")[["photo_id", "person"]]
    clusters = pd.read_parquet(
        clusters_path, columns=["face_id", "cluster_id", "album", "photo_id"]
    )
    known = clusters[clusters["album"] == DEMO_ALBUM].merge(person_of_photo, on="photo_id")
    names: dict[str, str] = {}
    for cluster_id, group in known.groupby("cluster_id"):
        name = str(group["person"].mode().iat[0])
        for face_id in clusters.loc[clusters["cluster_id"] == cluster_id, "face_id"]:
            names[str(face_id)] = name
    if names:
        update_labels(layout.labels_path, set_names=names)
    return len(names)


def ensure_dagster_home() -> Path:
    """Use $DAGSTER_HOME, or a project folder with the project's dagster.yaml, so runs persist."""
    home = Path(os.environ.get("DAGSTER_HOME") or Path.cwd() / DEFAULT_DAGSTER_HOME).resolve()
    home.mkdir(parents=True, exist_ok=True)
    instance_config = home / "dagster.yaml"
    project_config = PROJECT_ROOT / "dagster.yaml"
    if not instance_config.exists() and project_config.exists():
        shutil.copyfile(project_config, instance_config)
    os.environ["DAGSTER_HOME"] = str(home)
    return home


def run_demo(data_dir: str | None = None, print_fn=print) -> list[StageRun]:
    layout = DataLayout.from_env(data_dir)
    discovery = discover_albums(layout.albums_dir)
    for name, problem in discovery.rejected.items():
        print_fn(f"skipping album folder {name!r}: {problem}")
    if not discovery.albums:
        raise SystemExit(
            f"No albums under {layout.albums_dir}: add a folder of photos there first."
        )

    home = ensure_dagster_home()
    defs = build_definitions(str(layout.root))
    print_fn(f"data root:    {layout.root}")
    print_fn(f"dagster home: {home}")
    print_fn(f"albums:       {', '.join(discovery.albums)}\n")

    started = time.perf_counter()

    def report(run: StageRun) -> None:
        keys = ", ".join(key.to_user_string() for key in run.stage.asset_keys)
        where = f"[{run.album}]" if run.album else "[all albums]"
        status = "ok" if run.success else "FAILED"
        print_fn(f"  {status:6} {keys} {where}  ({time.perf_counter() - started:.1f}s)")

    def before_stage(stage: Stage) -> None:
        if dg.AssetKey(LABELED_IDENTITIES) in stage.asset_keys:
            labelled = seed_demo_labels(layout)
            if labelled:
                print_fn(
                    f"  named {labelled} demo faces in {layout.labels_path} (as the labeling page would)"
                )

    with dg.DagsterInstance.get() as instance:
        runs = materialize_all(
            defs,
            instance,
            discovery.albums,
            on_run=report,
            raise_on_error=False,
            before_stage=before_stage,
            split_before=[dg.AssetKey(LABELED_IDENTITIES)],
            console_log_level="WARNING",  # the full event log is in the UI
        )
        print_fn("")
        print_fn(summary(instance, defs, discovery.albums))
    failed = [run for run in runs if not run.success]
    print_fn(
        f"\n{len(runs) - len(failed)}/{len(runs)} runs succeeded in {time.perf_counter() - started:.1f}s."
    )
    print_fn(
        "Look at it in the UI: `make ui`, then open http://127.0.0.1:3000 (Assets -> raw_photos)."
    )
    if failed:
        raise SystemExit(1)
    return runs


def summary(instance: dg.DagsterInstance, defs: dg.Definitions, albums: list[str]) -> str:
    """One line per asset and partition: the row count and the headline metadata of its last run."""
    lines = ["asset                 partition       rows  details"]
    graph = defs.resolve_asset_graph()
    for key in graph.toposorted_asset_keys:
        if not graph.get(key).is_materializable:
            continue
        partitions = albums if graph.get(key).is_partitioned else [None]
        for partition in partitions:
            filters = dg.AssetRecordsFilter(
                asset_key=key, asset_partitions=[partition] if partition else None
            )
            records = instance.fetch_materializations(filters, limit=1).records
            if not records:
                lines.append(
                    f"{key.to_user_string():21} {partition or '-':15} {'-':>5}  not materialized"
                )
                continue
            metadata = records[0].asset_materialization.metadata
            rows = metadata.get("dagster/row_count")
            details = ", ".join(
                f"{name}={entry.value:.4g}"
                if isinstance(entry.value, float)
                else f"{name}={entry.value}"
                for name, entry in metadata.items()
                if isinstance(entry, dg.IntMetadataValue | dg.FloatMetadataValue)
                and name not in {"dagster/row_count", "seconds"}
            )
            lines.append(
                f"{key.to_user_string():21} {partition or '-':15} {rows.value if rows else '-':>5}  {details}"
            )
    return "\n".join(lines)
