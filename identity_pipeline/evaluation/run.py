"""Score every saved checkpoint of a training run and choose one: the fidelity asset's logic.

    evaluate_run(run_dir, out_dir, backend)  ->  FidelityRun

1. Real faces: the identity's face in every train and holdout image of the run's manifest.
2. Per checkpoint (and the base model): K images per identity and prompt (fixed seeds), their
   faces, stored under ``out_dir/checkpoints/<name>/`` with a key of everything they depend on;
   a re-run with the same key reads them back and loads no model at all.
3. Scores per checkpoint (``metrics.score_identities``), the configured rule picks one, whose
   LoRA is written to ``out_dir/chosen/`` (diffusers + ComfyUI layouts).
4. ``report.json``, ``scores.parquet`` (checkpoint x identity), ``checkpoints.parquet``,
   ``curves.png``, ``confusion.png`` and ``samples.jpg``.
"""

from __future__ import annotations

import json
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
from identity_pipeline.evaluation.config import (
    EVALUATION_VERSION,
    KIND_CAPTION,
    KIND_PAIR,
    KIND_SOLO,
    FidelityConfig,
    fill_name,
)
from identity_pipeline.evaluation.embedding import (
    RealFaces,
    embeddings_of,
    image_faces,
    real_faces_from_manifest,
)
from identity_pipeline.evaluation.generate import (
    BASE_NAME,
    KIND_BASE,
    CheckpointRef,
    CheckpointSampler,
    cpu_threads,
    default_device,
    export_checkpoint,
    list_checkpoints,
    load_training_config,
    scratch_folder,
    spread,
)
from identity_pipeline.evaluation.metrics import FidelityScores, GeneratedImage, score_identities
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
    content_id,
)

FACES_FILE = "faces.json"
IMAGES_DIR = "images"
CHECKPOINTS_DIR = "checkpoints"
CHOSEN_DIR = "chosen"
REPORT_FILE = "report.json"

Log = Callable[[str], None]


@dataclass(frozen=True)
class PromptSpec:
    identity: str
    kind: str  # caption | solo | pair
    text: str


@dataclass
class GeneratedRecord:
    """One generated image: what it was made from, where it is, the faces found in it."""

    identity: str
    kind: str
    prompt: str
    seed: int
    path: str | None  # relative to the evaluation folder; None when images are not kept
    boxes: list[list[float]]
    embeddings: np.ndarray  # (F, D)

    def as_generated(self) -> GeneratedImage:
        return GeneratedImage(
            identity=self.identity,
            embeddings=self.embeddings,
            prompt_kind=self.kind,
            seed=self.seed,
            image_id=self.path or f"{self.identity}/{self.kind}/seed{self.seed}",
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "identity": self.identity,
            "kind": self.kind,
            "prompt": self.prompt,
            "seed": self.seed,
            "path": self.path,
            "boxes": self.boxes,
            "embeddings": np.asarray(self.embeddings, dtype=np.float32).tolist(),
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any], dim: int) -> GeneratedRecord:
        vectors = np.asarray(raw["embeddings"], dtype=np.float32).reshape(-1, dim)
        return cls(
            raw["identity"],
            raw["kind"],
            raw["prompt"],
            int(raw["seed"]),
            raw["path"],
            raw["boxes"],
            vectors,
        )


