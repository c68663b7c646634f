"""Dagster on PostgreSQL: the demo album goes through the album sensor and the automation
conditions on an instance configured by ``deploy/postgres/dagster.yaml``, and its runs, events
and partitions are rows of a real Postgres server (Debian's, started by the test on 127.0.0.1);
the UI (``dagster-webserver``, what ``make ui-postgres`` serves) shows them from there.

The sensor and the automation are evaluated in this process, one tick at a time, each request
launched as the daemon launches it (see test_reruns.py), so the test stays short; the daemon's
own process is not started here.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import psycopg2
import pytest

from identity_pipeline import local_services
from identity_pipeline.definitions import build_definitions
from identity_pipeline.partitions import ALBUMS_PARTITION_NAME
from identity_pipeline.storage import DATA_DIR_ENV, DataLayout
from identity_pipeline_tests.conftest import REPO_ROOT
from identity_pipeline_tests.deployment import (
    DEMO,
    POSTGRES_INSTANCE_YAML,
    dagster_home,
    demo_storage_root,
    environment,
    name_single_person_photos,
    service_folder,
    services_or_skip,
)
from identity_pipeline_tests.test_reruns import (
    run_automation_until_quiet,
    run_request,
    tick_album_sensor,
)

pytestmark = pytest.mark.slow
services_or_skip("postgres")

# What the sensor and automation materialize for a new album, before anyone trains.
CPU_ASSETS = {
    ("raw_photos", DEMO),
    ("photo_tiles", DEMO),
    ("face_embeddings", DEMO),
    ("face_clusters", None),
    ("labeled_identities", None),
    ("identity_masks", DEMO),
    ("training_set", None),
}


@dataclass
class DemoOnPostgres:
    server: local_services.PostgresServer
    home: Path
    layout: DataLayout
    run_ids: list[str]


@pytest.fixture(scope="module")
def demo_on_postgres(tmp_path_factory: pytest.TempPathFactory):
    base = tmp_path_factory.mktemp("postgres")
    with (
        service_folder("pg") as folder,
        local_services.postgres_server(folder / "cluster") as server,
        pytest.MonkeyPatch.context() as patch,
    ):
        for name, value in server.env().items():
            patch.setenv(name, value)
        home = dagster_home(base / "dagster_home", POSTGRES_INSTANCE_YAML)
        layout = demo_storage_root(base / "data")
        patch.setenv(DATA_DIR_ENV, str(layout.root))
        patch.delenv("IDENTITY_PIPELINE_TRAINING_CRON", raising=False)
        defs = build_definitions(str(layout.root))
        run_ids: list[str] = []
        with dg.DagsterInstance.from_config(str(home)) as instance:
            # The automation sensor ticks all along: before the album, it has nothing to do.
            before, cursor = run_automation_until_quiet(defs, instance, None)
            assert before == []
            # The album sensor's first tick: a new partition and a raw_photos run for it.
            tick = tick_album_sensor(instance, layout.root, None)
            for request in tick.dynamic_partitions_requests:
                instance.add_dynamic_partitions(
                    request.partitions_def_name, list(request.partition_keys)
                )
            (request,) = tick.run_requests
            run_ids.append(run_request(defs, instance, request).run_id)

            def name_faces(materialized: set, _seconds: float) -> None:
                if ("face_embeddings", DEMO) in materialized:
                    name_single_person_photos(layout)  # as a person on the labeling page

            ticks, _ = run_automation_until_quiet(defs, instance, cursor, on_run=name_faces)
            run_ids = [record.dagster_run.run_id for record in instance.get_run_records()]
        assert {("raw_photos", DEMO)}.union(*ticks) == CPU_ASSETS
        yield DemoOnPostgres(server, home, layout, run_ids)


def _query(server: local_services.PostgresServer, sql: str, *args) -> list[tuple]:
    with psycopg2.connect(server.url) as connection, connection.cursor() as cursor:
        cursor.execute(sql, args)
        return cursor.fetchall()


def test_runs_events_and_partitions_are_rows_in_postgres(demo_on_postgres: DemoOnPostgres) -> None:
    server, home = demo_on_postgres.server, demo_on_postgres.home
    with dg.DagsterInstance.from_config(str(home)) as instance:
        storage = type(instance.run_storage).__module__
        assert storage.startswith("dagster_postgres"), storage
        assert type(instance.event_log_storage).__module__.startswith("dagster_postgres")
        assert type(instance.schedule_storage).__module__.startswith("dagster_postgres")

    # One sensor run, then one run per automation tick and partition: 1 + 4 (tiles+faces,
    # clusters+labels, masks, training set).
    runs = _query(server, "SELECT run_id, status FROM runs")
    assert sorted(runs) == sorted((run_id, "SUCCESS") for run_id in demo_on_postgres.run_ids)
    assert len(runs) == 5

    materialized = _query(
        server,
        "SELECT asset_key, partition, count(*) FROM event_logs "
        "WHERE dagster_event_type = 'ASSET_MATERIALIZATION' GROUP BY asset_key, partition",
    )
    got = {(json.loads(key)[0], partition): count for key, partition, count in materialized}
    assert got == dict.fromkeys(CPU_ASSETS, 1)
    step_events = _query(
        server,
        "SELECT count(*) FROM event_logs WHERE dagster_event_type = 'STEP_SUCCESS' "
        "AND run_id = ANY(%s)",
        demo_on_postgres.run_ids,
    )
    assert step_events == [(len(CPU_ASSETS),)]

    partitions = _query(
        server,
        "SELECT partition FROM dynamic_partitions WHERE partitions_def_name = %s",
        ALBUMS_PARTITION_NAME,
    )
    assert partitions == [(DEMO,)]
    # Nothing went to SQLite on the side: the Dagster home holds no database file.
    assert not [path for path in home.rglob("*.db")]


def _graphql(port: int, query: str) -> dict:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql",
        data=json.dumps({"query": query}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        payload = json.loads(response.read())
    assert not payload.get("errors"), payload["errors"]
    return payload["data"]


UI_QUERY = """
{
  runsOrError { ... on Runs { results { runId status } } }
  assetOrError(assetKey: {path: ["identity_masks"]}) {
    ... on Asset { assetMaterializations(partitions: ["demo"]) { runId partition } }
  }
}
"""


def test_the_ui_serves_the_runs_from_postgres(
    demo_on_postgres: DemoOnPostgres, tmp_path: Path
) -> None:
    """``make ui-postgres``'s webserver, from another process that knows only the environment."""
    port = local_services.free_port()
    env = environment(
        DAGSTER_HOME=str(demo_on_postgres.home),
        **{DATA_DIR_ENV: str(demo_on_postgres.layout.root)},
        **demo_on_postgres.server.env(),
    )
    log = tmp_path / "webserver.log"
    command = [
        str(Path(sys.executable).parent / "dagster-webserver"),
        *("-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)),
    ]
    with open(log, "w") as output:
        server = subprocess.Popen(
            command, cwd=REPO_ROOT, env=env, stdout=output, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                data = _graphql(port, UI_QUERY)
                break
            except (urllib.error.URLError, ConnectionError):
                assert server.poll() is None, log.read_text()[-3000:]
                assert time.monotonic() < deadline, log.read_text()[-3000:]
                time.sleep(0.5)
    finally:
        server.terminate()
        server.wait(timeout=30)
    runs = {run["runId"]: run["status"] for run in data["runsOrError"]["results"]}
    assert runs == dict.fromkeys(demo_on_postgres.run_ids, "SUCCESS")
    (masks,) = data["assetOrError"]["assetMaterializations"]
    assert masks["partition"] == DEMO and masks["runId"] in runs
