"""identity_fidelity: does the LoRA draw the people it learned, per checkpoint, and which to keep.

A thin shell over ``identity_pipeline.evaluation.run.evaluate_run``: checkpoints of the latest
``lora_checkpoint`` run race on a GPU-time budget (a share of the training's own time): images per
identity from fixed prompts and seeds, their faces embedded with the pipeline's face backend,
scored against the held-out real photos of the training set that run trained on (the copy in its
run folder, content hashes checked; never the live training_set table, which may have moved on):
likeness, copy-paste, bleed, faces per image. More seeds and neighbours are added only around the
leaders, until the configured rule's leader is clear; its LoRA is written to ``chosen/``. Images are stored per (checkpoint, prompt, seed, settings), so a re-run
only re-scores and a new checkpoint adds only its own images.
"""

import math
from pathlib import Path

import dagster as dg

from identity_pipeline.asset_names import IDENTITY_FIDELITY, LORA_CHECKPOINT
from identity_pipeline.assets.gpu import gpu_asset
from identity_pipeline.assets.metadata import image_metadata, markdown_table, table_metadata
from identity_pipeline.assets.settings import run_config_class, settings_metadata, stage_settings
from identity_pipeline.evaluation.config import FidelityConfig
from identity_pipeline.evaluation.report import SHOWN_COLUMNS
from identity_pipeline.faces import FaceConfig
from identity_pipeline.resources import FaceBackendResource, SettingsResource, StorageResource
from identity_pipeline.storage import DataLayout, content_id

SECTION = "fidelity"
FidelityRunConfig = run_config_class(FidelityConfig)
SUMMARY_METADATA = (
    "likeness",
    "real_baseline",
    "identification",
    "diagonal_dominance",
    "bleed",
    "others_like_identity",
    "copy_gap",
    "copy_rate",
    "no_face_rate",
    "faces_per_image",
)
CHECKPOINT_COLUMNS = (
    "checkpoint",
    "step",
    "chosen",
    "score",
    "likeness",
    "bleed",
    "identification",
    "copy_gap",
    "images",
    "images_without_face",
    "faces_per_image",
)
# The report's own columns, with where the reference photos came from after the identity.
IDENTITY_COLUMNS = (
    "identity",
    "reference_source",
    "reference_photos",
    "training_photos",
    *SHOWN_COLUMNS[1:],
)


def resolve_run_dir(
    context: dg.AssetExecutionContext, config: FidelityConfig, layout: DataLayout
) -> Path:
    """The explicit run folder, else the latest lora_checkpoint materialization's, else the
    most recently finished run folder under the lora_checkpoint asset."""
    if config.run_dir:
        return Path(config.run_dir).expanduser().resolve()
    event = context.instance.get_latest_materialization_event(dg.AssetKey(LORA_CHECKPOINT))
    materialization = event.asset_materialization if event is not None else None
    if materialization is not None and "run_dir" in materialization.metadata:
        return Path(str(materialization.metadata["run_dir"].value))
    if materialization is not None and "lora_path" in materialization.metadata:
        lora_path = Path(str(materialization.metadata["lora_path"].value))
        return lora_path.parent.parent  # <run>/lora/pytorch_lora_weights.safetensors
    runs = layout.asset_dir(LORA_CHECKPOINT) / "runs"
    finished = sorted(
        (path.parent for path in runs.glob("*/result.json")),
        key=lambda folder: (folder / "result.json").stat().st_mtime,
    )
    if not finished:
        raise dg.Failure(
            description=f"No training run to evaluate: {LORA_CHECKPOINT} has not been materialized "
            f"(no run folder under {runs}); set run_dir to evaluate another one."
        )
    return finished[-1]


def output_dir(layout: DataLayout, run_dir: Path) -> Path:
    """One evaluation folder per training run: the run's key when it is one of ours."""
    runs = (layout.asset_dir(LORA_CHECKPOINT) / "runs").resolve()
    key = run_dir.name if run_dir.parent.resolve() == runs else content_id(str(run_dir), length=16)
    return layout.asset_dir(IDENTITY_FIDELITY) / "runs" / key


