"""The training run: cache, LoRA on the denoiser, the loop, checkpoints, export, samples.

Phases, each freeing what it no longer needs so the accelerator holds only the denoiser while
training:

1. cache  text embeddings (text encoders loaded, used, dropped) and VAE latents + latent-size
          masks (VAE loaded, used, dropped), as safetensors; a second run reads them back only.
2. train  the frozen denoiser + peft LoRA, AdamW, LR schedule, masked loss; the hot loop never
          waits on the device except every ``log_every_steps`` (loss readout) and at checkpoints.
3. finish the last checkpoint, the LoRA in diffusers and ComfyUI layouts, the config beside
          them, sample images (VAE reloaded) and the loss curve; ``result.json`` summarises.

Randomness is a pure function of (seed, step, micro-step, process), so a run resumed from a
checkpoint after ``kill -9`` follows the uninterrupted run's trajectory exactly.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from identity_pipeline.storage import atomic_write_bytes, atomic_write_text
from identity_pipeline.training import checkpoint as ckpt
from identity_pipeline.training.cache import EmbeddingCache, model_key
from identity_pipeline.training.config import TrainingConfig
from identity_pipeline.training.data import (
    BatchSchedule,
    Sample,
    load_pixels,
    load_samples,
    most_common_bucket,
)
from identity_pipeline.training.export import export_lora
from identity_pipeline.training.families import FamilyAdapter, LoadOptions, TextEmbeds, get_adapter
from identity_pipeline.training.losses import mask_to_latent, masked_loss
from identity_pipeline.training.pipes import ConsoleReporter, Reporter
from identity_pipeline.training.runs import RunLock, check_model_source
from identity_pipeline.training.samples import (
    generate_samples,
    loss_curve_image,
    sample_prompt,
    save_samples,
)
from identity_pipeline.training.speed import finish_denoiser, prepare_denoiser

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
RESULT_FILE = "result.json"
CONFIG_FILE = "training_config.yaml"


@dataclass
class TrainingData:
    """Everything the loop reads, in host memory (small: latents, not pixels)."""

    samples: list[Sample]
    latents: list[torch.Tensor]  # (C, h, w) per sample
    masks: list[torch.Tensor]  # (1, h, w) per sample, at latent resolution
    text: list[TextEmbeds]  # per sample, its caption's tensors
    prompt_text: dict[str, TextEmbeds] = field(default_factory=dict)  # sample prompts
    negative_text: TextEmbeds | None = None


@dataclass
class TrainingResult:
    output_dir: str
    lora_path: str
    comfyui_lora_path: str
    config_path: str
    loss_curve_path: str
    samples: dict[str, list[str]]
    steps: int
    resumed_from_step: int
    final_loss: float | None
    mean_loss_last_10: float | None
    train_seconds: float
    total_seconds: float
    samples_per_second: float
    num_train_samples: int
    identities: list[str]

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)


def train(
    config: TrainingConfig,
    reporter: Reporter | None = None,
    adapter: FamilyAdapter | None = None,
) -> TrainingResult:
    """Train, export and sample as ``config`` says. ``adapter`` replaces the family's own (the
    consistency benchmark trains with conventions broken on purpose this way)."""
    from accelerate import Accelerator, DistributedDataParallelKwargs

    check_model_source(config.model.source)
    # Some LoRA layers get no gradient (Qwen-Image's last block's text stream feeds nothing);
    # DDP must be told, or multi-GPU runs stop at the first step.
    ddp = DistributedDataParallelKwargs(find_unused_parameters=True)
    accelerator = Accelerator(mixed_precision=config.mixed_precision, kwargs_handlers=[ddp])
    # One trainer per run folder: the main process holds the folder's lock for the whole run.
    lock = RunLock(Path(config.output_dir)).acquire() if accelerator.is_main_process else None
    threads_before = torch.get_num_threads()
    if accelerator.device.type == "cpu" and config.cpu_threads:
        torch.set_num_threads(config.cpu_threads)
    try:
        return _train(config, reporter or ConsoleReporter(), accelerator, adapter)
    finally:
        torch.set_num_threads(threads_before)  # callers in the same process keep theirs
        if lock is not None:
            lock.release()


def _train(
    config: TrainingConfig, reporter: Reporter, accelerator, adapter: FamilyAdapter | None
) -> TrainingResult:
    started = time.perf_counter()
    device = accelerator.device
    output_dir = Path(config.output_dir)
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        config.save(output_dir / CONFIG_FILE)

    if adapter is None:
        adapter = get_adapter(config.model.family)
    elif adapter.family != config.model.family:
        raise ValueError(f"a {adapter.family} adapter cannot train {config.model.family}")
    options = LoadOptions(config.model.source, config.model.revision, config.model.variant)
    adapter.read_configs(options)
    samples = load_samples(config.data, adapter.pixel_multiple())
    reporter.log(
        f"{len(samples)} training samples, {len({s.identity for s in samples})} identities, "
        f"{config.model.family} from {config.model.source}, device {device}"
    )

    with accelerator.main_process_first():
        data = build_training_data(config, adapter, options, samples, device, reporter)

    weight_dtype = resolve_weight_dtype(config, device)
    denoiser = adapter.load_denoiser(options, weight_dtype)
    lora_parameters = add_lora(denoiser, adapter, config)
    # fp8 base weights, the checkpointing plan (diffusers' default one unless speed says
    # otherwise), attention guards: see identity_pipeline.training.speed.
    speed_summary = prepare_denoiser(denoiser, adapter.family, config, device)
    if speed_summary:
        reporter.log(f"speed: {speed_summary}")
    denoiser.train()
    optimizer = build_optimizer(config, list(lora_parameters.values()))
    lr_scheduler = build_lr_scheduler(config, optimizer)

    checkpoints_dir = output_dir / "checkpoints"
    state = ckpt.TrainerState(fingerprint=config.fingerprint())
    resumed_from = 0
    latest = ckpt.latest_checkpoint(checkpoints_dir) if config.checkpoint.resume else None
    if latest is not None:
        saved = ckpt.read_state(latest)
        if saved.fingerprint != state.fingerprint:
            raise RuntimeError(
                f"{latest} was written by a different training config; use a new output_dir "
                "or set checkpoint.resume: false to start over"
            )
        state = ckpt.load_checkpoint(latest, lora_parameters, optimizer, lr_scheduler)
        resumed_from = state.step
        reporter.log(f"resumed from {latest.name} (step {state.step})")

    denoiser, optimizer = accelerator.prepare(denoiser, optimizer)
    finish_denoiser(accelerator.unwrap_model(denoiser), config, device)  # offload, compile
    objective = build_objective(config, adapter)
    schedule = BatchSchedule(
        samples,
        config.batch_size,
        config.seed,
        accelerator.num_processes,
        accelerator.process_index,
    )
    loop = TrainingLoop(
        config=config,
        adapter=adapter,
        accelerator=accelerator,
        denoiser=denoiser,
        optimizer=optimizer,
        lr_scheduler=lr_scheduler,
        objective=objective,
        schedule=schedule,
        data=data,
        lora_parameters=lora_parameters,
        reporter=reporter,
        checkpoints_dir=checkpoints_dir,
    )
    state = loop.run(state)

    unwrapped = accelerator.unwrap_model(denoiser)
    result = None
    if accelerator.is_main_process:
        result = finish(
            config,
            adapter,
            options,
            unwrapped,
            data,
            state,
            resumed_from,
            device,
            weight_dtype,
            started,
        )
        reporter.result(result_metadata(result))
    accelerator.wait_for_everyone()
    accelerator.end_training()
    if result is None:  # non-main processes: what the main one wrote
        result = TrainingResult(**json.loads((output_dir / RESULT_FILE).read_text()))
    return result


def resolve_weight_dtype(config: TrainingConfig, device: torch.device) -> torch.dtype:
    if config.model.weight_dtype != "auto":
        return DTYPES[config.model.weight_dtype]
    if device.type == "cuda" and config.mixed_precision == "bf16":
        return torch.bfloat16
    if device.type == "cuda" and config.mixed_precision == "fp16":
        return torch.float16
    return torch.float32


def resolve_encoder_dtype(config: TrainingConfig, device: torch.device) -> str:
    if config.model.encoder_dtype != "auto":
        return config.model.encoder_dtype
    return "bfloat16" if device.type == "cuda" else "float32"


# ----------------------------------------------------------------------------------------------
# Phase 1: cache


def build_training_data(
    config: TrainingConfig,
    adapter: FamilyAdapter,
    options: LoadOptions,
    samples: list[Sample],
    device: torch.device,
    reporter: Reporter,
) -> TrainingData:
    encoder_dtype_name = resolve_encoder_dtype(config, device)
    encoder_dtype = DTYPES[encoder_dtype_name]
    cache_root = Path(config.data.cache_dir or Path(config.output_dir) / "cache")
    cache = EmbeddingCache(
        cache_root,
        model_key(config.model.family, options.source, options.revision, encoder_dtype_name),
    )
    max_tokens = config.data.max_text_tokens or adapter.default_max_text_tokens
    identities = sorted({sample.identity for sample in samples})[: config.samples.max_identities]
    sample_prompts = [sample_prompt(config.samples.prompt_template, name) for name in identities]
    wants_negative = config.samples.enabled and config.samples.guidance_scale > 1
    negative = [config.samples.negative_prompt] if wants_negative else []
    prompts = sorted({s.caption for s in samples} | set(sample_prompts) | set(negative))

    text_paths = {prompt: cache.text_path(prompt, max_tokens) for prompt in prompts}
    missing_prompts = [prompt for prompt, path in text_paths.items() if not path.is_file()]
    if missing_prompts:
        started = time.perf_counter()
        pipe = adapter.load_text_pipeline(options, encoder_dtype, device)
        embeds = adapter.encode_prompts(pipe, missing_prompts, max_tokens, device)
        for prompt, tensors in zip(missing_prompts, embeds, strict=True):
            cache.store(text_paths[prompt], tensors, {"prompt": prompt, "max_tokens": max_tokens})
        del pipe
        free_memory()
        reporter.log(
            f"cached {len(missing_prompts)} text embeddings in {time.perf_counter() - started:.1f}s"
        )

    latent_paths = [cache.latent_path(sample) for sample in samples]
    missing_samples = [s for s, p in zip(samples, latent_paths, strict=True) if not p.is_file()]
    if missing_samples:
        started = time.perf_counter()
        vae = adapter.load_vae(options, encoder_dtype).to(device)
        for chunk in _same_size_chunks(missing_samples, config.data.encode_batch_size):
            loaded = [load_pixels(sample) for sample in chunk]
            pixels = torch.stack([pixel for pixel, _ in loaded]).to(device)
            latents = adapter.encode_images(vae, pixels)
            masks = torch.stack([mask for _, mask in loaded]).to(device)
            latent_masks = mask_to_latent(masks, tuple(latents.shape[-2:]))
            for sample, sample_latents, latent_mask in zip(
                chunk, latents, latent_masks, strict=True
            ):
                cache.store(
                    cache.latent_path(sample),
                    {"latents": sample_latents, "mask": latent_mask},
                    {"sample_id": sample.sample_id, "bucket": f"{sample.width}x{sample.height}"},
                )
        del vae
        free_memory()
        reporter.log(
            f"cached {len(missing_samples)} latents in {time.perf_counter() - started:.1f}s"
        )

    text_cache = {prompt: cache.load(path) for prompt, path in text_paths.items()}
    latents, masks = [], []
    for path in latent_paths:
        entry = cache.load(path)
        latents.append(entry["latents"])
        masks.append(entry["mask"])
    captions = {sample.caption for sample in samples}
    staged = _stage(
        [*latents, *masks, *(text_cache[caption] for caption in captions)],
        device,
        config.data.device_cache_max_gib,
    )
    latents, masks = staged[: len(latents)], staged[len(latents) : 2 * len(latents)]
    caption_text = dict(zip(captions, staged[2 * len(latents) :], strict=True))
    return TrainingData(
        samples=samples,
        latents=latents,
        masks=masks,
        text=[caption_text[sample.caption] for sample in samples],
        prompt_text={prompt: text_cache[prompt] for prompt in sample_prompts},
        negative_text=text_cache[negative[0]] if negative else None,
    )


def _stage(items: list[Any], device: torch.device, max_gib: float) -> list[Any]:
    """Tensors (or dicts of tensors) onto the accelerator if they fit, else into pinned memory.

    On the device, a batch is a ``torch.stack`` of device tensors: no copy, no host sync per step.
    """
    if device.type != "cuda":
        return items
    tensors = [t for item in items for t in (item.values() if isinstance(item, dict) else [item])]
    total = sum(t.numel() * t.element_size() for t in tensors)
    target = device if total <= max_gib * 2**30 else None

    def move(tensor: torch.Tensor) -> torch.Tensor:
        return tensor.to(target) if target is not None else tensor.pin_memory()

    return [
        {key: move(value) for key, value in item.items()} if isinstance(item, dict) else move(item)
        for item in items
    ]


def _same_size_chunks(samples: list[Sample], size: int) -> list[list[Sample]]:
    by_bucket: dict[tuple[int, int], list[Sample]] = {}
    for sample in samples:
        by_bucket.setdefault(sample.bucket, []).append(sample)
    return [
        group[start : start + size]
        for group in by_bucket.values()
        for start in range(0, len(group), max(1, size))
    ]


def free_memory() -> None:
    """Give a dropped model's accelerator memory back (a full gc is slow: only when it pays)."""
    if torch.cuda.is_available():
        gc.collect()
        torch.cuda.empty_cache()


