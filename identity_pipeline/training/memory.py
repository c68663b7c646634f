"""Peak training memory of a mode, estimated on the meta device (no GPU, no weights, no download).

The real architecture (``architectures.model_spec``) is instantiated on ``torch.device("meta")``,
the LoRA added and the speed switches applied exactly as in training, and one forward of the
trainer's step (adapter ``predict`` + masked loss) runs on meta tensors, which carry shapes and
dtypes but no data. Bytes are counted, not guessed:

* static: every parameter and buffer by its dtype (fp8 layers: 1 byte + a float32 scale per row),
  LoRA gradients (float32) and AdamW moments (2 x float32, or 2 x 1 byte for 8-bit);
* saved activations: every tensor autograd saves for the backward outside checkpointed units
  (``saved_tensors_hooks``, de-duplicated by storage, parameters and buffers excluded), the inputs
  of every checkpointed unit (what non-reentrant checkpointing keeps), and under a selective
  policy the outputs of the ops it keeps (a ``TorchDispatchMode`` sees each op's outputs);
* backward working set: the largest single unit's saved activations (what its recompute
  rebuilds) plus two of its largest inputs (the gradient flowing in and the one flowing out).

peak ~= static + saved + working set. It leaves out the CUDA context, allocator fragmentation,
kernel workspaces (cuBLAS, attention) and compile's buffers; the baseline mode's estimate next to
the measured baseline figures says how far off that is.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

from identity_pipeline.training.architectures import build_denoiser, model_spec

GIB = 2**30


@dataclass(frozen=True)
class Mode:
    name: str
    speed: dict[str, Any] = field(default_factory=dict)
    gradient_checkpointing: bool = True
    optimizer: str = "adamw"
    lora_dtype: torch.dtype = torch.float32
    description: str = ""


# The modes the estimate table reports. "baseline" is baseline_lora_step.py's setup.
MODES: tuple[Mode, ...] = (
    Mode("baseline", description="bf16 base, full checkpointing (= the baseline script)"),
    Mode("fp8", {"fp8_base": "matmul"}, description="fp8 base weights, full checkpointing"),
    Mode(
        "fp8+ckpt75",
        {"fp8_base": "matmul", "checkpoint_fraction": 0.75},
        description="fp8, a quarter of the blocks not checkpointed",
    ),
    Mode(
        "fp8+save_attention",
        {"fp8_base": "matmul", "checkpoint_policy": "save_attention"},
        description="fp8, attention outputs kept (selective checkpointing)",
    ),
    Mode(
        "fp8+save_matmuls",
        {"fp8_base": "matmul", "checkpoint_policy": "save_matmuls"},
        description="fp8, every matmul/attention output kept",
    ),
    Mode(
        "fp8+offload8",
        {"fp8_base": "matmul", "offload_blocks": 8},
        description="fp8, 8 blocks' weights in host memory",
    ),
    Mode("bf16 no-ckpt", gradient_checkpointing=False, description="bf16, no checkpointing"),
)


def _storage_key(tensor: torch.Tensor) -> int:
    return tensor.untyped_storage()._cdata


def _nbytes(tensor: torch.Tensor) -> int:
    return tensor.untyped_storage().nbytes()


class _SavedCounter:
    """A ``saved_tensors_hooks`` pack hook that sums the bytes of new activation storages."""

    def __init__(self, exclude: set[int], seen: set[int] | None = None) -> None:
        self.exclude = exclude
        self.seen = set() if seen is None else seen
        self.bytes = 0
        self.keep: list[torch.Tensor] = []  # keeps storages alive: no address reuse

    def add(self, tensor: torch.Tensor) -> None:
        key = _storage_key(tensor)
        if key in self.exclude or key in self.seen:
            return
        self.seen.add(key)
        self.keep.append(tensor)
        self.bytes += _nbytes(tensor)

    def hooks(self):
        def pack(tensor):
            self.add(tensor)
            return tensor

        return torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor)


class _OpOutputs(TorchDispatchMode):
    """Sums the bytes of the outputs of a set of ops (what a selective policy keeps)."""

    def __init__(self, ops: set, counter: _SavedCounter) -> None:
        super().__init__()
        self.ops = ops
        self.counter = counter

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func in self.ops:
            for item in out if isinstance(out, tuple | list) else (out,):
                if isinstance(item, torch.Tensor):
                    self.counter.add(item)
        return out


class _FlashLikeAttention(torch.autograd.Function):
    """Attention as the GPU kernels keep it for backward: q, k, v, out and a float32 logsumexp.

    On meta tensors SDPA decomposes into the math path, which would save the (S x S) attention
    matrix: flash/cuDNN/efficient kernels never materialise it.
    """

    @staticmethod
    def forward(ctx, query, key, value):
        out = query.new_empty((*query.shape[:-1], value.shape[-1]))
        lse = query.new_empty(query.shape[:-1], dtype=torch.float32)
        ctx.save_for_backward(query, key, value, out, lse)
        return out

    @staticmethod
    def backward(ctx, grad):
        query, key, value, _, _ = ctx.saved_tensors
        return torch.empty_like(query), torch.empty_like(key), torch.empty_like(value)


class _AttentionAsKernel(TorchFunctionMode):
    """Routes ``F.scaled_dot_product_attention`` through ``_FlashLikeAttention``.

    ``keep`` (a counter, or None) records the outputs a selective policy that saves attention
    keeps: the output and its logsumexp.
    """

    def __init__(self) -> None:
        super().__init__()
        self.keep: _SavedCounter | None = None

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.scaled_dot_product_attention:
            names = ("query", "key", "value")
            query, key, value = (
                args[i] if len(args) > i else kwargs[name] for i, name in enumerate(names)
            )
            out = _FlashLikeAttention.apply(query, key, value)
            if self.keep is not None:
                self.keep.add(out)
                self.keep.bytes += out.numel() // out.shape[-1] * 4  # logsumexp
            return out
        return func(*args, **kwargs)


@dataclass
class Estimate:
    model: str
    resolution: int
    mode: str
    weights_gib: float
    lora_state_gib: float
    saved_gib: float
    working_gib: float
    peak_gib: float
    tokens: int
    checkpointed: str

    def row(self) -> dict[str, Any]:
        return {k: (round(v, 2) if isinstance(v, float) else v) for k, v in self.__dict__.items()}


def estimate(model: str, resolution: int, mode: Mode, tiny: bool = False) -> Estimate:
    """The meta-device estimate of one training step's peak memory (see the module docstring)."""
    from identity_pipeline.training.config import TrainingConfig
    from identity_pipeline.training.families import get_adapter
    from identity_pipeline.training.losses import masked_loss
    from identity_pipeline.training.speed import CheckpointPlan, repeated_blocks, saved_ops
    from identity_pipeline.training.trainer import add_lora

    spec = model_spec(model, tiny=tiny)
    meta = torch.device("meta")
    config = TrainingConfig.from_dict(
        {
            "data": {"manifest": "unused"},
            "gradient_checkpointing": mode.gradient_checkpointing,
            "lora": {"rank": 16, "alpha": 16},
            "optimizer": {"name": mode.optimizer},
            # fp8 "matmul" keeps exactly what "weights" keeps; meta has no fp8 matmul kernel.
            "speed": {
                **mode.speed,
                **({"fp8_base": "weights"} if mode.speed.get("fp8_base") == "matmul" else {}),
            },
        }
    )
    adapter = get_adapter(spec.family)
    denoiser = build_denoiser(spec, meta, torch.bfloat16)
    lora = add_lora(denoiser, adapter, config)
    if mode.lora_dtype != torch.float32:
        for parameter in lora.values():
            parameter.data = parameter.data.to(mode.lora_dtype)

    from identity_pipeline.training.speed import prepare_denoiser

    speed = config.speed
    # Checkpointing is emulated below (measured, not run): switch diffusers' own off here.
    config.gradient_checkpointing = False
    prepare_denoiser(denoiser, spec.family, config, meta)
    denoiser.train()

    # -- static bytes
    tensors = list(denoiser.parameters()) + [b for b in denoiser.buffers() if b is not None]
    exclude = {_storage_key(t) for t in tensors}
    frozen = sum(_nbytes(t) for t in tensors if not t.requires_grad)
    offloaded_blocks = repeated_blocks(denoiser)[: speed.offload_blocks]
    if offloaded_blocks:
        per_block = [
            sum(_nbytes(t) for t in block.parameters() if not t.requires_grad)
            + sum(_nbytes(b) for b in block.buffers() if b is not None)
            for block in offloaded_blocks
        ]
        # Off the device, except the block in use and the one being recomputed/copied.
        frozen -= sum(per_block) - 2 * max(per_block)
    lora_numel = sum(p.numel() for p in lora.values())
    lora_bytes = sum(_nbytes(p) for p in lora.values())
    moments = 2 * lora_numel * (1 if mode.optimizer == "adamw8bit" else 4)
    grads = lora_bytes
    lora_state = lora_bytes + grads + moments

    # -- saved activations, with checkpointing emulated per unit
    outer = _SavedCounter(exclude)
    largest_unit = [0]
    largest_input = [0]
    plan = CheckpointPlan.build(denoiser, speed) if mode.gradient_checkpointing else None
    kept_ops = saved_ops(speed.checkpoint_policy)
    attention_ops = saved_ops("save_attention")
    attention = _AttentionAsKernel()

    def measuring_checkpoint(module, *args):
        if plan is None or id(module) not in plan.checkpointed:
            return module(*args)
        for arg in args:
            if isinstance(arg, torch.Tensor):
                outer.add(arg)
                largest_input[0] = max(largest_input[0], _nbytes(arg))
        inner = _SavedCounter(exclude, seen=set(outer.seen))
        matmuls = kept_ops - attention_ops
        with inner.hooks():
            mode_context = _OpOutputs(matmuls, outer) if matmuls else contextlib.nullcontext()
            attention.keep = outer if kept_ops & attention_ops else None
            try:
                with mode_context:
                    output = module(*args)
            finally:
                attention.keep = None
        largest_unit[0] = max(largest_unit[0], inner.bytes)
        return output

    if plan is not None:
        denoiser.enable_gradient_checkpointing(measuring_checkpoint)

    batch = 1
    latent = resolution // 8
    adapter.scheduler_config = dict(spec.scheduler)
    noisy = torch.empty(batch, spec.latent_channels, latent, latent, device=meta)
    target = torch.empty_like(noisy)
    mask = torch.empty(batch, 1, latent, latent, device=meta)
    text = {
        "prompt_embeds": torch.empty(batch, spec.text_tokens, spec.text_dim, device=meta),
        "prompt_embeds_mask": None,
    }
    if spec.pooled_dim is not None:
        text["pooled_prompt_embeds"] = torch.empty(batch, spec.pooled_dim, device=meta)
    model_t = torch.empty(batch, device=meta)
    if spec.family == "sdxl":
        model_t = torch.empty(batch, dtype=torch.long, device=meta)
    adapter._time_ids.clear()
    with attention, outer.hooks():
        noisy_bf16 = noisy.to(torch.bfloat16)
        text = {k: (v.to(torch.bfloat16) if v is not None else None) for k, v in text.items()}
        if spec.family == "sdxl":
            adapter._time_ids[(resolution, resolution, meta, torch.bfloat16)] = torch.empty(
                6, dtype=torch.bfloat16, device=meta
            )
        prediction = adapter.predict(
            denoiser, noisy_bf16, model_t, text, 1.0, (resolution, resolution)
        )
        loss = masked_loss(prediction, target, mask, config.loss).loss
    del loss

    working = largest_unit[0] + 2 * largest_input[0]
    peak = frozen + lora_state + outer.bytes + working
    from identity_pipeline.training.architectures import tokens

    return Estimate(
        model=spec.name,
        resolution=resolution,
        mode=mode.name,
        weights_gib=frozen / GIB,
        lora_state_gib=lora_state / GIB,
        saved_gib=outer.bytes / GIB,
        working_gib=working / GIB,
        peak_gib=peak / GIB,
        tokens=tokens(spec, resolution),
        checkpointed="off" if plan is None else f"{len(plan.checkpointed)}/{plan.total}",
    )
