"""A person's decision about a photo's cuts, written into the album's split hints file.

``hint_spec`` turns the tiles a person drew into the shortest hint that gives exactly those tiles
(``single``, ``rows=R cols=C``, or pixel boxes). ``edit_hints_text`` merges hints into the file's
text as it is: the photo's own line is replaced (or removed, or added at the end); comments, blank
lines, other photos' lines and the file's format (CSV or YAML) stay as they were.
``update_hints_file`` does that to the album's file under a lock, atomically, keeping the previous
version as ``<name>.bak``. A malformed file is refused with its line number and left untouched.
No dagster here; the file format itself is ``identity_pipeline.collage.hints``.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import io
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path, PurePosixPath

import yaml

from identity_pipeline.collage.boxes import Box, sort_boxes
from identity_pipeline.collage.hints import (
    HINT_BOXES,
    HINT_GRID,
    HINT_SINGLE,
    Hint,
    apply_hint,
    find_hints_file,
    hint_for,
    parse_hints_text,
)
from identity_pipeline.storage import atomic_write_bytes

NEW_HINTS_FILE = "split_hints.csv"
BACKUP_SUFFIX = ".bak"
NEW_FILE_HEADER = (
    "# Split hints: file, what it is (single | rows=R cols=C | x0 y0 x1 y1; ...).\n"
    "# Written by the cuts review page (identity-pipeline label); hand edits are welcome.\n"
    "file,hint\n"
)
_PROCESS_LOCK = threading.Lock()


class HintsFileError(ValueError):
    """The album's hints file cannot be edited (malformed: the message names the line)."""


class CutsError(ValueError):
    """Tiles a person asked for that are no valid split of the photo; nothing was written."""


def photo_key(relative_path: str) -> str:
    """A photo's path in the album as the hints file keys it."""
    return PurePosixPath(relative_path.replace("\\", "/")).as_posix()


def backup_path(path: Path) -> Path:
    return path.with_name(path.name + BACKUP_SUFFIX)


# --- a decision -> one hint ---------------------------------------------------------------------


def check_tiles(boxes: Sequence[Box], width: int, height: int, min_side: int = 1) -> None:
    """Raise ``CutsError`` unless the boxes are non-empty, inside the image and disjoint."""
    if not boxes:
        raise CutsError("a photo needs at least one tile")
    for box in boxes:
        if box.x0 < 0 or box.y0 < 0 or box.x1 > width or box.y1 > height:
            raise CutsError(f"tile {box.as_list()} lies outside the {width}x{height} photo")
        if box.width < min_side or box.height < min_side:
            raise CutsError(f"tile {box.as_list()} is smaller than {min_side} pixels")
    for i, first in enumerate(boxes):
        for second in boxes[i + 1 :]:
            if first.intersection(second):
                raise CutsError(f"tiles {first.as_list()} and {second.as_list()} overlap")


def hint_spec(boxes: Sequence[Box], width: int, height: int) -> str:
    """The shortest hint text whose tiles are exactly ``boxes`` in a ``width`` x ``height`` photo.

    ``single`` for the whole photo; ``rows=R cols=C`` (with ``gutter=``/``margin=`` when not 0)
    for an equal grid, as ``apply_hint`` lays it out; otherwise the pixel boxes.
    """
    check_tiles(boxes, width, height)
    wanted = sort_boxes(boxes)
    if wanted == (Box(0, 0, width, height),):
        return HINT_SINGLE
    grid = _grid_hint(wanted)
    if grid is not None:
        with contextlib.suppress(ValueError):
            if apply_hint(grid, width, height).boxes == wanted:
                return format_spec(grid)
    return format_spec(Hint("", HINT_BOXES, boxes=tuple(tuple(b.as_list()) for b in wanted)))


def format_spec(hint: Hint) -> str:
    """A hint's spec as written in the file (the part after the file name)."""
    if hint.mode == HINT_SINGLE:
        return HINT_SINGLE
    if hint.mode == HINT_GRID:
        parts = [f"rows={hint.rows}", f"cols={hint.cols}"]
        parts += [f"gutter={hint.gutter}"] if hint.gutter else []
        parts += [f"margin={hint.margin}"] if hint.margin else []
        return " ".join(parts)
    return "; ".join(" ".join(_number(v) for v in box) for box in hint.boxes)


