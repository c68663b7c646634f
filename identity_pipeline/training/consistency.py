"""Does the trainer feed the denoiser what the stock diffusers pipeline feeds it? Proven per family.

A LoRA trainer with one convention off (latent scaling or shift, patch packing, the timestep's
unit, the text mask, image ids, guidance, pooled embeddings) trains to a falling loss and then
draws nothing of the person. This check runs, for one family, both sides on the same inputs:

* the pipeline side is the family's stock pipeline, called with the captions as prompts
  (its own text encoding) and with its denoiser's ``forward`` replaced by an oracle that
  records every argument and answers with the trainer's target for that step;
* the trainer side is the trainer's own code: ``FamilyAdapter.encode_images`` (normalised
  latents of real photos), ``encode_prompts`` + ``collate_text`` (as cached and batched),
  the objective's noising at the pipeline's sigma (``objective.at``) and ``predict``.

With the oracle answering the trainer's target, the pipeline's sampling loop walks the trainer's
own interpolation path when, and only when, the objective matches the scheduler: every Euler step
lands on the trainer's next point. So at each step of the loop the two argument sets must agree
(hidden states, timestep, text embeddings and mask, image shapes / ids, guidance, pooled
embeddings, time ids), the loop must end on the trainer's latents, and the pipeline's
denormalise + decode of them must equal the VAE's own round trip of the photos.

``BROKEN_CONVENTIONS`` are negative controls: the trainer with one convention broken on purpose,
each of which this check must catch.

Photos: ``skimage.data`` astronaut (NASA, public domain) and coffee (Rachel Michetti, CC0),
shipped inside scikit-image; nothing is downloaded.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from identity_pipeline.training.config import TimestepConfig
from identity_pipeline.training.families import (
    FamilyAdapter,
    get_adapter,
    pack_latents,
    unpack_latents,
)
from identity_pipeline.training.flow_matching import DdpmObjective, FlowObjective, NoisedBatch

# Two captions of different token lengths: batching them pads the shorter one, so the text mask
# is exercised; a non-square size catches any swapped height / width.
CAPTIONS = ("A photo of alice", "A group photo of bob and other people")
WIDTH, HEIGHT = 64, 48
PHOTOS = ("astronaut", "coffee")
STEPS = 4

# Tolerances: relative to the reference's largest magnitude (at least 1). The sampling loop's
# float32 Euler steps drift ~1e-6; a broken convention moves values by O(1).
TOLERANCE = 1e-4
PIXEL_TOLERANCE = 1e-4  # decoded images in [0, 1]; float drift leaves ~1e-5


# ----------------------------------------------------------------------------------------------
# Inputs


def reference_photos(width: int = WIDTH, height: int = HEIGHT, names=PHOTOS) -> torch.Tensor:
    """(N, 3, height, width) in [-1, 1]: centre-cropped to the aspect, then resized."""
    import skimage.data
    from PIL import Image

    pictures = []
    for name in names:
        image = Image.fromarray(getattr(skimage.data, name)()).convert("RGB")
        scale = min(image.width / width, image.height / height)
        crop_w, crop_h = width * scale, height * scale
        left, top = (image.width - crop_w) / 2, (image.height - crop_h) / 2
        box = (left, top, left + crop_w, top + crop_h)
        resized = image.resize((width, height), Image.Resampling.LANCZOS, box=box)
        pictures.append(np.asarray(resized, dtype=np.float32))
    pixels = torch.from_numpy(np.stack(pictures)).permute(0, 3, 1, 2)
    return pixels / 127.5 - 1.0


def configure_from_pipeline(adapter: FamilyAdapter, pipe) -> FamilyAdapter:
    """``adapter.read_configs`` for a pipeline held in memory."""
    denoiser = getattr(pipe, adapter.denoiser_name)
    adapter.configure(dict(pipe.vae.config), dict(denoiser.config), dict(pipe.scheduler.config))
    return adapter


# ----------------------------------------------------------------------------------------------
# Comparing two calls


@dataclass(frozen=True)
class Comparison:
    step: int  # index in the sampling loop; -1: the whole run
    name: str  # a denoiser argument (dotted inside dicts), or a run-level check
    difference: float  # largest absolute difference; inf: different shape, type or presence
    tolerance: float
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.difference <= self.tolerance


@dataclass
class ConsistencyReport:
    family: str
    control: str | None
    sigmas: list[float]
    comparisons: list[Comparison] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(comparison.ok for comparison in self.comparisons)

    def failures(self) -> list[Comparison]:
        return [comparison for comparison in self.comparisons if not comparison.ok]

    def failed_names(self) -> set[str]:
        return {comparison.name for comparison in self.failures()}

    def worst(self) -> dict[str, float]:
        """Per compared name, the largest difference over the steps."""
        worst: dict[str, float] = {}
        for comparison in self.comparisons:
            worst[comparison.name] = max(worst.get(comparison.name, 0.0), comparison.difference)
        return worst


# Arguments that carry no model input: both sides leave them at their defaults.
IGNORED_ARGUMENTS = {
    "return_dict",
    "attention_kwargs",
    "joint_attention_kwargs",
    "cross_attention_kwargs",
    "controlnet_block_samples",
    "controlnet_single_block_samples",
    "controlnet_blocks_repeat",
    "block_controlnet_hidden_states",
    "skip_layers",
}


def bound_arguments(forward: Callable, args: tuple, kwargs: dict) -> dict[str, Any]:
    """A denoiser call's arguments by parameter name, defaults filled in."""
    bound = inspect.signature(forward).bind(*args, **kwargs)
    bound.apply_defaults()
    named = dict(bound.arguments)
    extra = named.pop("kwargs", None)
    if isinstance(extra, dict):
        named.update(extra)
    return {name: value for name, value in named.items() if name not in IGNORED_ARGUMENTS}


