"""kill -9 during every asset, and two runs of one partition at once: nothing half-written is ever
visible, the next run completes, and the ids are those of an uninterrupted run.

Each crash runs the materialization in a child process (``python -c ...crash_child()``) that
SIGKILLs itself at a chosen atomic write of the storage layer: "torn" kills while the temporary
file is half written (before the rename), "committed" right after a table was renamed into place
but before Dagster recorded the materialization. Starting point: the whole demo graph materialized
once (the baseline), then the asset's own outputs deleted, so the crashed run writes them anew.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml

from identity_pipeline.partitions import ALBUMS_PARTITION_NAME
from identity_pipeline.storage import DATA_DIR_ENV, DataLayout, is_temporary_name
from identity_pipeline_tests.conftest import REPO_ROOT, materialize_graph

pytestmark = pytest.mark.slow

ALBUM = "demo"
CRASH_ENV = (
    "IDENTITY_PIPELINE_TEST_CRASH"  # JSON: {"asset", "partition", "scope", "index", "phase"}
)
PARTITIONED = {"raw_photos", "photo_tiles", "face_embeddings", "identity_masks"}
# The columns that identify a row, per table; ids are content hashes, so a completed re-run after
# a crash must give exactly the baseline's.
ID_COLUMNS = {
    "raw_photos": ["photo_id", "path"],
    "photo_tiles": ["tile_id"],
    "face_embeddings": ["face_id"],
    "face_clusters": ["face_id"],
    "labeled_identities": ["face_id"],
    "identity_masks": ["sample_key"],
    "training_set": ["sample_id"],
}
COMPARED_COLUMNS = {
    "raw_photos": ["photo_id", "path", "status"],
    "photo_tiles": ["tile_id", "photo_id", "tile_path"],
    "face_embeddings": ["face_id", "tile_id"],
    "face_clusters": ["face_id", "cluster_id"],
    "labeled_identities": ["face_id", "identity"],
    "identity_masks": ["sample_key", "image_path", "mask_path", "mask_key"],
    "training_set": ["sample_id", "image_path", "mask_path", "split", "repeats"],
}
PATH_COLUMNS = {
    "photo_tiles": ["tile_path"],
    "face_clusters": ["tile_path"],
    "identity_masks": ["image_path", "mask_path"],
    "training_set": ["image_path", "mask_path"],
}
# What the crashed run must write anew (deleted before it).
OUTPUTS = {
    "raw_photos": ["assets/raw_photos/demo"],
    "photo_tiles": ["assets/photo_tiles/demo"],
    "face_embeddings": ["assets/face_embeddings/demo", "cache/faces"],
    "face_clusters": ["assets/face_clusters"],
    "labeled_identities": ["assets/labeled_identities"],
    "identity_masks": ["assets/identity_masks/demo"],
    "training_set": ["assets/training_set"],
    "lora_checkpoint": ["assets/lora_checkpoint", "cache/training"],
    "identity_fidelity": ["assets/identity_fidelity"],
}
# (scope under the data root, n-th atomic write inside it, phase): killed there, in this order.
KILL_POINTS = {
    "raw_photos": [
        ("assets/raw_photos/demo", 1, "torn"),  # the contact sheet
        ("assets/raw_photos/demo/table.parquet", 1, "committed"),
    ],
    "photo_tiles": [
        ("assets/photo_tiles/demo/files", 5, "torn"),  # the 5th tile file
        ("assets/photo_tiles/demo/table.parquet", 1, "torn"),
        ("assets/photo_tiles/demo/table.parquet", 1, "committed"),
    ],
    "face_embeddings": [
        ("cache/faces", 5, "torn"),  # the 5th face-cache entry
        ("assets/face_embeddings/demo/table.parquet", 1, "committed"),
    ],
    "face_clusters": [
        ("assets/face_clusters/sheets", 2, "torn"),
        ("assets/face_clusters/table.parquet", 1, "committed"),
    ],
    "labeled_identities": [
        ("assets/labeled_identities/table.parquet", 1, "torn"),
        ("assets/labeled_identities/table.parquet", 1, "committed"),
    ],
    "identity_masks": [
        ("assets/identity_masks/demo/files", 7, "torn"),
        ("assets/identity_masks/demo/table.parquet", 1, "committed"),
    ],
    "training_set": [
        ("assets/training_set/files", 9, "torn"),
        ("assets/training_set/table.parquet", 1, "committed"),
    ],
    "lora_checkpoint": [
        ("assets/lora_checkpoint", 1, "torn"),  # the trainer's launch config
    ],
    "identity_fidelity": [
        # Among the generated images: after the probe's image, its faces and the cost file (the
        # budgeted plan makes a handful of images on the demo).
        ("assets/identity_fidelity", 5, "torn"),
    ],
}


# --- the child process ---------------------------------------------------------------------------


def _install_kill_hook(root: Path, scope: str, index: int, phase: str) -> None:
    """SIGKILL this process at the ``index``-th atomic write under ``root/scope``."""
    import identity_pipeline.storage as storage

    target = root / scope
    state = {"count": 0, "armed": False}
    real_fsync, real_os = storage._fsync_file, storage.os

    def fsync(path: Path) -> None:  # called with the temporary file, once it is fully written
        real_fsync(path)
        path = Path(path)
        destination = path.parent / path.name[1:].rsplit(".", 2)[0]  # .<name>.<hex>.tmp
        if destination != target and target not in destination.parents:
            return
        state["count"] += 1
        if state["count"] != index:
            return
        if phase == "torn":  # as if killed halfway through writing the bytes
            os.truncate(path, path.stat().st_size // 2)
            os.kill(os.getpid(), signal.SIGKILL)
        state["armed"] = True

    class KillAfterReplace:
        def __getattr__(self, name: str):
            return getattr(real_os, name)

        @staticmethod
        def replace(source, destination) -> None:
            real_os.replace(source, destination)
            if state["armed"]:
                real_os.kill(real_os.getpid(), signal.SIGKILL)

    storage._fsync_file = fsync
    storage.os = KillAfterReplace()


def crash_child() -> None:
    """Entry point of the child: materialize one asset, killed where $CRASH_ENV says."""
    spec = json.loads(os.environ[CRASH_ENV])
    root = Path(os.environ[DATA_DIR_ENV])
    if spec.get("scope"):
        _install_kill_hook(root, spec["scope"], spec["index"], spec["phase"])
    from identity_pipeline.definitions import build_definitions

    defs = build_definitions(str(root))
    with dg.DagsterInstance.get() as instance:
        result = dg.materialize(
            list(defs.assets or []),
            selection=spec["selection"],
            partition_key=spec.get("partition"),
            instance=instance,
            resources=dict(defs.resources or {}),
            raise_on_error=False,
        )
    sys.exit(0 if result.success else 3)


def _run_child(
    root: Path, home: Path, spec: dict, wait: bool = True
) -> subprocess.Popen | subprocess.CompletedProcess:
    env = {
        **os.environ,
        DATA_DIR_ENV: str(root),
        "DAGSTER_HOME": str(home),
        CRASH_ENV: json.dumps(spec),
        "PYTHONPATH": str(REPO_ROOT),
    }
    command = [
        sys.executable,
        "-c",
        "from identity_pipeline_tests.test_crash_safety import crash_child; crash_child()",
    ]
    if not wait:
        return subprocess.Popen(
            command, env=env, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
    return subprocess.run(
        command, env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300
    )


# --- the baseline ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def baseline(tmp_path_factory: pytest.TempPathFactory) -> DataLayout:
    """The demo graph materialized once, uninterrupted, in its own storage root."""
    from identity_pipeline.demo import run_demo
    from identity_pipeline.training.tiny_models import save_tiny_model

    base = tmp_path_factory.mktemp("baseline")
    layout = DataLayout(base / "data")
    shutil.copytree(REPO_ROOT / "data" / "albums" / ALBUM, layout.album_dir(ALBUM))
    shutil.copy(REPO_ROOT / "data" / "demo_people.csv", layout.root / "demo_people.csv")
    settings = yaml.safe_load((REPO_ROOT / "data" / "pipeline.yaml").read_text())
    settings["training"]["model"]["source"] = str(save_tiny_model("qwen-image", base / "model", 0))
    (layout.root / "pipeline.yaml").write_text(yaml.safe_dump(settings))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DAGSTER_HOME", str(base / "dagster_home"))
        patch.setenv(DATA_DIR_ENV, str(layout.root))
        runs = run_demo(str(layout.root), print_fn=lambda *_: None)
    assert all(run.success for run in runs)
    return layout


@pytest.fixture
def copy(baseline: DataLayout, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A copy of the baseline's storage root and a fresh Dagster instance knowing the album."""
    layout = DataLayout(tmp_path / "data")
    shutil.copytree(baseline.root, layout.root, symlinks=True)
    home = tmp_path / "dagster_home"
    home.mkdir()
    monkeypatch.setenv(DATA_DIR_ENV, str(layout.root))
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    with dg.DagsterInstance.get() as instance:
        instance.add_dynamic_partitions(ALBUMS_PARTITION_NAME, [ALBUM])
    return layout, home