# ----------------------------------------------------------------------------------------------
# Phase 2: LoRA, optimizer, loop


def add_lora(
    denoiser: torch.nn.Module, adapter: FamilyAdapter, config: TrainingConfig
) -> dict[str, torch.nn.Parameter]:
    """Freeze the denoiser, add the adapter; returns the trainable parameters (float32) by name."""
    from peft import LoraConfig as PeftLoraConfig

    denoiser.requires_grad_(False)
    # LoRA A matrices are drawn from the global RNG: seed it, or two runs start apart.
    torch.manual_seed(config.seed)
    targets = config.lora.target_modules or adapter.lora_target_modules(config.lora.include_mlp)
    denoiser.add_adapter(
        PeftLoraConfig(
            r=config.lora.rank,
            lora_alpha=config.lora.alpha,
            lora_dropout=config.lora.dropout,
            init_lora_weights="gaussian" if config.lora.init == "gaussian" else True,
            target_modules=targets,
        )
    )
    trainable: dict[str, torch.nn.Parameter] = {}
    for name, parameter in denoiser.named_parameters():
        if parameter.requires_grad:
            # float32 master weights even when the frozen base is bf16: tiny updates survive.
            parameter.data = parameter.data.float()
            trainable[name] = parameter
    if not trainable:
        raise RuntimeError(f"no LoRA parameters were created for targets {targets}")
    return trainable