def _number(value: float) -> str:
    return str(int(value)) if value == int(value) else repr(value)


def _grid_hint(boxes: tuple[Box, ...]) -> Hint | None:
    """The equal grid these boxes could be (rows, columns, gutter, margin read off them)."""
    rows = sorted({(b.y0, b.y1) for b in boxes})
    cols = sorted({(b.x0, b.x1) for b in boxes})
    if len(boxes) < 2 or len(rows) * len(cols) != len(boxes):
        return None  # one tile inside a frame reads better as its box
    margin = cols[0][0]
    if len(cols) > 1:
        gutter = cols[1][0] - cols[0][1]
    elif len(rows) > 1:
        gutter = rows[1][0] - rows[0][1]
    else:
        gutter = 0
    if gutter < 0 or margin < 0:
        return None
    return Hint("", HINT_GRID, rows=len(rows), cols=len(cols), gutter=gutter, margin=margin)


# --- merging into the file's text ---------------------------------------------------------------


def edit_hints_text(text: str, path: Path, changes: Mapping[str, str | None]) -> str:
    """``text`` (the hints file ``path``) with each photo of ``changes`` given its spec, or its
    line removed when the spec is None. Raises ``HintsFileError`` (naming the line) when the
    text is malformed and ``CutsError`` when a change cannot be expressed."""
    current = _parse(text, path)
    wanted = {photo_key(name): spec for name, spec in changes.items()}
    expected = {key: _expected_hint(key, spec) for key, spec in wanted.items()}
    for key, spec in wanted.items():
        by_name = hint_for(current, key) if spec is None and key not in current else None
        if by_name is not None:
            raise CutsError(
                f"{by_name.source} gives {key!r} its hint by file name ({by_name.file!r}, which "
                "may match other photos too); edit that line by hand"
            )
    if all(_same(current.get(key), hint) for key, hint in expected.items()):
        return text  # nothing to change: the file stays byte for byte
    newline = "\r\n" if "\r\n" in text else "\n"
    if path.suffix.lower() == ".csv":
        edited = _edit_csv(text, current, wanted)
    else:
        edited = _edit_yaml(text, path, wanted)
    result = newline.join(edited) + newline if edited else ""
    try:
        after = parse_hints_text(result, path)
    except ValueError as error:  # pragma: no cover - a bug here must never reach the disk
        raise HintsFileError(
            f"editing {path.name} would break it ({error}); nothing written"
        ) from error
    for key, hint in expected.items():
        if not _same(after.get(key), hint):  # pragma: no cover - as above
            raise HintsFileError(f"editing {path.name} for {key!r} went wrong; nothing written")
    return result


def _expected_hint(key: str, spec: str | None) -> Hint | None:
    if spec is None:
        return None
    try:
        return parse_hints_text(_csv_line(key, spec), Path(NEW_HINTS_FILE))[key]
    except ValueError as error:
        raise CutsError(f"not a hint for {key!r}: {spec!r} ({error})") from error


def _same(first: Hint | None, second: Hint | None) -> bool:
    if first is None or second is None:
        return first is second
    return replace(first, source="") == replace(second, source="")


def _parse(text: str, path: Path) -> dict[str, Hint]:
    try:
        return parse_hints_text(text, path)
    except ValueError as error:
        raise HintsFileError(str(error)) from error


def _line_of(hint: Hint) -> int:
    """1-based line of a parsed hint ("split_hints.csv:7")."""
    return int(hint.source.rsplit(":", 1)[1])


def _edit_csv(
    text: str, current: Mapping[str, Hint], wanted: Mapping[str, str | None]
) -> list[str]:
    lines = text.splitlines() if text.strip() else NEW_FILE_HEADER.splitlines()
    replaced: dict[int, str | None] = {}
    appended: list[str] = []
    for key, spec in wanted.items():
        line = _csv_line(key, spec) if spec is not None else None
        if key in current:
            replaced[_line_of(current[key]) - 1] = line
        elif line is not None:
            appended.append(line)
    kept = [replaced.get(i, line) for i, line in enumerate(lines)]
    return [line for line in kept if line is not None] + appended