# --- checks ------------------------------------------------------------------------------------


def _table(layout: DataLayout, asset: str) -> pd.DataFrame:
    return pd.read_parquet(layout.table_path(asset, ALBUM if asset in PARTITIONED else None))


def assert_storage_consistent(layout: DataLayout) -> None:
    """Every table readable, unique ids, every file a table names present and complete."""
    for path in layout.assets_dir.rglob("*.parquet"):
        if not path.name.startswith("."):
            pq.read_table(path)  # raises on a torn file
    for asset, columns in ID_COLUMNS.items():
        table = _table(layout, asset)
        duplicated = table.duplicated(subset=columns)
        assert not duplicated.any(), f"{asset}: duplicate rows {table[duplicated].head()}"
        for column in PATH_COLUMNS.get(asset, []):
            for relative in table[column].dropna():
                path = layout.root / relative
                assert not path.name.startswith(".") and ".tmp" not in path.name, path
                assert path.is_file() and path.stat().st_size > 0, f"{asset}: {path} missing"
    visible = [p for p in layout.root.rglob("*.tmp") if not p.name.startswith(".")]
    assert not visible, visible


def assert_same_as_baseline(layout: DataLayout, baseline: DataLayout, asset: str) -> None:
    if asset in COMPARED_COLUMNS:
        columns = COMPARED_COLUMNS[asset]
        got = _table(layout, asset)[columns].sort_values(columns).reset_index(drop=True)
        want = _table(baseline, asset)[columns].sort_values(columns).reset_index(drop=True)
        pd.testing.assert_frame_equal(got, want, check_dtype=False)
    elif asset == "lora_checkpoint":
        # One training run folder (its key hashes the config, absolute paths included), finished.
        (result,) = layout.asset_dir(asset).glob("runs/*/result.json")
        (want,) = baseline.asset_dir(asset).glob("runs/*/result.json")
        got, want = json.loads(result.read_text()), json.loads(want.read_text())
        assert got["steps"] == want["steps"]
        assert got["final_loss"] == pytest.approx(want["final_loss"], rel=1e-4)
        assert Path(got["lora_path"]).is_file()
    elif asset == "identity_fidelity":
        (chosen,) = layout.asset_dir(asset).glob("runs/*/chosen/chosen.json")
        (want,) = baseline.asset_dir(asset).glob("runs/*/chosen/chosen.json")
        assert json.loads(chosen.read_text())["name"] == json.loads(want.read_text())["name"]
        from safetensors.numpy import load_file

        for name in ("pytorch_lora_weights.safetensors", "lora_comfyui.safetensors"):
            got_tensors, want_tensors = (
                load_file(chosen.parent / name),
                load_file(want.parent / name),
            )
            assert got_tensors.keys() == want_tensors.keys()
            for key, tensor in want_tensors.items():
                assert (got_tensors[key] == tensor).all(), (name, key)


