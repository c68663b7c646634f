"""``identity-pipeline fidelity --reference DIR --generated DIR [--training DIR] [--out report.json]``

The fidelity metric on any images, e.g. another trainer's outputs. Each DIR has one sub-folder
per identity (sub-folder name = identity)::

    reference/<identity>/*.jpg   real photos never trained on: the largest face of each is used
    generated/<identity>/*.png   images generated for that identity: every face is used
    training/<identity>/*.jpg    optional, the photos trained on: enables the copy-paste scores

Prints the likeness / copy-paste / bleed table and the confusion matrices; ``--out`` writes the
same as JSON (``-`` for stdout). Faces are cached by file content under the data root's
``cache/faces`` (``--cache-dir``), so re-scoring the same files is fast.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from identity_pipeline.settings import add_settings_option, command_settings

# evaluation.config.DEFAULT_COPY_THRESHOLD, repeated: importing the package would slow --help.
DEFAULT_COPY_THRESHOLD = 0.85


def _cmd_fidelity(args: argparse.Namespace) -> int:
    from identity_pipeline.evaluation.embedding import folder_faces, reference_from_folder
    from identity_pipeline.evaluation.metrics import GeneratedImage, score_identities
    from identity_pipeline.evaluation.report import plain, scores_json, text_report
    from identity_pipeline.faces import BACKEND_NAMES, FaceCache, FaceConfig, backend_for
    from identity_pipeline.storage import DataLayout, atomic_write_text

    folders = {"reference": args.reference, "generated": args.generated}
    if args.training:
        folders["training"] = args.training
    missing = [f"--{name} {path}" for name, path in folders.items() if not Path(path).is_dir()]
    if missing:
        print(f"error: not a folder: {', '.join(missing)}", file=sys.stderr)
        return 2
    if args.backend and args.backend not in BACKEND_NAMES:
        print(f"error: unknown backend {args.backend!r}", file=sys.stderr)
        return 2
    overrides = {"backend": args.backend} if args.backend else {}
    config = command_settings(args).section("faces", FaceConfig, overrides)
    backend = backend_for(config)
    cache = None
    if not args.no_cache:
        cache_dir = args.cache_dir or DataLayout.from_env(args.data_dir).cache_dir / "faces"
        cache = FaceCache(Path(cache_dir))
    dim = backend.embedding_dim

    reference_images = folder_faces(Path(args.reference), backend, config, cache)
    generated_images = folder_faces(Path(args.generated), backend, config, cache)
    training_images = (
        folder_faces(Path(args.training), backend, config, cache) if args.training else []
    )
    reference = reference_from_folder(reference_images, dim)
    training = reference_from_folder(training_images, dim) if training_images else None
    generated = [
        GeneratedImage(
            identity=image.identity,
            embeddings=_embeddings(image.faces, dim),
            image_id=str(image.path),
        )
        for image in generated_images
    ]
    if not generated:
        print(f"error: no images under {args.generated}/<identity>/", file=sys.stderr)
        return 2
    scores = score_identities(reference, generated, training, args.copy_threshold)
    print(text_report(scores))

    unmatched = sorted({image.identity for image in generated} - set(reference))
    if unmatched:
        print(f"\nno reference folder for: {', '.join(unmatched)}", file=sys.stderr)
    without = {
        name: sum(1 for image in reference_images if image.identity == name and not image.faces)
        for name in sorted({image.identity for image in reference_images})
    }
    report = {
        "reference": str(args.reference),
        "generated": str(args.generated),
        "training": str(args.training) if args.training else None,
        "backend": backend.name,
        "model_sha256": backend.model_sha256,
        "copy_threshold": args.copy_threshold,
        "reference_photos_without_face": {k: v for k, v in without.items() if v},
        **scores_json(scores),
        "faces": plain(scores.faces),
    }
    if args.out:
        text = json.dumps(plain(report), indent=1, ensure_ascii=False)
        if args.out == "-":
            print(text)
        else:
            atomic_write_text(Path(args.out), text + "\n")
            print(f"\nreport: {args.out}", file=sys.stderr)
    return 0


def _embeddings(faces, dim: int):
    from identity_pipeline.evaluation.embedding import embeddings_of

    return embeddings_of(faces, dim)


def add_fidelity_command(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``fidelity`` on the main parser's subcommands."""
    parser = subparsers.add_parser(
        "fidelity",
        help="score generated images' faces against real photos per identity "
        "(likeness, copy-paste, bleed)",
        description=__doc__.split("\n\n", 1)[1] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--reference", required=True, metavar="DIR", help="real photos, DIR/<identity>/*"
    )
    parser.add_argument(
        "--generated", required=True, metavar="DIR", help="generated images, DIR/<identity>/*"
    )
    parser.add_argument(
        "--training",
        metavar="DIR",
        help="photos trained on, DIR/<identity>/* (enables copy-paste scores)",
    )
    parser.add_argument("--out", metavar="report.json", help="write the JSON report ('-': stdout)")
    parser.add_argument(
        "--backend", default=None, help="face backend: offline | insightface (default: auto)"
    )
    parser.add_argument(
        "--copy-threshold",
        type=float,
        default=DEFAULT_COPY_THRESHOLD,
        help="a generated face this similar to a training photo counts as a copy",
    )
    parser.add_argument("--data-dir", help="storage root whose cache/faces is used")
    parser.add_argument("--cache-dir", help="face cache folder (default: <data root>/cache/faces)")
    parser.add_argument("--no-cache", action="store_true", help="do not read or write the cache")
    add_settings_option(parser)
    parser.set_defaults(handler=_cmd_fidelity)
    return parser
