"""Images from a training run's checkpoints: the family pipeline with each LoRA loaded in turn.

A training run folder (``identity_pipeline.training``) holds ``training_config.yaml``,
``checkpoints/step-NNNNNNN/lora.safetensors`` (trainer parameter names, float32) and the final
export ``lora/pytorch_lora_weights.safetensors``. A checkpoint is turned into the diffusers
layout with the same ``save_lora_weights`` call as the export (rank and alpha in the adapter
metadata), then loaded with ``pipe.load_lora_weights`` exactly as a user would load it.

Prompts are encoded once, through the trainer's text-embedding cache (captions the trainer
already encoded are read back, not re-encoded), and the text encoders are dropped before the
denoiser is loaded, as in training.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from identity_pipeline.storage import atomic_path
from identity_pipeline.training import checkpoint as ckpt
from identity_pipeline.training.config import SampleConfig, TrainingConfig
from identity_pipeline.training.export import (
    COMFY_WEIGHT_NAME,
    DIFFUSERS_WEIGHT_NAME,
    kohya_metadata,
    to_kohya,
)
from identity_pipeline.training.families import FamilyAdapter, LoadOptions, get_adapter

CONFIG_FILE = "training_config.yaml"  # identity_pipeline.training.trainer.CONFIG_FILE
RESULT_FILE = "result.json"  # identity_pipeline.training.trainer.RESULT_FILE
CHECKPOINTS_DIR = "checkpoints"
EXPORT_DIR = "lora"

KIND_BASE = "base"
KIND_CHECKPOINT = "checkpoint"
KIND_EXPORT = "export"
BASE_NAME = "base"
ADAPTER_NAME = "fidelity"


@dataclass(frozen=True)
class CheckpointRef:
    """One set of weights to evaluate: the base model, a saved checkpoint or the final export."""

    name: str
    step: int
    kind: str
    path: Path | None  # checkpoint folder, export weight file, None for the base model

    def fingerprint(self) -> str:
        """Changes when the weights do (size and modification time of the weight file)."""
        if self.path is None:
            return self.kind
        weights = self.path / "lora.safetensors" if self.path.is_dir() else self.path
        stat = weights.stat()
        return f"{self.kind}:{self.step}:{stat.st_size}:{stat.st_mtime_ns}"


def load_training_config(run_dir: Path) -> TrainingConfig:
    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{run_dir} is not a training run folder: {CONFIG_FILE} is missing (the trainer "
            "writes it when it starts)"
        )
    return TrainingConfig.load(path)


def list_checkpoints(run_dir: Path) -> list[CheckpointRef]:
    """Every complete saved checkpoint by step, plus the final export when no checkpoint has
    its step (the trainer always checkpoints the last step, so normally it is one of them)."""
    run_dir = Path(run_dir)
    refs: list[CheckpointRef] = []
    folder = run_dir / CHECKPOINTS_DIR
    if folder.is_dir():
        for entry in sorted(folder.iterdir()):
            if not entry.name.startswith("step-") or not (entry / ckpt.STATE_FILE).is_file():
                continue
            if not (entry / "lora.safetensors").is_file():
                continue
            refs.append(
                CheckpointRef(entry.name, ckpt.read_state(entry).step, KIND_CHECKPOINT, entry)
            )
    export = run_dir / EXPORT_DIR / DIFFUSERS_WEIGHT_NAME
    if export.is_file():
        step = _result_steps(run_dir)
        if step is None and not refs:  # no result.json: only worth it when nothing else is there
            refs.append(CheckpointRef("final", 0, KIND_EXPORT, export))
        elif step is not None and step not in {ref.step for ref in refs}:
            refs.append(CheckpointRef("final", step, KIND_EXPORT, export))
    return sorted(refs, key=lambda ref: ref.step)


def _result_steps(run_dir: Path) -> int | None:
    path = run_dir / RESULT_FILE
    if not path.is_file():
        return None
    try:
        return int(json.loads(path.read_text(encoding="utf-8"))["steps"])
    except (ValueError, KeyError, TypeError):
        return None


def spread(refs: Sequence[CheckpointRef], limit: int) -> list[CheckpointRef]:
    """At most ``limit`` of ``refs`` (sorted by step), evenly spaced, the last always kept."""
    refs = list(refs)
    if len(refs) <= limit:
        return refs
    if limit == 1:
        return [refs[-1]]
    picks = sorted({round(i * (len(refs) - 1) / (limit - 1)) for i in range(limit)})
    return [refs[i] for i in picks]


# ----------------------------------------------------------------------------------------------
# Checkpoint -> diffusers / ComfyUI files


def peft_config_for(config: TrainingConfig, adapter: FamilyAdapter):
    """The adapter config the trainer created (identity_pipeline.training.trainer.add_lora)."""
    from peft import LoraConfig as PeftLoraConfig

    targets = config.lora.target_modules or adapter.lora_target_modules(config.lora.include_mlp)
    return PeftLoraConfig(
        r=config.lora.rank,
        lora_alpha=config.lora.alpha,
        lora_dropout=config.lora.dropout,
        init_lora_weights="gaussian" if config.lora.init == "gaussian" else True,
        target_modules=targets,
    )


def checkpoint_state_dict(checkpoint_dir: Path, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """The checkpoint's LoRA tensors under PEFT keys (``<module>.lora_A.weight``)."""
    saved = load_file(str(Path(checkpoint_dir) / "lora.safetensors"))
    state: dict[str, torch.Tensor] = {}
    for key, value in saved.items():
        for kind in ("lora_A", "lora_B"):
            key = key.replace(f".{kind}.default.", f".{kind}.")
        state[key] = value.to(dtype).contiguous()
    return state


