"""MediaPipe model files (Apache-2.0) found inside an installed ``mediapipe`` 0.10.x wheel.

`make install` installs the wheel with ``--no-deps`` only for its ``.tflite`` files: the package
is never imported (its own pins would clash with ours). A file is looked up at an explicit path,
in ``masks/models/``, or in the wheel's ``modules/<folder>/``, and refused unless its sha256 is
one this code was checked with. ``cv2.dnn`` or LiteRT (``ai-edge-litert``, Google's TFLite
runtime with its XNNPACK CPU kernels: about 2.4 times as fast on one core) runs them
(``TFLiteModel``).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import cv2
import numpy as np

# Where copies kept with the code would live (their NOTICE must travel with them).
VENDORED_MODELS = Path(__file__).resolve().parent / "models"


class MediaPipeModelMissing(FileNotFoundError):
    """A MediaPipe model file could not be found (its backend is then unavailable)."""


def find_mediapipe_model(
    folder: str, file_name: str, explicit: str | os.PathLike[str] | None = None
) -> Path:
    """``explicit``, else ``masks/models/<file_name>``, else the wheel's ``modules/<folder>/``."""
    candidates: list[Path] = []
    if explicit is not None:
        candidates.append(Path(explicit))
    else:
        candidates.append(VENDORED_MODELS / file_name)
        spec = importlib.util.find_spec("mediapipe")  # finds the package without importing it
        if spec is not None and spec.origin is not None:
            candidates.append(Path(spec.origin).parent / "modules" / folder / file_name)
    for path in candidates:
        if path.is_file():
            return path
    looked = ", ".join(str(p) for p in candidates)
    raise MediaPipeModelMissing(
        f"no {file_name} ({looked}); `make install` installs the mediapipe wheel that has it"
    )


def verified_model(path: Path, known_sha256: Mapping[str, str]) -> str:
    """The file's sha256, or ValueError when it is not one of ``known_sha256`` (digest -> where)."""
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest not in known_sha256:
        raise ValueError(
            f"{path} has sha256 {digest}, not a version this code was checked with "
            f"({', '.join(known_sha256.values())})"
        )
    return digest


def load_tflite(path: Path) -> cv2.dnn.Net:
    """A TFLite model in cv2.dnn's classic engine: the one that can return every output by name
    (the new engine returns only the last operator's). The path overload, because the bytes
    overload ignores the engine argument in OpenCV 5.0's Python binding."""
    return cv2.dnn.readNetFromTFLite(str(path), engine=cv2.dnn.ENGINE_CLASSIC)


LITERT, CV2_DNN = "litert", "cv2.dnn"


class TFLiteModel:
    """One TFLite model with a single image input: ``run`` takes a (1, H, W, 3) float32 batch
    (NHWC, as the model was trained) and returns the named outputs. ``runtime``: ``LITERT``
    (ImportError when ai-edge-litert is missing), ``CV2_DNN``, or None: LiteRT when installed,
    else cv2.dnn; ``self.runtime`` says which runs. One thread: tiles run in parallel."""

    def __init__(
        self, path: Path, outputs: Sequence[str], runtime: str | None = None, threads: int = 1
    ) -> None:
        self.outputs = tuple(outputs)
        if runtime not in (None, LITERT, CV2_DNN):
            raise ValueError(f"unknown TFLite runtime {runtime!r} (not {LITERT} or {CV2_DNN})")
        try:
            if runtime == CV2_DNN:
                raise ImportError("cv2.dnn asked for")
            from ai_edge_litert.interpreter import Interpreter
        except ImportError:
            if runtime == LITERT:
                raise
            self._net: cv2.dnn.Net | None = load_tflite(path)
            self.runtime = CV2_DNN
            return
        self._net = None
        self._interpreter = Interpreter(model_path=str(path), num_threads=threads)
        self._interpreter.allocate_tensors()
        self._input = self._interpreter.get_input_details()[0]["index"]
        by_name = {d["name"]: d["index"] for d in self._interpreter.get_output_details()}
        self._output_indices = [by_name[name] for name in self.outputs]
        self.runtime = LITERT

    def run(self, batch_nhwc: np.ndarray) -> list[np.ndarray]:
        batch = np.ascontiguousarray(batch_nhwc, dtype=np.float32)
        if self._net is not None:
            self._net.setInput(np.ascontiguousarray(batch.transpose(0, 3, 1, 2)))
            return [np.asarray(out) for out in self._net.forward(list(self.outputs))]
        self._interpreter.set_tensor(self._input, batch)
        self._interpreter.invoke()
        return [self._interpreter.get_tensor(index).copy() for index in self._output_indices]
