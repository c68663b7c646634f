"""Score a run's checkpoints and choose one, on a GPU-time budget: the fidelity asset's logic.

    evaluate_run(run_dir, out_dir, backend)  ->  FidelityRun

1. Real faces: the identity's face in every train and holdout image of the run's manifest.
2. The budget (``budget.resolve_budget``: a share of the training run's own time) and the price
   of one image on this device (a one-image probe, ``images.ImageMaker.cost``), logged with the
   plan's estimate before anything else is generated.
3. The progressive choice (``plan``): one image per identity for the last and evenly spread
   checkpoints (all of them by default), then the leader's neighbours and more prompts and seeds
   for the checkpoints still racing, until the leader's margin is clear or the budget is spent;
   at ~512 px and capped steps (a face needs no more). Images are stored per (checkpoint, prompt, seed, settings) under
   ``out_dir/checkpoints/<name>/``; a re-run plans the same images and reads them all back.
4. Scores per checkpoint (``metrics.score_identities``); the configured rule picks among the
   checkpoints still racing, whose LoRA is written to ``out_dir/chosen/`` (diffusers + ComfyUI).
5. ``report.json`` (with the plan: estimate, what the budget skipped), ``scores.parquet``
   (checkpoint x identity), ``checkpoints.parquet``, ``curves.png``, ``confusion.png``,
   ``samples.jpg``.
"""

from __future__ import annotations

import json
import math
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from identity_pipeline.dataset.version import changed_files, manifest_version
from identity_pipeline.evaluation.budget import Budget, images_budget, resolve_budget
from identity_pipeline.evaluation.config import (
    KIND_CAPTION,
    KIND_PAIR,
    KIND_SOLO,
    FidelityConfig,
    fill_name,
)
from identity_pipeline.evaluation.embedding import RealFaces, real_faces_from_manifest
from identity_pipeline.evaluation.generate import (
    CheckpointRef,
    cpu_threads,
    default_device,
    export_checkpoint,
    list_checkpoints,
    load_training_config,
    scratch_folder,
    spread,
)
from identity_pipeline.evaluation.images import (
    GeneratedRecord,
    ImageMaker,
    ImageStore,
    PromptSpec,
    RunOracle,
)
from identity_pipeline.evaluation.metrics import FidelityScores
from identity_pipeline.evaluation.plan import (
    BASE,
    PROMPT_PREFERENCE,
    Race,
    exhaustive_images,
    fit_screen,
    full_grid,
    race,
    sample_identities,
)
from identity_pipeline.evaluation.report import (
    confusion_image,
    curves_image,
    plain,
    scores_json,
)
from identity_pipeline.evaluation.selection import Choice, choose_checkpoint, selection_score
from identity_pipeline.faces import FaceBackend, FaceCache, FaceConfig
from identity_pipeline.previews import SheetItem, contact_sheet, encode_image
from identity_pipeline.storage import (
    atomic_write_bytes,
    atomic_write_table,
    atomic_write_text,
)

CHOSEN_DIR = "chosen"
REPORT_FILE = "report.json"

Log = Callable[[str], None]


@dataclass
class CheckpointEvaluation:
    ref: CheckpointRef
    images: list[GeneratedRecord]
    scores: FidelityScores
    score: float  # the selection rule's value (NaN for undefined)
    reused: bool  # every image read back, none made
    seconds: float
    seeds: list[int] = field(default_factory=list)
    status: str = ""  # racing (to the end) | eliminated: why | base


