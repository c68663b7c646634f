"""Generated images, cached per (checkpoint, prompt, seed, settings), and the probe that prices them.

* ``ImageStore``: ``checkpoints/<name>/faces.json`` holds, per checkpoint, every image made so far
  under a key of what it depends on (sampler settings, prompt, seed, face backend); the file is
  dropped when the checkpoint's weights change. A re-run, a new checkpoint or one more seed makes
  only the images not there yet.
* ``ImageMaker``: loads the run's model once, on the first image it must make; ``probe`` times
  one image (and one LoRA switch) of the plan, which is kept like any other.
* ``RunOracle``: the progressive choice's oracle (``plan.Oracle``) on top of both.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from identity_pipeline.evaluation.budget import CostRecord, cost_key, read_cost, write_cost
from identity_pipeline.evaluation.config import EVALUATION_VERSION, FidelityConfig
from identity_pipeline.evaluation.embedding import embeddings_of, image_faces
from identity_pipeline.evaluation.generate import (
    BASE_NAME,
    KIND_BASE,
    CheckpointRef,
    CheckpointSampler,
    scratch_folder,
)
from identity_pipeline.evaluation.metrics import GeneratedImage
from identity_pipeline.evaluation.plan import BASE
from identity_pipeline.evaluation.selection import ScoredImages
from identity_pipeline.faces import FaceBackend, FaceConfig
from identity_pipeline.previews import encode_image
from identity_pipeline.storage import atomic_write_bytes, atomic_write_text, content_id

FACES_FILE = "faces.json"
IMAGES_DIR = "images"
CHECKPOINTS_DIR = "checkpoints"
STORE_VERSION = 2  # 1: one key per checkpoint for all its images

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


def image_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """What one image depends on besides its prompt and seed (the settings minus the grid)."""
    return {key: value for key, value in settings.items() if key not in ("prompts", "seeds")}


class ImageStore:
    """Per checkpoint folder, the faces (and image paths) of every image made so far."""

    def __init__(
        self,
        out_dir: Path,
        settings: dict[str, Any],
        backend: FaceBackend,
        face_config: FaceConfig,
        save_images: bool,
    ) -> None:
        self.out_dir = Path(out_dir)
        self.backend = backend
        self.save_images = save_images
        self.settings_key = content_id(
            EVALUATION_VERSION,
            json.dumps(image_settings(settings), sort_keys=True),
            backend.name,
            backend.model_sha256,
            face_config.hash(),
        )
        self._cells: dict[str, dict[str, Any]] = {}  # checkpoint name -> {cell key: record json}

    def folder(self, ref: CheckpointRef) -> Path:
        return self.out_dir / CHECKPOINTS_DIR / ref.name

    def cell_key(self, spec: PromptSpec, seed: int) -> str:
        return content_id(self.settings_key, spec.text, int(seed))

    def _load(self, ref: CheckpointRef) -> dict[str, Any]:
        if ref.name in self._cells:
            return self._cells[ref.name]
        cells: dict[str, Any] = {}
        path = self.folder(ref) / FACES_FILE
        if path.is_file():
            try:
                raw = json.loads(path.read_text(encoding="utf-8"))
                if raw.get("version") == STORE_VERSION and raw.get("weights") == ref.fingerprint():
                    cells = dict(raw["cells"])
            except (ValueError, KeyError, TypeError):
                cells = {}  # unreadable: made again
        self._cells[ref.name] = cells
        return cells

    def get(self, ref: CheckpointRef, spec: PromptSpec, seed: int) -> GeneratedRecord | None:
        raw = self._load(ref).get(self.cell_key(spec, seed))
        if raw is None:
            return None
        try:
            record = GeneratedRecord.from_json(raw, self.backend.embedding_dim)
        except (ValueError, KeyError, TypeError):
            return None
        if self.save_images and (record.path is None or not (self.out_dir / record.path).is_file()):
            return None  # the picture is wanted and gone: make it again
        return record

    def image_path(self, ref: CheckpointRef, spec: PromptSpec, seed: int) -> Path:
        from identity_pipeline.dataset.export import folder_safe_name

        key = self.cell_key(spec, seed)[:8]
        name = f"{spec.kind}_seed{seed}_{key}.jpg"
        return self.folder(ref) / IMAGES_DIR / folder_safe_name(spec.identity) / name

    def put(
        self, ref: CheckpointRef, records: Sequence[tuple[PromptSpec, GeneratedRecord]]
    ) -> None:
        cells = self._load(ref)
        for spec, record in records:
            cells[self.cell_key(spec, record.seed)] = record.to_json()
        payload = {
            "version": STORE_VERSION,
            "name": ref.name,
            "step": ref.step,
            "kind": ref.kind,
            "weights": ref.fingerprint(),
            "cells": cells,
        }
        atomic_write_text(self.folder(ref) / FACES_FILE, json.dumps(payload))


class ImageMaker:
    """Makes the images the store lacks; the run's model is loaded on the first one."""

    def __init__(
        self,
        store: ImageStore,
        training_config,
        prompts: Sequence[PromptSpec],
        settings: dict[str, Any],
        face_config: FaceConfig,
        device,
        log: Log,
    ) -> None:
        self.store = store
        self.training_config = training_config
        self.prompts = list(prompts)
        self.settings = settings
        self.face_config = face_config
        self.device = device
        self.log = log
        self.sampler: CheckpointSampler | None = None
        self.loaded: str | None = None
        self.made = 0
        self.reused = 0
        self.seconds_making = 0.0  # generating + faces of the images made
        self.model_load_seconds = 0.0

    def device_name(self) -> str:
        import torch

        if self.device.type == "cuda":
            return torch.cuda.get_device_name(self.device)
        return f"{self.device.type} ({torch.get_num_threads()} threads)"

    def _sampler(self) -> CheckpointSampler:
        if self.sampler is None:
            started = time.perf_counter()
            self.log(f"loading {self.training_config.model.family} from {self.settings['model']}")
            guided = self.settings["guidance_scale"] > 1
            self.sampler = CheckpointSampler(
                self.training_config,
                [spec.text for spec in self.prompts],
                self.settings["negative_prompt"] if guided else None,
                device=self.device,
                log=self.log,
            )
            self.model_load_seconds = time.perf_counter() - started
        return self.sampler

    def _use(self, ref: CheckpointRef) -> float:
        """Load ``ref``'s LoRA unless it is loaded; returns the seconds it took."""
        sampler = self._sampler()
        if self.loaded == ref.name:
            return 0.0
        started = time.perf_counter()
        with scratch_folder(self.store.out_dir) as scratch:
            sampler.use(ref, scratch)
        self.loaded = ref.name
        return time.perf_counter() - started

    def make(
        self, ref: CheckpointRef, specs: Sequence[PromptSpec], seeds: Sequence[int]
    ) -> list[GeneratedRecord]:
        """The records of ``specs`` x ``seeds`` for ``ref``: read back, or made and stored."""
        found: dict[tuple[int, int], GeneratedRecord] = {}
        missing: dict[int, list[int]] = {}
        for index, spec in enumerate(specs):
            for seed in seeds:
                record = self.store.get(ref, spec, seed)
                if record is None:
                    missing.setdefault(index, []).append(int(seed))
                else:
                    found[(index, int(seed))] = record
        self.reused += len(found)
        if missing:
            made = self._generate(ref, {specs[i]: s for i, s in missing.items()})
            for spec, record in made:
                found[(specs.index(spec), record.seed)] = record
        return [found[(i, int(seed))] for i in range(len(specs)) for seed in seeds]

    def _generate(
        self, ref: CheckpointRef, wanted: dict[PromptSpec, list[int]]
    ) -> list[tuple[PromptSpec, GeneratedRecord]]:
        self._use(ref)
        sampler = self._sampler()
        made: list[tuple[PromptSpec, GeneratedRecord]] = []
        size = (self.settings["width"], self.settings["height"])
        for spec, seeds in wanted.items():
            started = time.perf_counter()
            images = sampler.generate(
                spec.text,
                seeds,
                self.settings["num_inference_steps"],
                self.settings["guidance_scale"],
                size,
            )
            for seed, image in zip(seeds, images, strict=True):
                made.append((spec, self._record(ref, spec, seed, image)))
            self.seconds_making += time.perf_counter() - started
            self.made += len(seeds)
        self.store.put(ref, made)  # after each checkpoint batch: a crash keeps what was made
        return made

    def _record(self, ref: CheckpointRef, spec: PromptSpec, seed: int, image) -> GeneratedRecord:
        backend = self.store.backend
        faces = image_faces(image, backend, self.face_config)
        relative = None
        if self.store.save_images:
            path = self.store.image_path(ref, spec, seed)
            atomic_write_bytes(path, encode_image(image, "JPEG", 92))
            relative = str(path.relative_to(self.store.out_dir))
        return GeneratedRecord(
            identity=spec.identity,
            kind=spec.kind,
            prompt=spec.text,
            seed=int(seed),
            path=relative,
            boxes=[[round(float(v), 1) for v in face.box] for face in faces],
            embeddings=embeddings_of(faces, backend.embedding_dim),
        )

    def cost(
        self, ref: CheckpointRef, spec: PromptSpec, seed: int, setup_seconds: float = 0.0
    ) -> tuple[CostRecord, bool]:
        """The plan's prices on this device: stored from an earlier probe, else probed now by
        making (and keeping) the image of ``spec`` and ``seed`` with ``ref``; ``setup_seconds``:
        what the run spent before it (the real photos' faces), part of the fixed cost with
        loading the pipeline. Returns the record and whether it was probed now."""
        key = cost_key(self.settings, self.device_name())
        stored = read_cost(self.store.out_dir, key)
        if stored is not None:
            return stored, False
        switch = self._use(ref)
        started = time.perf_counter()
        made = self._generate(ref, {spec: [int(seed)]})
        seconds = time.perf_counter() - started
        assert made
        record = CostRecord(
            key=key,
            seconds_per_image=round(seconds, 4),
            seconds_per_switch=round(switch, 4),
            steps=int(self.settings["num_inference_steps"]),
            device=self.device_name(),
            model_load_seconds=round(self.model_load_seconds, 3),
            fixed_seconds=round(setup_seconds + self.model_load_seconds, 3),
        )
        write_cost(self.store.out_dir, record)
        return record, True

    def close(self) -> None:
        if self.sampler is not None:
            self.sampler.close()
            self.sampler = None


