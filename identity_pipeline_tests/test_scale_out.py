"""Scale-out: the executor is chosen by the environment, GPU steps carry one declaration that every
executor reads, and the deploy/ files fit the schemas of the libraries that read them.

The dagster-k8s / dagster-celery tests skip when those optional libraries are not installed.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from types import SimpleNamespace

import dagster as dg
import pytest
import yaml
from dagster._core.definitions.job_base import InMemoryJob
from dagster._core.execution.api import create_execution_plan
from dagster._core.executor.init import InitExecutorContext

from identity_pipeline.assets.gpu import GPU_CELERY_QUEUE, GPU_POOL, gpu_asset
from identity_pipeline.definitions import build_definitions
from identity_pipeline.executors import (
    EXECUTOR_CONFIG_ENV,
    EXECUTOR_ENV,
    ExecutorSelectionError,
    StepWorkerLost,
    WorkerWatch,
    _WatchedResult,
    _WorkerPings,
    executor_definition,
    load_executor_config,
    load_worker_watch,
    validate_executor_config,
)
from identity_pipeline.storage import DATA_DIR_ENV
from identity_pipeline_tests.conftest import REPO_ROOT

DEPLOY = REPO_ROOT / "deploy"
K8S_EXECUTOR_YAML = DEPLOY / "k8s" / "executor.yaml"
K8S_PVC_YAML = DEPLOY / "k8s" / "pvc.yaml"
K8S_VALUES_YAML = DEPLOY / "k8s" / "values.yaml"
CELERY_YAML = DEPLOY / "celery" / "celery.yaml"
CELERY_INSTANCE_YAML = DEPLOY / "celery" / "dagster.yaml"
CELERY_ENV = DEPLOY / "celery" / "identity-pipeline.env"
GPU_STEPS = {"lora_checkpoint", "identity_fidelity"}
K8S_CONFIG_TAG = "dagster-k8s/config"
CELERY_QUEUE_TAG = "dagster-celery/queue"
BROKER = "pyamqp://dagster:secret@broker-host:5672//"


def _plan(executor: str | None = None):
    job = build_definitions(executor=executor).resolve_implicit_global_asset_job_def()
    return job, create_execution_plan(job)


def _env_file(path: Path) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
    return {key.strip(): value.strip() for key, value in pairs if not key.startswith("#")}


# --- executor selection ------------------------------------------------------------------------


def test_executor_is_chosen_by_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(EXECUTOR_ENV, raising=False)
    monkeypatch.delenv(EXECUTOR_CONFIG_ENV, raising=False)
    job, _ = _plan()
    assert job.executor_def.name == "multi_or_in_process_executor"  # Dagster's default

    monkeypatch.setenv(EXECUTOR_ENV, "multiprocess")
    assert _plan()[0].executor_def.name == "multiprocess"

    monkeypatch.setenv(EXECUTOR_ENV, "Nomad")
    with pytest.raises(ExecutorSelectionError, match="unknown executor 'Nomad'"):
        build_definitions()

    monkeypatch.delenv(EXECUTOR_ENV)
    monkeypatch.setenv(EXECUTOR_CONFIG_ENV, str(K8S_EXECUTOR_YAML))
    with pytest.raises(ExecutorSelectionError, match="name the executor"):
        build_definitions()


def test_a_bad_executor_config_fails_when_the_code_loads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "executor.yaml"
    config.write_text("execution:\n  config:\n    max_concurent: 2\n")  # typo
    monkeypatch.setenv(EXECUTOR_ENV, "multiprocess")
    monkeypatch.setenv(EXECUTOR_CONFIG_ENV, str(config))
    with pytest.raises(ExecutorSelectionError, match=r"executor\.yaml does not fit"):
        build_definitions()
    config.write_text("execution:\n  config:\n    max_concurrent: 2\n")
    job, _ = _plan()
    assert job.executor_def.name == "multiprocess"


@pytest.mark.parametrize(
    ("data_dir", "problem"),
    [
        (None, "is not set"),
        ("data", "a relative path"),
        ("{tmp}/not-mounted", "not a folder here"),
        ("{tmp}", None),
    ],
)
@pytest.mark.parametrize("name", ["k8s", "celery"])
def test_distributed_executors_need_an_absolute_mounted_data_root(
    name: str, data_dir: str | None, problem: str | None, tmp_path: Path, monkeypatch
) -> None:
    """Without it a worker would write to its own ./data, where no other step looks."""
    pytest.importorskip(f"dagster_{name}")
    monkeypatch.setenv(EXECUTOR_ENV, name)
    monkeypatch.delenv(EXECUTOR_CONFIG_ENV, raising=False)
    if data_dir is None:
        monkeypatch.delenv(DATA_DIR_ENV, raising=False)
    else:
        monkeypatch.setenv(DATA_DIR_ENV, data_dir.format(tmp=tmp_path))
    if problem is None:
        assert build_definitions().resolve_implicit_global_asset_job_def().executor_def.name == name
    else:
        with pytest.raises(ExecutorSelectionError, match=f"{DATA_DIR_ENV} .*{problem}"):
            build_definitions()


@pytest.mark.parametrize("name", ["multiprocess", "k8s", "celery"])
def test_gpu_steps_carry_pool_k8s_and_celery_declarations(name: str) -> None:
    if name in {"k8s", "celery"}:
        pytest.importorskip(f"dagster_{name}")
    job, plan = _plan(name)
    assert job.executor_def.name == name
    steps = {step.key: step for step in plan.steps}
    assert set(steps) > GPU_STEPS
    for key, step in steps.items():
        tags = step.tags
        if key in GPU_STEPS:
            assert step.pool == GPU_POOL, key
            assert tags[CELERY_QUEUE_TAG] == GPU_CELERY_QUEUE, key
            resources = json.loads(tags[K8S_CONFIG_TAG])["container_config"]["resources"]
            # Extended resources: request == limit, whole GPUs, as strings.
            assert resources["limits"]["nvidia.com/gpu"] == "1"
            assert resources["requests"]["nvidia.com/gpu"] == "1"
        else:
            assert step.pool is None, key
            assert CELERY_QUEUE_TAG not in tags and K8S_CONFIG_TAG not in tags, key
    ops = {node.name: node for node in job.graph.node_defs}
    assert {key for key, op in ops.items() if op.pool == GPU_POOL} == GPU_STEPS


# --- dagster-k8s --------------------------------------------------------------------------------

# Kubernetes releases whose OpenAPI schemas (shipped in kubernetes-validate) every manifest must
# fit, unknown fields refused: the oldest and the newest the package knows.
K8S_VERSIONS = ("1.25.0", "1.37.0")


def assert_valid_k8s(manifest: dict, what: str) -> None:
    """``manifest`` (JSON field names) fits the Kubernetes schema of every K8S_VERSIONS."""
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    for version in K8S_VERSIONS:
        try:
            kubernetes_validate.validate(manifest, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            raise AssertionError(
                f"{what} is not a valid {manifest.get('kind')} for {version}: "
                f"{error.message} at {list(error.path)}"
            ) from error


def as_manifest(model) -> dict:
    """A kubernetes client model as the API server receives it (camelCase JSON)."""
    from kubernetes.client import ApiClient

    return ApiClient().sanitize_for_serialization(model)


def _fake_kubeconfig(path: Path) -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:6443"}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    return path


def test_k8s_executor_config_renders_gpu_and_cpu_step_pods(
    tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    """The real k8s_job_executor built from deploy/k8s/executor.yaml; each step's Job rendered by
    dagster-k8s' own merge (executor config < op tags < per-step config) and Job builder."""
    pytest.importorskip("dagster_k8s")
    from dagster_k8s.job import construct_dagster_k8s_job

    executor_def = executor_definition("k8s")
    raw = load_executor_config(K8S_EXECUTOR_YAML)
    config = validate_executor_config(executor_def, raw, str(K8S_EXECUTOR_YAML))
    # Outside a cluster: a kubeconfig that is parsed, never contacted.
    config = {
        **config,
        "load_incluster_config": False,
        "kubeconfig_file": str(_fake_kubeconfig(tmp_path / "kubeconfig")),
    }
    job, plan = _plan("k8s")
    executor = executor_def.executor_creation_fn(
        InitExecutorContext(InMemoryJob(job), executor_def, config, instance)
    )
    handler = executor._step_handler  # noqa: SLF001 - the K8sStepHandler the executor built
    launcher = SimpleNamespace(
        job_image=None,
        dagster_home="/opt/dagster/dagster_home",
        instance_config_map="dagster-instance",
        postgres_password_secret="dagster-postgresql-secret",
    )

    pvc = yaml.safe_load(K8S_PVC_YAML.read_text())
    data_dir = dict(item.split("=", 1) for item in raw["env_vars"])[DATA_DIR_ENV]
    for step in plan.steps:
        context = SimpleNamespace(
            execute_step_args=SimpleNamespace(step_keys_to_execute=[step.key]),
            dagster_run=SimpleNamespace(job_code_origin=None),
            instance=SimpleNamespace(run_launcher=None),
            step_tags={step.key: step.tags},
            get_step_context=lambda key, step=step: SimpleNamespace(
                step=SimpleNamespace(op_name=step.key)
            ),
        )
        container_context = handler._get_container_context(context)  # noqa: SLF001
        k8s_job = construct_dagster_k8s_job(
            container_context.get_k8s_job_config(
                "registry.example.com/identity-pipeline:0", launcher
            ),
            ["dagster", "api", "execute_step"],
            f"dagster-step-{step.key.replace('_', '-')}",
            user_defined_k8s_config=container_context.run_k8s_config,
        )
        assert_valid_k8s(as_manifest(k8s_job), f"the Job of step {step.key}")
        pod = k8s_job.spec.template.spec
        container = pod.containers[0]
        assert container_context.namespace == pvc["metadata"]["namespace"]
        claims = [v.persistent_volume_claim.claim_name for v in pod.volumes]
        assert claims == [pvc["metadata"]["name"]], step.key
        assert [m.mount_path for m in container.volume_mounts] == [data_dir], step.key
        env = {e.name: e.value for e in container.env}
        assert env[DATA_DIR_ENV] == data_dir
        limits, requests = container.resources.limits, container.resources.requests
        if step.key in GPU_STEPS:
            assert limits["nvidia.com/gpu"] == requests["nvidia.com/gpu"] == "1", step.key
            assert pod.node_selector == {"nvidia.com/gpu.present": "true"}, step.key
            assert [(t.key, t.operator, t.effect) for t in pod.tolerations] == [
                ("nvidia.com/gpu", "Exists", "NoSchedule")
            ]
            assert requests["cpu"] == "4"  # the per-step block won over the every-step block
        else:
            assert "nvidia.com/gpu" not in (limits or {}) | (requests or {}), step.key
            assert not pod.node_selector and not pod.tolerations, step.key
            assert requests == {"cpu": "1", "memory": "4Gi"}, step.key