@dataclass
class FidelityRun:
    run_dir: Path
    out_dir: Path
    manifest_path: Path  # the training set read (the run's own copy for lora_checkpoint runs)
    data_version: str  # of the rows scored
    changed_samples: dict[str, str]  # sample_id -> why it was left out (file changed / missing)
    config: FidelityConfig
    identities: list[str]
    prompts: list[PromptSpec]
    settings: dict[str, Any]
    real: RealFaces
    reference_source: dict[str, str]
    evaluations: list[CheckpointEvaluation]
    choice: Choice
    chosen_dir: Path | None
    plan: dict[str, Any] = field(default_factory=dict)  # budget, estimate, race, skipped
    files: dict[str, Path] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def chosen(self) -> CheckpointEvaluation | None:
        for evaluation in self.evaluations:
            if evaluation.ref.name == self.choice.name:
                return evaluation
        return None

    def checkpoints_table(self) -> pd.DataFrame:
        """One row per evaluated checkpoint: step, rule score, summary scores."""
        rows = []
        for evaluation in self.evaluations:
            rows.append(
                {
                    "checkpoint": evaluation.ref.name,
                    "step": evaluation.ref.step,
                    "kind": evaluation.ref.kind,
                    "chosen": evaluation.ref.name == self.choice.name,
                    "score": evaluation.score,
                    "seeds": len(evaluation.seeds),
                    "status": evaluation.status,
                    **{
                        key: value
                        for key, value in evaluation.scores.summary.items()
                        if not isinstance(value, dict)
                    },
                }
            )
        return pd.DataFrame(rows)

    def scores_table(self) -> pd.DataFrame:
        """One row per (checkpoint, identity): every per-identity score."""
        frames = [
            evaluation.scores.table.assign(
                checkpoint=evaluation.ref.name,
                step=evaluation.ref.step,
                reference_source=lambda t: t["identity"].map(self.reference_source),
            )
            for evaluation in self.evaluations
        ]
        if not frames:
            return pd.DataFrame()
        table = pd.concat(frames, ignore_index=True)
        first = ["checkpoint", "step", "identity"]
        return table[first + [c for c in table.columns if c not in first]]


def build_prompts(
    identities: Sequence[str], manifest: pd.DataFrame, config: FidelityConfig
) -> list[PromptSpec]:
    """The caption (most frequent training caption), solo and pair prompts of each identity.

    A prompt whose text another kind of the same identity already has is not generated twice.
    """
    train = manifest[manifest["split"] == "train"]
    specs: list[PromptSpec] = []
    for identity in identities:
        texts: dict[str, str] = {}
        if config.use_training_caption:
            captions = train.loc[train["identity"].astype(str) == identity, "caption"]
            if len(captions):
                texts[KIND_CAPTION] = Counter(map(str, captions)).most_common(1)[0][0]
        if config.solo_prompt:
            texts[KIND_SOLO] = fill_name(config.solo_prompt, identity)
        if config.pair_prompt:
            texts[KIND_PAIR] = fill_name(config.pair_prompt, identity)
        seen: set[str] = set()
        for kind, text in texts.items():
            if text not in seen:
                seen.add(text)
                specs.append(PromptSpec(identity, kind, text))
    return specs


