"""The Dagster UI end to end, the way a person uses it, in a real (headless) browser.

``dagster dev`` runs as a subprocess (its own process group) against a throw-away
``DAGSTER_HOME`` and storage root. A new album folder is dropped in; the album sensor adds the
partition and the automation sensor materializes everything downstream, watched through the
GraphQL API the UI itself uses: every asset runs once, training never. Then Chromium opens the
asset graph (lineage: every asset node and edge) and asset pages (metadata: counts, a contact
sheet rendered from its Markdown), and launches one partition of ``face_embeddings`` with the
Materialize button; that run is served from the face cache, and the assets downstream of it
follow once each. Finally the servers are stopped with SIGINT to the process group, and no
process of theirs may be left.

Screenshots go to ``test-artifacts/ui_*.png`` (gitignored).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from identity_pipeline_tests.conftest import CHROMIUM, CHROMIUM_ARGS, REPO_ROOT

ARTIFACTS = REPO_ROOT / "test-artifacts"
DEMO_ALBUM = REPO_ROOT / "data" / "albums" / "demo"
ALBUM = "summer-trip"
# (file in the demo album, where it goes in the new album): three photos and a 2x2 collage.
PHOTOS = [
    ("2012-12 obama portrait.jpg", "obama.jpg"),
    ("2010-05 biden blue room.jpg", "biden.jpg"),
    ("group obama biden.jpg", "group.jpg"),
    ("collages/grid 2x2 white gutters.jpg", "collages/grid.jpg"),
]
ALBUM_ASSETS = ["raw_photos", "photo_tiles", "face_embeddings", "identity_masks"]
GLOBAL_ASSETS = ["face_clusters", "labeled_identities", "training_set"]
ALL_ASSETS = [
    "raw_photos",
    "photo_tiles",
    "face_embeddings",
    "face_clusters",
    "labeled_identities",
    "identity_masks",
    "training_set",
    "lora_checkpoint",
    "identity_fidelity",
]
EDGES = 11  # the arrows of the graph in README.md
SENSOR_SECONDS = 5  # Dagster's daemons loop every 5 s; the sensors' default is 15
STARTUP_TIMEOUT = 120
PIPELINE_TIMEOUT = 300
RUN_TIMEOUT = 180
SHUTDOWN_TIMEOUT = 60

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium"
    ),
    pytest.mark.skipif(
        importlib.util.find_spec("playwright") is None,
        reason="needs the playwright Python package",
    ),
]

MATERIALIZATION_QUERY = """
query LatestMaterialization($key: AssetKeyInput!, $partitions: [String!]) {
  assetOrError(assetKey: $key) {
    __typename
    ... on Asset {
      assetMaterializations(partitions: $partitions, limit: 1) {
        runId
        partition
        metadataEntries {
          label
          ... on IntMetadataEntry { intValue }
          ... on MarkdownMetadataEntry { mdStr }
        }
      }
    }
  }
}
"""

RUNS_QUERY = """
query Runs($filter: RunsFilter) {
  runsOrError(filter: $filter, limit: 200) {
    __typename
    ... on Runs {
      results {
        runId
        status
        assetSelection { path }
        tags { key value }
      }
    }
  }
}
"""


# --- the server -----------------------------------------------------------------------------


@dataclass
class DagsterDev:
    process: subprocess.Popen
    port: int
    home: Path
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_tail(self, chars: int = 6000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def graphql(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        body = json.dumps({"query": query, "variables": variables or {}}).encode()
        request = urllib.request.Request(
            self.url + "/graphql", data=body, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            answer = json.load(response)
        assert not answer.get("errors"), answer["errors"]
        return answer["data"]

    def partitions(self) -> list[str]:
        data = self.graphql(
            '{ assetNodeOrError(assetKey: {path: ["raw_photos"]}) '
            "{ ... on AssetNode { partitionKeys } } }"
        )
        return data["assetNodeOrError"].get("partitionKeys") or []

    def materialization(self, asset: str, partition: str | None) -> dict[str, Any] | None:
        data = self.graphql(
            MATERIALIZATION_QUERY,
            {"key": {"path": [asset]}, "partitions": [partition] if partition else None},
        )
        found = data["assetOrError"].get("assetMaterializations") or []
        return found[0] if found else None

    def runs(self, **run_filter: Any) -> list[dict[str, Any]]:
        data = self.graphql(RUNS_QUERY, {"filter": run_filter})
        return data["runsOrError"]["results"]

    def active_runs(self) -> list[dict[str, Any]]:
        return self.runs(statuses=["QUEUED", "NOT_STARTED", "STARTING", "STARTED", "CANCELING"])

    def runs_per_asset(self) -> dict[str, int]:
        """How many runs selected each asset (automation, sensors and clicks alike)."""
        counts: dict[str, int] = {}
        for run in self.runs():
            for key in run["assetSelection"] or []:
                name = "/".join(key["path"])
                counts[name] = counts.get(name, 0) + 1
        return counts


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _sigint_default() -> None:
    # pytest itself may run with SIGINT ignored (a background job of a non-interactive shell);
    # an ignored signal stays ignored across exec, and Python would then never see Ctrl-C.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_dagster_dev(home: Path, data_root: Path, log_path: Path) -> DagsterDev:
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "IDENTITY_PIPELINE_DATA_DIR": str(data_root),
        "IDENTITY_PIPELINE_SENSOR_INTERVAL_SECONDS": str(SENSOR_SECONDS),
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("IDENTITY_PIPELINE_SETTINGS", None)
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "dagster",
        "dev",
        "-w",
        str(REPO_ROOT / "workspace.yaml"),
        "-h",
        "127.0.0.1",
        "-p",
        str(port),
    ]
    log = log_path.open("wb")
    try:
        process = subprocess.Popen(
            command,
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group (and session): one SIGINT for all
            preexec_fn=_sigint_default,
        )
    finally:
        log.close()
    return DagsterDev(process, port, home, log_path)


def wait_for(
    what: str, check: Callable[[], Any], timeout: float, server: DagsterDev, every: float = 2.0
) -> Any:
    """Poll ``check`` until it returns something truthy; fail with the server's log tail."""
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            pytest.fail(
                f"dagster dev exited ({server.process.returncode}) while waiting for {what}:\n"
                + server.log_tail()
            )
        try:
            result = check()
        except (urllib.error.URLError, ConnectionError, TimeoutError) as error:
            result, last_error = None, error
        if result:
            return result
        time.sleep(every)
    pytest.fail(
        f"timed out after {timeout:.0f}s waiting for {what} (last error: {last_error}):\n"
        + server.log_tail()
    )


