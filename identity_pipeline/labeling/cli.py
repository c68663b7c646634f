"""``identity-pipeline label``: serve the labeling page on 127.0.0.1 for the data root."""

from __future__ import annotations

import argparse
import contextlib
import sys

from identity_pipeline.storage import DataLayout


def _cmd_label(args: argparse.Namespace) -> int:
    from identity_pipeline.labeling.server import label_page_url, serve
    from identity_pipeline.labeling.state import clusters_table_path

    layout = DataLayout.from_env(args.data_dir)
    table = clusters_table_path(layout)
    if not table.is_file():
        print(
            f"note: {table} does not exist yet; materialize face_clusters (or run "
            "`identity-pipeline cluster`), then reload the page",
            file=sys.stderr,
        )
    print(
        f"Labeling page: {label_page_url(args.port)}  (labels: {layout.labels_path}; "
        f"cuts review: {label_page_url(args.port)}cuts; Ctrl+C stops)",
        file=sys.stderr,
    )
    with contextlib.suppress(KeyboardInterrupt):
        serve(layout.root, port=args.port)
    return 0


def add_label_command(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``label`` on the main parser's subcommands."""
    from identity_pipeline.labeling.server import DEFAULT_PORT

    parser = subparsers.add_parser(
        "label",
        help="serve the page to name face clusters (http://127.0.0.1:8765, this machine only)",
    )
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument(
        "--data-dir", help="storage root (default: $IDENTITY_PIPELINE_DATA_DIR or ./data)"
    )
    parser.set_defaults(handler=_cmd_label)
    return parser