def evaluate_run(
    run_dir: Path,
    out_dir: Path,
    backend: FaceBackend,
    config: FidelityConfig | None = None,
    face_config: FaceConfig | None = None,
    face_cache: FaceCache | None = None,
    manifest_path: Path | None = None,
    data_root: Path | None = None,
    device=None,
    log: Log | None = None,
) -> FidelityRun:
    started = time.perf_counter()
    config = config or FidelityConfig()
    face_config = face_config or FaceConfig()
    log = log or (lambda message: None)
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    training_config = load_training_config(run_dir)
    # The manifest the run trained on: lora_checkpoint keeps a copy in the run folder (with the
    # content hash of every file) and points the trainer's config at it.
    manifest_path = Path(manifest_path or training_config.data.manifest)
    if not manifest_path.is_file():
        raise FileNotFoundError(f"the run's training-set manifest {manifest_path} is missing")
    manifest = pd.read_parquet(manifest_path)
    root = Path(data_root or training_config.data.data_root or manifest_path.parent)
    changed = changed_files(manifest, root)
    if changed:  # pruned or replaced since training: scoring them would compare other photos
        log(f"{len(changed)} sample(s) left out, their files changed since training")
        manifest = manifest[~manifest["sample_id"].astype(str).isin(changed)]

    identities = sorted(
        {str(name) for name in manifest.loc[manifest["split"] == "train", "identity"]}
    )
    if config.max_identities is not None:
        identities = identities[: config.max_identities]
    if not identities:
        raise ValueError(f"{manifest_path} has no training samples: nothing to evaluate")

    log(f"embedding the real photos of {len(identities)} identities")
    real = real_faces_from_manifest(
        manifest, root, backend, face_config, identities, config.min_mask_coverage, face_cache
    )
    reference, training, source = reference_sets(real, identities, config)

    refs = spread(list_checkpoints(run_dir), config.max_checkpoints)
    if not refs:
        raise FileNotFoundError(f"{run_dir} has no saved checkpoint and no exported LoRA yet")

    prompts = build_prompts(identities, manifest, config)
    device = device or default_device()
    settings = generation_settings(training_config, manifest, config, prompts)
    settings.update(scoring_size(settings, config, device, model_pixel_multiple(training_config)))
    budget = resolve_budget(config, run_dir)
    store = ImageStore(out_dir, settings, backend, face_config, config.save_images)
    maker = ImageMaker(store, training_config, prompts, settings, face_config, device, log)
    with cpu_threads(device, training_config.cpu_threads):
        try:
            oracle, progress, plan = plan_and_race(
                maker,
                refs,
                identities,
                prompts,
                reference,
                training,
                config,
                budget,
                log,
                setup_seconds=time.perf_counter() - started,
            )
        finally:
            maker.close()
    evaluations = checkpoint_evaluations(oracle, progress)
    survivors = {oracle.ref(c).name for c in progress.survivors}
    choice = choose_checkpoint(
        [
            (evaluation.ref.name, evaluation.ref.step, evaluation.scores.summary)
            for evaluation in evaluations
            if evaluation.ref.name in survivors
        ],
        config,
    )
    if len(refs) > 1 and choice.name is not None:
        choice = Choice(
            choice.index,
            choice.name,
            choice.step,
            choice.score,
            f"{choice.reason} among {len(survivors)} of {len(refs)} checkpoints ({progress.stop})",
        )
    plan["images_made"], plan["images_reused"] = maker.made, maker.reused
    if maker.made:
        plan["seconds_per_image_made"] = round(maker.seconds_making / maker.made, 4)
    log(
        f"chosen: {choice.name} ({choice.reason}); {maker.made} images made, "
        f"{maker.reused} read back"
    )

    chosen_dir = None
    chosen_ref = next((e.ref for e in evaluations if e.ref.name == choice.name), None)
    if chosen_ref is not None:
        from identity_pipeline.training.families import get_adapter
        from identity_pipeline.training.trainer import DTYPES

        chosen_dir = out_dir / CHOSEN_DIR
        adapter = get_adapter(training_config.model.family)
        with scratch_folder(out_dir) as scratch:
            # Written beside, then swapped in, so the folder never mixes two checkpoints.
            export_checkpoint(
                chosen_ref, training_config, adapter, scratch, DTYPES[training_config.export_dtype]
            )
            atomic_write_text(
                scratch / "chosen.json",
                json.dumps(
                    plain(
                        {
                            "name": choice.name,
                            "step": choice.step,
                            "score": choice.score,
                            "reason": choice.reason,
                            "rule": config.best_rule,
                        }
                    ),
                    indent=1,
                ),
            )
            _replace_folder(scratch, chosen_dir)

    run = FidelityRun(
        run_dir=run_dir,
        out_dir=out_dir,
        manifest_path=manifest_path,
        data_version=manifest_version(manifest),
        changed_samples=changed,
        config=config,
        identities=identities,
        prompts=prompts,
        settings=settings,
        real=real,
        reference_source=source,
        evaluations=evaluations,
        choice=choice,
        chosen_dir=chosen_dir,
        plan=plan,
    )
    run.files = write_outputs(run)
    run.seconds = round(time.perf_counter() - started, 3)
    return run


def reference_sets(
    real: RealFaces, identities: Sequence[str], config: FidelityConfig
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, str]]:
    """Reference (held-out) and training embeddings per identity, and where the reference came
    from: "holdout", "training" (fallback_to_training_photos, no copy-paste scores then) or
    "none"."""
    reference: dict[str, np.ndarray] = {}
    training: dict[str, np.ndarray] = {}
    source: dict[str, str] = {}
    for name in identities:
        held = real.reference.get(name)
        trained = real.training.get(name)
        if held is not None and len(held):
            reference[name] = held
            source[name] = "holdout"
            if trained is not None and len(trained):
                training[name] = trained
        elif config.fallback_to_training_photos and trained is not None and len(trained):
            reference[name] = trained
            source[name] = "training"
        else:
            source[name] = "none"
    return reference, training, source


def generation_settings(
    training_config, manifest: pd.DataFrame, config: FidelityConfig, prompts: Sequence[PromptSpec]
) -> dict[str, Any]:
    """Everything the images depend on, resolved (None in the config: the run's own settings)."""
    samples = training_config.samples
    width, height = config.width, config.height
    if width is None or height is None:
        train = manifest[manifest["split"] == "train"]
        buckets = Counter(zip(train["bucket_width"], train["bucket_height"], strict=True))
        common = buckets.most_common(1)[0][0] if buckets else (1024, 1024)
        width = width or samples.width or int(common[0])
        height = height or samples.height or int(common[1])
    return {
        "model": training_config.model.source,
        "family": training_config.model.family,
        "revision": training_config.model.revision,
        "prompts": [[spec.identity, spec.kind, spec.text] for spec in prompts],
        "seeds": list(config.seeds),
        "num_inference_steps": config.num_inference_steps
        or min(samples.num_inference_steps, config.max_inference_steps or math.inf),
        "guidance_scale": (
            config.guidance_scale if config.guidance_scale is not None else samples.guidance_scale
        ),
        "negative_prompt": (
            config.negative_prompt
            if config.negative_prompt is not None
            else samples.negative_prompt
        ),
        "width": int(width),
        "height": int(height),
    }


