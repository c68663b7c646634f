"""Where the benchmarks find the team's shared folder (never copied into the repository).

``../shared`` beside the repository root, or ``$IDENTITY_PIPELINE_SHARED``. It holds the labelled
third-party photos the benchmarks read in place (``data/faces-dev``; benchmarks only: nothing we
ship is trained or tuned on them) and the shared training-step baseline script.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

SHARED_ENV = "IDENTITY_PIPELINE_SHARED"
REPO_ROOT = Path(__file__).resolve().parents[1]


def shared_dir() -> Path:
    explicit = os.environ.get(SHARED_ENV)
    return Path(explicit).expanduser() if explicit else REPO_ROOT.parent / "shared"


FACES_DEV = shared_dir() / "data" / "faces-dev"
BASELINE_LORA_STEP = shared_dir() / "benchmarks" / "baseline_lora_step.py"
# Scratch space for benchmark caches and overlays (the system's temporary folder).
SCRATCH = Path(tempfile.gettempdir())
