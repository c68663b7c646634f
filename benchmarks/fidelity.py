"""Benchmark the fidelity metric on real photos (default: ../shared/data/faces-dev).

    .venv/bin/python benchmarks/fidelity.py [--data DIR] [--backend offline|insightface]
                                            [--min-photos 3] [--json OUT]

The data set is read in place, for evaluation only: nothing from it is copied into the repo.
Single-person photos of people with at least ``--min-photos`` photos are split per person into
three parts by position (training / reference / "generated"), embedded once, then scored in
scenarios whose right answers are known:

* honest   the "generated" images are new real photos of the person: likeness should sit at the
           real-vs-real baseline, the diagonal dominate, copy-paste stay near zero;
* shuffled the same images with every label moved to the next person: no diagonal;
* copy     the "generated" images are the training photos themselves (pure memorisation):
           copy_rate 1, a large copy_gap;
* bleed    each image gets a second face: another person (no leak) vs one of the person's
           training photos (the identity pasted onto the bystander): others_like_identity
           jumps, and so does copy-paste (when the subject picked is that training photo).

It also prints the cosine distributions (same person, different people, same photo re-encoded)
that the copy threshold is set against.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from benchmarks.shared_data import FACES_DEV  # noqa: E402
from identity_pipeline.evaluation import (  # noqa: E402
    FidelityConfig,
    GeneratedImage,
    score_identities,
)
from identity_pipeline.evaluation.embedding import largest_face  # noqa: E402
from identity_pipeline.evaluation.report import (  # noqa: E402
    SUMMARY_KEYS,
    format_number,
    plain,
    shown_table,
    text_table,
)
from identity_pipeline.faces import FaceConfig, analyse_tile, get_backend  # noqa: E402
from identity_pipeline.photos.inspect import load_photo  # noqa: E402

DEFAULT_DATA = FACES_DEV
TABLE = (
    "identity",
    "images",
    "faces_per_image",
    "likeness",
    "real_baseline",
    "identified",
    "train_nn",
    "holdout_nn",
    "copy_gap",
    "copy_rate",
    "others_like_identity",
    "confusion_sim",
    "bleed",
)


def read_people(data: Path, min_photos: int) -> dict[str, list[Path]]:
    people: dict[str, list[Path]] = defaultdict(list)
    with open(data / "labels.csv", newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            if row["person"] and int(row["n_faces"]) == 1:
                people[row["person"]].append(data / row["path"])
    return {
        name: sorted(paths) for name, paths in sorted(people.items()) if len(paths) >= min_photos
    }


def embed_people(people: dict[str, list[Path]], backend) -> dict[str, list[np.ndarray]]:
    """The largest face of each photo (photos without a face are left out and counted)."""
    config = FaceConfig()
    faces: dict[str, list[np.ndarray]] = {}
    missing = 0
    for name, paths in people.items():
        faces[name] = []
        for path in paths:
            face = largest_face(analyse_tile(np.asarray(load_photo(path)), backend, config))
            if face is None:
                missing += 1
                continue
            faces[name].append(np.asarray(face.embedding, dtype=np.float32))
    print(f"photos without a detected face: {missing}")
    return faces


def reencoded_similarity(people: dict[str, list[Path]], backend, limit: int = 40) -> np.ndarray:
    """Cosine of a photo to itself mirrored + re-encoded at JPEG 70: the 'copied' level."""
    import io

    config = FaceConfig()
    values = []
    for paths in people.values():
        for path in paths[:1]:
            photo = load_photo(path)
            buffer = io.BytesIO()
            ImageOps.mirror(photo).save(buffer, "JPEG", quality=70)
            copy = Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")
            a = largest_face(analyse_tile(np.asarray(photo), backend, config))
            b = largest_face(analyse_tile(np.asarray(copy), backend, config))
            if a is not None and b is not None:
                values.append(float(np.dot(a.embedding, b.embedding)))
        if len(values) >= limit:
            break
    return np.asarray(values)


def split(faces: dict[str, list[np.ndarray]]):
    training, reference, generated = {}, {}, {}
    for name, vectors in faces.items():
        if len(vectors) < 3:
            continue
        training[name] = np.stack(vectors[0::3])
        reference[name] = np.stack(vectors[1::3])
        generated[name] = list(vectors[2::3])
    return training, reference, generated


def scenario_images(training, reference, generated) -> dict[str, list[GeneratedImage]]:
    names = sorted(generated)
    shifted = {name: names[(i + 1) % len(names)] for i, name in enumerate(names)}
    honest = [GeneratedImage(name, v[None]) for name in names for v in generated[name]]
    shuffled = [GeneratedImage(shifted[name], v[None]) for name in names for v in generated[name]]
    copy = [GeneratedImage(name, v[None]) for name in names for v in training[name]]
    bystander = [
        GeneratedImage(name, np.stack([v, reference[shifted[name]][0]]), "pair")
        for name in names
        for v in generated[name]
    ]
    leak = [
        GeneratedImage(name, np.stack([v, training[name][-1]]), "pair")
        for name in names
        for v in generated[name]
    ]
    return {
        "honest": honest,
        "shuffled": shuffled,
        "copy": copy,
        "bleed: other person": bystander,
        "bleed: identity leaks": leak,
    }


def pair_distributions(faces: dict[str, list[np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    same, different = [], []
    names = sorted(faces)
    for i, a in enumerate(names):
        va = np.stack(faces[a]) if faces[a] else np.zeros((0, 1))
        if len(va) > 1:
            sims = va @ va.T
            same.extend(sims[np.triu_indices(len(va), 1)].tolist())
        for b in names[i + 1 :]:
            if faces[b] and len(va):
                different.extend((va @ np.stack(faces[b]).T).ravel().tolist())
    return np.asarray(same), np.asarray(different)


def quantiles(values: np.ndarray) -> str:
    if not len(values):
        return "-"
    q = np.quantile(values, [0.05, 0.5, 0.95, 0.99])
    return f"n={len(values)} p5={q[0]:.3f} median={q[1]:.3f} p95={q[2]:.3f} p99={q[3]:.3f}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--backend", default="offline")
    parser.add_argument("--min-photos", type=int, default=3)
    parser.add_argument("--json", type=Path, help="write every scenario's scores here")
    args = parser.parse_args(argv)

    backend = get_backend(args.backend)
    people = read_people(args.data, args.min_photos)
    print(
        f"{args.data}: {len(people)} people with >= {args.min_photos} single photos, "
        f"{sum(len(p) for p in people.values())} photos, backend {backend.name}"
    )
    started = time.perf_counter()
    faces = embed_people(people, backend)
    embed_seconds = time.perf_counter() - started
    same, different = pair_distributions(faces)
    copies = reencoded_similarity(people, backend)
    print(f"embedding: {embed_seconds:.1f}s")
    print(f"same person, different photos: {quantiles(same)}")
    print(f"different people:              {quantiles(different)}")
    print(f"same photo mirrored + JPEG 70: {quantiles(copies)}")
    print(f"copy threshold (FidelityConfig default): {FidelityConfig().copy_threshold}")

    training, reference, generated = split(faces)
    results = {}
    for name, images in scenario_images(training, reference, generated).items():
        started = time.perf_counter()
        scores = score_identities(reference, images, training, FidelityConfig().copy_threshold)
        seconds = time.perf_counter() - started
        results[name] = scores
        print(f"\n=== {name} ({len(images)} images, {seconds * 1000:.0f} ms)")
        if name == "honest":
            print(text_table(shown_table(scores.table, TABLE)))
        print(
            "summary: "
            + ", ".join(f"{k}={format_number(scores.summary.get(k))}" for k in SUMMARY_KEYS)
            + f", others_like_identity={format_number(scores.summary['others_like_identity'])}"
        )
    if args.json:
        payload = {
            name: {"summary": plain(s.summary), "identities": plain(s.table)}
            for name, s in results.items()
        }
        args.json.write_text(json.dumps(payload, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