def model_pixel_multiple(training_config) -> int:
    """Image sides must be multiples of this for the run's model (read from its configs)."""
    from identity_pipeline.training.families import LoadOptions, get_adapter

    model = training_config.model
    adapter = get_adapter(model.family)
    adapter.read_configs(LoadOptions(model.source, model.revision, model.variant))
    return adapter.pixel_multiple()


def scoring_size(
    settings: dict[str, Any], config: FidelityConfig, device, multiple: int
) -> dict[str, int]:
    """The images' size: explicit, else the run's scaled down to ``max_side`` (a face needs no
    more) and on a CPU to ``cpu_max_side``; sides rounded down to the model's multiple."""
    width, height = settings["width"], settings["height"]
    if config.width is None and config.height is None:
        caps = [config.max_side]
        if device.type == "cpu":  # a real model on a CPU would take hours: tiny models only
            caps.append(config.cpu_max_side)
        cap = min((c for c in caps if c is not None), default=None)
        longest = max(width, height)
        if cap and longest > cap:
            width, height = round(width * cap / longest), round(height * cap / longest)
    return {
        "width": max(multiple, width // multiple * multiple),
        "height": max(multiple, height // multiple * multiple),
    }


def plan_and_race(
    maker: ImageMaker,
    refs: Sequence[CheckpointRef],
    identities: Sequence[str],
    prompts: Sequence[PromptSpec],
    reference: dict[str, np.ndarray],
    training: dict[str, np.ndarray],
    config: FidelityConfig,
    budget: Budget,
    log: Log,
    setup_seconds: float = 0.0,
) -> tuple[RunOracle, Race, dict[str, Any]]:
    """Price an image (probe), fit the plan to what the budget leaves after the run's fixed
    cost (``setup_seconds`` so far and loading the pipeline), log the estimate, run the choice."""
    seeds = list(config.seeds)
    kinds_of = {name: [s.kind for s in prompts if s.identity == name] for name in identities}
    sampled = (
        list(identities)
        if config.exhaustive
        else sample_identities(identities, config.sample_identities)
    )
    maker.prompts = [s for s in prompts if s.identity in sampled]  # encoded when loading
    first = [s for s in prompts if s.identity == sampled[0]]
    probe = min(first, key=lambda s: PROMPT_PREFERENCE.index(s.kind))
    measured, probed = maker.cost(refs[-1], probe, seeds[0], setup_seconds)
    cost = measured.model
    spendable = None if config.exhaustive else images_budget(budget, measured)
    screen = fit_screen(
        len(refs),
        sampled,
        kinds_of,
        seeds,
        cost,
        spendable,
        len(refs) if config.exhaustive else config.screen_checkpoints,
    )
    specs = [s for s in prompts if s.identity in screen.identities and s.kind in screen.kinds]
    oracle = RunOracle(maker, refs, specs, reference, training, config)
    base = int(config.include_base_model)
    grid = exhaustive_images(len(refs), len(prompts), len(seeds), config.include_base_model)
    grid_seconds = cost.seconds(grid, len(refs) + base)
    screen_seconds = cost.seconds(screen.images, len(screen.checkpoints))
    log(
        f"{'probed' if probed else 'stored probe'}: {cost.seconds_per_image:.3f} s per image "
        f"({cost.seconds_per_step:.4f} s per step x {cost.steps} steps, "
        f"{settings_text(maker.settings)}) on {measured.device}; budget: "
        + (
            f"{budget.seconds:.1f} s ({budget.source}), less {measured.fixed_seconds:.1f} s "
            "fixed (the real photos' faces and loading the pipeline, once per run)"
            if budget.seconds
            else budget.source
        )
    )
    log(
        f"estimate: the full grid is {grid} images x {cost.steps} steps x "
        f"{cost.seconds_per_step:.4f} s = {grid_seconds:.1f} s; the plan starts with "
        f"{screen.images} images ({screen_seconds:.1f} s)"
        + (f", cut: {'; '.join(screen.cuts)}" if screen.cuts else "")
        + (
            " (over the budget: the smallest useful screen is run anyway"
            + (", the fixed cost alone spends it)" if spendable == 0 else ")")
            if screen.over_budget
            else ""
        )
        + (
            f", and stays within the budget: at most {int(spendable // cost.seconds_per_image)}"
            " images"
            if spendable is not None
            else ""
        )
    )
    if config.exhaustive:
        progress = full_grid(oracle, len(refs), screen, cost, config.include_base_model)
    else:
        progress = race(
            oracle,
            len(refs),
            screen,
            cost,
            spendable,
            config.margin_z,
            config.include_base_model,
        )
    names = [ref.name for ref in refs]
    skipped = [f"screen: {cut}" for cut in screen.cuts]
    for step in progress.skipped:
        shown = ", ".join("base model" if c == BASE else names[c] for c in step.checkpoints)
        shown_step = step.to_json()
        skipped.append(
            f"{step.stage}: {shown} with {'+'.join(shown_step['prompts'])} seed(s) "
            f"{shown_step['seeds']} ({step.images} images, {step.seconds:.1f} s)"
        )
    not_sampled = [name for name in identities if name not in sampled]
    plan = {
        "budget": budget.to_json(),
        "cost": {**measured.to_json(), "probed_now": probed},
        "full_grid": {
            "checkpoints": len(refs) + base,
            "identities": len(identities),
            "images": grid,
            "seconds_estimate": round(grid_seconds, 3),
        },
        "exhaustive": config.exhaustive,
        "images_planned": progress.images,
        "fixed_seconds": measured.fixed_seconds,
        "images_budget_seconds": spendable,
        "estimate_seconds": round(measured.fixed_seconds + progress.spent, 3),
        "identities_scored": screen.identities,
        "identities_not_sampled": not_sampled,
        "identities_cut_by_budget": [n for n in sampled if n not in screen.identities],
        "prompt_kinds": screen.kinds,
        "screen": [names[c] for c in screen.checkpoints],
        "over_budget": screen.over_budget,
        "race": progress.to_json(names),
        "skipped_for_budget": skipped,
    }
    log(
        f"plan: {progress.images} of {grid} images, estimate {progress.spent:.1f} s "
        f"+ {measured.fixed_seconds:.1f} s fixed; "
        f"{progress.stop}" + (f"; skipped for the budget: {'; '.join(skipped)}" if skipped else "")
    )
    return oracle, progress, plan


def settings_text(settings: dict[str, Any]) -> str:
    return (
        f"{settings['width']}x{settings['height']}, {settings['num_inference_steps']} steps, "
        f"guidance {settings['guidance_scale']:g}"
    )


def checkpoint_evaluations(oracle: RunOracle, progress: Race) -> list[CheckpointEvaluation]:
    """One evaluation per checkpoint the plan scored (the base model first), on all its images."""
    evaluations = []
    for checkpoint in sorted(progress.cells_of):
        scores = oracle.scores(checkpoint)
        if checkpoint == BASE:
            status = "base"
        elif checkpoint in progress.survivors:
            status = "racing"
        else:
            status = f"eliminated: {progress.eliminated.get(checkpoint, '')}"
        evaluations.append(
            CheckpointEvaluation(
                ref=oracle.ref(checkpoint),
                images=oracle.records.get(checkpoint, []),
                scores=scores,
                score=selection_score(scores.summary, oracle.config),
                reused=oracle.made.get(checkpoint, 0) == 0,
                seconds=round(oracle.seconds.get(checkpoint, 0.0), 3),
                seeds=sorted({seed for _, seed in progress.cells_of[checkpoint]}),
                status=status,
            )
        )
    return evaluations


def _replace_folder(source: Path, destination: Path) -> None:
    """Move ``source``'s files into ``destination``, replacing it (files renamed one by one)."""
    import shutil

    destination.mkdir(parents=True, exist_ok=True)
    for entry in destination.iterdir():
        if entry.is_file() and not (source / entry.name).exists():
            entry.unlink()
    for entry in source.iterdir():
        if entry.is_file():
            shutil.move(str(entry), str(destination / entry.name))


# ----------------------------------------------------------------------------------------------
# Outputs


def write_outputs(run: FidelityRun) -> dict[str, Path]:
    out = run.out_dir
    files: dict[str, Path] = {}
    scores = run.scores_table()
    checkpoints = run.checkpoints_table()
    if len(scores):
        files["scores"] = atomic_write_table(
            out / "scores.parquet", _arrow(scores.astype({"confused_with": "string"}))
        )
    files["checkpoints"] = atomic_write_table(out / "checkpoints.parquet", _arrow(checkpoints))

    curve = curves_image(
        [e.ref.step for e in run.evaluations],
        {
            "likeness": [e.scores.summary["likeness"] for e in run.evaluations],
            "bleed": [e.scores.summary["bleed"] for e in run.evaluations],
            "identification": [e.scores.summary["identification"] for e in run.evaluations],
            "no_face_rate": [e.scores.summary["no_face_rate"] for e in run.evaluations],
        },
        baseline=_first_finite(e.scores.summary["real_baseline"] for e in run.evaluations),
        chosen_step=run.choice.step,
    )
    files["curves"] = atomic_write_bytes(out / "curves.png", encode_image(curve, "PNG"))
    chosen = run.chosen
    if chosen is not None:
        matrix = confusion_image(
            [
                (f"generated ({chosen.ref.name}) x real", chosen.scores.confusion),
                ("other faces in those images x real", chosen.scores.others_confusion),
                ("real x real", chosen.scores.real_confusion),
            ]
        )
        files["confusion"] = atomic_write_bytes(out / "confusion.png", encode_image(matrix, "PNG"))
        sheet = samples_sheet(run, chosen)
        files["samples"] = atomic_write_bytes(out / "samples.jpg", encode_image(sheet, "JPEG", 88))
    files["report"] = atomic_write_text(
        out / REPORT_FILE, json.dumps(report_dict(run), indent=1, ensure_ascii=False)
    )
    return files


def samples_sheet(run: FidelityRun, evaluation: CheckpointEvaluation) -> Image.Image:
    """The chosen checkpoint's images (first seeds first), captioned with faces and likeness."""
    items: list[SheetItem] = []
    ordered = sorted(
        evaluation.images, key=lambda r: (run.settings["seeds"].index(r.seed), r.identity, r.kind)
    )
    subject_sim = _subject_similarity(evaluation)
    for record in ordered[: run.config.max_sample_images]:
        if record.path is None:
            continue
        path = run.out_dir / record.path
        if not path.is_file():
            continue
        with Image.open(path) as image:
            picture = image.convert("RGB")
        faces = len(record.boxes)
        sim = subject_sim.get((record.identity, record.kind, record.seed))
        detail = f"{faces} face" + ("s" if faces != 1 else "")
        if sim is not None and np.isfinite(sim):
            detail += f" {sim:.2f}"
        items.append(SheetItem(picture, f"{record.identity} {record.kind}: {detail}"))
    return contact_sheet(items, cell=160, columns=max(1, min(6, len(items))))


def _subject_similarity(evaluation: CheckpointEvaluation) -> dict[tuple, float]:
    faces = evaluation.scores.faces
    subjects = faces[faces["role"] == "subject"]
    return {
        (row.identity, row.prompt_kind, row.seed): float(row.sim_to_identity)
        for row in subjects.itertuples(index=False)
    }


def report_dict(run: FidelityRun) -> dict[str, Any]:
    return plain(
        {
            "run_dir": str(run.run_dir),
            "out_dir": str(run.out_dir),
            "training_manifest": str(run.manifest_path),
            "training_data_version": run.data_version,
            "samples_changed_since_training": run.changed_samples,
            "config": run.config.to_dict(),
            "settings": run.settings,
            "identities": run.identities,
            "reference_source": run.reference_source,
            "real_photos": run.real.counts(),
            "chosen": {
                "name": run.choice.name,
                "step": run.choice.step,
                "score": run.choice.score,
                "reason": run.choice.reason,
                "rule": run.config.best_rule,
                "lora_dir": str(run.chosen_dir) if run.chosen_dir else None,
            },
            "plan": run.plan,
            "checkpoints": [
                {
                    "name": e.ref.name,
                    "step": e.ref.step,
                    "kind": e.ref.kind,
                    "score": e.score,
                    "seeds": e.seeds,
                    "status": e.status,
                    "reused": e.reused,
                    "seconds": e.seconds,
                    **scores_json(e.scores),
                    "images": [
                        {k: v for k, v in r.to_json().items() if k != "embeddings"}
                        for r in e.images
                    ],
                }
                for e in run.evaluations
            ],
        }
    )


def _first_finite(values) -> float | None:
    for value in values:
        if value is not None and np.isfinite(value):
            return float(value)
    return None


def _arrow(frame: pd.DataFrame):
    import pyarrow as pa

    return pa.Table.from_pandas(frame, preserve_index=False)