def test_k8s_pvc_and_the_kubernetes_parts_of_the_helm_values_fit_kubernetes_schemas() -> None:
    """pvc.yaml as is; from values.yaml, what the chart copies into pods (the user-code
    deployment's env, volumes, mounts and resources; the run launcher's volumes and mounts), as
    the Pod it ends up in. The chart's own keys have no schema here (see README: Scaling out)."""
    assert_valid_k8s(yaml.safe_load(K8S_PVC_YAML.read_text()), "deploy/k8s/pvc.yaml")
    values = yaml.safe_load(K8S_VALUES_YAML.read_text())
    (deployment,) = values["dagster-user-deployments"]["deployments"]
    launcher = values["runLauncher"]["config"]["k8sRunLauncher"]
    image = f"{deployment['image']['repository']}:{deployment['image']['tag']}"
    for name, where, env in [
        ("user code deployment", deployment, deployment["env"]),
        (
            "run pod",
            launcher,
            [
                dict(zip(("name", "value"), item.split("=", 1), strict=True))
                for item in launcher["envVars"]
            ],
        ),
    ]:
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "identity-pipeline"},
            "spec": {
                "containers": [
                    {
                        "name": "dagster",
                        "image": image,
                        "imagePullPolicy": deployment["image"]["pullPolicy"],
                        "env": env,
                        "volumeMounts": where["volumeMounts"],
                        "resources": where.get("resources", {}),
                    }
                ],
                "volumes": where["volumes"],
            },
        }
        assert_valid_k8s(pod, f"deploy/k8s/values.yaml ({name})")


