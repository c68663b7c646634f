"""identity_fidelity: does the LoRA draw the people it learned, per checkpoint, and which to keep.

A thin shell over ``identity_pipeline.evaluation.run.evaluate_run``: for every saved checkpoint of
the latest ``lora_checkpoint`` run (and the base model), K images per identity from fixed prompts
and seeds, their faces embedded with the pipeline's face backend, scored against the held-out real
photos (likeness, copy-paste, bleed, faces per image); the configured rule picks the checkpoint
whose LoRA is written to ``chosen/``. Images and faces are stored per checkpoint, so a re-run with
the same settings only re-scores.
"""

import math
from pathlib import Path

import dagster as dg

from identity_pipeline.assets.gpu import gpu_asset
from identity_pipeline.assets.metadata import image_metadata, markdown_table, table_metadata
from identity_pipeline.assets.run_config import with_settings
from identity_pipeline.evaluation.config import FidelityConfig
from identity_pipeline.evaluation.report import SHOWN_COLUMNS
from identity_pipeline.resources import FaceBackendResource, SettingsResource, StorageResource
from identity_pipeline.storage import DataLayout, content_id

ASSET_NAME = "identity_fidelity"
LORA_ASSET = "lora_checkpoint"
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


class FidelityAssetConfig(dg.Config):
    """The common knobs; the rest keep ``FidelityConfig``'s defaults."""

    # A training run folder; unset: the run of the latest lora_checkpoint materialization.
    run_dir: str | None = None
    seeds: list[int] = [0, 1, 2, 3]  # K images per identity and prompt
    use_training_caption: bool = True
    solo_prompt: str = "A close-up photo of {name}, looking at the camera"  # "" to skip
    pair_prompt: str = "A photo of {name} standing next to another person"  # "" to skip
    # Unset: the training run's sample settings / most frequent bucket.
    num_inference_steps: int | None = None
    guidance_scale: float | None = None
    sample_size: int | None = None  # square images of this side
    max_identities: int | None = None
    max_checkpoints: int = 8
    include_base_model: bool = True
    # likeness_minus_bleed | likeness | identification
    best_rule: str = "likeness_minus_bleed"
    bleed_weight: float = 1.0
    no_face_weight: float = 0.25
    copy_threshold: float = 0.85
    fallback_to_training_photos: bool = False

    def fidelity_config(self) -> FidelityConfig:
        return FidelityConfig(
            use_training_caption=self.use_training_caption,
            solo_prompt=self.solo_prompt or None,
            pair_prompt=self.pair_prompt or None,
            seeds=tuple(self.seeds),
            num_inference_steps=self.num_inference_steps,
            guidance_scale=self.guidance_scale,
            width=self.sample_size,
            height=self.sample_size,
            max_identities=self.max_identities,
            max_checkpoints=self.max_checkpoints,
            include_base_model=self.include_base_model,
            best_rule=self.best_rule,  # type: ignore[arg-type]
            bleed_weight=self.bleed_weight,
            no_face_weight=self.no_face_weight,
            copy_threshold=self.copy_threshold,
            fallback_to_training_photos=self.fallback_to_training_photos,
        )


def resolve_run_dir(
    context: dg.AssetExecutionContext, config: FidelityAssetConfig, layout: DataLayout
) -> Path:
    """The explicit run folder, else the latest lora_checkpoint materialization's, else the
    most recently finished run folder under the lora_checkpoint asset."""
    if config.run_dir:
        return Path(config.run_dir).expanduser().resolve()
    event = context.instance.get_latest_materialization_event(dg.AssetKey(LORA_ASSET))
    materialization = event.asset_materialization if event is not None else None
    if materialization is not None and "lora_path" in materialization.metadata:
        lora_path = Path(str(materialization.metadata["lora_path"].value))
        return lora_path.parent.parent  # <run>/lora/pytorch_lora_weights.safetensors
    runs = layout.asset_dir(LORA_ASSET) / "runs"
    finished = sorted(
        (path.parent for path in runs.glob("*/result.json")),
        key=lambda folder: (folder / "result.json").stat().st_mtime,
    )
    if not finished:
        raise dg.Failure(
            description=f"No training run to evaluate: {LORA_ASSET} has not been materialized "
            f"(no run folder under {runs}); set run_dir to evaluate another one."
        )
    return finished[-1]


def output_dir(layout: DataLayout, run_dir: Path) -> Path:
    """One evaluation folder per training run: the run's key when it is one of ours."""
    runs = (layout.asset_dir(LORA_ASSET) / "runs").resolve()
    key = run_dir.name if run_dir.parent.resolve() == runs else content_id(str(run_dir), length=16)
    return layout.asset_dir(ASSET_NAME) / "runs" / key


@gpu_asset(
    name=ASSET_NAME,
    deps=[LORA_ASSET],
    group_name="training",
    # Every new LoRA is evaluated, however its training was started (launched or on a schedule).
    automation_condition=dg.AutomationCondition.eager(),
    kinds={"pytorch", "onnx", "parquet"},
    description="Identity fidelity of every saved LoRA checkpoint: K images per identity from "
    "fixed prompts/seeds (training caption, solo, two-person), faces embedded with the face "
    "backend and scored against the held-out real photos: likeness (with the real-vs-real "
    "baseline), copy-paste (nearest training vs held-out photo), bleed (confusion matrix, other "
    "people's faces), faces per image. The best checkpoint under the configured rule is the "
    "asset's chosen LoRA (chosen/, diffusers + ComfyUI layouts).",
    check_specs=[
        dg.AssetCheckSpec(
            "faces_generated",
            asset=ASSET_NAME,
            description="The chosen checkpoint's images show at least one face (else no score "
            "means anything: an untrained or broken model).",
        )
    ],
)
def identity_fidelity(
    context: dg.AssetExecutionContext,
    config: FidelityAssetConfig,
    storage: StorageResource,
    settings: SettingsResource,
    face_backend: FaceBackendResource,
):
    from identity_pipeline.evaluation.embedding import photos_without_face
    from identity_pipeline.evaluation.report import shown_table
    from identity_pipeline.evaluation.run import evaluate_run
    from identity_pipeline.faces import FaceCache

    layout = storage.layout
    config = with_settings(config, settings, layout, "fidelity")
    try:
        fidelity_config = config.fidelity_config()
    except ValueError as error:
        raise dg.Failure(description=str(error)) from error
    run_dir = resolve_run_dir(context, config, layout)
    out_dir = output_dir(layout, run_dir)
    backend = face_backend.get()
    context.log.info(f"evaluating {run_dir} into {out_dir} ({backend.name})")
    try:
        run = evaluate_run(
            run_dir,
            out_dir,
            backend,
            fidelity_config,
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


def _number(value: object) -> float | None:
    if value is None:
        return None
    number = float(value)  # type: ignore[arg-type]
    return number if math.isfinite(number) else None