def wait_until_loaded(server: DagsterDev) -> None:
    query = (
        "{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus "
        "locationOrLoadError { __typename ... on PythonError { message } } } } } }"
    )

    def loaded() -> bool:
        entries = server.graphql(query)["workspaceOrError"]["locationEntries"]
        for entry in entries:
            located = entry["locationOrLoadError"] or {}
            if located.get("__typename") == "PythonError":
                pytest.fail(f"code location failed to load: {located['message']}")
        return bool(entries) and all(entry["loadStatus"] == "LOADED" for entry in entries)

    wait_for("the code location to load", loaded, STARTUP_TIMEOUT, server)


# --- processes ------------------------------------------------------------------------------


def processes_of(home: Path, pgid: int) -> dict[int, str]:
    """Live processes in the server's process group, or carrying its DAGSTER_HOME in their
    environment (one that left the group would still be found), with their command lines."""
    marker = f"DAGSTER_HOME={home}".encode()
    found: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            stat = (entry / "stat").read_text()
            fields = stat[stat.rindex(")") + 2 :].split()
            state, group = fields[0], int(fields[2])
            if state in {"Z", "X"}:
                continue  # exited; only the zombie entry is left for its parent to reap
            environ = (entry / "environ").read_bytes().split(b"\0")
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, ValueError):
            continue  # gone meanwhile, or not ours to read
        if group == pgid or marker in environ:
            found[int(entry.name)] = command.strip()
    return found