def compare_arguments(
    step: int, trainer: dict[str, Any], pipeline: dict[str, Any], prefix: str = ""
) -> list[Comparison]:
    comparisons = []
    for name in sorted(set(trainer) | set(pipeline)):
        label = prefix + name
        ours, theirs = trainer.get(name), pipeline.get(name)
        if isinstance(ours, dict) and isinstance(theirs, dict):
            comparisons.extend(compare_arguments(step, ours, theirs, label + "."))
            continue
        difference, detail = _difference(name, ours, theirs)
        if difference is not None:
            comparisons.append(Comparison(step, label, difference, _tolerance(theirs), detail))
    return comparisons


def _tolerance(reference: Any) -> float:
    if isinstance(reference, torch.Tensor) and reference.numel() and reference.is_floating_point():
        return TOLERANCE * max(1.0, float(reference.abs().max()))
    return TOLERANCE


def _difference(name: str, ours: Any, theirs: Any) -> tuple[float | None, str]:
    """(largest difference, why) for one argument; None: nothing to compare (both absent)."""
    if ours is None and theirs is None:
        return None, ""
    if ours is None or theirs is None:
        return math.inf, f"trainer passes {_kind(ours)}, pipeline passes {_kind(theirs)}"
    if isinstance(ours, torch.Tensor) or isinstance(theirs, torch.Tensor):
        if not (isinstance(ours, torch.Tensor) and isinstance(theirs, torch.Tensor)):
            return math.inf, f"trainer passes {_kind(ours)}, pipeline passes {_kind(theirs)}"
        a, b = ours.detach().double().cpu(), theirs.detach().double().cpu()
        if a.shape != b.shape:
            # A timestep given once for the whole batch is broadcast by every denoiser.
            if name == "timestep" and min(a.numel(), b.numel()) == 1:
                a, b = torch.broadcast_tensors(a, b)
            else:
                return math.inf, f"shape {tuple(a.shape)} vs {tuple(b.shape)}"
        return float((a - b).abs().max()) if a.numel() else 0.0, ""
    if ours == theirs:
        return 0.0, ""
    return math.inf, f"trainer {ours!r} vs pipeline {theirs!r}"


def _kind(value: Any) -> str:
    if value is None:
        return "None"
    if isinstance(value, torch.Tensor):
        return f"a tensor {tuple(value.shape)}"
    return type(value).__name__


# ----------------------------------------------------------------------------------------------
# The pipeline side: stock methods only


