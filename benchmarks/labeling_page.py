"""The labeling page on a big library: load time and scrolling at 20,000 faces, this version of
the page beside the previous one (the same library, the same browser, the same run).

    .venv/bin/python benchmarks/labeling_page.py [--faces 20000] [--baseline-rev REV]

The library: faces-dev's embeddings (``../shared/data/faces-dev``, benchmark only), each
face copied with jitter into a person's cluster (sizes from a power law, as in a real album: a
few people in thousands of photos, many in a few), plus 20% faces alone; half the clusters
named in labels.csv. Crops are cut from the faces-dev photos (paths only in a temporary
folder). Each version runs as its own server process (the previous one from ``git archive``
of ``--baseline-rev``, default: where this branch left main) on one CPU core (``taskset``).

Measured in headless Chromium (``/usr/bin/chromium``), median of ``--repeats`` loads:
- ``state``: the ``/api/state`` request alone (server work + transfer);
- ``ready``: navigation start to the page's cards on screen (``body[data-loaded]``);
- ``crops``: ... to every crop on the first screen decoded;
- ``nodes``: DOM elements after load;
- scrolling: the page scrolled from top to bottom at 3,000 px/s, frame by frame: the median,
  95th percentile and worst frame interval and the share of frames over 50 ms (a visible
  stutter; 16.7 ms is one frame at 60 Hz), and the DOM elements at the end.
Also ``/api/suggestions`` (the suggestions page's one request) on the same library.
Targets (issue 25): ready <= 2 s at 20,000 faces, smooth scrolling.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from benchmarks.clustering import load_faces  # noqa: E402
from benchmarks.shared_data import FACES_DEV  # noqa: E402
from identity_pipeline.clustering import FACE_CLUSTERS_DTYPES  # noqa: E402
from identity_pipeline.clustering.cluster import arrow_table  # noqa: E402
from identity_pipeline.labeling.labels import Labels, write_labels  # noqa: E402
from identity_pipeline.labeling.state import clusters_table_path  # noqa: E402
from identity_pipeline.storage import DataLayout, atomic_write_table  # noqa: E402

DEFAULT_DATA = FACES_DEV
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"]
ALONE_SHARE = 0.2  # faces no cluster took
PEOPLE = 400
JITTER = 0.6  # noise norm added to a unit embedding: cosine ~0.85 to its source face
SCROLL_PX_PER_S = 3000
SERVE = (
    "import sys; from identity_pipeline.labeling.server import serve; "
    "serve(sys.argv[1], port=int(sys.argv[2]))"
)


def synthetic_library(faces: pd.DataFrame, data: Path, count: int, seed: int = 0) -> pd.DataFrame:
    """``count`` faces: jittered copies of faces-dev faces in power-law sized clusters."""
    rng = np.random.default_rng(seed)
    faces = faces.reset_index(drop=True)
    vectors = np.stack(faces["embedding"].to_numpy()).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    clustered = int(count * (1 - ALONE_SHARE))
    weights = 1.0 / np.arange(1, PEOPLE + 1) ** 1.1
    person = rng.choice(PEOPLE, clustered, p=weights / weights.sum())
    sources = rng.choice(len(faces), PEOPLE, replace=len(faces) < PEOPLE)
    source = np.concatenate([sources[person], rng.integers(0, len(faces), count - clustered)])
    noise = rng.normal(size=(count, vectors.shape[1])).astype(np.float32)
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    embedding = vectors[source] + JITTER * noise
    embedding /= np.linalg.norm(embedding, axis=1, keepdims=True)
    cluster = np.concatenate([person, PEOPLE + np.arange(count - clustered)])
    _, cluster = np.unique(cluster, return_inverse=True)
    base = faces.iloc[source].reset_index(drop=True)
    table = pd.DataFrame(
        {
            "face_id": [f"{i:08x}" + "0" * 24 for i in range(count)],
            "cluster_id": cluster,
            "round": 1,
            "good_quality": True,
            "cosine_to_centroid": 0.8,
            "is_outlier": rng.random(count) < 0.01,
            "is_representative": False,
            "album": "big",
            "photo_id": [f"photo-{i // 3}" for i in range(count)],
            "tile_id": [f"tile-{i // 3}" for i in range(count)],
            "source_path": [str(data / p) for p in base["rel_path"]],
            "quality": base["quality"].to_numpy(),
            "face_size": base["face_size"].to_numpy(),
            "det_score": base["det_score"].to_numpy(),
            "backend": base["backend"].to_numpy(),
            "embedding": list(embedding),
        }
    )
    for side in ("x0", "y0", "x1", "y1"):
        table[f"tile_{side}"] = base[f"photo_{side}"].to_numpy()
    table["cluster_size"] = table["cluster_id"].map(table["cluster_id"].value_counts())
    for column in FACE_CLUSTERS_DTYPES:
        if column not in table:
            table[column] = None
    return table[list(FACE_CLUSTERS_DTYPES)].astype(FACE_CLUSTERS_DTYPES)


def write_library(table: pd.DataFrame, root: Path) -> DataLayout:
    layout = DataLayout(root)
    atomic_write_table(clusters_table_path(layout), arrow_table(table))
    sizes = table["cluster_id"].value_counts()
    named = set(sizes[sizes >= 2].index[::2])
    write_labels(
        layout.labels_path,
        Labels(
            {
                str(f): f"Person {c}"
                for f, c in zip(table["face_id"], table["cluster_id"], strict=True)
                if c in named
            }
        ),
    )
    return layout


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def server(root: Path, pythonpath: Path) -> Iterator[str]:
    """The labeling app of the code under ``pythonpath``, as a process on CPU core 0."""
    port = free_port()
    command = [sys.executable, "-c", SERVE, str(root), str(port)]
    if shutil.which("taskset"):
        command = ["taskset", "-c", "0", *command]
    env = {**os.environ, "PYTHONPATH": str(pythonpath), "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(command, cwd=pythonpath, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(url + "/", timeout=5).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the server under {pythonpath} did not start") from None
                time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def previous_version(rev: str, into: Path) -> Path:
    """The ``identity_pipeline`` package as of ``rev``, extracted under ``into``."""
    archive = into / "previous.tar"
    with archive.open("wb") as handle:
        subprocess.run(
            ["git", "archive", rev, "identity_pipeline"], cwd=REPO_ROOT, stdout=handle, check=True
        )
    with tarfile.open(archive) as tar:
        tar.extractall(into, filter="data")
    return into


def timed_get(url: str) -> float:
    started = time.perf_counter()
    with urllib.request.urlopen(url, timeout=300) as response:
        response.read()
    return time.perf_counter() - started


SCROLL_SCRIPT = """async (speed) => {
  const intervals = [];
  let last = performance.now();
  const started = last;
  const bottom = () => document.documentElement.scrollHeight - innerHeight;
  await new Promise((done) => {
    function frame(now) {
      intervals.push(now - last);
      last = now;
      window.scrollTo(0, (now - started) / 1000 * speed);
      if (scrollY >= bottom() - 1 || now - started > 120000) done(); else requestAnimationFrame(frame);
    }
    requestAnimationFrame(frame);
  });
  return {intervals: intervals.slice(1), seconds: (last - started) / 1000,
          height: document.documentElement.scrollHeight,
          nodes: document.getElementsByTagName("*").length};
}"""


@dataclass(frozen=True)
class Measured:
    version: str
    state_s: float
    ready_s: float
    crops_s: float
    nodes: int
    frame_p50_ms: float
    frame_p95_ms: float
    frame_max_ms: float
    janky: float
    scroll_s: float
    nodes_after: int


def measure(version: str, url: str, repeats: int, timeout_s: float) -> Measured:
    from playwright.sync_api import sync_playwright

    state = statistics.median(timed_get(url + "/api/state") for _ in range(repeats))
    ready, crops, nodes = [], [], 0
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            for _ in range(repeats):
                page = browser.new_page(viewport={"width": 1600, "height": 1000})
                page.set_default_timeout(timeout_s * 1000)
                page.goto(url + "/", wait_until="commit")
                page.wait_for_function("document.body.dataset.loaded === '1'")
                ready.append(page.evaluate("performance.now()") / 1000)
                page.wait_for_function(
                    """() => [...document.images].filter(i => {
                         const r = i.getBoundingClientRect();
                         return r.bottom > 0 && r.top < innerHeight && r.width > 0;
                       }).every(i => i.complete && i.naturalWidth > 0)"""
                )
                crops.append(page.evaluate("performance.now()") / 1000)
                nodes = page.evaluate("document.getElementsByTagName('*').length")
                page.close()
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            page.set_default_timeout(timeout_s * 1000)
            page.goto(url + "/")
            page.wait_for_function("document.body.dataset.loaded === '1'")
            scrolled = page.evaluate(SCROLL_SCRIPT, SCROLL_PX_PER_S)
            page.close()
        finally:
            browser.close()
    intervals = np.asarray(scrolled["intervals"], dtype=np.float64)
    return Measured(
        version=version,
        state_s=state,
        ready_s=statistics.median(ready),
        crops_s=statistics.median(crops),
        nodes=int(nodes),
        frame_p50_ms=float(np.median(intervals)),
        frame_p95_ms=float(np.percentile(intervals, 95)),
        frame_max_ms=float(intervals.max()),
        janky=float((intervals > 50).mean()),
        scroll_s=float(scrolled["seconds"]),
        nodes_after=int(scrolled["nodes"]),
    )


def print_table(rows: list[Measured]) -> None:
    header = (
        f"{'version':<34} {'state s':>7} {'ready s':>7} {'crops s':>7} {'nodes':>7} "
        f"{'frame p50':>9} {'p95':>6} {'max':>6} {'>50ms':>6} {'scroll s':>8} {'nodes end':>9}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r.version:<34} {r.state_s:7.2f} {r.ready_s:7.2f} {r.crops_s:7.2f} {r.nodes:7d} "
            f"{r.frame_p50_ms:9.1f} {r.frame_p95_ms:6.1f} {r.frame_max_ms:6.0f} "
            f"{r.janky:6.1%} {r.scroll_s:8.1f} {r.nodes_after:9d}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--faces", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=180.0, help="per step, seconds")
    parser.add_argument(
        "--baseline-rev",
        default=None,
        help="git revision of the previous page (default: merge-base with main; 'none': skip)",
    )
    args = parser.parse_args(argv)
    if not (args.data / "labels.csv").is_file():
        print(
            f"faces-dev not found at {args.data} (set --data or $IDENTITY_PIPELINE_SHARED)",
            file=sys.stderr,
        )
        return 2
    if not CHROMIUM.exists():
        print(f"needs Debian's chromium at {CHROMIUM}", file=sys.stderr)
        return 2
    rev = args.baseline_rev
    if rev is None:
        rev = subprocess.run(
            ["git", "merge-base", "HEAD", "main"], cwd=REPO_ROOT, capture_output=True, text=True
        ).stdout.strip()
    faces, _ = load_faces(args.data, "offline")
    table = synthetic_library(faces, args.data.resolve(), args.faces)
    sizes = table["cluster_id"].value_counts()
    print(
        f"library: {len(table)} faces, {int((sizes >= 2).sum())} clusters (biggest "
        f"{int(sizes.max())}), {int((sizes == 1).sum())} faces alone, half the clusters named; "
        f"servers on one core; Chromium {CHROMIUM}; load average {os.getloadavg()[0]:.1f} on "
        f"{os.cpu_count()} cores (others' work slows every figure alike)"
    )
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        layout = write_library(table, Path(tmp) / "data")
        versions = [("this version", REPO_ROOT)]
        if rev and rev != "none":
            versions.append((f"previous ({rev[:10]})", previous_version(rev, Path(tmp))))
        for name, code in versions:
            with server(layout.root, code) as url:
                try:
                    rows.append(measure(name, url, args.repeats, args.timeout))
                except Exception as error:  # the old page may not finish at all: say so
                    print(f"{name}: {type(error).__name__}: {str(error)[:200]}", file=sys.stderr)
                if code == REPO_ROOT:
                    seconds = statistics.median(
                        timed_get(url + "/api/suggestions") for _ in range(args.repeats)
                    )
                    print(f"/api/suggestions on this library: {seconds:.2f} s (median)")
    print_table(rows)
    print(f"load average at the end: {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