@contextlib.contextmanager
def dagster_dev(tmp_path: Path, data_root: Path) -> Iterator[DagsterDev]:
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copyfile(REPO_ROOT / "dagster.yaml", home / "dagster.yaml")
    server = start_dagster_dev(home, data_root, tmp_path / "dagster_dev.log")
    pgid = server.process.pid  # start_new_session: the leader's pid is the group id
    try:
        yield server
    finally:
        # The test stops the server itself and checks; this only cleans up after a failure.
        if server.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
            server.process.wait(timeout=30)
        for pid in processes_of(home, pgid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def stop_and_check_nothing_left(server: DagsterDev) -> float:
    """SIGINT to the whole process group (Ctrl-C in a terminal); returns seconds to exit."""
    pgid = server.process.pid
    assert processes_of(server.home, pgid), "the servers should be running before the stop"
    started = time.monotonic()
    os.killpg(pgid, signal.SIGINT)
    try:
        server.process.wait(timeout=SHUTDOWN_TIMEOUT)
    except subprocess.TimeoutExpired:
        pytest.fail(f"dagster dev ignored SIGINT for {SHUTDOWN_TIMEOUT}s:\n" + server.log_tail())
    seconds = time.monotonic() - started
    deadline = time.monotonic() + 30
    left = processes_of(server.home, pgid)
    while left and time.monotonic() < deadline:
        time.sleep(1)
        left = processes_of(server.home, pgid)
    assert not left, f"processes left after SIGINT: {left}\n" + server.log_tail()
    return seconds


# --- the data -------------------------------------------------------------------------------


@pytest.fixture
def data_root(tmp_path: Path) -> Path:
    """An empty storage root whose pipeline.yaml trains a tiny model built here."""
    from identity_pipeline.training.tiny_models import save_tiny_model

    root = tmp_path / "data"
    (root / "albums").mkdir(parents=True)
    settings = yaml.safe_load((REPO_ROOT / "data" / "pipeline.yaml").read_text())
    model = save_tiny_model("qwen-image", tmp_path / "models" / "tiny-qwen-image", 0)
    settings["training"]["model"]["source"] = str(model)
    (root / "pipeline.yaml").write_text(yaml.safe_dump(settings))
    return root


def drop_album(albums_dir: Path) -> None:
    """Copy a few demo photos in the way a file manager would: prepared, then moved in."""
    staging = albums_dir / ".incoming"  # hidden: the album sensor skips it
    for source, target in PHOTOS:
        destination = staging / target
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(DEMO_ALBUM / source, destination)
    staging.rename(albums_dir / ALBUM)


def metadata(record: dict[str, Any]) -> dict[str, Any]:
    return {
        entry["label"]: entry.get("intValue", entry.get("mdStr"))
        for entry in record["metadataEntries"]
    }


# --- the test -------------------------------------------------------------------------------


def test_new_album_in_the_ui_end_to_end(tmp_path: Path, data_root: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    timings: dict[str, float] = {}
    started = time.monotonic()
    with dagster_dev(tmp_path, data_root) as server:
        wait_until_loaded(server)
        timings["server ready"] = time.monotonic() - started

        # A person drops an album folder in; no click needed from here on.
        dropped = time.monotonic()
        drop_album(data_root / "albums")
        wait_for(
            f"album_sensor to add the partition {ALBUM!r}",
            lambda: ALBUM in server.partitions(),
            60 + 3 * SENSOR_SECONDS,
            server,
        )
        timings["partition added"] = time.monotonic() - dropped

        wanted = [(asset, ALBUM) for asset in ALBUM_ASSETS] + [(a, None) for a in GLOBAL_ASSETS]

        def everything_materialized() -> bool:
            failed = server.runs(statuses=["FAILURE", "CANCELED"])
            assert not failed, f"runs failed: {failed}\n" + server.log_tail()
            return all(server.materialization(asset, part) for asset, part in wanted)

        wait_for(
            "the automation to materialize the album's assets",
            everything_materialized,
            PIPELINE_TIMEOUT,
            server,
            every=3.0,
        )
        timings["album materialized"] = time.monotonic() - dropped

        wait_for("the automation to settle", lambda: not server.active_runs(), 60, server)
        # Each asset ran exactly once (masks waited for the names, training_set for the masks),
        # and training was not started by the new photos.
        assert server.runs_per_asset() == {asset: 1 for asset in ALBUM_ASSETS + GLOBAL_ASSETS}
        assert server.materialization("lora_checkpoint", None) is None

        photos = metadata(server.materialization("raw_photos", ALBUM))
        assert photos["files"] == photos["photos_ok"] == len(PHOTOS)
        tiles = metadata(server.materialization("photo_tiles", ALBUM))
        assert tiles["collages"] == 1 and tiles["tiles"] > len(PHOTOS)  # the grid was cut
        faces = metadata(server.materialization("face_embeddings", ALBUM))
        assert faces["faces"] > 0 and faces["cache_misses"] == tiles["tiles"]

        browsing = time.monotonic()
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1600, "height": 1000})
                page.set_default_timeout(30_000)

                # Lineage: the global asset graph, groups expanded, every node and edge.
                page.goto(server.url + "/asset-groups")
                dismiss_community_modal(page)
                expect(page.get_by_text("Global asset lineage")).to_be_visible()
                expect(page.get_by_text("photos", exact=True).last).to_be_visible()
                page.keyboard.press("Alt+e")  # "Expand all groups" (the graph's settings menu)
                for asset in ALL_ASSETS:
                    expect(page.get_by_text(asset, exact=True).last).to_be_visible()
                edges = page.locator("svg path[marker-end]")
                expect(edges).to_have_count(EDGES)
                page.screenshot(path=str(ARTIFACTS / "ui_asset_graph.png"))

                # raw_photos[album]: counts, and the contact sheet behind [Show Markdown].
                page.goto(f"{server.url}/assets/raw_photos?view=partitions&partition={ALBUM}")
                expect(page.get_by_text("Latest materialization")).to_be_visible()
                expect_metadata_row(page, "photos_ok", str(len(PHOTOS)))
                expect_metadata_row(page, "skipped", "0")
                page.screenshot(path=str(ARTIFACTS / "ui_raw_photos_metadata.png"), full_page=True)
                show_image(page, "contact_sheet", "photos", ARTIFACTS / "ui_raw_photos.png")

                # face_embeddings[album]: counts and the face crops.
                page.goto(f"{server.url}/assets/face_embeddings?view=partitions&partition={ALBUM}")
                expect(page.get_by_text("Latest materialization")).to_be_visible()
                expect_metadata_row(page, "faces", str(faces["faces"]))
                expect_metadata_row(page, "cache_misses", str(tiles["tiles"]))
                show_image(page, "face_crops", "faces", ARTIFACTS / "ui_face_embeddings.png")

                # Materialize this one partition from its page: the dialog, "Launch 1 run".
                before = {run["runId"] for run in server.runs()}
                page.get_by_role("button", name="Materialize…").click()
                dialog = page.get_by_role("dialog")
                expect(
                    dialog.get_by_text("Launch runs to materialize face_embeddings")
                ).to_be_visible()
                expect(dialog.get_by_text(ALBUM, exact=True).first).to_be_visible()
                launch = dialog.get_by_role("button", name="Launch 1 run")
                settle_animations(page)
                page.screenshot(path=str(ARTIFACTS / "ui_materialize_dialog.png"))
                launch.click()
                expect(dialog).to_have_count(0)

                def new_run() -> dict[str, Any] | None:
                    runs = server.runs(tags=[{"key": "dagster/partition", "value": ALBUM}])
                    new = [run for run in runs if run["runId"] not in before]
                    return new[0] if new else None

                run = wait_for("the launched run to appear", new_run, 60, server, every=1.0)
                assert run["assetSelection"] == [{"path": ["face_embeddings"]}]
                assert not any(tag["key"] == "dagster/auto_materialize" for tag in run["tags"])
                run_id = run["runId"]
                status = wait_for(
                    f"run {run_id} to finish",
                    lambda: _finished(server, run_id),
                    RUN_TIMEOUT,
                    server,
                )
                assert status == "SUCCESS", server.log_tail()
                page.goto(f"{server.url}/runs/{run_id}")
                expect(page.get_by_text("Success").first).to_be_visible()
                expect(page.get_by_text("Finished execution of run").first).to_be_visible()
                page.screenshot(path=str(ARTIFACTS / "ui_materialize_run.png"))
            finally:
                browser.close()

        rerun = server.materialization("face_embeddings", ALBUM)
        assert rerun["runId"] == run_id
        cached = metadata(rerun)
        assert (cached["cache_hits"], cached["cache_misses"]) == (tiles["tiles"], 0)
        timings["browser and manual run"] = time.monotonic() - browsing

        # What follows the manual run: the assets downstream of it, once each, then quiet.
        following = time.monotonic()
        first_training_set = server.materialization("training_set", None)["runId"]
        wait_for(
            "the automation to follow the manual run",
            lambda: (
                server.materialization("training_set", None)["runId"] != first_training_set
                and not server.active_runs()
            ),
            PIPELINE_TIMEOUT,
            server,
            every=3.0,
        )
        assert server.runs_per_asset() == {
            "raw_photos": 1,
            "photo_tiles": 1,
            "face_embeddings": 2,
            "face_clusters": 2,
            "labeled_identities": 2,
            "identity_masks": 2,
            "training_set": 2,
        }
        assert not server.runs(statuses=["FAILURE", "CANCELED"])
        timings["automation after it"] = time.monotonic() - following

        # Ctrl-C: the whole group stops, runs the automation started afterwards included.
        timings["shutdown"] = stop_and_check_nothing_left(server)
    print("\n" + "\n".join(f"{name:26} {seconds:6.1f}s" for name, seconds in timings.items()))