def build_optimizer(config: TrainingConfig, parameters: list[torch.nn.Parameter]):
    settings = config.optimizer
    kwargs: dict[str, Any] = {
        "lr": settings.learning_rate,
        "betas": tuple(settings.betas),
        "eps": settings.eps,
        "weight_decay": settings.weight_decay,
    }
    if settings.name == "adamw8bit":
        try:
            import bitsandbytes as bnb
        except ImportError as error:
            raise RuntimeError(
                "optimizer.name 'adamw8bit' needs the bitsandbytes package (CUDA only); "
                "install it or use 'adamw'"
            ) from error
        return bnb.optim.AdamW8bit(parameters, **kwargs)
    if config.speed.fused_optimizer:
        # One kernel for the whole update of every tensor (CUDA and CPU).
        return torch.optim.AdamW(parameters, fused=True, **kwargs)
    # foreach: one fused kernel launch per parameter group instead of one per tensor.
    return torch.optim.AdamW(parameters, foreach=torch.cuda.is_available(), **kwargs)


def build_lr_scheduler(config: TrainingConfig, optimizer):
    from diffusers.optimization import get_scheduler

    return get_scheduler(
        config.optimizer.lr_scheduler,
        optimizer=optimizer,
        num_warmup_steps=config.optimizer.warmup_steps,
        num_training_steps=config.max_steps,
    )