def test_k8s_deploy_files_agree_with_each_other_and_the_code() -> None:
    executor = load_executor_config(K8S_EXECUTOR_YAML)
    pvc = yaml.safe_load(K8S_PVC_YAML.read_text())
    values = yaml.safe_load(K8S_VALUES_YAML.read_text())

    assert pvc["kind"] == "PersistentVolumeClaim"
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]  # steps run on several nodes
    claim = pvc["metadata"]["name"]
    data_dir = dict(item.split("=", 1) for item in executor["env_vars"])[DATA_DIR_ENV]

    # The per-step blocks name exactly the GPU ops (a new GPU asset must get one too).
    _, plan = _plan()
    gpu_ops = {step.key for step in plan.steps if step.pool == GPU_POOL}
    assert set(executor["per_step_k8s_config"]) == gpu_ops == GPU_STEPS

    (deployment,) = values["dagster-user-deployments"]["deployments"]
    env = {item["name"]: item["value"] for item in deployment["env"]}
    assert env[EXECUTOR_ENV] == "k8s"
    assert env[EXECUTOR_CONFIG_ENV].endswith("deploy/k8s/executor.yaml")
    assert env[DATA_DIR_ENV] == data_dir
    assert "identity_pipeline.definitions" in deployment["dagsterApiGrpcArgs"]
    launcher = values["runLauncher"]["config"]["k8sRunLauncher"]
    assert f"{DATA_DIR_ENV}={data_dir}" in launcher["envVars"]
    for where in (deployment, launcher, executor):
        volumes = where["volumes"]
        mounts = where.get("volumeMounts") or where.get("volume_mounts")
        assert [v["persistentVolumeClaim"]["claimName"] for v in volumes] == [claim]
        assert [m.get("mountPath") or m.get("mount_path") for m in mounts] == [data_dir]
    assert values["concurrency"]["pools"]["defaultLimit"] >= 1