@gpu_asset(
    name=IDENTITY_FIDELITY,
    deps=[LORA_CHECKPOINT],
    group_name="training",
    # Every new LoRA is evaluated, however its training was started (launched or on a schedule).
    automation_condition=dg.AutomationCondition.eager(),
    kinds={"pytorch", "onnx", "parquet"},
    description="Identity fidelity of the saved LoRA checkpoints, on a GPU-time budget (default "
    "a quarter of the training's own time): images per identity from fixed prompts/seeds "
    "(training caption, solo, two-person), faces embedded with the face backend and scored "
    "against the held-out real photos of the training set the run trained on (its run folder's "
    "copy, content hashes checked): likeness (with the real-vs-real baseline), copy-paste "
    "(nearest training vs held-out photo), bleed (confusion matrix, other people's faces), faces "
    "per image. Checkpoints race: seeds and neighbours are added only around the leaders. The "
    "best under the configured rule is the asset's chosen LoRA (chosen/, diffusers + ComfyUI); "
    "the metadata gives the cost estimate and what the budget skipped.",
    check_specs=[
        dg.AssetCheckSpec(
            "faces_generated",
            asset=IDENTITY_FIDELITY,
            description="The chosen checkpoint's images show at least one face (else no score "
            "means anything: an untrained or broken model).",
        )
    ],
)
def identity_fidelity(
    context: dg.AssetExecutionContext,
    config: FidelityRunConfig,  # type: ignore[valid-type]
    storage: StorageResource,
    settings: SettingsResource,
    face_backend: FaceBackendResource,
):
    from identity_pipeline.evaluation.embedding import photos_without_face
    from identity_pipeline.evaluation.report import shown_table
    from identity_pipeline.evaluation.run import evaluate_run
    from identity_pipeline.faces import FaceCache

    layout = storage.layout
    fidelity_config = stage_settings(settings, layout, SECTION, config, FidelityConfig)
    face_config = stage_settings(settings, layout, "faces", None, FaceConfig)
    run_dir = resolve_run_dir(context, fidelity_config, layout)
    out_dir = output_dir(layout, run_dir)
    backend = face_backend.get(face_config)
    context.log.info(f"evaluating {run_dir} into {out_dir} ({backend.name})")
    try:
        run = evaluate_run(
            run_dir,
            out_dir,
            backend,
            fidelity_config,
            face_config=face_config,
            face_cache=FaceCache(layout.cache_dir / "faces"),
            log=context.log.info,
        )
    except (FileNotFoundError, ValueError) as error:
        raise dg.Failure(description=str(error)) from error

    chosen = run.chosen
    summary = chosen.scores.summary if chosen is not None else {}
    scores = run.scores_table()
    checkpoints = run.checkpoints_table()
    metadata: dict[str, object] = {
        "run_dir": dg.MetadataValue.path(str(run_dir)),
        # What was read: the training set the run trained on (its own copy), not the live one.
        "training_manifest": dg.MetadataValue.path(str(run.manifest_path)),
        "training_data_version": run.data_version,
        "samples_changed_since_training": dg.MetadataValue.json(run.changed_samples),
        "evaluation_dir": dg.MetadataValue.path(str(out_dir)),
        "chosen_checkpoint": run.choice.name or "",
        "chosen_step": run.choice.step,
        "chosen_score": _number(run.choice.score),
        "chosen_reason": run.choice.reason,
        "best_rule": fidelity_config.best_rule,
        "identities": len(run.identities),
        "checkpoints_scored": len(run.evaluations),
        "checkpoints_reused": sum(1 for e in run.evaluations if e.reused),
        "images_generated": sum(len(e.images) for e in run.evaluations),
        "images_without_face": sum(
            e.scores.summary["images_without_face"] for e in run.evaluations
        ),
        "reference_photos_with_face": int(sum(len(v) for v in run.real.reference.values())),
        "training_photos_with_face": int(sum(len(v) for v in run.real.training.values())),
        "real_photos_without_face": dg.MetadataValue.json(
            dict(photos_without_face(run.real.photos))
        ),
        "reference_source": dg.MetadataValue.json(run.reference_source),
        "face_backend": backend.name,
        "seconds": run.seconds,
        **plan_metadata(run.plan),
        **settings_metadata(fidelity_config),
    }
    for key in SUMMARY_METADATA:
        metadata[key] = _number(summary.get(key))
    if run.chosen_dir is not None:
        metadata["chosen_lora_path"] = dg.MetadataValue.path(
            str(run.chosen_dir / "pytorch_lora_weights.safetensors")
        )
        metadata["chosen_comfyui_lora_path"] = dg.MetadataValue.path(
            str(run.chosen_dir / "lora_comfyui.safetensors")
        )
    if chosen is not None:
        identities = scores[scores["checkpoint"] == chosen.ref.name]
        shown = [column for column in IDENTITY_COLUMNS if column in identities.columns]
        metadata["identities_table"] = table_metadata(identities[shown])
        metadata["identities_markdown"] = dg.MetadataValue.md(
            markdown_table(shown_table(identities, shown))
        )
    if len(checkpoints):
        shown = [column for column in CHECKPOINT_COLUMNS if column in checkpoints.columns]
        metadata["checkpoints_table"] = table_metadata(checkpoints[shown])
    for name, key in (
        ("confusion_matrix", "confusion"),
        ("fidelity_curves", "curves"),
        ("samples", "samples"),
    ):
        if key in run.files:
            metadata.update(image_metadata(name, run.files[key]))
    for key in ("report", "scores", "checkpoints"):
        if key in run.files:
            metadata[f"{key}_path"] = dg.MetadataValue.path(str(run.files[key]))
    yield dg.MaterializeResult(metadata=metadata)

    faces = int(summary.get("faces", 0) or 0)
    yield dg.AssetCheckResult(
        check_name="faces_generated",
        passed=faces > 0,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "faces": faces,
            "images": int(summary.get("images", 0) or 0),
            "checkpoint": run.choice.name or "",
        },
    )


def plan_metadata(plan: dict) -> dict[str, object]:
    """The budget, the probe's prices, the estimate and what the budget skipped."""
    budget, cost, grid = plan["budget"], plan["cost"], plan["full_grid"]
    return {
        "budget_seconds": _number(budget["seconds"]),
        "budget_source": budget["source"],
        "training_seconds": _number(budget["training_seconds"]),
        "seconds_per_image": cost["seconds_per_image"],
        "seconds_per_step": cost["seconds_per_step"],
        "probe_device": cost["device"],
        "estimate_seconds": plan["estimate_seconds"],  # fixed cost + images
        "fixed_seconds": plan["fixed_seconds"],  # the real photos' faces, loading the pipeline
        "images_planned": plan["images_planned"],
        "images_made": plan.get("images_made", 0),
        "full_grid_images": grid["images"],
        "full_grid_seconds_estimate": grid["seconds_estimate"],
        "stopped_because": plan["race"]["stop"],
        "skipped_for_budget": dg.MetadataValue.json(plan["skipped_for_budget"]),
        "identities_not_sampled": dg.MetadataValue.json(plan["identities_not_sampled"]),
        "plan": dg.MetadataValue.json(plan["race"]),
    }


def _number(value: object) -> float | None:
    if value is None:
        return None
    number = float(value)  # type: ignore[arg-type]
    return number if math.isfinite(number) else None