def pipeline_layout(family: str, pipe, latents: torch.Tensor) -> torch.Tensor:
    """Spatial latents in the layout the pipeline's loop holds, by the pipeline's own packing."""
    if family in ("qwen-image", "flux"):
        batch, channels, height, width = latents.shape
        return pipe._pack_latents(latents, batch, channels, height, width)
    return latents


def trainer_t(family: str, scheduler, step: int) -> torch.Tensor:
    """The trainer's noise level matching step ``step`` of the pipeline's loop: sigma for flow
    families, the integer training timestep for SDXL."""
    if family == "sdxl":
        return scheduler.timesteps[step].round().long()
    return scheduler.sigmas[step].float()


class _Captured(Exception):
    """Raised by the trainer-side hook once the arguments are recorded (no forward needed)."""


@contextlib.contextmanager
def replaced_forward(module: torch.nn.Module, forward: Callable) -> Iterator[None]:
    previous = module.__dict__.get("forward")  # an enclosing replacement, if any
    module.forward = forward  # an instance attribute: ``module(...)`` now calls it
    try:
        yield
    finally:
        if previous is None:
            del module.forward  # the class's own forward again
        else:
            module.forward = previous


def _pipeline_kwargs(family: str, guidance: float) -> dict[str, Any]:
    """Sampling without classifier-free guidance (training has none); Flux's guidance input is
    the training guidance value."""
    if family == "qwen-image":
        return {"true_cfg_scale": 1.0}
    return {"guidance_scale": guidance if family == "flux" else 1.0}


# ----------------------------------------------------------------------------------------------
# The check


def check_family(
    family: str,
    pipe,
    control: BrokenConvention | None = None,
    steps: int = STEPS,
    seed: int = 0,
    guidance: float = 1.0,
) -> ConsistencyReport:
    """Run the pipeline and the trainer side by side on ``pipe`` (a tiny or real pipeline of
    ``family``, float32, on the CPU or a GPU); ``control`` breaks one trainer convention."""
    device = pipe.device
    adapter = configure_from_pipeline(
        control.adapter(family) if control else get_adapter(family), pipe
    )
    objective = adapter.make_objective(TimestepConfig())
    denoiser = getattr(pipe, adapter.denoiser_name)
    pipe.set_progress_bar_config(disable=True)

    # Trainer side, once: normalised latents of the photos, noise, the captions' embeddings.
    pixels = reference_photos().to(device)
    with torch.no_grad():
        x0 = adapter.encode_images(pipe.vae, pixels)
        max_tokens = adapter.default_max_text_tokens
        entries = adapter.encode_prompts(pipe, list(CAPTIONS), max_tokens, device)
    text = adapter.collate_text(entries, device)
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed)).to(device)

    def trainer_call(step: int, scheduler) -> tuple[dict[str, Any], NoisedBatch]:
        noised = objective.at(x0, noise, trainer_t(family, scheduler, step).expand(len(x0)))
        recorded: dict[str, Any] = {}

        def capture(*args, **kwargs):
            recorded.update(bound_arguments(original_forward, args, kwargs))
            raise _Captured

        with replaced_forward(denoiser, capture), contextlib.suppress(_Captured):
            adapter.predict(denoiser, noised.noisy, noised.model_t, text, guidance, (HEIGHT, WIDTH))
        return recorded, noised

    original_forward = denoiser.forward
    report = ConsistencyReport(family, control.name if control else None, sigmas=[])
    calls: list[dict[str, Any]] = []

    def oracle(*args, **kwargs):
        """The pipeline's denoiser: record the call, answer with the trainer's target."""
        step = len(calls)
        calls.append(bound_arguments(original_forward, args, kwargs))
        ours, noised = trainer_call(step, pipe.scheduler)
        report.sigmas.append(float(pipe.scheduler.sigmas[step]))
        report.comparisons.extend(compare_arguments(step, ours, calls[-1]))
        return (pipeline_layout(family, pipe, noised.target),)

    final: dict[str, torch.Tensor] = {}

    def keep_latents(pipeline, step, timestep, callback_kwargs):
        final["latents"] = callback_kwargs["latents"]
        return {}

    start = _start_latents(family, pipe, x0, noise, steps)
    with replaced_forward(denoiser, oracle), torch.no_grad():
        images = pipe(
            prompt=list(CAPTIONS),
            height=HEIGHT,
            width=WIDTH,
            num_inference_steps=steps,
            latents=start,
            output_type="pt",
            callback_on_step_end=keep_latents,
            callback_on_step_end_tensor_inputs=["latents"],
            **_pipeline_kwargs(family, guidance),
        ).images

    # The loop ends where the trainer started: its latents of the photos (sigma 0)...
    landed = final["latents"].double()
    expected = pipeline_layout(family, pipe, x0).double()
    report.comparisons.append(
        Comparison(
            -1,
            "euler_lands_on_x0",
            float((landed - expected).abs().max()),
            TOLERANCE * max(1.0, float(expected.abs().max())),
            "the loop's last latents vs the trainer's x0",
        )
    )
    # ...and the pipeline's denormalise + decode of them is the VAE's own round trip.
    with torch.no_grad():
        round_trip = _vae_round_trip(family, pipe.vae, pixels)
    report.comparisons.append(
        Comparison(
            -1,
            "decode_is_vae_round_trip",
            float((images.double() - round_trip.double()).abs().max()),
            PIXEL_TOLERANCE,
            "pipeline output vs decode(encode(photo)), pixels in [0, 1]",
        )
    )
    return report


