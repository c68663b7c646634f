"""One process of benchmarks/faces.py's resolution sweep: the faces CLI path on a list of photos.

    PYTHONPATH=<code root> python faces_sweep_worker.py PATHS.txt OUT.json [--cpu N]

Run by ``benchmarks/faces.py --sweep`` once per (code version, photo size), from a scratch folder,
so ``identity_pipeline`` is imported from PYTHONPATH: this repository, or another commit of it
extracted with ``git archive``. It only uses what both versions have (``get_backend``,
``FaceConfig``, ``faces_for_paths``). Pinned to one CPU, one thread everywhere; writes per photo
the faces found, the seconds taken (wall clock, and CPU time of the process: on a loaded shared
machine the CPU time is what one free core would take), then the process's peak RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

for variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[variable] = "1"


def rss_mb() -> float:
    """Peak RSS of this process. VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the
    parent through fork and exec, so it would count the benchmark's own copies of the photos."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("paths", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--cpu", type=int, default=None)
    args = parser.parse_args()
    if args.cpu is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {args.cpu})

    import cv2
    import numpy as np

    cv2.setNumThreads(1)
    import identity_pipeline
    from identity_pipeline.faces import FaceConfig, get_backend
    from identity_pipeline.faces.cli import faces_for_paths

    backend = get_backend("offline", threads=1)
    config = FaceConfig()
    # Build the sessions on a small picture, so the first photo does not pay for them.
    warm = np.full((240, 320, 3), 127, dtype=np.uint8)
    backend.embed(warm, backend.detect(warm)[:1])
    rss_ready = rss_mb()

    photos = []
    for line in args.paths.read_text(encoding="utf-8").splitlines():
        path = Path(line)
        start, cpu_start = time.perf_counter(), time.process_time()
        result = faces_for_paths([path], backend, None, config)
        seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
        photos.append(
            {
                "path": line,
                "found": len(result.records),
                "seconds": seconds,
                "cpu_seconds": cpu_seconds,
                "skipped": [reason for _, reason in result.skipped],
                "sizes": [round(float(r.face.size), 1) for r in result.records],
            }
        )
    report = {
        "code": str(Path(identity_pipeline.__file__).parent),
        "rss_ready_mb": rss_ready,
        "peak_rss_mb": rss_mb(),
        "photos": photos,
    }
    args.out.write_text(json.dumps(report), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
