"""Steps on Celery workers with a real broker: the demo album's whole graph runs with the Celery
executor on two ``dagster-celery worker start`` processes, one serving the default queue and one
the ``gpu`` queue, against Redis (broker and results) and Postgres (the Dagster instance), all
started here on 127.0.0.1 (Debian's redis-server and postgresql).

* Every step ran in a worker's pool process, never in the run's own process: Dagster records the
  pid of each step event, and dagster-celery the worker's name; GPU steps ran on ``gpu@...`` only.
* The workers run in folders of their own and learn the storage root from the environment only:
  what one worker wrote, the other read (the shared-storage contract, on one machine).
* A worker killed mid-step: its step process alone (Celery reports ``WorkerLostError``), then the
  whole worker (the run's worker watch notices the silence). Each time the run fails with a
  message naming the step and the worker, nothing half-written is visible, and a re-run, once a
  worker is back, gives exactly the ids of the uninterrupted run.

The runs are launched with ``dagster asset materialize``, the command README "Scaling out" gives.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg
import pyarrow.parquet as pq
import pytest
import yaml

from identity_pipeline import local_services
from identity_pipeline.assets.gpu import GPU_CELERY_QUEUE
from identity_pipeline.executors import EXECUTOR_CONFIG_ENV, EXECUTOR_ENV
from identity_pipeline.partitions import ALBUMS_PARTITION_NAME
from identity_pipeline.storage import DATA_DIR_ENV, DataLayout, is_temporary_name
from identity_pipeline_tests.conftest import REPO_ROOT
from identity_pipeline_tests.deployment import (
    CELERY_INSTANCE_YAML,
    DEMO,
    dagster_home,
    demo_storage_root,
    environment,
    name_single_person_photos,
    run_events,
    service_folder,
    services_or_skip,
    table_ids,
)
from identity_pipeline_tests.test_crash_safety import assert_storage_consistent

pytestmark = pytest.mark.slow
services_or_skip("postgres", "redis")

BIN = Path(sys.executable).parent  # the environment's dagster, dagster-celery and celery
CELERY_YAML = REPO_ROOT / "deploy" / "celery" / "celery.yaml"
GPU_STEPS = {"lora_checkpoint", "identity_fidelity"}
# The demo graph in the runs a person would launch (README "Scaling out"): each run holds
# assets of one partitioning; faces are named between the first two, as on the labeling page.
STAGES = [
    (["raw_photos", "photo_tiles", "face_embeddings"], DEMO),
    (["face_clusters", "labeled_identities"], None),
    (["identity_masks"], DEMO),
    (["training_set", "lora_checkpoint", "identity_fidelity"], None),
]
# The smallest training and evaluation that still run every part of both GPU steps.
TINY_GPU_SETTINGS = {
    "training": {"max_steps": 2, "checkpoint": {"every_steps": 2}, "samples": {"seeds": [0]}},
    "fidelity": {
        "seeds": [0],
        "num_inference_steps": 1,
        "include_base_model": False,
        "pair_prompt": "",
    },
}
# The watch of deploy/celery/celery.yaml with a short fuse (30 s there).
FAST_WORKER_WATCH = {"ping_every_seconds": 1.0, "lost_after_missed_pings": 2}
WORKER_START_SECONDS = 180
RUN_START, STEP_START = dg.DagsterEventType.RUN_START, dg.DagsterEventType.STEP_START


@dataclass
class Worker:
    """One ``dagster-celery worker start`` process and its celery worker below it."""

    name: str
    queue: str
    folder: Path  # its working folder: it must not need the repository or the data root
    process: subprocess.Popen | None = None
    seen_pool_pids: set[int] = field(default_factory=set)

    @property
    def log(self) -> Path:
        return self.folder.parent / f"{self.name}.log"

    def start(self, env: dict[str, str], celery_yaml: Path) -> None:
        # The README's command, with a name to tell the workers apart.
        command = [
            str(BIN / "dagster-celery"),
            *("worker", "start", "-A", "dagster_celery.app", "-y", str(celery_yaml)),
            *("-q", self.queue, "-n", self.name, "--", "--concurrency=1"),
        ]
        self.folder.mkdir(parents=True, exist_ok=True)
        offset = self.log.stat().st_size if self.log.exists() else 0
        with open(self.log, "a") as log:
            self.process = subprocess.Popen(
                command,
                cwd=self.folder,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: stopped (or killed) as one
            )
        deadline = time.monotonic() + WORKER_START_SECONDS
        while (
            f"{self.name}@" not in (text := self.log.read_text()[offset:]) or "ready." not in text
        ):
            assert self.process.poll() is None, f"worker {self.name} exited:\n{text[-3000:]}"
            assert time.monotonic() < deadline, f"worker {self.name} not ready:\n{text[-3000:]}"
            time.sleep(0.2)

    def pool_pids(self) -> set[int]:
        """The pool processes of its celery worker (which run the steps), now."""
        assert self.process is not None
        pids: set[int] = set()
        for celery_main in _children(self.process.pid):
            pids |= set(_children(celery_main))
        self.seen_pool_pids |= pids
        return pids

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)  # celery's warm shutdown
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        """SIGKILL to every process of the worker, as when its machine dies."""
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()


def _children(pid: int) -> list[int]:
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except FileNotFoundError:
        return []
    found: list[int] = []
    for task in tasks:
        try:
            found += [int(child) for child in (task / "children").read_text().split()]
        except FileNotFoundError:
            continue
    return found


@dataclass
class Deployment:
    env: dict[str, str]
    home: Path
    layout: DataLayout
    workers: dict[str, Worker]
    celery_yaml: Path

    def instance(self) -> dg.DagsterInstance:
        return dg.DagsterInstance.from_config(str(self.home))

    def materialize_command(self, assets: list[str], partition: str | None) -> list[str]:
        command = [
            str(BIN / "dagster"),
            "asset",
            "materialize",
            "-m",
            "identity_pipeline.definitions",
        ]
        command += ["--select", ",".join(assets)]
        return command + (["--partition", partition] if partition else [])

    def materialize(self, assets: list[str], partition: str | None) -> subprocess.Popen:
        """The run's own process (it only coordinates: its steps go to the workers)."""
        return subprocess.Popen(
            self.materialize_command(assets, partition),
            cwd=REPO_ROOT,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def latest_run(self) -> dg.DagsterRun:
        with self.instance() as instance:
            (record,) = instance.get_run_records(limit=1)
            return record.dagster_run


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    from identity_pipeline.training.tiny_models import save_tiny_model

    base = tmp_path_factory.mktemp("celery")
    model = save_tiny_model("qwen-image", base / "model", 0)
    overrides = {**TINY_GPU_SETTINGS}
    overrides["training"] = {**overrides["training"], "model": {"source": str(model)}}
    layout = demo_storage_root(base / "data", overrides)
    home = dagster_home(base / "dagster_home", CELERY_INSTANCE_YAML)
    celery_yaml = base / "celery.yaml"
    config = yaml.safe_load(CELERY_YAML.read_text())
    celery_yaml.write_text(yaml.safe_dump({**config, "worker_watch": FAST_WORKER_WATCH}))
    with (
        service_folder("celery") as folder,
        local_services.postgres_server(folder / "postgres") as postgres,
        local_services.redis_server(folder / "redis") as redis,
        pytest.MonkeyPatch.context() as patch,
    ):
        env = environment(
            PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",  # dagster-celery runs `celery`
            DAGSTER_HOME=str(home),
            **{
                EXECUTOR_ENV: "celery",
                EXECUTOR_CONFIG_ENV: str(celery_yaml),
                DATA_DIR_ENV: str(layout.root),
            },
            **postgres.env(),
            **redis.env(),
        )
        for name in postgres.env():  # this process reads the same instance
            patch.setenv(name, env[name])
        workers = {
            "dagster": Worker("cpu", "dagster", base / "worker-cpu"),
            GPU_CELERY_QUEUE: Worker("gpu", GPU_CELERY_QUEUE, base / "worker-gpu"),
        }
        try:
            for worker in workers.values():
                worker.start(env, celery_yaml)
            yield Deployment(env, home, layout, workers, celery_yaml)
        finally:
            for worker in workers.values():
                worker.stop()


@dataclass
class GraphRuns:
    run_ids: list[str]
    face_ids: list[str]


@pytest.fixture(scope="module")
def graph_on_celery(deployment: Deployment) -> GraphRuns:
    """The whole demo graph, run by run, on the workers."""
    with deployment.instance() as instance:
        instance.add_dynamic_partitions(ALBUMS_PARTITION_NAME, [DEMO])  # as the album sensor
    run_ids = []
    for assets, partition in STAGES:
        if "face_clusters" in assets:
            name_single_person_photos(deployment.layout)
        run = deployment.materialize(assets, partition)
        output, _ = run.communicate(timeout=600)
        assert run.returncode == 0, output[-5000:]
        run_ids.append(deployment.latest_run().run_id)
    for worker in deployment.workers.values():
        worker.pool_pids()
    face_ids = table_ids(deployment.layout, "face_embeddings", "face_id", DEMO)
    return GraphRuns(run_ids, face_ids)


def test_every_step_ran_on_a_worker_and_gpu_steps_only_on_the_gpu_worker(
    deployment: Deployment, graph_on_celery: GraphRuns
) -> None:
    cpu, gpu = deployment.workers["dagster"], deployment.workers[GPU_CELERY_QUEUE]
    ran_on: dict[str, tuple[str, int]] = {}
    with deployment.instance() as instance:
        for run_id, (assets, _) in zip(graph_on_celery.run_ids, STAGES, strict=True):
            assert instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.SUCCESS
            events = run_events(instance, run_id)
            (run_start,) = [e for e in events if e.dagster_event_type == RUN_START]
            coordinator = run_start.dagster_event.pid
            for entry in events:
                event = entry.dagster_event
                if event.event_type == STEP_START:
                    assert entry.step_key not in ran_on, f"{entry.step_key} started twice"
                    assert event.pid not in {coordinator, os.getpid()}, entry.step_key
                    ran_on[entry.step_key] = ("", event.pid)
            for entry in events:  # dagster-celery's record of the worker that took each step
                data = entry.dagster_event.event_specific_data
                metadata = getattr(data, "metadata", None) or {}
                if "Celery worker" in metadata:
                    worker_name = str(metadata["Celery worker"].value)
                    ran_on[entry.step_key] = (worker_name, ran_on[entry.step_key][1])
            assert {key for key in ran_on if key in assets} == set(assets)

    assert set(ran_on) == {asset for assets, _ in STAGES for asset in assets}
    for step, (worker_name, pid) in ran_on.items():
        worker = gpu if step in GPU_STEPS else cpu
        assert worker_name.startswith(f"{worker.name}@"), (step, worker_name)
        assert pid in worker.seen_pool_pids, (step, pid, worker.name, worker.seen_pool_pids)
    # Shared storage: each worker found its inputs and left its outputs under the data root
    # (CPU steps' tables were read by the GPU worker), nothing in its own working folder.
    for worker in (cpu, gpu):
        assert not list(worker.folder.iterdir()), worker.folder
    assert deployment.layout.table_path("training_set").is_file()
    assert list(deployment.layout.asset_dir("identity_fidelity").glob("runs/*/report.json"))


def _wait_for_new_face(layout: DataLayout, before: int, run: subprocess.Popen) -> None:
    """Until the running step has written one more face-cache entry: it is mid-step."""
    cache = layout.cache_dir / "faces"
    deadline = time.monotonic() + 300
    while len(list(cache.rglob("*.parquet"))) <= before:
        assert run.poll() is None, run.communicate()[0][-5000:]
        assert time.monotonic() < deadline, "face_embeddings never started writing"
        time.sleep(0.02)


def _assert_nothing_half_written(layout: DataLayout) -> int:
    """The killed step committed no table, and every file it did commit is whole."""
    assert not layout.table_path("face_embeddings", DEMO).exists()
    entries = list((layout.cache_dir / "faces").rglob("*"))
    visible = [path for path in entries if path.is_file() and not is_temporary_name(path.name)]
    for path in visible:
        pq.read_table(path)  # raises on a torn file
    return len(visible)


def _killed_run(deployment: Deployment, kill) -> tuple[str, dg.DagsterRun]:
    """Run face_embeddings, ``kill`` once it is mid-step, and return the run's output."""
    layout = deployment.layout
    before = len(list((layout.cache_dir / "faces").rglob("*.parquet")))
    run = deployment.materialize(["face_embeddings"], DEMO)
    _wait_for_new_face(layout, before, run)
    kill()
    output, _ = run.communicate(timeout=300)
    assert run.returncode != 0, output[-5000:]
    return output, deployment.latest_run()


def test_a_worker_killed_mid_step_fails_the_run_clearly_and_a_rerun_gives_the_same_ids(
    deployment: Deployment, graph_on_celery: GraphRuns
) -> None:
    layout, cpu = deployment.layout, deployment.workers["dagster"]
    shutil.rmtree(layout.asset_dir("face_embeddings", DEMO))
    shutil.rmtree(layout.cache_dir / "faces")

    # 1. The OOM killer's way: the pool process running the step dies, its worker lives on.
    (step_process,) = cpu.pool_pids()
    output, run = _killed_run(deployment, lambda: os.kill(step_process, signal.SIGKILL))
    assert "[face_embeddings]: billiard.exceptions.WorkerLostError" in output, output[-5000:]
    assert "signal 9 (SIGKILL)" in output
    assert run.status == dg.DagsterRunStatus.FAILURE
    _assert_nothing_half_written(layout)

    # 2. The machine's way: the whole worker dies; nobody will ever report the step's end.
    deadline = time.monotonic() + 60
    while not (replacement := cpu.pool_pids() - {step_process}):  # Celery forks a new one
        assert time.monotonic() < deadline, "the worker did not replace its pool process"
        time.sleep(0.1)
    (step_process,) = replacement
    output, run = _killed_run(deployment, cpu.kill)
    assert "StepWorkerLost: Celery worker cpu@" in output, output[-5000:]
    assert f"pid {step_process}) stopped answering while it ran step 'face_embeddings'" in output
    assert run.status == dg.DagsterRunStatus.FAILURE
    _assert_nothing_half_written(layout)

    # 3. A worker is back: the same command completes with the uninterrupted run's ids.
    cpu.start(deployment.env, deployment.celery_yaml)
    rerun = deployment.materialize(["face_embeddings"], DEMO)
    output, _ = rerun.communicate(timeout=600)
    assert rerun.returncode == 0, output[-5000:]
    assert deployment.latest_run().status == dg.DagsterRunStatus.SUCCESS
    assert table_ids(layout, "face_embeddings", "face_id", DEMO) == graph_on_celery.face_ids
    assert_storage_consistent(layout)