def _start_latents(family, pipe, x0, noise, steps) -> torch.Tensor:
    """Flow pipelines start at sigma 1, pure noise, where the trainer's point is the noise too.

    SDXL's "leading" schedule starts at timestep 901 (of 10 steps) and assumes pure noise there;
    the trainer's point at that timestep is x0 + sigma noise, handed over in the pipeline's
    unscaled units (it multiplies ``latents`` by ``init_noise_sigma``).
    """
    if family != "sdxl":
        return pipeline_layout(family, pipe, noise)
    scheduler = copy.deepcopy(pipe.scheduler)
    scheduler.set_timesteps(steps, device=noise.device)
    return (x0 + scheduler.sigmas[0] * noise) / scheduler.init_noise_sigma


def _vae_round_trip(family: str, vae, pixels: torch.Tensor) -> torch.Tensor:
    if family == "qwen-image":  # a video VAE: one frame
        raw = vae.encode(pixels[:, :, None]).latent_dist.mode()
        decoded = vae.decode(raw).sample[:, :, 0]
    else:
        decoded = vae.decode(vae.encode(pixels).latent_dist.mode()).sample
    return (decoded / 2 + 0.5).clamp(0, 1)


# ----------------------------------------------------------------------------------------------
# Negative controls: one convention broken on purpose, each must be caught


@dataclass(frozen=True)
class BrokenConvention:
    name: str
    families: tuple[str, ...]
    mistake: str  # what a trainer would have got wrong
    caught_by: frozenset[str]  # comparisons that must fail (at least one of them)
    # The family's adapter class -> a subclass with the convention broken.
    adapter_class: Callable[[type[FamilyAdapter]], type[FamilyAdapter]]

    def adapter(self, family: str) -> FamilyAdapter:
        base = type(get_adapter(family))
        return self.adapter_class(base)()


def _timesteps_x1000(base):
    class TimestepsX1000(base):
        def predict(self, denoiser, noisy, model_t, text, guidance, pixel_size):
            return super().predict(denoiser, noisy, model_t * 1000, text, guidance, pixel_size)

    return TimestepsX1000


def _transposed_patches(base):
    """2x2 patches flattened column-major instead of row-major."""

    class TransposedPatches(base):
        def pack(self, latents):
            return pack_latents(latents.transpose(-1, -2).contiguous())

        def unpack(self, tokens, height, width):
            return unpack_latents(tokens, width, height).transpose(-1, -2).contiguous()

    return TransposedPatches


def _no_text_mask(base):
    class NoTextMask(base):
        def collate_text(self, items, device):
            text = super().collate_text(items, device)
            return {**text, "prompt_embeds_mask": None}

    return NoTextMask


