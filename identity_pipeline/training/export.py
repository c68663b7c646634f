"""The trained LoRA as files other tools load.

* ``pytorch_lora_weights.safetensors``: diffusers/PEFT layout written by the family pipeline's
  ``save_lora_weights`` (keys ``transformer.<module>.lora_A.weight``; rank and alpha in the
  adapter metadata), so ``pipe.load_lora_weights(folder)`` restores exactly the trained adapter.
* ``<name>_comfyui.safetensors``: kohya layout (``<prefix>_<module_with_underscores>.lora_down
  .weight`` / ``.lora_up.weight`` / ``.alpha``), the format ComfyUI and kohya-family tools read.
  A loader scales each update by ``alpha / rank`` (rank = ``lora_down`` rows), like PEFT's
  ``lora_alpha / r``; ``ss_network_module`` names the network module of the family's leading
  trainer, as its own LoRAs do.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file

from identity_pipeline.storage import atomic_path
from identity_pipeline.training.families import FamilyAdapter

DIFFUSERS_WEIGHT_NAME = "pytorch_lora_weights.safetensors"
COMFY_WEIGHT_NAME = "lora_comfyui.safetensors"

# ss_network_module as the leading LoRA trainer of each family writes it (its --network_module):
# musubi-tuner's networks/lora_qwen_image.py for Qwen-Image; kohya sd-scripts' networks/
# lora_flux.py, lora_sd3.py and lora.py (U-Net models, SDXL included) for the others.
NETWORK_MODULE_BY_FAMILY = {
    "qwen-image": "networks.lora_qwen_image",
    "flux": "networks.lora_flux",
    "sd3": "networks.lora_sd3",
    "sdxl": "networks.lora",
}


def peft_state_dict(denoiser: torch.nn.Module, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """LoRA tensors keyed ``<module>.lora_A.weight`` / ``.lora_B.weight`` (no adapter name)."""
    from peft.utils import get_peft_model_state_dict

    state = get_peft_model_state_dict(denoiser)
    return {key: value.detach().to("cpu", dtype).contiguous() for key, value in state.items()}


def to_kohya(
    state_dict: dict[str, torch.Tensor], prefix: str, alpha: float
) -> dict[str, torch.Tensor]:
    """PEFT keys -> kohya keys; one scalar ``.alpha`` per module so loaders scale by alpha/rank."""
    converted: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        module, kind = _split_peft_key(key)
        base = f"{prefix}_{module.replace('.', '_')}"
        converted[f"{base}.{'lora_down' if kind == 'lora_A' else 'lora_up'}.weight"] = value
        converted[f"{base}.alpha"] = torch.tensor(float(alpha), dtype=value.dtype)
    return converted


def kohya_metadata(family: str, rank: int, alpha: float, **extra: str) -> dict[str, str]:
    """The kohya-style safetensors metadata of a LoRA of ``family`` (all values strings)."""
    try:
        network_module = NETWORK_MODULE_BY_FAMILY[family]
    except KeyError:
        raise ValueError(f"no kohya network module known for family {family!r}") from None
    return {
        "ss_network_module": network_module,
        "ss_network_dim": str(rank),
        "ss_network_alpha": str(alpha),
        "identity_pipeline_family": family,
        **extra,
    }


def _split_peft_key(key: str) -> tuple[str, str]:
    for kind in ("lora_A", "lora_B"):
        marker = f".{kind}.weight"
        if key.endswith(marker):
            return key[: -len(marker)], kind
    raise ValueError(f"not a LoRA weight key: {key!r}")


def export_lora(
    adapter: FamilyAdapter,
    denoiser: torch.nn.Module,
    folder: Path,
    dtype: torch.dtype,
) -> tuple[Path, Path]:
    """Write both layouts into ``folder``; returns (diffusers file, ComfyUI file)."""
    folder.mkdir(parents=True, exist_ok=True)
    peft_config = denoiser.peft_config["default"]
    state = peft_state_dict(denoiser, dtype)

    diffusers_path = folder / DIFFUSERS_WEIGHT_NAME
    with atomic_path(diffusers_path) as tmp:
        # save_lora_weights writes <dir>/<weight_name>: give it the temporary file's name.
        adapter.save_lora(str(folder), state, peft_config.to_dict(), weight_name=tmp.name)

    comfy_path = folder / COMFY_WEIGHT_NAME
    kohya = to_kohya(state, adapter.kohya_prefix, peft_config.lora_alpha)
    metadata = kohya_metadata(adapter.family, peft_config.r, peft_config.lora_alpha)
    with atomic_path(comfy_path) as tmp:
        save_file(kohya, str(tmp), metadata=metadata)
    return diffusers_path, comfy_path