def export_checkpoint(
    ref: CheckpointRef,
    config: TrainingConfig,
    adapter: FamilyAdapter,
    folder: Path,
    dtype: torch.dtype = torch.float32,
    comfyui: bool = True,
) -> Path:
    """Write ``ref``'s LoRA into ``folder`` in the diffusers (and ComfyUI) layouts.

    The final export is copied as is; a checkpoint is converted like the trainer's export.
    Returns the diffusers weight file.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    diffusers_path = folder / DIFFUSERS_WEIGHT_NAME
    if ref.kind == KIND_EXPORT:
        assert ref.path is not None
        for source in (ref.path, ref.path.parent / COMFY_WEIGHT_NAME):
            if source.is_file() and (source.name == DIFFUSERS_WEIGHT_NAME or comfyui):
                with atomic_path(folder / source.name) as tmp:
                    shutil.copyfile(source, tmp)
        return diffusers_path
    if ref.kind != KIND_CHECKPOINT or ref.path is None:
        raise ValueError(f"{ref.name} has no LoRA weights to export")
    state = checkpoint_state_dict(ref.path, dtype)
    peft_config = peft_config_for(config, adapter)
    with atomic_path(diffusers_path) as tmp:
        adapter.save_lora(str(folder), state, peft_config.to_dict(), weight_name=tmp.name)
    if comfyui:
        kohya = to_kohya(state, adapter.kohya_prefix, config.lora.alpha)
        metadata = kohya_metadata(
            adapter.family,
            config.lora.rank,
            config.lora.alpha,
            identity_pipeline_step=str(ref.step),
        )
        with atomic_path(folder / COMFY_WEIGHT_NAME) as tmp:
            save_file(kohya, str(tmp), metadata=metadata)
    return diffusers_path


# ----------------------------------------------------------------------------------------------
# Sampling


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@contextlib.contextmanager
def cpu_threads(device: torch.device, threads: int | None) -> Iterator[None]:
    """Limit torch's intra-op threads on the CPU (the training config's ``cpu_threads``)."""
    before = torch.get_num_threads()
    if device.type == "cpu" and threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class CheckpointSampler:
    """The run's base model, loaded once; generates with any of its checkpoints' LoRAs."""

    def __init__(
        self,
        config: TrainingConfig,
        prompts: Sequence[str],
        negative_prompt: str | None,
        device: torch.device | None = None,
        log: Callable[[str], None] | None = None,
    ) -> None:
        from identity_pipeline.training.trainer import (
            DTYPES,
            free_memory,
            resolve_encoder_dtype,
            resolve_weight_dtype,
        )

        self.config = config
        self.device = device or default_device()
        self.log = log or (lambda message: None)
        self.adapter = get_adapter(config.model.family)
        self.options = LoadOptions(config.model.source, config.model.revision, config.model.variant)
        self.adapter.read_configs(self.options)
        self.dtype = resolve_weight_dtype(config, self.device)
        encoder_dtype_name = resolve_encoder_dtype(config, self.device)
        negatives = [negative_prompt] if negative_prompt is not None else []
        wanted = list(dict.fromkeys([*prompts, *negatives]))
        self.text = self._encode(wanted, DTYPES[encoder_dtype_name], encoder_dtype_name)
        self.negative = self.text.get(negative_prompt) if negative_prompt is not None else None
        free_memory()
        denoiser = self.adapter.load_denoiser(self.options, self.dtype).to(self.device)
        denoiser.eval()
        vae = self.adapter.load_vae(self.options, self.dtype).to(self.device)
        self.pipeline = self.adapter.build_pipeline(self.options, denoiser, vae, self.dtype)
        self._loaded: str | None = None

    def _encode(self, prompts: list[str], dtype: torch.dtype, dtype_name: str) -> dict:
        from identity_pipeline.training.cache import EmbeddingCache, model_key
        from identity_pipeline.training.trainer import free_memory

        config = self.config
        cache_root = Path(config.data.cache_dir or Path(config.output_dir) / "cache")
        options = self.options
        cache = EmbeddingCache(
            cache_root, model_key(config.model.family, options.source, options.revision, dtype_name)
        )
        max_tokens = config.data.max_text_tokens or self.adapter.default_max_text_tokens
        paths = {prompt: cache.text_path(prompt, max_tokens) for prompt in prompts}
        missing = [prompt for prompt, path in paths.items() if not path.is_file()]
        if missing:
            self.log(f"encoding {len(missing)} prompts ({len(prompts) - len(missing)} cached)")
            pipe = self.adapter.load_text_pipeline(options, dtype, self.device)
            embeds = self.adapter.encode_prompts(pipe, missing, max_tokens, self.device)
            for prompt, tensors in zip(missing, embeds, strict=True):
                cache.store(paths[prompt], tensors, {"prompt": prompt, "max_tokens": max_tokens})
            del pipe
            free_memory()
        return {prompt: cache.load(path) for prompt, path in paths.items()}

    def use(self, ref: CheckpointRef, scratch: Path) -> None:
        """Load ``ref``'s LoRA into the pipeline (the base model: none)."""
        if self._loaded is not None:
            self.pipeline.unload_lora_weights()
            self._loaded = None
        if ref.kind == KIND_BASE:
            return
        if ref.kind == KIND_EXPORT:
            assert ref.path is not None
            weights = ref.path
        else:
            weights = export_checkpoint(ref, self.config, self.adapter, scratch, comfyui=False)
        self.pipeline.load_lora_weights(
            str(weights.parent), weight_name=weights.name, adapter_name=ADAPTER_NAME
        )
        self._loaded = ref.name

    def generate(
        self,
        prompt: str,
        seeds: Sequence[int],
        num_inference_steps: int,
        guidance_scale: float,
        size: tuple[int, int],
    ) -> list[Image.Image]:
        from identity_pipeline.training.samples import generate_samples

        sample_config = SampleConfig(
            seeds=list(seeds),
            num_inference_steps=num_inference_steps,
            guidance_scale=guidance_scale,
        )
        negative = self.negative if guidance_scale > 1 else None
        images = generate_samples(
            self.adapter,
            self.pipeline,
            {prompt: self.text[prompt]},
            negative,
            sample_config,
            size,
            self.device,
        )
        return images[prompt]

    def close(self) -> None:
        from identity_pipeline.training.trainer import free_memory

        if self._loaded is not None:
            self.pipeline.unload_lora_weights()
            self._loaded = None
        del self.pipeline
        free_memory()


@contextlib.contextmanager
def scratch_folder(parent: Path) -> Iterator[Path]:
    """A temporary folder beside the outputs (same disk: LoRA files can be large)."""
    parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=parent, prefix=".scratch-") as name:
        yield Path(name)