def _img_shapes_transposed(base):
    class ImgShapesTransposed(base):
        def img_shapes(self, batch, latent_h, latent_w):
            return super().img_shapes(batch, latent_w, latent_h)

    return ImgShapesTransposed


def _image_ids_transposed(base):
    class ImageIdsTransposed(base):
        def image_ids(self, rows, columns, device, dtype):
            return super().image_ids(rows, columns, device, dtype)[:, [0, 2, 1]]

    return ImageIdsTransposed


def _guidance_x1000(base):
    class GuidanceX1000(base):
        def predict(self, denoiser, noisy, model_t, text, guidance, pixel_size):
            return super().predict(denoiser, noisy, model_t, text, guidance * 1000, pixel_size)

    return GuidanceX1000


def _pooled_swapped(base):
    """Pooled embeddings of the batch paired with the wrong captions (a collation slip)."""

    class PooledSwapped(base):
        def collate_text(self, items, device):
            text = super().collate_text(items, device)
            return {**text, "pooled_prompt_embeds": text["pooled_prompt_embeds"].roll(1, 0)}

    return PooledSwapped


def _time_ids_transposed(base):
    class TimeIdsTransposed(base):
        def time_ids(self, pixel_h, pixel_w):
            return super().time_ids(pixel_w, pixel_h)

    return TimeIdsTransposed


def _other_text_length(base):
    """Captions padded to another length than the pipeline's ``max_sequence_length`` (T5 has
    no attention mask in these pipelines: the padding is part of the conditioning)."""

    class OtherTextLength(base):
        default_max_text_tokens = base.default_max_text_tokens // 2

    return OtherTextLength


def _latents_unshifted(base):
    """Latents scaled but not shifted (Flux/SD3 ``shift_factor``; Qwen-Image ``latents_mean``)."""

    class LatentsUnshifted(base):
        def encode_images(self, vae, pixels):
            latents = super().encode_images(vae, pixels)
            if self.family == "qwen-image":
                mean = torch.tensor(vae.config.latents_mean, device=latents.device)
                std = torch.tensor(vae.config.latents_std, device=latents.device)
                return latents + (mean / std).view(1, -1, 1, 1)
            return latents + vae.config.shift_factor * vae.config.scaling_factor

    return LatentsUnshifted


def _latents_unscaled(base):
    """Latents not multiplied by ``scaling_factor`` (SDXL's 0.13025) / divided by the std."""

    class LatentsUnscaled(base):
        def encode_images(self, vae, pixels):
            latents = super().encode_images(vae, pixels)
            if self.family == "qwen-image":
                std = torch.tensor(vae.config.latents_std, device=latents.device)
                return latents * std.view(1, -1, 1, 1)
            return latents / vae.config.scaling_factor

    return LatentsUnscaled


class _FlippedVelocity(FlowObjective):
    def at(self, x0, noise, t):
        noised = super().at(x0, noise, t)
        return NoisedBatch(noised.noisy, -noised.target, noised.model_t)


class _ReversedInterpolation(FlowObjective):
    """x_t = t x0 + (1 - t) noise: t counted from the noise end."""

    def at(self, x0, noise, t):
        noised = super().at(x0, noise, 1 - t)
        return NoisedBatch(noised.noisy, noised.target, t)


class _NoSquareRoots(DdpmObjective):
    """DDPM noising with alpha_bar where sqrt(alpha_bar) belongs."""

    def at(self, x0, noise, timesteps):
        noised = super().at(x0, noise, timesteps)
        alpha_bar = self._alphas_cumprod[timesteps].view(-1, 1, 1, 1)
        return NoisedBatch(alpha_bar * x0 + (1 - alpha_bar) * noise, noised.target, timesteps)


class _VelocityForEpsilon(DdpmObjective):
    """A flow-matching velocity target for SDXL's epsilon-predicting UNet."""

    def at(self, x0, noise, timesteps):
        noised = super().at(x0, noise, timesteps)
        return NoisedBatch(noised.noisy, noise - x0, timesteps)