class RunOracle(ScoredImages):
    """``plan.Oracle`` for a real run: candidate index -> checkpoint, images from the maker."""

    def __init__(
        self,
        maker: ImageMaker,
        candidates: Sequence[CheckpointRef],
        specs: Sequence[PromptSpec],
        reference,
        training,
        config: FidelityConfig,
    ) -> None:
        super().__init__(reference, training, config)
        self.maker = maker
        self.candidates = list(candidates)
        self.specs = list(specs)
        self.records: dict[int, list[GeneratedRecord]] = {}
        self.made: dict[int, int] = {}  # images made (not read back) per checkpoint
        self.seconds: dict[int, float] = {}

    def ref(self, checkpoint: int) -> CheckpointRef:
        if checkpoint == BASE:
            return CheckpointRef(BASE_NAME, 0, KIND_BASE, None)
        return self.candidates[checkpoint]

    def evaluate(self, checkpoint: int, cells: Sequence[tuple[str, int]]) -> None:
        started, made = time.perf_counter(), self.maker.made
        ref = self.ref(checkpoint)
        records: list[GeneratedRecord] = []
        for seed in dict.fromkeys(seed for _, seed in cells):
            kinds = {kind for kind, s in cells if s == seed}
            specs = [spec for spec in self.specs if spec.kind in kinds]
            records += self.maker.make(ref, specs, [seed])
        self.made[checkpoint] = self.made.get(checkpoint, 0) + self.maker.made - made
        self.seconds[checkpoint] = self.seconds.get(checkpoint, 0.0) + (
            time.perf_counter() - started
        )
        self.records.setdefault(checkpoint, []).extend(records)
        self.add(checkpoint, [record.as_generated() for record in records])
