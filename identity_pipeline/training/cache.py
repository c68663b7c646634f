"""Latents and text embeddings, computed once per training set and stored as safetensors.

Layout under the cache root::

    <root>/<model key>/latents/<W>x<H>/<sample key>.safetensors   latents (C,h,w) + mask (1,h,w)
    <root>/<model key>/text/<caption key>.safetensors             the family's prompt tensors

The model key hashes the family, the weights' source and the encoder precision; the sample key
hashes the image and mask bytes and the bucket, so an edited photo or mask gets new latents and
the stale file is simply never read again. Files are written atomically: a run killed mid-cache
leaves complete entries only, and the next run fills in the rest.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from identity_pipeline.storage import atomic_path, content_id
from identity_pipeline.training.data import Sample

ENCODER_FOLDERS = ("vae", "text_encoder*", "tokenizer*")


def model_key(family: str, source: str, revision: str | None, encoder_dtype: str) -> str:
    """Identity of the encoders that produce the cache.

    A local folder also contributes its VAE / text-encoder / tokenizer files (config contents,
    weight sizes and times), so rebuilt or replaced encoders never reuse stale latents. The
    denoiser is not part of it: a new transformer reuses the same cache.
    """
    parts: list[str] = [family, source, revision or "", encoder_dtype]
    local = Path(source)
    if local.is_dir():
        for pattern in ENCODER_FOLDERS:
            for path in sorted(local.glob(f"{pattern}/*")):
                if path.suffix == ".json":
                    parts.append(f"{path.relative_to(local)}:{file_digest(path)}")
                elif path.is_file():
                    stat = path.stat()
                    parts.append(f"{path.relative_to(local)}:{stat.st_size}:{stat.st_mtime_ns}")
    return content_id(*parts, length=20)


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class EmbeddingCache:
    def __init__(self, root: Path, model: str) -> None:
        self.base = Path(root) / model

    def latent_path(self, sample: Sample) -> Path:
        key = content_id(
            sample.sample_id,
            file_digest(sample.image_path),
            file_digest(sample.mask_path),
            sample.width,
            sample.height,
        )
        return self.base / "latents" / f"{sample.width}x{sample.height}" / f"{key}.safetensors"

    def text_path(self, prompt: str, max_tokens: int) -> Path:
        return self.base / "text" / f"{content_id(prompt, max_tokens)}.safetensors"

    @staticmethod
    def load(path: Path) -> dict[str, torch.Tensor]:
        return load_file(str(path))

    @staticmethod
    def store(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
        contiguous = {name: tensor.detach().cpu().contiguous() for name, tensor in tensors.items()}
        with atomic_path(path) as tmp:
            save_file(contiguous, str(tmp), metadata={"info": json.dumps(metadata)})
