"""Identity fidelity: the metric on fixed vectors and real photos, checkpoint choice, the CLI, and
the identity_fidelity asset on a tiny random model (no faces: scores undefined, nothing crashes).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pytest
from PIL import Image
from safetensors.torch import load_file

from identity_pipeline.asset_names import IDENTITY_FIDELITY as ASSET_NAME
from identity_pipeline.assets.gpu import GPU_POOL
from identity_pipeline.assets.identity_fidelity import identity_fidelity, output_dir
from identity_pipeline.evaluation import (
    FidelityConfig,
    GeneratedImage,
    choose_checkpoint,
    diagonal_dominance,
    score_identities,
)
from identity_pipeline.evaluation.cli import add_fidelity_command
from identity_pipeline.evaluation.generate import CheckpointRef, spread
from identity_pipeline.evaluation.report import confusion_image, curves_image, plain, text_report
from identity_pipeline.resources import FaceBackendResource, SettingsResource, StorageResource
from identity_pipeline.storage import DataLayout
from identity_pipeline_tests.conftest import REPO_ROOT
from identity_pipeline_tests.training_fixtures import (
    CentreBackend,
    write_manifest,
    write_training_set,
)

# The lead's demo album (real, license-clean face photos); another folder can be pointed at for a
# local check. The real-photo test is skipped while it is absent.
DEMO_ALBUM = Path(os.environ.get("FIDELITY_TEST_ALBUM") or REPO_ROOT / "data" / "albums" / "demo")
NAMES = ("Alice", "Bob", "Carol", "Dave")
DIM = 32


# ----------------------------------------------------------------------------------------------
# Synthetic embeddings: fixed vectors around one centre per person


def _people(seed: int = 0, spread_: float = 0.35) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(len(NAMES), DIM))
    return {name: centres[i] / np.linalg.norm(centres[i]) for i, name in enumerate(NAMES)}


def _photos(centre: np.ndarray, count: int, rng: np.random.Generator, noise: float = 0.12):
    vectors = centre[None] + rng.normal(scale=noise, size=(count, DIM))
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def synthetic():
    rng = np.random.default_rng(1)
    centres = _people()
    reference = {name: _photos(centres[name], 3, rng) for name in NAMES}
    training = {name: _photos(centres[name], 6, rng) for name in NAMES}
    generated = [
        GeneratedImage(name, _photos(centres[name], 1, rng), "solo", seed)
        for name in NAMES
        for seed in range(4)
    ]
    return centres, reference, training, generated


def test_diagonal_dominates_and_shuffled_labels_do_not(synthetic) -> None:
    _, reference, training, generated = synthetic
    scores = score_identities(reference, generated, training)
    assert scores.summary["diagonal_dominance"] == 1.0
    assert scores.summary["identification"] == 1.0
    matrix = scores.confusion.to_numpy()
    assert (
        np.diag(matrix) > matrix.max(axis=1, where=~np.eye(len(NAMES), dtype=bool), initial=-1)
    ).all()
    table = scores.table.set_index("identity")
    # Likeness sits at the real-vs-real level: these "generated" faces are new photos.
    assert (abs(table["likeness"] - table["real_baseline"]) < 0.1).all()
    assert (table["likeness"] > table["real_cross"] + 0.3).all()

    # Every label moved to the next person (a derangement): no row may keep its diagonal.
    shifted = {name: NAMES[(i + 1) % len(NAMES)] for i, name in enumerate(NAMES)}
    shuffled = [
        GeneratedImage(shifted[g.identity], g.embeddings, g.prompt_kind, g.seed) for g in generated
    ]
    bad = score_identities(reference, shuffled, training)
    assert bad.summary["diagonal_dominance"] == 0.0
    assert bad.summary["identification"] == 0.0
    assert bad.summary["likeness"] < scores.summary["likeness"] - 0.3
    assert bad.summary["bleed"] > scores.summary["bleed"] + 0.3

    # A random permutation of the labels: dominance falls to about chance.
    rng = np.random.default_rng(7)
    labels = [g.identity for g in generated]
    rng.shuffle(labels)
    permuted = [
        GeneratedImage(label, g.embeddings) for label, g in zip(labels, generated, strict=True)
    ]
    assert score_identities(reference, permuted, training).summary["identification"] < 0.6


def test_copy_paste_separates_memorised_from_new_faces(synthetic) -> None:
    _, reference, training, generated = synthetic
    honest = score_identities(reference, generated, training)
    copies = [GeneratedImage(name, training[name][i : i + 1]) for name in NAMES for i in range(4)]
    copied = score_identities(reference, copies, training)
    assert copied.summary["copy_rate"] == 1.0
    assert honest.summary["copy_rate"] < 0.5
    assert copied.summary["copy_gap"] > honest.summary["copy_gap"] + 0.1
    # Without training photos the copy-paste scores are undefined, not zero.
    no_training = score_identities(reference, generated)
    assert math.isnan(no_training.summary["copy_gap"])
    assert no_training.table["train_nn"].isna().all()


def test_bleed_counts_other_faces_and_images_without_faces(synthetic) -> None:
    centres, reference, training, _ = synthetic
    rng = np.random.default_rng(3)
    stranger = _photos(-centres["Alice"], 1, rng)[0]  # someone unlike anyone here

    def pair(name: str, other: np.ndarray) -> GeneratedImage:
        return GeneratedImage(name, np.stack([_photos(centres[name], 1, rng)[0], other]), "pair")

    clean = [pair(name, stranger) for name in NAMES]
    leaking = [pair(name, _photos(centres[name], 1, rng)[0]) for name in NAMES]
    empty = [GeneratedImage(name, np.zeros((0, DIM)), "solo") for name in NAMES]
    clean_scores = score_identities(reference, clean + empty, training)
    leak_scores = score_identities(reference, leaking + empty, training)
    assert leak_scores.summary["others_like_identity"] > 0.5
    assert clean_scores.summary["others_like_identity"] < 0.3
    assert leak_scores.summary["bleed"] > clean_scores.summary["bleed"]
    # Images without a face are counted, not dropped.
    table = clean_scores.table.set_index("identity")
    assert (table["images"] == 2).all() and (table["images_without_face"] == 1).all()
    assert (table["faces_per_image"] == 1.0).all()
    assert clean_scores.summary["no_face_rate"] == 0.5
    assert (clean_scores.faces["role"] == "none").sum() == len(NAMES)
    assert not clean_scores.others_confusion.isna().all().all()


def test_scores_are_undefined_not_crashing_without_faces_or_references() -> None:
    nothing = [GeneratedImage(name, np.zeros((0, DIM))) for name in NAMES]
    scores = score_identities({}, nothing)
    assert scores.summary["images"] == 4 and scores.summary["no_face_rate"] == 1.0
    for key in ("likeness", "bleed", "identification", "diagonal_dominance", "copy_gap"):
        assert math.isnan(scores.summary[key])
    assert scores.confusion.shape == (4, 0)
    json.dumps(plain(scores.summary))  # NaN -> null
    assert "Alice" in text_report(scores)
    # References but no generated faces: likeness NaN, the real baseline still shown.
    rng = np.random.default_rng(0)
    reference = {name: _photos(_people()[name], 3, rng) for name in NAMES}
    scores = score_identities(reference, nothing)
    assert scores.table["likeness"].isna().all()
    assert scores.table["real_baseline"].notna().all()
    assert diagonal_dominance(scores.real_confusion) == 1.0


def test_checkpoint_choice_rules() -> None:
    def summary(likeness, bleed, no_face=0.0, identification=1.0):
        return {
            "likeness": likeness,
            "bleed": bleed,
            "no_face_rate": no_face,
            "identification": identification,
        }

    candidates = [
        ("step-100", 100, summary(0.30, 0.10)),
        ("step-200", 200, summary(0.45, 0.15)),
        ("step-300", 300, summary(0.50, 0.40)),  # likeness keeps rising, but it bleeds
        ("step-400", 400, summary(float("nan"), float("nan"), no_face=1.0)),
    ]
    assert choose_checkpoint(candidates, FidelityConfig()).name == "step-200"
    assert choose_checkpoint(candidates, FidelityConfig(best_rule="likeness")).name == "step-300"
    assert choose_checkpoint(candidates, FidelityConfig(bleed_weight=0.0)).name == "step-300"
    # Ties go to the earlier step.
    tie = [(n, s, summary(0.4, 0.1, identification=0.9)) for n, s, _ in candidates[:3]]
    assert choose_checkpoint(tie, FidelityConfig(best_rule="identification")).name == "step-100"
    # Nothing defined: the latest, with the reason.
    undefined = [(n, s, summary(float("nan"), float("nan"), 1.0)) for n, s, _ in candidates]
    choice = choose_checkpoint(undefined, FidelityConfig())
    assert choice.name == "step-400" and "undefined" in choice.reason
    assert choose_checkpoint([], FidelityConfig()).name is None


def test_config_and_checkpoint_spread() -> None:
    with pytest.raises(ValueError, match="best_rule"):
        FidelityConfig(best_rule="loss")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown"):
        FidelityConfig.from_dict({"seed": [1]})
    with pytest.raises(ValueError, match="name"):
        FidelityConfig(solo_prompt="a photo")
    config = FidelityConfig.from_dict({"seeds": [3, 4], "best_rule": "likeness"})
    assert config.seeds == (3, 4)
    assert config.generation_hash() == FidelityConfig(seeds=(3, 4)).generation_hash()
    assert config.generation_hash() != FidelityConfig(seeds=(3,)).generation_hash()
    refs = [CheckpointRef(f"step-{i}", i, "checkpoint", None) for i in range(1, 11)]
    picked = spread(refs, 4)
    assert [ref.step for ref in picked] == [1, 4, 7, 10]
    assert spread(refs, 1)[0].step == 10 and spread(refs, 20) == refs


def test_pictures_render_with_undefined_values() -> None:
    matrix = pd.DataFrame([[0.5, float("nan")], [0.1, 0.6]], index=["A", "B"], columns=["A", "B"])
    image = confusion_image([("generated", matrix), ("empty", matrix.iloc[:, :0])])
    assert image.width > 100 and image.height > 100
    curves = curves_image([0, 10, 20], {"likeness": [float("nan"), 0.2, 0.4]}, 0.45, 20)
    assert curves.size == (640, 320)
    assert curves_image([], {"likeness": []}).size == (640, 320)


# ----------------------------------------------------------------------------------------------
# Real photos: the demo album's people split into "reference" and "generated" halves


def album_people(folder: Path) -> dict[str, list[Path]]:
    """Who is in each photo: a labels CSV (path/file + person/identity/name columns) when the
    album has one, else sub-folders, else the file name's first word (``obama2.jpg``,
    ``biden_flip.jpg``, ``eileen_collins_crop.jpg`` -> obama, biden, eileen)."""
    from identity_pipeline.faces.cli import find_images

    people_files = [folder.parent.parent / "demo_people.csv"] if folder == DEMO_ALBUM else []
    for csv_path in [*people_files, *sorted(folder.glob("*.csv"))]:
        if not csv_path.is_file():
            continue
        frame = pd.read_csv(csv_path)
        path_column = next((c for c in ("path", "file", "filename") if c in frame), None)
        name_column = next((c for c in ("person", "identity", "name") if c in frame), None)
        if path_column and name_column:
            people: dict[str, list[Path]] = {}
            for path, name in zip(frame[path_column], frame[name_column], strict=True):
                if (
                    isinstance(name, str)
                    and name
                    and name != "ignore"
                    and (folder / path).is_file()
                ):
                    people.setdefault(name, []).append(folder / path)
            return people
    people = {}
    for path in find_images([folder]):
        relative = path.relative_to(folder)
        if len(relative.parts) > 1:
            name = relative.parts[0]
        else:
            match = re.match(r"[A-Za-z]+", path.stem)
            if not match:
                continue
            name = match.group(0).lower()
        people.setdefault(name, []).append(path)
    return people


def test_metric_on_real_photos_of_the_demo_album() -> None:
    if not DEMO_ALBUM.is_dir():
        pytest.skip(f"no demo album at {DEMO_ALBUM}")
    from identity_pipeline.evaluation.embedding import load_rgb
    from identity_pipeline.faces import FaceConfig, analyse_tile, get_backend

    backend = get_backend("offline")
    faces: dict[str, list[np.ndarray]] = {}
    for name, paths in sorted(album_people(DEMO_ALBUM).items()):
        for path in sorted(paths):
            found = analyse_tile(np.asarray(load_rgb(path)), backend, FaceConfig())
            if len(found) == 1:  # single-person photos only: group shots and collages have more
                faces.setdefault(name, []).append(found[0].embedding)
    faces = {name: vectors for name, vectors in faces.items() if len(vectors) >= 2}
    if len(faces) < 3:
        pytest.skip(f"{DEMO_ALBUM} has fewer than 3 people with 2+ single-face photos")
    reference = {name: np.stack(vectors[0::2]) for name, vectors in faces.items()}
    generated = [
        GeneratedImage(name, vector[None])
        for name, vectors in faces.items()
        for vector in vectors[1::2]
    ]
    scores = score_identities(reference, generated)
    assert scores.summary["diagonal_dominance"] == 1.0, text_report(scores)
    assert scores.summary["identification"] == 1.0
    names = sorted(faces)
    shifted = {name: names[(i + 1) % len(names)] for i, name in enumerate(names)}
    shuffled = [GeneratedImage(shifted[g.identity], g.embeddings) for g in generated]
    bad = score_identities(reference, shuffled)
    assert bad.summary["diagonal_dominance"] <= 0.5, text_report(bad)
    assert bad.summary["identification"] < 0.5
    assert bad.summary["likeness"] < scores.summary["likeness"]


# ----------------------------------------------------------------------------------------------
# CLI


def _run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    add_fidelity_command(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.handler(args) or 0)


def test_cli_counts_images_without_faces(tmp_path: Path, capsys) -> None:
    for side in ("reference", "generated"):
        for name in ("Alice", "Bob"):
            folder = tmp_path / side / name
            folder.mkdir(parents=True)
            for index in range(2):
                Image.new("RGB", (96, 96), (40 * index, 90, 160)).save(folder / f"{index}.png")
    out = tmp_path / "report.json"
    code = _run_cli(
        [
            "fidelity",
            "--reference",
            str(tmp_path / "reference"),
            "--generated",
            str(tmp_path / "generated"),
            "--out",
            str(out),
            "--backend",
            "offline",
            "--no-cache",
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "likeness" in printed and "Alice" in printed
    report = json.loads(out.read_text())
    assert report["summary"]["images"] == 4 and report["summary"]["images_without_face"] == 4
    assert report["summary"]["likeness"] is None
    assert report["reference_photos_without_face"] == {"Alice": 2, "Bob": 2}
    assert _run_cli(["fidelity", "--reference", str(tmp_path / "x"), "--generated", "y"]) == 2


def test_cli_on_real_photos(tmp_path: Path, capsys) -> None:
    if not DEMO_ALBUM.is_dir():
        pytest.skip(f"no demo album at {DEMO_ALBUM}")
    people = {n: sorted(p) for n, p in album_people(DEMO_ALBUM).items() if len(p) >= 2}
    if len(people) < 2:
        pytest.skip("the demo album has fewer than 2 people with 2+ photos")
    for name, paths in people.items():
        for index, path in enumerate(paths):
            side = "reference" if index % 2 == 0 else "generated"
            (tmp_path / side / name).mkdir(parents=True, exist_ok=True)
            (tmp_path / side / name / path.name).symlink_to(path)
    out = tmp_path / "report.json"
    argv = ["fidelity", "--reference", str(tmp_path / "reference")]
    argv += ["--generated", str(tmp_path / "generated"), "--out", str(out), "--no-cache"]
    assert _run_cli([*argv, "--backend", "offline"]) == 0
    report = json.loads(out.read_text())
    assert report["summary"]["likeness"] > 0.3
    assert "confusion" in capsys.readouterr().out


# ----------------------------------------------------------------------------------------------
# The asset on a tiny random model


class CentreBackendResource(FaceBackendResource):
    def get(self, config):
        return CentreBackend()


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from identity_pipeline.training.tiny_models import save_tiny_model

    return save_tiny_model("qwen-image", tmp_path_factory.mktemp("models") / "tiny-qwen-image")


def _train_tiny(model: Path, root: Path, run_dir: Path) -> Path:
    """Four steps, a checkpoint every two: two checkpoints and the export, in ~2 s on a CPU."""
    from identity_pipeline.training.config import TrainingConfig
    from identity_pipeline.training.trainer import train

    frame = write_training_set(root / "training_files", count=4, holdout=2)
    manifest = write_manifest(frame, root / "training_files" / "table.parquet")
    config = TrainingConfig.from_dict(
        {
            "output_dir": str(run_dir),
            "max_steps": 4,
            "mixed_precision": "no",
            "log_every_steps": 2,
            "export_dtype": "float32",
            "cpu_threads": 1,
            "model": {"family": "qwen-image", "source": str(model)},
            "data": {"manifest": str(manifest), "max_text_tokens": 32},
            "lora": {"rank": 4, "alpha": 8},
            "optimizer": {"learning_rate": 1e-2},
            "checkpoint": {"every_steps": 2, "keep_last": 5},
            "samples": {"enabled": False, "num_inference_steps": 2, "guidance_scale": 1.0},
        }
    )
    train(config)
    return run_dir


@pytest.fixture(scope="module")
def trained_run(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("trained")
    return _train_tiny(tiny_model, root, root / "run")


def _materialize(instance, config: dict, backend: FaceBackendResource):
    return dg.materialize(
        [identity_fidelity],
        instance=instance,
        resources={
            "storage": StorageResource(),
            "settings": SettingsResource(),
            "face_backend": backend,
        },
        run_config={"ops": {ASSET_NAME: {"config": config}}},
        raise_on_error=False,
    )


@pytest.mark.slow
def test_asset_on_tiny_model_without_faces(
    trained_run: Path, layout: DataLayout, instance: dg.DagsterInstance
) -> None:
    run_dir = trained_run
    # No budget: the two checkpoints and the base model are all scored (nothing to race).
    (layout.root / "pipeline.yaml").write_text(
        "faces:\n  backend: offline\nfidelity:\n  budget_fraction: null\n"
    )
    config = {"run_dir": str(run_dir), "seeds": [0], "num_inference_steps": 2}
    result = _materialize(instance, config, FaceBackendResource())
    assert result.success
    metadata = result.asset_materializations_for_node(ASSET_NAME)[0].metadata
    # Two checkpoints screened with one image per identity (the solo prompt), no face anywhere:
    # nothing to race. Then the base model with the first seed's three prompts.
    assert metadata["checkpoints_scored"].value == 3
    assert metadata["settings"].value["seeds"] == [0]  # run config over the defaults
    assert metadata["images_generated"].value == 2 * 2 + 2 * 3
    assert metadata["images_without_face"].value == 10
    assert metadata["full_grid_images"].value == 3 * 2 * 3
    assert "no faces" in metadata["stopped_because"].value
    assert metadata["no_face_rate"].value == 1.0
    assert metadata["likeness"].value is None and metadata["bleed"].value is None
    assert metadata["chosen_checkpoint"].value == "step-0000004"
    assert "undefined" in metadata["chosen_reason"].value
    for name in ("confusion_matrix", "fidelity_curves", "samples"):
        assert metadata[name].value.startswith(f"![{name}](data:image/jpeg;base64,")
    # The chosen LoRA is the trainer's export of that step, to the last bit.
    chosen = load_file(metadata["chosen_lora_path"].value)
    exported = load_file(str(run_dir / "lora" / "pytorch_lora_weights.safetensors"))
    assert chosen.keys() == exported.keys()
    assert all(bool((chosen[key] == exported[key]).all()) for key in chosen)
    report = json.loads(Path(metadata["report_path"].value).read_text())
    assert [c["name"] for c in report["checkpoints"]] == ["base", "step-0000002", "step-0000004"]
    assert report["checkpoints"][1]["summary"]["images_without_face"] == 2
    check = result.get_asset_check_evaluations()[0]
    assert check.check_name == "faces_generated" and not check.passed

    # Same settings again: everything is read back, no model is loaded.
    again = _materialize(instance, config, FaceBackendResource())
    assert again.success
    metadata = again.asset_materializations_for_node(ASSET_NAME)[0].metadata
    assert metadata["checkpoints_reused"].value == 3


@pytest.mark.slow
def test_asset_scores_faces_and_finds_the_latest_run(
    tiny_model: Path, layout: DataLayout, instance: dg.DagsterInstance, tmp_path: Path
) -> None:
    # A run where lora_checkpoint keeps them: found without run_dir.
    run_dir = layout.asset_dir("lora_checkpoint") / "runs" / "abc123"
    _train_tiny(tiny_model, tmp_path, run_dir)
    config = {
        "seeds": [0, 1],
        "num_inference_steps": 2,
        "pair_prompt": "",
        "include_base_model": False,
        "fallback_to_training_photos": False,
        "budget_seconds": 3600.0,
    }
    result = _materialize(instance, config, CentreBackendResource())
    assert result.success
    metadata = result.asset_materializations_for_node(ASSET_NAME)[0].metadata
    assert Path(metadata["run_dir"].value) == run_dir
    assert Path(metadata["evaluation_dir"].value) == output_dir(layout, run_dir)
    assert metadata["checkpoints_scored"].value == 2
    assert metadata["images_without_face"].value == 0
    assert metadata["faces_per_image"].value == 1.0
    # Both identities have a held-out photo (the fixture holds out two): likeness is defined.
    assert metadata["reference_photos_with_face"].value == 2
    assert metadata["likeness"].value is not None
    assert metadata["chosen_checkpoint"].value in {"step-0000002", "step-0000004"}
    assert "highest likeness_minus_bleed" in metadata["chosen_reason"].value
    scores = pd.read_parquet(metadata["scores_path"].value)
    assert set(scores["checkpoint"]) == {"step-0000002", "step-0000004"}
    assert scores["likeness"].notna().all() and (scores["reference_source"] == "holdout").all()
    assert result.get_asset_check_evaluations()[0].passed


def test_gpu_declaration_and_missing_run(layout: DataLayout, instance: dg.DagsterInstance) -> None:
    node = identity_fidelity.node_def
    assert node.pool == GPU_POOL and node.tags["dagster-celery/queue"] == "gpu"
    spec = identity_fidelity.get_asset_spec(dg.AssetKey(ASSET_NAME))
    assert [dep.asset_key for dep in spec.deps] == [dg.AssetKey("lora_checkpoint")]
    result = _materialize(instance, {}, FaceBackendResource())
    assert not result.success
    failure = [event for event in result.all_events if event.is_step_failure][0]
    assert "lora_checkpoint has not been materialized" in failure.step_failure_data.error.message


def test_evaluation_never_imports_dagster() -> None:
    import subprocess
    import sys

    code = (
        "import sys, identity_pipeline.evaluation.run, identity_pipeline.evaluation.cli;"
        "sys.exit(1 if 'dagster' in sys.modules else 0)"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


@pytest.mark.slow
def test_run_with_only_the_final_export(trained_run: Path, tmp_path: Path) -> None:
    """Checkpoints pruned away: the exported LoRA is evaluated (loaded as users load it)."""
    import shutil

    from identity_pipeline.dataset.version import snapshot_manifest
    from identity_pipeline.evaluation.generate import list_checkpoints, load_training_config
    from identity_pipeline.evaluation.run import evaluate_run

    run_dir = tmp_path / "run"
    shutil.copytree(trained_run, run_dir, ignore=shutil.ignore_patterns("checkpoints"))
    refs = list_checkpoints(run_dir)
    assert [(ref.name, ref.step, ref.kind) for ref in refs] == [("final", 4, "export")]
    config = FidelityConfig(
        seeds=(0,), num_inference_steps=2, solo_prompt=None, pair_prompt=None, budget_fraction=None
    )
    # What the run trained on, as lora_checkpoint keeps it: hashes recorded; one file has
    # changed since, so its sample is left out and said so.
    training = load_training_config(run_dir)
    manifest = pd.read_parquet(training.data.manifest)
    root = Path(training.data.data_root or Path(training.data.manifest).parent)
    snapshot = snapshot_manifest(manifest, root)
    changed_id = snapshot.loc[snapshot["split"] == "train", "sample_id"].iloc[0]
    snapshot.loc[snapshot["sample_id"] == changed_id, "image_sha256"] = "0" * 64
    copy = run_dir / "training_set.parquet"
    snapshot.to_parquet(copy, index=False)
    run = evaluate_run(
        run_dir, tmp_path / "eval", CentreBackend(), config, manifest_path=copy, data_root=root
    )
    assert run.manifest_path == copy
    assert list(run.changed_samples) == [changed_id]
    report = json.loads((tmp_path / "eval" / "report.json").read_text())
    assert report["training_manifest"] == str(copy)
    assert list(report["samples_changed_since_training"]) == [changed_id]
    assert [e.ref.name for e in run.evaluations] == ["base", "final"]
    assert run.choice.name == "final" and run.chosen_dir is not None
    chosen = load_file(str(run.chosen_dir / "pytorch_lora_weights.safetensors"))
    exported = load_file(str(run_dir / "lora" / "pytorch_lora_weights.safetensors"))
    assert all(bool((chosen[key] == exported[key]).all()) for key in exported)
    base, final = run.evaluations
    assert base.images[0].embeddings.tolist() != final.images[0].embeddings.tolist()


# ----------------------------------------------------------------------------------------------
# A budgeted run on the tiny model (the plan's decisions alone: test_fidelity_budget.py)


@pytest.mark.slow
def test_budgeted_run_records_its_plan_and_makes_only_new_images(
    trained_run: Path, tmp_path: Path
) -> None:
    from identity_pipeline.evaluation.run import evaluate_run

    out = tmp_path / "eval"
    messages: list[str] = []
    config = FidelityConfig(seeds=(0, 1), num_inference_steps=2)  # the default budget: 25 %
    run = evaluate_run(trained_run, out, CentreBackend(), config, log=messages.append)
    plan = run.plan
    result = json.loads((trained_run / "result.json").read_text())
    trained = max(result["train_seconds"], result["total_seconds"])
    assert plan["budget"]["seconds"] == pytest.approx(0.25 * trained, abs=1e-3)
    assert plan["cost"]["probed_now"] and plan["cost"]["seconds_per_image"] > 0
    # The images get what the budget leaves after the run's fixed cost (faces, loading).
    assert plan["fixed_seconds"] >= plan["cost"]["model_load_seconds"] > 0
    spendable = max(0.0, plan["budget"]["seconds"] - plan["fixed_seconds"])
    assert plan["images_budget_seconds"] == pytest.approx(spendable, abs=1e-3)
    assert plan["estimate_seconds"] >= plan["fixed_seconds"]
    # The estimate is logged before the race, and it says what the budget left out.
    estimate = next(i for i, m in enumerate(messages) if m.startswith("estimate:"))
    assert "probed" in messages[estimate - 1] and "s per step" in messages[estimate - 1]
    assert plan["full_grid"]["images"] == 3 * 2 * 3 * 2  # base + 2 checkpoints, 2 x 3 x 2
    assert plan["images_planned"] < plan["full_grid"]["images"]
    assert plan["skipped_for_budget"], plan
    assert json.loads((out / "report.json").read_text())["plan"]["race"]["stop"]
    first_images = plan["images_made"]

    # Again: the same plan, every image read back, no model loaded, no probe.
    again = evaluate_run(trained_run, out, CentreBackend(), config)
    assert again.plan["images_made"] == 0 and not again.plan["cost"]["probed_now"]
    assert again.choice.name == run.choice.name
    assert again.plan["race"] == plan["race"]

    # A larger budget: only the images the smaller plan did not make are made.
    bigger = FidelityConfig(seeds=(0, 1), num_inference_steps=2, budget_seconds=600.0)
    more = evaluate_run(trained_run, out, CentreBackend(), bigger)
    assert more.plan["images_reused"] >= first_images
    assert more.plan["images_made"] == more.plan["images_planned"] - first_images
    assert not more.plan["skipped_for_budget"]
