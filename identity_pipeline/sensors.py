"""Sensors: new album folders become partitions; changed albums are re-run; the rest follows.

The album sensor only starts ``raw_photos``; downstream assets follow through their automation
conditions, evaluated by the automation sensor below (both start RUNNING: Dagster's implicit
automation sensor is stopped by default).
"""

import json
import os

import dagster as dg

from identity_pipeline.asset_names import FACE_CLUSTERS, LABELED_IDENTITIES, PHOTO_TILES, RAW_PHOTOS
from identity_pipeline.partitions import ALBUMS_PARTITION_NAME, albums_partitions
from identity_pipeline.photos import AlbumFingerprint, album_fingerprints, discover_albums
from identity_pipeline.resources import StorageResource
from identity_pipeline.storage import content_id

SENSOR_INTERVAL_ENV = "IDENTITY_PIPELINE_SENSOR_INTERVAL_SECONDS"
DEFAULT_SENSOR_INTERVAL_SECONDS = 15


def sensor_interval_seconds() -> int:
    """Seconds between ticks of the pipeline's sensors (automation included): 15, or
    ``$IDENTITY_PIPELINE_SENSOR_INTERVAL_SECONDS`` when the code location loads (tests lower it).
    Dagster's daemons loop every ~5 s, so smaller values change nothing."""
    value = os.environ.get(SENSOR_INTERVAL_ENV, "").strip()
    if not value:
        return DEFAULT_SENSOR_INTERVAL_SECONDS
    try:
        seconds = int(value)
    except ValueError as error:
        raise ValueError(
            f"${SENSOR_INTERVAL_ENV} must be a whole number of seconds, got {value!r}"
        ) from error
    if seconds < 1:
        raise ValueError(f"${SENSOR_INTERVAL_ENV} must be at least 1, got {seconds}")
    return seconds


ALBUM_SENSOR_INTERVAL_SECONDS = sensor_interval_seconds()
FINGERPRINT_TAG = "identity_pipeline/album_fingerprint"


def decode_cursor(cursor: str | None) -> dict[str, str]:
    """The cursor maps album -> fingerprint; an unreadable cursor starts over (one re-run each)."""
    if not cursor:
        return {}
    try:
        loaded = json.loads(cursor)
    except json.JSONDecodeError:
        return {}
    if not isinstance(loaded, dict):
        return {}
    return {str(k): str(v) for k, v in loaded.items()}


@dg.sensor(
    name="album_sensor",
    asset_selection=dg.AssetSelection.assets(RAW_PHOTOS, PHOTO_TILES, FACE_CLUSTERS),
    minimum_interval_seconds=ALBUM_SENSOR_INTERVAL_SECONDS,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "Watches data/albums/: adds a partition per new album folder and re-runs raw_photos for "
        "an album whose photos changed (names, sizes or modification times); when only its "
        "split hints file changed, photo_tiles alone re-runs for it. An album folder "
        "that is gone (deleted or renamed) loses its partition, and face_clusters re-runs so its "
        "faces leave the clusters and the training set; its files under data/assets/ stay."
    ),
)
def album_sensor(context: dg.SensorEvaluationContext, storage: StorageResource) -> dg.SensorResult:
    layout = storage.layout
    discovery = discover_albums(layout.albums_dir)
    for name, problem in discovery.rejected.items():
        context.log.warning(f"album folder {name!r} skipped: {problem}")

    known = decode_cursor(context.cursor)
    existing = set(context.instance.get_dynamic_partitions(ALBUMS_PARTITION_NAME))
    fingerprints: dict[str, str] = {}
    run_requests: list[dg.RunRequest] = []
    for album in discovery.albums:
        try:
            fingerprint = album_fingerprints(layout.album_dir(album))
        except OSError as error:  # a folder vanishing mid-scan must not stop the other albums
            context.log.warning(f"album {album!r} could not be listed: {error}")
            continue
        fingerprints[album] = str(fingerprint)
        before = AlbumFingerprint.parse(known.get(album))
        if before is None or before.photos != fingerprint.photos or album not in existing:
            # photo_tiles follows, reading the hints as they are.
            selection = [dg.AssetKey(RAW_PHOTOS)]
        elif before.sidecars != fingerprint.sidecars:
            # Only the hints changed (the cuts review page saved one): raw_photos would find the
            # same photos; photo_tiles re-cuts the hinted photos and reuses every other split.
            selection = [dg.AssetKey(PHOTO_TILES)]
        else:
            continue
        run_requests.append(
            dg.RunRequest(
                run_key=f"{album}:{fingerprint}",
                partition_key=album,
                asset_selection=selection,
                tags={FINGERPRINT_TAG: str(fingerprint)},
            )
        )

    # Album folders that are gone (deleted, or renamed: the new name is a new album) lose their
    # partition, so the all-album assets stop reading their last tables. Never when the albums
    # folder itself is missing (an unmounted drive is not a deletion), and nothing on disk is
    # deleted: putting the folder back restores the partition, and its tiles, faces and masks
    # are reused from the outputs kept under data/assets/.
    gone = sorted(existing - set(discovery.albums)) if layout.albums_dir.is_dir() else []
    for album in gone:
        context.log.warning(
            f"album {album!r} is gone from {layout.albums_dir}: its partition is removed (its "
            "outputs stay under data/assets/ and are reused if the folder comes back)"
        )
    if gone and fingerprints:  # its faces leave the clusters, the names and the training set
        state = content_id(sorted(fingerprints.items()), gone)
        run_requests.append(
            dg.RunRequest(
                run_key=f"albums-removed:{state}", asset_selection=[dg.AssetKey(FACE_CLUSTERS)]
            )
        )

    new_albums = [album for album in fingerprints if album not in existing]
    partition_requests = [albums_partitions.build_add_request(new_albums)] if new_albums else []
    if gone:
        partition_requests.append(albums_partitions.build_delete_request(gone))
    return dg.SensorResult(
        run_requests=run_requests,
        dynamic_partitions_requests=partition_requests,
        cursor=json.dumps(fingerprints, sort_keys=True),
    )


automation_sensor = dg.AutomationConditionSensorDefinition(
    name="pipeline_automation",
    target=dg.AssetSelection.all(),
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=ALBUM_SENSOR_INTERVAL_SECONDS,
    description="Materializes downstream assets when their inputs change (automation conditions).",
)


@dg.sensor(
    name="labels_sensor",
    # face_clusters reads the names too: named faces keep their group, and unnamed faces join
    # a named person when confidently close, so a new name can move other faces to that person.
    asset_selection=dg.AssetSelection.assets(FACE_CLUSTERS, LABELED_IDENTITIES),
    minimum_interval_seconds=ALBUM_SENSOR_INTERVAL_SECONDS,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Re-runs face_clusters and labeled_identities when data/labels.csv changes (the "
    "labeling page writes it); masks, training set and the rest follow through automation.",
)
def labels_sensor(context: dg.SensorEvaluationContext, storage: StorageResource) -> dg.SensorResult:
    path = storage.layout.labels_path
    try:
        stat = path.stat()
        fingerprint = f"{stat.st_size}:{stat.st_mtime_ns}"
    except FileNotFoundError:
        fingerprint = "absent"
    if context.cursor is None or context.cursor == fingerprint:
        # First tick: remember the file; both assets already ran with the albums' runs.
        return dg.SensorResult(cursor=fingerprint)
    return dg.SensorResult(
        run_requests=[dg.RunRequest(run_key=f"labels:{fingerprint}")], cursor=fingerprint
    )
