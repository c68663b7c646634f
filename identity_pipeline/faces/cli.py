"""``identity-pipeline faces PATH... --out FACES.parquet``: the faces stage on plain files.

Each photo is one tile (tile_id = photo_id = sha256 of the file's bytes, offset 0, 0). The table
has the faces table's columns plus ``source_path``. Results are cached per photo under
``<data root>/cache/faces`` (``--cache-dir``), so re-running after adding photos only computes
the new ones.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from identity_pipeline.faces import (
    BACKEND_NAMES,
    FaceBackend,
    FaceCache,
    FaceConfig,
    FaceRecord,
    backend_for,
    faces_for_tile,
    faces_frame,
)
from identity_pipeline.faces.pixels import FilePixels
from identity_pipeline.faces.records import faces_table
from identity_pipeline.photos.albums import is_hidden_or_system
from identity_pipeline.photos.inspect import IMAGE_EXTENSIONS
from identity_pipeline.settings import add_settings_option, command_settings
from identity_pipeline.storage import DataLayout, atomic_write_table, sha256_bytes

CACHE_SUBDIR = "faces"


@dataclass
class PathsResult:
    records: list[FaceRecord] = field(default_factory=list)
    source_paths: list[str] = field(default_factory=list)  # one per record
    photos: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)


def find_images(paths: Iterable[Path | str]) -> list[Path]:
    """Files named directly (any extension), plus image files under folders, recursively.

    Hidden and system files and folders are skipped; the order is sorted and stable.
    """
    found: dict[Path, None] = {}
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            for candidate in sorted(path.rglob("*")):
                relative = candidate.relative_to(path).parts
                if any(is_hidden_or_system(part) for part in relative):
                    continue
                if candidate.is_file() and candidate.suffix.lower() in IMAGE_EXTENSIONS:
                    found.setdefault(candidate, None)
        else:
            found.setdefault(path, None)
    return list(found)


def faces_for_paths(
    paths: Sequence[Path],
    backend: FaceBackend,
    cache: FaceCache | None,
    config: FaceConfig,
    progress: Callable[[Iterable[Path]], Iterable[Path]] | None = None,
) -> PathsResult:
    """Every face of every photo; unreadable files and byte-identical copies are skipped."""
    result = PathsResult()
    seen: dict[str, str] = {}
    for path in progress(paths) if progress else paths:
        try:
            data = path.read_bytes()
        except OSError as error:
            result.skipped.append((str(path), f"cannot read ({error.strerror or error})"))
            continue
        photo_id = sha256_bytes(data)
        if photo_id in seen:
            result.skipped.append((str(path), f"duplicate of {seen[photo_id]}"))
            continue
        seen[photo_id] = str(path)

        try:
            records = faces_for_tile(
                FilePixels(path),
                photo_id,
                photo_id,
                (0, 0),
                backend,
                cache,
                config,
                content_hash=photo_id,
            )
        except Exception as error:  # noqa: BLE001 - one bad photo must not stop the run
            result.skipped.append((str(path), f"{type(error).__name__}: {error}"))
            continue
        result.photos += 1
        result.records.extend(records)
        result.source_paths.extend([str(path)] * len(records))
    return result


def write_faces_table(result: PathsResult, out: Path) -> Path:
    frame = faces_frame(result.records)
    frame.insert(frame.columns.get_loc("tile_id") + 1, "source_path", result.source_paths)
    frame["source_path"] = frame["source_path"].astype("string")
    return atomic_write_table(out, faces_table(frame))


def _progress_bar(total: int) -> Callable[[Iterable[Path]], Iterable[Path]] | None:
    if not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    return lambda items: tqdm(items, total=total, unit="photo", desc="faces", file=sys.stderr)


# Command-line flags -> fields of the faces settings they override.
FLAG_FIELDS = {
    "backend": "backend",
    "insightface_pack": "insightface_pack",
    "insightface_root": "insightface_root",
    "min_face_px": "min_face_px",
    "det_score": "det_score_threshold",
}


def _cmd_faces(args: argparse.Namespace) -> int:
    from identity_pipeline.faces import ModelFileError

    paths = find_images(args.paths)
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        print(f"error: no such file or folder: {', '.join(missing)}", file=sys.stderr)
        return 2
    given = {field: getattr(args, flag) for flag, field in FLAG_FIELDS.items()}
    overrides = {field: value for field, value in given.items() if value is not None}
    config = command_settings(args).section("faces", FaceConfig, overrides)
    try:
        backend = backend_for(config)
    except ModelFileError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    cache = None
    if not args.no_cache:
        default_dir = DataLayout.from_env().cache_dir / CACHE_SUBDIR
        cache = FaceCache(Path(args.cache_dir) if args.cache_dir else default_dir)
    result = faces_for_paths(paths, backend, cache, config, _progress_bar(len(paths)))
    out = write_faces_table(result, Path(args.out))
    for path, reason in result.skipped:
        print(f"skipped {path}: {reason}", file=sys.stderr)
    cached = f", {cache.stats.hits} from cache" if cache is not None else ""
    print(
        f"{len(result.records)} faces in {result.photos} photos ({backend.name}{cached}; "
        f"{len(result.skipped)} skipped) -> {out}",
        file=sys.stderr,
    )
    return 0


def add_faces_command(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``faces`` on the main parser's subcommands."""
    parser = subparsers.add_parser(
        "faces",
        help="detect and embed faces in images or folders (recursive) into a Parquet table",
    )
    parser.add_argument("paths", nargs="+", metavar="PATH", help="images or folders")
    parser.add_argument("--out", required=True, metavar="FACES.parquet")
    parser.add_argument(
        "--backend",
        choices=BACKEND_NAMES,
        default=None,
        help="default: faces.backend, else insightface where onnxruntime has CUDA, else offline",
    )
    parser.add_argument("--insightface-pack", default=None, help="default: faces.insightface_pack")
    parser.add_argument(
        "--insightface-root",
        default=None,
        help="folder holding models/<pack>/ (default: faces.insightface_root, $INSIGHTFACE_ROOT "
        "or ~/.insightface)",
    )
    parser.add_argument("--cache-dir", default=None, help="default: <data root>/cache/faces")
    parser.add_argument("--no-cache", action="store_true")
    parser.add_argument(
        "--min-face-px", type=float, default=None, help="default: faces.min_face_px"
    )
    parser.add_argument(
        "--det-score", type=float, default=None, help="default: faces.det_score_threshold"
    )
    add_settings_option(parser)
    parser.set_defaults(handler=_cmd_faces)
    return parser