def _materialize(layout: DataLayout, selection: list[str], partition: str | None):
    """On the instance of $DAGSTER_HOME, which a killed child process shares with the test."""
    with dg.DagsterInstance.get() as instance:
        return materialize_graph(layout, instance, selection, partition)


# --- tests -------------------------------------------------------------------------------------


@pytest.mark.parametrize("asset", list(KILL_POINTS))
def test_kill_9_during_each_asset_then_the_next_run_completes(
    asset: str, copy, baseline: DataLayout
) -> None:
    layout, home = copy
    for relative in OUTPUTS[asset]:
        shutil.rmtree(layout.root / relative, ignore_errors=True)
    partition = ALBUM if asset in PARTITIONED else None
    for scope, index, phase in KILL_POINTS[asset]:
        spec = {
            "selection": [asset],
            "partition": partition,
            "scope": scope,
            "index": index,
            "phase": phase,
        }
        child = _run_child(layout.root, home, spec)
        assert child.returncode == -signal.SIGKILL, (
            f"{asset}: not killed at {phase} write {index} of {scope} "
            f"(exit {child.returncode})\n{child.stdout[-3000:]}{child.stderr[-3000:]}"
        )
        tables = [layout.table_path(asset, partition)] if asset in ID_COLUMNS else []
        for table in tables:
            if table.exists():
                pq.read_table(table)  # the committed table is whole, never torn

    result = _materialize(layout, [asset], partition)
    assert result.success, f"{asset}: the run after the crashes failed"
    assert_storage_consistent(layout)
    assert_same_as_baseline(layout, baseline, asset)

    if asset == "photo_tiles":
        # The killed writers' temporaries stay hidden, and go once older than an hour.
        folder = layout.asset_dir(asset, ALBUM)
        leftovers = [p for p in folder.rglob("*") if is_temporary_name(p.name)]
        assert {p.parent.name for p in leftovers} == {"files", ALBUM}
        _age(folder, 2 * 3600)
        assert _materialize(layout, [asset], partition).success
        assert not [p for p in folder.rglob("*") if is_temporary_name(p.name)]
        assert_same_as_baseline(layout, baseline, asset)