# --- dagster-celery -----------------------------------------------------------------------------


def test_celery_executor_routes_gpu_steps_to_the_gpu_queue(
    monkeypatch: pytest.MonkeyPatch, instance: dg.DagsterInstance, tmp_path: Path
) -> None:
    pytest.importorskip("dagster_celery")
    from dagster_celery.make_app import make_app

    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path))  # the shared storage root
    monkeypatch.setenv("DAGSTER_CELERY_BROKER_URL", BROKER)
    monkeypatch.setenv("DAGSTER_CELERY_BACKEND_URL", "rpc://")
    monkeypatch.setenv(EXECUTOR_ENV, "celery")
    monkeypatch.setenv(EXECUTOR_CONFIG_ENV, str(CELERY_YAML))
    job, plan = _plan()  # the environment chooses, as in a deployment
    executor_def = executor_definition("celery")
    config = validate_executor_config(executor_def, load_executor_config(CELERY_YAML))
    executor = executor_def.executor_creation_fn(
        InitExecutorContext(InMemoryJob(job), executor_def, config, instance)
    )
    app = make_app(executor.app_args())
    assert app.conf.broker_url == BROKER
    assert app.conf.worker_prefetch_multiplier == 1
    default_queue = app.conf.task_default_queue
    assert default_queue == "dagster"
    # The routing rule of dagster_celery.core_execution_loop: the step's tag, else the default.
    queues = {step.key: step.tags.get(CELERY_QUEUE_TAG, default_queue) for step in plan.steps}
    assert {key for key, queue in queues.items() if queue == GPU_CELERY_QUEUE} == GPU_STEPS
    assert {queue for key, queue in queues.items() if key not in GPU_STEPS} == {"dagster"}