def _finished(server: DagsterDev, run_id: str) -> str | None:
    data = server.graphql(
        "query($id: ID!) { runOrError(runId: $id) { ... on Run { status } } }", {"id": run_id}
    )
    status = data["runOrError"].get("status")
    return status if status in {"SUCCESS", "FAILURE", "CANCELED"} else None


def dismiss_community_modal(page) -> None:
    """A fresh instance greets the first visitor with "Join the Dagster community": Skip it."""
    skip = page.get_by_role("button", name="Skip")
    with contextlib.suppress(Exception):  # not shown (already dismissed, or a newer UI): fine
        skip.click(timeout=10_000)
        skip.wait_for(state="detached", timeout=10_000)


def settle_animations(page) -> None:
    """Wait for the dialog's fade-in, so the screenshot shows it opaque."""
    page.wait_for_function(
        "() => document.getAnimations().every(a => a.playState !== 'running')", timeout=10_000
    )


def expect_metadata_row(page, label: str, value: str) -> None:
    from playwright.sync_api import expect

    row = page.locator("tr", has=page.get_by_text(label, exact=True)).first
    expect(row.locator("td").nth(1)).to_have_text(value)


def show_image(page, label: str, alt: str, screenshot: Path) -> None:
    """Open a Markdown metadata entry ([Show Markdown]) and check its inline image decoded."""
    from playwright.sync_api import expect

    row = page.locator("tr", has=page.get_by_text(label, exact=True)).first
    row.get_by_text("[Show Markdown]").click()
    dialog = page.get_by_role("dialog")
    image = dialog.locator(f'img[alt="{alt}"]')
    expect(image).to_have_count(1)
    expect(image).to_have_js_property("complete", True)
    settle_animations(page)
    assert image.get_attribute("src").startswith("data:image/jpeg;base64,")
    width, height = image.evaluate("img => [img.naturalWidth, img.naturalHeight]")
    assert width > 100 and height > 50, (width, height)
    page.screenshot(path=str(screenshot))
    dialog.get_by_role("button", name="Close").click()
    expect(dialog).to_have_count(0)
