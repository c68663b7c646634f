"""The speed/memory switches of ``TrainingConfig.speed`` applied to a denoiser (issue 10).

Two entry points, both no-ops on the default config (apart from diffusers' own checkpointing):

* ``prepare_denoiser`` after the LoRA is added, before ``accelerator.prepare``: fp8 base weights,
  the checkpointing plan (which blocks, which policy), the attention guards.
* ``finish_denoiser`` after ``accelerator.prepare`` moved the model to the device: block offload,
  then regional compilation.

What each switch does is documented on ``SpeedConfig``; how the Flux backward crash is avoided is
documented on ``AttentionGuard``.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from identity_pipeline.training.config import SpeedConfig, TrainingConfig
from identity_pipeline.training.fp8 import quantize_modules, scaled_mm_supported

log = logging.getLogger(__name__)

# Checkpointable units besides the model's ``_repeated_blocks`` (SDXL's UNet checkpoints resnets).
EXTRA_CHECKPOINT_UNITS = ("ResnetBlock2D",)


def repeated_blocks(model: nn.Module) -> list[nn.Module]:
    """The model's repeated blocks (diffusers' ``_repeated_blocks`` class names), in order."""
    names = set(getattr(model, "_repeated_blocks", None) or ())
    return [module for module in model.modules() if type(module).__name__ in names]


def prepare_denoiser(
    denoiser: nn.Module,
    family: str,
    config: TrainingConfig,
    device: torch.device,
) -> dict[str, Any]:
    """Apply the switches that must come before the model is moved/wrapped; returns a summary."""
    speed = config.speed
    summary: dict[str, Any] = {}
    blocks = repeated_blocks(denoiser)
    if speed.fp8_base != "off":
        scaled_mm = speed.fp8_base == "matmul" and scaled_mm_supported(device)
        if speed.fp8_base == "matmul" and not scaled_mm:
            log.warning("fp8 matmuls need an Ada/Hopper GPU; dequantising the fp8 weights instead")
        if not blocks:
            raise ValueError(f"{type(denoiser).__name__} declares no repeated blocks to quantise")
        count = quantize_modules(blocks, scaled_mm=scaled_mm, device=device)
        summary["fp8_layers"] = count
        summary["fp8_scaled_mm"] = scaled_mm
    guard_attention(denoiser, family, speed)
    if config.gradient_checkpointing:
        plan = CheckpointPlan.build(denoiser, speed)
        # The default plan is exactly diffusers' own function: the plain path stays plain.
        denoiser.enable_gradient_checkpointing(None if plan.is_default() else plan)
        summary["checkpointed_units"] = f"{len(plan.checkpointed)}/{plan.total}"
    return summary


def finish_denoiser(denoiser: nn.Module, config: TrainingConfig, device: torch.device) -> None:
    """Apply the switches that need the model on its device: offload, then compilation."""
    speed = config.speed
    blocks = repeated_blocks(denoiser)
    offloaded: list[nn.Module] = []
    if speed.offload_blocks > 0:
        offloaded = blocks[: speed.offload_blocks]
        BlockOffloader(offloaded, device).attach()
    if speed.compile == "blocks":
        for block in blocks:
            if not any(block is other for other in offloaded):
                block.compile(backend=speed.compile_backend, dynamic=False)


# ----------------------------------------------------------------------------------------------
# Checkpointing: which units, which policy


# Ops whose outputs a selective policy keeps (the expensive ones to recompute).
def _attention_ops() -> set:
    aten = torch.ops.aten
    names = (
        "_scaled_dot_product_flash_attention",
        "_scaled_dot_product_efficient_attention",
        "_scaled_dot_product_cudnn_attention",
        "_scaled_dot_product_flash_attention_for_cpu",
    )
    return {getattr(aten, name).default for name in names if hasattr(aten, name)}


def _matmul_ops() -> set:
    aten = torch.ops.aten
    ops = {aten.mm.default, aten.addmm.default, aten.bmm.default, aten.baddbmm.default}
    if hasattr(aten, "_scaled_mm"):
        ops.add(aten._scaled_mm.default)
    return ops


def saved_ops(policy: str) -> set:
    if policy == "save_attention":
        return _attention_ops()
    if policy == "save_matmuls":
        return _attention_ops() | _matmul_ops()
    return set()


class CheckpointPlan:
    """diffusers' ``_gradient_checkpointing_func``: checkpoint some units, with a policy.

    diffusers calls ``func(block, *args)`` for each unit it would checkpoint. Units in
    ``checkpointed`` are run under non-reentrant ``torch.utils.checkpoint`` (selective when the
    policy keeps some op outputs); the others run plainly and keep their activations.
    """

    def __init__(
        self,
        checkpointed: Sequence[nn.Module],
        total: int,
        policy: str,
        unit_names: set[str] | frozenset[str] = frozenset(),
    ) -> None:
        self.checkpointed = {id(module) for module in checkpointed}
        self.total = total
        self.policy = policy
        self.unit_names = set(unit_names)
        self._saved = saved_ops(policy)

    @classmethod
    def build(cls, denoiser: nn.Module, speed: SpeedConfig) -> CheckpointPlan:
        names = set(getattr(denoiser, "_repeated_blocks", None) or ()) | set(EXTRA_CHECKPOINT_UNITS)
        units = [module for module in denoiser.modules() if type(module).__name__ in names]
        count = math.ceil(speed.checkpoint_fraction * len(units))
        chosen = list(units[:count])
        # Offloaded blocks must be checkpointed: a plain run would keep their weights alive.
        offloaded = repeated_blocks(denoiser)[: speed.offload_blocks]
        chosen += [block for block in offloaded if all(block is not c for c in chosen)]
        return cls(chosen, len(units), speed.checkpoint_policy, names)

    def is_default(self) -> bool:
        return self.policy == "full" and len(self.checkpointed) == self.total

    def __call__(self, module: nn.Module, *args):
        # A unit this plan does not know (a new block type) is checkpointed, as diffusers would.
        if id(module) not in self.checkpointed and type(module).__name__ in self.unit_names:
            return module(*args)
        kwargs: dict[str, Any] = {"use_reentrant": False}
        if self._saved:
            kwargs["context_fn"] = self._context
        return torch.utils.checkpoint.checkpoint(module.__call__, *args, **kwargs)

    def _context(self):
        from torch.utils.checkpoint import CheckpointPolicy, create_selective_checkpoint_contexts

        saved = self._saved

        def policy(ctx, op, *args, **kwargs):
            if op in saved:
                return CheckpointPolicy.MUST_SAVE
            return CheckpointPolicy.PREFER_RECOMPUTE

        return create_selective_checkpoint_contexts(policy)


# ----------------------------------------------------------------------------------------------
# Attention: backend choice and contiguous output gradients


SDPA_BACKENDS = {
    "flash": "FLASH_ATTENTION",
    "efficient": "EFFICIENT_ATTENTION",
    "cudnn": "CUDNN_ATTENTION",
    "math": "MATH",
}


class _ContiguousGrad(torch.autograd.Function):
    """Identity forward; the backward hands on a contiguous copy of the incoming gradient."""

    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return grad.contiguous()


def contiguous_grad(value: Any) -> Any:
    if isinstance(value, torch.Tensor) and value.requires_grad:
        return _ContiguousGrad.apply(value)
    if isinstance(value, tuple):
        return tuple(contiguous_grad(item) for item in value)
    return value


class AttentionGuard:
    """Wraps a diffusers attention processor: SDPA backend choice and contiguous output grads.

    Why Flux needs it: a single-stream block feeds ``cat([attention, mlp], dim=-1)`` into
    ``proj_out``, so the gradient reaching the attention kernel's output is a slice with row
    stride ``dim + mlp_dim`` (15360) instead of ``dim`` (3072). SDPA backward kernels have assumed
    the output gradient has the output's strides (pytorch/pytorch#138354, #141147, #134001); where
    that assumption is not caught, the kernel reads past the gradient's rows: an illegal memory
    access in backward. Qwen-Image and SDXL project the attention output with ``to_out`` first,
    which makes the gradient contiguous, and do not crash. A contiguous copy of the gradient
    (identical values) removes the condition; ``attention_backend`` additionally pins the kernel.

    diffusers filters the keyword arguments it passes a processor by the processor's signature,
    so the wrapper's class copies the wrapped processor's ``__call__`` signature.
    """

    def __init__(self, inner: Any, backends: list | None, make_contiguous: bool) -> None:
        self.inner = inner
        self.backends = backends
        self.make_contiguous = make_contiguous

    def __getattr__(self, name: str) -> Any:  # processor attributes diffusers may read
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)

    def run(self, attn, *args, **kwargs):
        context = contextlib.nullcontext()
        if self.backends:
            from torch.nn.attention import sdpa_kernel

            context = sdpa_kernel(self.backends)
        with context:
            output = self.inner(attn, *args, **kwargs)
        return contiguous_grad(output) if self.make_contiguous else output

    @classmethod
    def wrap(cls, inner: Any, backends: list | None, make_contiguous: bool) -> AttentionGuard:
        inner_call = type(inner).__call__

        def __call__(self, attn, *args, **kwargs):
            return self.run(attn, *args, **kwargs)

        __call__.__signature__ = inspect.signature(inner_call)  # type: ignore[attr-defined]
        guarded = type(f"Guarded{type(inner).__name__}", (cls,), {"__call__": __call__})
        return guarded(inner, backends, make_contiguous)


def guard_attention(denoiser: nn.Module, family: str, speed: SpeedConfig) -> int:
    """Wrap every attention processor when a guard is asked for; returns how many were wrapped."""
    make_contiguous = speed.contiguous_attention_grad == "on" or (
        speed.contiguous_attention_grad == "auto" and family == "flux"
    )
    backends = None
    if speed.attention_backend != "auto":
        from torch.nn.attention import SDPBackend

        backends = [getattr(SDPBackend, SDPA_BACKENDS[speed.attention_backend])]
    if not make_contiguous and backends is None:
        return 0
    wrapped = 0
    for module in denoiser.modules():
        processor = getattr(module, "processor", None)
        if processor is None or not hasattr(module, "set_processor"):
            continue
        if isinstance(processor, AttentionGuard):
            processor = processor.inner
        module.set_processor(AttentionGuard.wrap(processor, backends, make_contiguous))
        wrapped += 1
    return wrapped


# ----------------------------------------------------------------------------------------------
# Block offload


class BlockOffloader:
    """Frozen weights of some blocks in host memory, copied to the device around each forward.

    A forward pre-hook copies the block's frozen tensors in (non-blocking from pinned memory, on
    the current stream, so ordering is guaranteed); the forward hook points the module back at
    the host copies. Autograd keeps the device copies a checkpointed block's backward needs only
    while it runs (the recompute goes through the same hooks). Trainable (LoRA) parameters stay
    on the device. Copies are not overlapped with compute: use it only where memory demands it.
    """

    def __init__(self, blocks: Sequence[nn.Module], device: torch.device) -> None:
        self.blocks = list(blocks)
        self.device = device
        self.host: dict[int, dict[tuple[nn.Module, str, bool], torch.Tensor]] = {}

    def attach(self) -> None:
        pin = self.device.type == "cuda"
        for block in self.blocks:
            entries: dict[tuple[nn.Module, str, bool], torch.Tensor] = {}
            for module in block.modules():
                for name, parameter in module.named_parameters(recurse=False):
                    if not parameter.requires_grad:
                        host = parameter.detach().to("cpu")
                        entries[(module, name, True)] = host.pin_memory() if pin else host
                for name, buffer in module.named_buffers(recurse=False):
                    if buffer is not None:
                        host = buffer.detach().to("cpu")
                        entries[(module, name, False)] = host.pin_memory() if pin else host
            self.host[id(block)] = entries
            self._point(entries, to_device=False)
            block.register_forward_pre_hook(self._load)
            block.register_forward_hook(self._release)
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def _point(self, entries, to_device: bool) -> None:
        for (module, name, is_parameter), host in entries.items():
            tensor = host.to(self.device, non_blocking=True) if to_device else host
            if is_parameter:
                getattr(module, name).data = tensor
            else:
                module._buffers[name] = tensor

    def _load(self, block: nn.Module, args) -> None:
        self._point(self.host[id(block)], to_device=True)

    def _release(self, block: nn.Module, args, output) -> None:
        self._point(self.host[id(block)], to_device=False)


def sync_free_check(step: Callable[[], Any]) -> Any:
    """Run ``step`` with CUDA's sync debug mode set to error: any host sync in it raises."""
    if not torch.cuda.is_available():
        return step()
    previous = torch.cuda.get_sync_debug_mode()
    torch.cuda.set_sync_debug_mode("error")
    try:
        return step()
    finally:
        torch.cuda.set_sync_debug_mode(previous)