@pytest.mark.parametrize(
    ("queue", "extra"), [("dagster", ["--concurrency=2"]), ("gpu", ["--concurrency=1"])]
)
def test_documented_celery_worker_commands_parse(
    queue: str,
    extra: list[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`dagster-celery worker start` as deploy/celery/README.md writes it, up to the celery call."""
    pytest.importorskip("dagster_celery")
    from unittest import mock

    from click.testing import CliRunner
    from dagster_celery.cli import worker_start_command

    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    monkeypatch.setenv("DAGSTER_CELERY_BROKER_URL", BROKER)
    monkeypatch.setenv("DAGSTER_CELERY_BACKEND_URL", "rpc://")
    readme = (DEPLOY / "celery" / "README.md").read_text()
    command = f"dagster-celery worker start -A dagster_celery.app -y deploy/celery/celery.yaml -q {queue} -- {' '.join(extra)}"
    assert command in readme
    args = command.split()[3:]
    with mock.patch("dagster_celery.cli.subprocess.check_call", return_value=0) as call:
        result = CliRunner().invoke(
            worker_start_command, [a.replace("deploy/", f"{DEPLOY}/") for a in args]
        )
    assert result.exit_code == 0, result.output
    (celery_args,), kwargs = call.call_args
    assert celery_args[:4] == ["celery", "-A", "dagster_celery.app", "worker"]
    assert celery_args[celery_args.index("-Q") + 1] == queue
    assert celery_args[-len(extra) :] == extra
    config_dir = kwargs["env"]["PYTHONPATH"].rstrip(":").split(":")[-1]
    generated = (Path(config_dir) / "dagster_celery_config.py").read_text()
    assert f"broker_url = '{BROKER}'" in generated


def test_the_celery_file_sets_the_worker_watch_and_what_it_needs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("dagster_celery")
    watch = load_worker_watch(CELERY_YAML)
    assert watch == WorkerWatch(ping_every_seconds=10, lost_after_missed_pings=3)
    config = yaml.safe_load(CELERY_YAML.read_text())
    assert config["execution"]["config"]["config_source"]["task_track_started"] is True

    monkeypatch.setenv(EXECUTOR_ENV, "celery")
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path))
    broken = tmp_path / "celery.yaml"
    monkeypatch.setenv(EXECUTOR_CONFIG_ENV, str(broken))
    for bad, message in [
        ({**config, "worker_watch": {"ping_every_secs": 5}}, "unknown worker_watch keys"),
        ({**config, "worker_watch": {"lost_after_missed_pings": 0}}, "at least 1"),
        ({"execution": {"config": {"broker": "redis://x"}}}, "task_track_started"),
    ]:
        broken.write_text(yaml.safe_dump(bad))
        with pytest.raises(ExecutorSelectionError, match=message):
            build_definitions()


class FakeCelery:
    """What the watch asks of Celery: a task's state and info, and worker pings."""

    def __init__(self, state: str, info: dict | None, answering: set[str]) -> None:
        self.state, self.info, self.answering, self.pinged = state, info, answering, []
        self.control = self

    def ready(self) -> bool:
        return self.state in {"SUCCESS", "FAILURE"}

    def get(self) -> list[str]:
        return ["events"]

    def ping(self, destination, timeout, limit):
        self.pinged.append(destination)
        return [{name: {"ok": "pong"}} for name in destination if name in self.answering]


@pytest.mark.parametrize(
    ("state", "info", "answering", "lost_after"),
    [
        ("PENDING", None, set(), None),  # queued: no worker has it, waiting is normal
        ("STARTED", {"hostname": "cpu@a", "pid": 7}, {"cpu@a"}, None),  # alive
        ("STARTED", {"hostname": "cpu@a", "pid": 7}, set(), 3),  # silent: lost at ping 3
        ("STARTED", {"hostname": "cpu@a", "pid": 7}, {"gpu@b"}, 3),  # another one answering
        ("SUCCESS", None, set(), None),  # done: its result speaks
    ],
)
def test_worker_watch_gives_up_on_a_step_only_when_its_worker_is_silent(
    state: str, info: dict | None, answering: set[str], lost_after: int | None
) -> None:
    now = [0.0]
    fake = FakeCelery(state, info, answering)
    watch = WorkerWatch(ping_every_seconds=10, lost_after_missed_pings=3)
    result = _WatchedResult(fake, "face_embeddings", _WorkerPings(fake, watch, lambda: now[0]))
    ready_at = None
    for tick in range(60):  # the executor's loop asks once a second
        now[0] = float(tick)
        if result.ready():
            ready_at = tick
            break
    if state == "SUCCESS":
        assert ready_at == 0 and result.get() == ["events"]
        return
    assert len(fake.pinged) == (0 if info is None else (ready_at or 59) // 10 + 1)
    if lost_after is None:
        assert ready_at is None
        return
    assert ready_at == (lost_after - 1) * 10  # pings at 0, 10, 20 s unanswered
    with pytest.raises(
        StepWorkerLost,
        match=r"cpu@a \(step process pid 7\) stopped answering "
        r"while it ran step 'face_embeddings': 3 pings",
    ):
        result.get()


def test_celery_env_file_names_the_shipped_config() -> None:
    env = _env_file(CELERY_ENV)
    assert env[EXECUTOR_ENV] == "celery"
    assert env[EXECUTOR_CONFIG_ENV].endswith("deploy/celery/celery.yaml")
    assert env[DATA_DIR_ENV].startswith("/")


@pytest.mark.parametrize(
    "path", [REPO_ROOT / "dagster.yaml", CELERY_INSTANCE_YAML, DEPLOY / "postgres" / "dagster.yaml"]
)
def test_instance_yaml_files_are_valid(
    path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dagster._core.instance.config import dagster_instance_config

    for name in ["DAGSTER_PG_HOST", "DAGSTER_PG_USER", "DAGSTER_PG_PASSWORD", "DAGSTER_PG_DB"]:
        monkeypatch.setenv(name, "x")
    monkeypatch.setenv("DAGSTER_PG_PORT", "5432")
    shutil.copy(path, tmp_path / "dagster.yaml")
    config, _ = dagster_instance_config(str(tmp_path))
    assert config["concurrency"]["pools"]["default_limit"] == 1


# --- the gpu pool, locally ----------------------------------------------------------------------

STEP_SECONDS = 3.0
TIMES_ENV = "IDENTITY_PIPELINE_TEST_STEP_TIMES"


def _record(name: str) -> None:
    import os

    started = time.time()
    time.sleep(STEP_SECONDS)
    Path(os.environ[TIMES_ENV], name).write_text(json.dumps([started, time.time()]))


@gpu_asset()
def toy_gpu_a() -> None:
    _record("toy_gpu_a")


@gpu_asset()
def toy_gpu_b() -> None:
    _record("toy_gpu_b")


@dg.asset
def toy_cpu_a() -> None:
    _record("toy_cpu_a")


def toy_job() -> dg.JobDefinition:
    """Two GPU steps and one CPU step, all free to run at once (max_concurrent 3)."""
    defs = dg.Definitions(
        assets=[toy_gpu_a, toy_gpu_b, toy_cpu_a],
        jobs=[dg.define_asset_job("toy", selection=["toy_gpu_a", "toy_gpu_b", "toy_cpu_a"])],
        executor=dg.multiprocess_executor.configured({"max_concurrent": 3}),
    )
    return defs.resolve_job_def("toy")


def _intervals(folder: Path) -> dict[str, tuple[float, float]]:
    return {
        path.name: tuple(json.loads(path.read_text()))
        for path in folder.iterdir()
        if path.name.startswith("toy_")
    }


def _overlap(a: tuple[float, float], b: tuple[float, float]) -> bool:
    return a[0] < b[1] and b[0] < a[1]


@pytest.mark.slow
def test_dagster_yaml_pool_limit_serializes_gpu_steps_in_the_multiprocess_executor(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """dagster.yaml's `concurrency.pools.default_limit: 1` applies to the unconfigured pool "gpu":
    the two GPU steps never run at once, while the CPU step runs beside one of them."""
    monkeypatch.setenv(TIMES_ENV, str(tmp_path))
    home = tmp_path / "dagster_home"
    home.mkdir()
    instance_config = yaml.safe_load((REPO_ROOT / "dagster.yaml").read_text())
    with dg.instance_for_test(overrides=instance_config, temp_dir=str(home)) as instance:
        result = dg.execute_job(dg.reconstructable(toy_job), instance=instance)
        assert result.success
        pools = {pool.name: pool for pool in instance.event_log_storage.get_pool_limits()}
    assert pools[GPU_POOL].limit == 1 and pools[GPU_POOL].from_default

    intervals = _intervals(tmp_path)
    assert not _overlap(intervals["toy_gpu_a"], intervals["toy_gpu_b"])
    # Steps did run in parallel (max_concurrent 3): only the pool kept the GPU steps apart.
    assert any(
        _overlap(intervals["toy_cpu_a"], intervals[gpu]) for gpu in ("toy_gpu_a", "toy_gpu_b")
    )