@dataclass
class CheckpointEvaluation:
    ref: CheckpointRef
    images: list[GeneratedRecord]
    scores: FidelityScores
    score: float  # the selection rule's value (NaN for undefined)
    reused: bool
    seconds: float


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
    if config.include_base_model:
        refs = [CheckpointRef(BASE_NAME, 0, KIND_BASE, None), *refs]

    prompts = build_prompts(identities, manifest, config)
    settings = generation_settings(training_config, manifest, config, prompts)
    device = device or default_device()
    longest = max(settings["width"], settings["height"])
    explicit = config.width is not None or config.height is not None
    cap = config.cpu_max_side if device.type == "cpu" and not explicit else None
    if cap and longest > cap:  # a real model on a CPU would take hours: tiny models only
        settings["width"] = round(settings["width"] * cap / longest)
        settings["height"] = round(settings["height"] * cap / longest)
    multiple = model_pixel_multiple(training_config)
    settings["width"] = max(multiple, settings["width"] // multiple * multiple)
    settings["height"] = max(multiple, settings["height"] // multiple * multiple)
    size = (settings["width"], settings["height"])
    evaluations: list[CheckpointEvaluation] = []
    sampler: CheckpointSampler | None = None
    with cpu_threads(device, training_config.cpu_threads):
        try:
            for ref in refs:
                ref_started = time.perf_counter()
                folder = out_dir / CHECKPOINTS_DIR / ref.name
                key = content_id(
                    EVALUATION_VERSION,
                    json.dumps(settings, sort_keys=True),
                    ref.fingerprint(),
                    backend.name,
                    backend.model_sha256,
                    face_config.hash(),
                    config.save_images,
                )
                records = read_records(folder / FACES_FILE, key, backend.embedding_dim)
                reused = records is not None
                if records is None:
                    if sampler is None:
                        log(f"loading {training_config.model.family} from {settings['model']}")
                        sampler = CheckpointSampler(
                            training_config,
                            [spec.text for spec in prompts],
                            settings["negative_prompt"] if settings["guidance_scale"] > 1 else None,
                            device=device,
                            log=log,
                        )
                    records = generate_records(
                        sampler,
                        ref,
                        prompts,
                        settings,
                        size,
                        backend,
                        face_config,
                        folder,
                        out_dir,
                        config.save_images,
                    )
                    write_records(folder / FACES_FILE, key, ref, records)
                scores = score_identities(
                    reference,
                    [record.as_generated() for record in records],
                    training,
                    config.copy_threshold,
                )
                evaluation = CheckpointEvaluation(
                    ref=ref,
                    images=records,
                    scores=scores,
                    score=selection_score(scores.summary, config),
                    reused=reused,
                    seconds=round(time.perf_counter() - ref_started, 3),
                )
                evaluations.append(evaluation)
                summary = scores.summary
                log(
                    f"{ref.name} (step {ref.step}): likeness {summary['likeness']:.3f}, "
                    f"bleed {summary['bleed']:.3f}, images without a face "
                    f"{summary['images_without_face']}/{summary['images']}"
                    + (" (stored results)" if reused else "")
                )
        finally:
            if sampler is not None:
                sampler.close()

    candidates = [
        (evaluation.ref.name, evaluation.ref.step, evaluation.scores.summary)
        for evaluation in evaluations
        if evaluation.ref.kind != KIND_BASE
    ]
    choice = choose_checkpoint(candidates, config)
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
        "num_inference_steps": config.num_inference_steps or samples.num_inference_steps,
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


def generate_records(
    sampler: CheckpointSampler,
    ref: CheckpointRef,
    prompts: Sequence[PromptSpec],
    settings: dict[str, Any],
    size: tuple[int, int],
    backend: FaceBackend,
    face_config: FaceConfig,
    folder: Path,
    out_dir: Path,
    save_images: bool,
) -> list[GeneratedRecord]:
    from identity_pipeline.dataset.export import folder_safe_name

    records: list[GeneratedRecord] = []
    with scratch_folder(out_dir) as scratch:
        sampler.use(ref, scratch)
    for spec in prompts:
        images = sampler.generate(
            spec.text,
            settings["seeds"],
            settings["num_inference_steps"],
            settings["guidance_scale"],
            size,
        )
        for seed, image in zip(settings["seeds"], images, strict=True):
            faces = image_faces(image, backend, face_config)
            relative = None
            if save_images:
                name = f"{spec.kind}_seed{seed}.jpg"
                path = folder / IMAGES_DIR / folder_safe_name(spec.identity) / name
                atomic_write_bytes(path, encode_image(image, "JPEG", 92))
                relative = str(path.relative_to(out_dir))
            records.append(
                GeneratedRecord(
                    identity=spec.identity,
                    kind=spec.kind,
                    prompt=spec.text,
                    seed=int(seed),
                    path=relative,
                    boxes=[[round(float(v), 1) for v in face.box] for face in faces],
                    embeddings=embeddings_of(faces, backend.embedding_dim),
                )
            )
    return records


def read_records(path: Path, key: str, dim: int) -> list[GeneratedRecord] | None:
    """The stored images' faces when they were made with exactly this key, else None."""
    if not path.is_file():
        return None
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        if raw.get("key") != key:
            return None
        return [GeneratedRecord.from_json(item, dim) for item in raw["images"]]
    except (ValueError, KeyError, TypeError):
        return None


def write_records(
    path: Path, key: str, ref: CheckpointRef, records: Sequence[GeneratedRecord]
) -> None:
    payload = {
        "key": key,
        "name": ref.name,
        "step": ref.step,
        "kind": ref.kind,
        "images": [record.to_json() for record in records],
    }
    atomic_write_text(path, json.dumps(payload))


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
            "checkpoints": [
                {
                    "name": e.ref.name,
                    "step": e.ref.step,
                    "kind": e.ref.kind,
                    "score": e.score,
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
