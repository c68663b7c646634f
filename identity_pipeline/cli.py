"""The `identity-pipeline` command: the demo, and each stage runnable on plain files.

Subcommands import their stage lazily so `identity-pipeline --help` stays fast.
"""

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from identity_pipeline.settings import add_settings_option, command_settings


def _cmd_demo(args: argparse.Namespace) -> int:
    from identity_pipeline.demo import run_demo

    run_demo(args.data_dir)
    return 0


def _cmd_photos(args: argparse.Namespace) -> int:
    """Inspect a folder exactly like raw_photos does; one JSON object per file."""
    from identity_pipeline.photos import PhotoLimits, inspect_album

    overrides = {"max_pixels": args.max_pixels} if args.max_pixels is not None else {}
    limits = command_settings(args).section("photos", PhotoLimits, overrides)
    for folder in args.folders:
        for item in inspect_album(Path(folder), limits):
            print(json.dumps({"folder": folder, **item.record.to_row()}, ensure_ascii=False))
    return 0


def _cmd_settings(args: argparse.Namespace) -> int:
    """Check the settings file and print every section as the stages will use it."""
    import yaml

    from identity_pipeline.settings import effective_settings

    settings = command_settings(args)
    print(
        f"# {settings.path} ({'found' if settings.path and settings.path.exists() else 'absent: defaults'})"
    )
    print(yaml.safe_dump(effective_settings(settings), sort_keys=False), end="")
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
    photos.add_argument("--max-pixels", type=int, default=None, help="default: photos.max_pixels")
    add_settings_option(photos)
    photos.set_defaults(handler=_cmd_photos)

    settings = commands.add_parser(
        "settings", help="check pipeline.yaml and print every stage's effective settings"
    )
    add_settings_option(settings)
    settings.add_argument(
        "--data-dir", help="storage root (default: $IDENTITY_PIPELINE_DATA_DIR or ./data)"
    )
    settings.set_defaults(handler=_cmd_settings)

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
    from identity_pipeline.settings import SettingsError

    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except SettingsError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