def test_two_runs_of_one_partition_at_once(copy, baseline: DataLayout) -> None:
    """Two processes materialize the album chain of the same partition concurrently, from
    scratch: both succeed (or one fails cleanly) and the outputs are whole and identical."""
    layout, home = copy
    chain = ["photo_tiles", "face_embeddings", "identity_masks"]
    for asset in chain:
        shutil.rmtree(layout.root / OUTPUTS[asset][0], ignore_errors=True)
    shutil.rmtree(layout.cache_dir / "faces", ignore_errors=True)
    spec = {"selection": chain, "partition": ALBUM}
    children = [_run_child(layout.root, home, spec, wait=False) for _ in range(2)]
    outputs = [child.communicate(timeout=300)[0].decode(errors="replace") for child in children]
    codes = [child.returncode for child in children]
    assert codes == [0, 0], f"exit codes {codes}\n" + "\n----\n".join(o[-3000:] for o in outputs)
    with dg.DagsterInstance.get() as instance:
        first, second = instance.get_run_records()
    assert first.start_time < second.end_time and second.start_time < first.end_time, "not at once"
    assert_storage_consistent(layout)
    for asset in chain:
        assert_same_as_baseline(layout, baseline, asset)


def _age(folder: Path, seconds: float) -> None:
    for path in folder.rglob("*"):
        if path.is_file():
            stat = path.stat()
            os.utime(path, (stat.st_atime - seconds, stat.st_mtime - seconds))


def test_a_run_killed_after_pruning_leaves_the_committed_table_whole(copy) -> None:
    """Old files (past prune's one-hour grace), new settings (every sample file renamed): the
    training_set run prunes, then dies before committing its manifest. The committed manifest
    must still find all its files (photo_tiles and identity_masks keep the committed table's files
    the same way)."""
    asset, section, change = "training_set", "dataset", {"face_margin": 0.3}
    layout, home = copy
    _age(layout.asset_dir(asset), 2 * 3600)
    settings_path = layout.root / "pipeline.yaml"
    settings = yaml.safe_load(settings_path.read_text())
    settings.setdefault(section, {}).update(change)
    settings_path.write_text(yaml.safe_dump(settings))
    partition = ALBUM if asset in PARTITIONED else None
    committed = _table(layout, asset)
    spec = {
        "selection": [asset],
        "partition": partition,
        "scope": str(layout.table_path(asset, partition).relative_to(layout.root)),
        "index": 1,
        "phase": "torn",
    }
    child = _run_child(layout.root, home, spec)
    assert child.returncode == -signal.SIGKILL, child.stdout[-3000:] + child.stderr[-3000:]
    pd.testing.assert_frame_equal(_table(layout, asset), committed)
    assert_storage_consistent(layout)

    assert _materialize(layout, [asset], partition).success
    assert_storage_consistent(layout)
    assert not _table(layout, asset)["image_path"].isin(committed["image_path"]).all()
