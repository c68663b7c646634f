"""``identity-pipeline cluster FACES.parquet... --out CLUSTERS.parquet``: the face_clusters step
on plain files, with the same code and calibration as the asset, so a clustering can be scored
outside Dagster (``face_id`` -> ``cluster_id``; singletons have their own id, never -1).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import pandas as pd

from identity_pipeline.settings import add_settings_option, command_settings
from identity_pipeline.storage import atomic_write_table


def _parse_overrides(pairs: list[str]) -> dict[str, Any]:
    overrides: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--set expects KEY=VALUE, got {pair!r}")
        try:
            overrides[key.strip()] = (
                int(value) if value.strip().lstrip("-").isdigit() else float(value)
            )
        except ValueError as error:
            raise ValueError(f"--set {key}: {value!r} is not a number") from error
    return overrides


def read_faces_tables(paths: list[Path]) -> pd.DataFrame:
    frames = [pd.read_parquet(path) for path in paths]
    return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]


def _cmd_cluster(args: argparse.Namespace) -> int:
    from identity_pipeline.clustering import (
        CalibrationError,
        ClusterConfig,
        ClusterConfigError,
        cluster_faces,
        face_clusters_table,
    )
    from identity_pipeline.clustering.cluster import arrow_table
    from identity_pipeline.labeling.labels import LabelsFileError, read_labels

    missing = [str(p) for p in args.faces if not Path(p).is_file()]
    if missing:
        print(f"error: no such file: {', '.join(missing)}", file=sys.stderr)
        return 2
    faces = read_faces_tables([Path(p) for p in args.faces])
    try:
        config = command_settings(args).section(
            "clustering", ClusterConfig, _parse_overrides(args.set)
        )
        names = dict(read_labels(Path(args.labels)).names) if args.labels else {}
        result = cluster_faces(faces, config, names=names, backend=args.backend)
    except (CalibrationError, ClusterConfigError, LabelsFileError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    table = face_clusters_table(faces, result)
    out = atomic_write_table(Path(args.out), arrow_table(table))
    if args.stats:
        atomic_write_table(Path(args.stats), arrow_table(result.clusters))
    summary = result.summary
    print(
        f"{summary['faces']} faces -> {summary['clusters']} clusters of 2+ faces "
        f"({summary['faces_in_clusters']} faces), {summary['singletons']} singletons, "
        f"{summary['assigned_to_named']} assigned to named people "
        f"({result.calibration.source}: {result.calibration.thresholds()}) -> {out}",
        file=sys.stderr,
    )
    return 0


def add_cluster_command(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``cluster`` on the main parser's subcommands."""
    parser = subparsers.add_parser(
        "cluster",
        help="cluster a faces table (from `identity-pipeline faces`) into a face_clusters table",
    )
    parser.add_argument("faces", nargs="+", metavar="FACES.parquet")
    parser.add_argument("--out", required=True, metavar="CLUSTERS.parquet")
    parser.add_argument("--stats", default=None, metavar="STATS.parquet", help="per-cluster stats")
    parser.add_argument(
        "--labels", default=None, metavar="LABELS.csv", help="names: kept, and new faces join them"
    )
    parser.add_argument(
        "--backend", default=None, help="calibration to use when the table has no backend column"
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one clustering setting of pipeline.yaml, e.g. --set min_quality=0.5 "
        "(repeatable)",
    )
    add_settings_option(parser)
    parser.set_defaults(handler=_cmd_cluster)
    return parser