def _csv_line(key: str, spec: str) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="").writerow([key, spec])
    return buffer.getvalue()


def _edit_yaml(text: str, path: Path, wanted: Mapping[str, str | None]) -> list[str]:
    """Line-based, so comments and the other entries stay as written."""
    lines = text.splitlines()
    root = yaml.compose(text, Loader=yaml.SafeLoader) if text.strip() else None
    if root is not None and root.flow_style:
        raise HintsFileError(
            f"{path.name}:{root.start_mark.line + 1}: the page edits 'file: spec' lines, one per "
            "photo; this file is one {...} mapping. Rewrite it that way, or edit it by hand"
        )
    spans: dict[str, tuple[int, int]] = {}
    for key_node, value_node in root.value if root is not None else []:
        end = value_node.end_mark
        last = end.line if end.column > 0 else end.line - 1
        spans[photo_key(str(key_node.value).strip())] = (key_node.start_mark.line, last)
    replaced: dict[int, str | None] = {}
    dropped: set[int] = set()
    appended: list[str] = []
    for key, spec in wanted.items():
        line = _yaml_line(key, spec) if spec is not None else None
        if key in spans:
            first, last = spans[key]
            replaced[first] = line
            dropped.update(range(first + 1, last + 1))
        elif line is not None:
            appended.append(line)
    # New entries go after the last one (before a closing "..." or trailing comments).
    at = max((last for _, last in spans.values()), default=len(lines) - 1) + 1
    kept = [(replaced.get(i, line), i < at) for i, line in enumerate(lines) if i not in dropped]
    before = [line for line, early in kept if early and line is not None]
    after = [line for line, early in kept if not early and line is not None]
    return before + appended + after


def _yaml_line(key: str, spec: str) -> str:
    dumped = yaml.safe_dump(
        {key: spec}, default_flow_style=False, allow_unicode=True, width=1 << 20
    )
    return dumped.rstrip("\n")


# --- the file -----------------------------------------------------------------------------------


@contextlib.contextmanager
def _locked(album_dir: Path) -> Iterator[None]:
    """One writer of an album's hints at a time, across threads and processes. The lock file
    lives beside the album folder (hidden, so it is never taken for an album or a photo)."""
    lock_file = album_dir.parent / f".{album_dir.name}.split_hints.lock"
    with _PROCESS_LOCK, open(lock_file, "a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def read_hints_file(album_dir: Path) -> tuple[Path | None, dict[str, Hint]]:
    """The album's hints file and its hints; ``HintsFileError`` (naming the line) if unusable."""
    try:
        path = find_hints_file(album_dir)
    except ValueError as error:
        raise HintsFileError(str(error)) from error
    if path is None:
        return None, {}
    return path, _parse(_decode(path.read_bytes(), path), path)


def update_hints_file(album_dir: Path, changes: Mapping[str, str | None]) -> Path:
    """Give photos (paths relative to the album) a hint spec, or take theirs away (None).

    The file is re-read under the lock, so lines written meanwhile by hand are kept. Without a
    hints file, ``split_hints.csv`` is created. Returns the file's path.
    """
    if not album_dir.is_dir():
        raise HintsFileError(f"album folder {album_dir} does not exist")
    with _locked(album_dir):
        try:
            found = find_hints_file(album_dir)
        except ValueError as error:
            raise HintsFileError(str(error)) from error
        path = found or album_dir / NEW_HINTS_FILE
        if not found and all(spec is None for spec in changes.values()):
            return path  # no file, so no hint to take away
        data = path.read_bytes() if found else b""
        text = _decode(data, path)
        edited = edit_hints_text(text, path, changes)
        if edited == text:
            return path
        bom = b"\xef\xbb\xbf" if data.startswith(b"\xef\xbb\xbf") else b""
        if found:
            atomic_write_bytes(backup_path(path), data)
        atomic_write_bytes(path, bom + edited.encode("utf-8"))
        return path


def _decode(data: bytes, path: Path) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise HintsFileError(f"{path.name}:{line}: not valid UTF-8 text") from error