def _objective(broken_class):
    """An adapter whose objective is ``broken_class`` (same settings as the family's own)."""

    def adapter_class(base):
        class BrokenObjective(base):
            def make_objective(self, timesteps):
                own = super().make_objective(timesteps)
                if isinstance(own, FlowObjective):
                    return broken_class(own.config, own.shift)
                return broken_class(own.config, self.scheduler_config)

        return BrokenObjective

    return adapter_class


FLOW = ("qwen-image", "flux", "sd3")
ALL = (*FLOW, "sdxl")
HIDDEN = frozenset({"hidden_states", "sample", "euler_lands_on_x0"})

BROKEN_CONVENTIONS: tuple[BrokenConvention, ...] = (
    BrokenConvention(
        "timesteps_x1000",
        ALL,
        "timestep fed 1000x too large",
        frozenset({"timestep"}),
        _timesteps_x1000,
    ),
    BrokenConvention(
        "patches_transposed",
        ("qwen-image", "flux"),
        "2x2 latent patches packed column-major",
        HIDDEN,
        _transposed_patches,
    ),
    BrokenConvention(
        "text_mask_dropped",
        ("qwen-image",),
        "padded caption batch without its attention mask",
        frozenset({"encoder_hidden_states_mask"}),
        _no_text_mask,
    ),
    BrokenConvention(
        "img_shapes_transposed",
        ("qwen-image",),
        "image token grid given as (width, height)",
        frozenset({"img_shapes"}),
        _img_shapes_transposed,
    ),
    BrokenConvention(
        "image_ids_transposed",
        ("flux",),
        "image position ids with rows and columns swapped",
        frozenset({"img_ids"}),
        _image_ids_transposed,
    ),
    BrokenConvention(
        "guidance_x1000",
        ("flux",),
        "guidance fed pre-multiplied by 1000",
        frozenset({"guidance"}),
        _guidance_x1000,
    ),
    BrokenConvention(
        "pooled_swapped",
        ("flux", "sd3", "sdxl"),
        "pooled embeddings paired with the wrong captions",
        frozenset({"pooled_projections", "added_cond_kwargs.text_embeds"}),
        _pooled_swapped,
    ),
    BrokenConvention(
        "text_length_differs",
        ("flux", "sd3"),
        "T5 captions padded to half the pipeline's max_sequence_length",
        frozenset({"encoder_hidden_states"}),
        _other_text_length,
    ),
    BrokenConvention(
        "time_ids_transposed",
        ("sdxl",),
        "size conditioning given as (width, height)",
        frozenset({"added_cond_kwargs.time_ids"}),
        _time_ids_transposed,
    ),
    BrokenConvention(
        "latents_unshifted",
        ("qwen-image", "flux", "sd3"),
        "latents scaled but not shifted",
        frozenset({"decode_is_vae_round_trip"}),
        _latents_unshifted,
    ),
    BrokenConvention(
        "latents_unscaled",
        ALL,
        "latents not scaled by the VAE's scaling factor / std",
        frozenset({"decode_is_vae_round_trip"}),
        _latents_unscaled,
    ),
    BrokenConvention(
        "velocity_flipped",
        FLOW,
        "velocity target x0 - noise instead of noise - x0",
        HIDDEN,
        _objective(_FlippedVelocity),
    ),
    BrokenConvention(
        "interpolation_reversed",
        FLOW,
        "x_t = t x0 + (1 - t) noise",
        HIDDEN,
        _objective(_ReversedInterpolation),
    ),
    BrokenConvention(
        "ddpm_without_square_roots",
        ("sdxl",),
        "noised with alpha_bar instead of sqrt(alpha_bar)",
        HIDDEN,
        _objective(_NoSquareRoots),
    ),
    BrokenConvention(
        "velocity_for_epsilon",
        ("sdxl",),
        "velocity target for an epsilon-prediction UNet",
        HIDDEN,
        _objective(_VelocityForEpsilon),
    ),
)


def controls_for(family: str) -> list[BrokenConvention]:
    return [control for control in BROKEN_CONVENTIONS if family in control.families]


def control_named(name: str) -> BrokenConvention:
    for control in BROKEN_CONVENTIONS:
        if control.name == name:
            return control
    raise ValueError(f"unknown control {name!r}; known: {[c.name for c in BROKEN_CONVENTIONS]}")
