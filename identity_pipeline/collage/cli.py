"""`identity-pipeline split IMAGE... [--hints FILE]`: tile boxes of images as JSON lines, with the
``collage`` settings of pipeline.yaml (or ``--settings``)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from identity_pipeline.settings import add_settings_option, command_settings


def add_split_command(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``split`` on an argparse subparsers object (handler in ``handler``)."""
    parser = subparsers.add_parser(
        "split",
        help="split collages into their photos (JSON lines: image, tiles, kind)",
        description="Print one JSON object per image: "
        '{"image": <path as given>, "tiles": [[x0, y0, x1, y1], ...], "kind": ...}, '
        "boxes in pixels of the upright (EXIF-rotated) image, top-to-bottom then left-to-right.",
    )
    parser.add_argument("images", nargs="+", metavar="IMAGE")
    parser.add_argument(
        "--hints",
        type=Path,
        help="split_hints.csv/.yaml whose entries override the splitter (matched by file name)",
    )
    add_settings_option(parser)
    parser.set_defaults(handler=run_split_command)
    return parser


def run_split_command(args: argparse.Namespace) -> int:
    """Split each image; an unreadable image prints an ``error`` object and the exit code is 1."""
    import numpy as np

    from identity_pipeline.collage.album_tiles import TilingConfig
    from identity_pipeline.collage.hints import apply_hint, hint_for, parse_hints
    from identity_pipeline.collage.split import split_image
    from identity_pipeline.photos import load_photo

    config = command_settings(args).section("collage", TilingConfig).split
    hints = parse_hints(args.hints) if args.hints else {}
    status = 0
    for image_arg in args.images:
        try:
            photo = load_photo(Path(image_arg))
        except Exception as error:  # noqa: BLE001 - one bad file must not stop the others
            print(json.dumps({"image": image_arg, "error": f"{type(error).__name__}: {error}"}))
            status = 1
            continue
        hint = hint_for(hints, image_arg) or hint_for(hints, Path(image_arg).name)
        if hint is not None:
            result = apply_hint(hint, photo.width, photo.height)
        else:
            result = split_image(np.asarray(photo), config)
        print(json.dumps({"image": image_arg, **result.to_json()}, ensure_ascii=False))
    sys.stdout.flush()
    return status
