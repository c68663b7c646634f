"""The `identity-pipeline` command: the demo, and each stage runnable on plain files.

Subcommands import their stage lazily so `identity-pipeline --help` stays fast.
"""

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path


def _cmd_demo(args: argparse.Namespace) -> int:
    from identity_pipeline.demo import run_demo

    run_demo(args.data_dir)
    return 0


def _cmd_photos(args: argparse.Namespace) -> int:
    """Inspect a folder exactly like raw_photos does; one JSON object per file."""
    from identity_pipeline.photos import PhotoLimits, inspect_album

    limits = PhotoLimits(max_pixels=args.max_pixels)
    for folder in args.folders:
        for item in inspect_album(Path(folder), limits):
            print(json.dumps({"folder": folder, **item.record.to_row()}, ensure_ascii=False))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="identity-pipeline",
        description="Photo album -> face identities -> a LoRA that learned them (Dagster project).",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo", help="materialize the whole graph for every album")
    demo.add_argument(
        "--data-dir", help="storage root (default: $IDENTITY_PIPELINE_DATA_DIR or ./data)"
    )
    demo.set_defaults(handler=_cmd_demo)

    photos = commands.add_parser(
        "photos", help="inspect album folders like raw_photos (JSON lines)"
    )
    photos.add_argument("folders", nargs="+")
    photos.add_argument("--max-pixels", type=int, default=100_000_000)
    photos.set_defaults(handler=_cmd_photos)

    # Each stage's command lives beside its logic (same code as the asset).
    from identity_pipeline.clustering.cli import add_cluster_command
    from identity_pipeline.collage.cli import add_split_command
    from identity_pipeline.evaluation.cli import add_fidelity_command
    from identity_pipeline.faces.cli import add_faces_command
    from identity_pipeline.labeling.cli import add_label_command

    for add_command in (
        add_split_command,
        add_faces_command,
        add_cluster_command,
        add_label_command,
        add_fidelity_command,
    ):
        add_command(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.handler(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