def build_objective(config: TrainingConfig, adapter: FamilyAdapter):
    return adapter.make_objective(config.timesteps)


def step_seed(seed: int, step: int, micro_step: int, process: int) -> int:
    """A well-mixed 63-bit seed per (run seed, step, micro-step, process)."""
    digest = hashlib.sha256(f"{seed}:{step}:{micro_step}:{process}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


@dataclass
class TrainingLoop:
    config: TrainingConfig
    adapter: FamilyAdapter
    accelerator: Any
    denoiser: torch.nn.Module
    optimizer: Any
    lr_scheduler: Any
    objective: Any
    schedule: BatchSchedule
    data: TrainingData
    lora_parameters: dict[str, torch.nn.Parameter]
    reporter: Reporter
    checkpoints_dir: Path

    def run(self, state: ckpt.TrainerState) -> ckpt.TrainerState:
        config = self.config
        pending: list[torch.Tensor] = []  # per-step losses still on the device
        grad_norm: torch.Tensor | None = None
        window_started = time.perf_counter()
        window_start_step = state.step
        for step in range(state.step, config.max_steps):
            step_loss, step_norm = self.step(step)
            grad_norm = step_norm if step_norm is not None else grad_norm
            pending.append(step_loss)
            state.step = step + 1

            is_last = state.step == config.max_steps
            if state.step % config.log_every_steps == 0 or is_last:
                # The only regular host sync: one readout per logging window.
                losses = self.accelerator.reduce(torch.stack(pending), reduction="mean").tolist()
                state.losses.extend(losses)
                pending.clear()
                elapsed = time.perf_counter() - window_started
                state.train_seconds += elapsed
                metrics = {
                    "loss": losses[-1],
                    "loss_window_mean": sum(losses) / len(losses),
                    "lr": float(self.lr_scheduler.get_last_lr()[0]),
                    "steps_per_second": (state.step - window_start_step) / max(elapsed, 1e-9),
                }
                if grad_norm is not None:
                    metrics["grad_norm"] = float(grad_norm)
                self.reporter.metrics(state.step, metrics)
                window_started, window_start_step = time.perf_counter(), state.step
            if state.step % config.checkpoint.every_steps == 0 or is_last:
                if pending:  # checkpoint between log points: bring the losses along
                    losses = self.accelerator.reduce(torch.stack(pending), reduction="mean")
                    state.losses.extend(losses.tolist())
                    pending.clear()
                self.save(state)
        return state

    def step(self, step: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """One optimizer step (all micro-steps): the loss and gradient norm, left on the device."""
        config = self.config
        accum = config.gradient_accumulation_steps
        step_loss: torch.Tensor | None = None
        for micro in range(accum):
            loss = self.micro_step(step, micro)
            last_micro = micro == accum - 1
            context = (
                self.accelerator.no_sync(self.denoiser)
                if not last_micro and self.accelerator.num_processes > 1
                else contextlib.nullcontext()
            )
            with context:
                self.accelerator.backward(loss / accum)
            detached = loss.detach() / accum
            step_loss = detached if step_loss is None else step_loss + detached
        grad_norm = None
        if config.optimizer.max_grad_norm > 0:
            grad_norm = self.accelerator.clip_grad_norm_(
                list(self.lora_parameters.values()), config.optimizer.max_grad_norm
            )
        self.optimizer.step()
        self.lr_scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return step_loss, grad_norm  # type: ignore[return-value]

    def micro_step(self, step: int, micro: int) -> torch.Tensor:
        config = self.config
        device = self.accelerator.device
        seed = step_seed(config.seed, step, micro, self.accelerator.process_index)
        # Seeds the global RNG too (LoRA dropout); all other draws use the local generator.
        torch.manual_seed(seed)
        generator = torch.Generator(device=device).manual_seed(seed)

        indices = self.schedule.batch(step * config.gradient_accumulation_steps + micro)
        x0 = _batch([self.data.latents[i] for i in indices], device)
        mask = _batch([self.data.masks[i] for i in indices], device)
        text = self.adapter.collate_text([self.data.text[i] for i in indices], device)
        pixel_size = (self.data.samples[indices[0]].height, self.data.samples[indices[0]].width)
        latent_h, latent_w = x0.shape[-2:]
        noised = self.objective.noise(x0, self.adapter.image_seq_len(latent_h, latent_w), generator)

        with self.accelerator.autocast():
            prediction = self.adapter.predict(
                self.denoiser,
                noised.noisy,
                noised.model_t,
                text,
                config.train_guidance_scale,
                pixel_size,
            )
        prior = None
        if config.loss.prior_preservation_weight > 0:
            prior = self.base_prediction(noised, text, pixel_size)
        return masked_loss(prediction, noised.target, mask, config.loss, prior).loss

    def base_prediction(self, noised, text, pixel_size) -> torch.Tensor:
        """The frozen base model's prediction: the same call with the LoRA switched off."""
        model = self.accelerator.unwrap_model(self.denoiser)
        model.disable_adapters()
        try:
            with torch.no_grad(), self.accelerator.autocast():
                return self.adapter.predict(
                    self.denoiser,
                    noised.noisy,
                    noised.model_t,
                    text,
                    self.config.train_guidance_scale,
                    pixel_size,
                )
        finally:
            model.enable_adapters()

    def save(self, state: ckpt.TrainerState) -> None:
        if self.accelerator.is_main_process:
            path = ckpt.save_checkpoint(
                self.checkpoints_dir,
                state,
                self.lora_parameters,
                self.optimizer,
                self.lr_scheduler,
                self.config.checkpoint.keep_last,
            )
            self.reporter.log(f"checkpoint {path.name}")
        self.accelerator.wait_for_everyone()


def _batch(tensors: list[torch.Tensor], device: torch.device) -> torch.Tensor:
    """Stack one batch; staged on the device already, or pinned host memory copied async."""
    if tensors[0].device == device or device.type != "cuda":
        return torch.stack(tensors).to(device)
    return torch.stack(tensors).pin_memory().to(device, non_blocking=True)


# ----------------------------------------------------------------------------------------------
# Phase 3: export, samples, summary


def finish(
    config: TrainingConfig,
    adapter: FamilyAdapter,
    options: LoadOptions,
    denoiser: torch.nn.Module,
    data: TrainingData,
    state: ckpt.TrainerState,
    resumed_from: int,
    device: torch.device,
    weight_dtype: torch.dtype,
    started: float,
) -> TrainingResult:
    output_dir = Path(config.output_dir)
    lora_dir = output_dir / "lora"
    export_dtype = DTYPES[config.export_dtype]
    lora_path, comfy_path = export_lora(adapter, denoiser, lora_dir, export_dtype)
    config_path = config.save(lora_dir / CONFIG_FILE)

    curve_path = atomic_write_bytes(
        output_dir / "loss_curve.png", _png(loss_curve_image(state.losses))
    )
    sample_paths: dict[str, list[str]] = {}
    if config.samples.enabled and data.prompt_text:
        denoiser.eval()
        # Everything in the denoiser's precision, as the pipelines expect at inference.
        vae = adapter.load_vae(options, weight_dtype).to(device)
        pipeline = adapter.build_pipeline(options, denoiser, vae, weight_dtype)
        size = (
            config.samples.width or most_common_bucket(data.samples)[0],
            config.samples.height or most_common_bucket(data.samples)[1],
        )
        images = generate_samples(
            adapter,
            pipeline,
            data.prompt_text,
            data.negative_text,
            config.samples,
            size,
            device,
        )
        saved = save_samples(images, config.samples.seeds, output_dir / "samples")
        sample_paths = {prompt: [str(path) for path in paths] for prompt, paths in saved.items()}
        del pipeline, vae
        free_memory()

    recent = state.losses[-10:]
    seen = (state.step - resumed_from) * config.batch_size * config.gradient_accumulation_steps
    result = TrainingResult(
        output_dir=str(output_dir),
        lora_path=str(lora_path),
        comfyui_lora_path=str(comfy_path),
        config_path=str(config_path),
        loss_curve_path=str(curve_path),
        samples=sample_paths,
        steps=state.step,
        resumed_from_step=resumed_from,
        final_loss=state.losses[-1] if state.losses else None,
        mean_loss_last_10=sum(recent) / len(recent) if recent else None,
        train_seconds=round(state.train_seconds, 3),
        total_seconds=round(time.perf_counter() - started, 3),
        samples_per_second=round(seen / max(state.train_seconds, 1e-9), 3),
        num_train_samples=len(data.samples),
        identities=sorted({sample.identity for sample in data.samples}),
    )
    atomic_write_text(output_dir / RESULT_FILE, result.to_json())
    return result


def _png(image) -> bytes:
    from identity_pipeline.previews import encode_image

    return encode_image(image, "PNG")


def result_metadata(result: TrainingResult) -> dict[str, Any]:
    """The materialization metadata: numbers, paths, and the pictures inline (small JPEGs)."""
    from PIL import Image

    from identity_pipeline.previews import SheetItem, contact_sheet, inline_markdown_image
    from identity_pipeline.training.pipes import md, path_value

    metadata: dict[str, Any] = {
        "steps": result.steps,
        "resumed_from_step": result.resumed_from_step,
        "final_loss": result.final_loss,
        "mean_loss_last_10": result.mean_loss_last_10,
        "train_seconds": result.train_seconds,
        "total_seconds": result.total_seconds,
        "samples_per_second": result.samples_per_second,
        "num_train_samples": result.num_train_samples,
        "identities": ", ".join(result.identities),
        "lora_path": path_value(result.lora_path),
        "comfyui_lora_path": path_value(result.comfyui_lora_path),
        "config_path": path_value(result.config_path),
        "loss_curve_path": path_value(result.loss_curve_path),
    }
    with Image.open(result.loss_curve_path) as curve:
        metadata["loss_curve"] = md(inline_markdown_image(curve.copy(), "loss curve"))
    items = []
    for prompt, paths in result.samples.items():
        for path in paths:
            with Image.open(path) as picture:
                seed = Path(path).stem.rsplit("_", 1)[-1]
                items.append(SheetItem(picture.copy(), f"{prompt} ({seed})"))
    if items:
        columns = max(1, len(next(iter(result.samples.values()))))
        sheet = contact_sheet(items, cell=160, columns=columns)
        metadata["samples"] = md(inline_markdown_image(sheet, "samples"))
    return metadata
