"""Manual split hints: a plain file per album that overrides the splitter for named photos.

``data/albums/<album>/split_hints.csv`` - one photo per line, file name first::

    # file, what it is (comments and blank lines are fine; a "file,split" header too)
    IMG_0001.jpg, single
    IMG_0002.jpg, rows=2 cols=3
    IMG_0003.jpg, rows=2, cols=2, gutter=12, margin=20
    IMG_0004.jpg, 0 0 600 400; 600 0 1200 400
    IMG_0005.jpg, 0 0 0.5 1; 0.5 0 1 1

``split_hints.yaml`` (or ``.yml``) - the same, as a mapping::

    IMG_0001.jpg: single
    IMG_0002.jpg: rows=2 cols=3
    IMG_0003.jpg: {rows: 2, cols: 2, gutter: 12, margin: 20}
    IMG_0004.jpg: [[0, 0, 600, 400], [600, 0, 1200, 400]]

A spec is ``single``; or ``rows=R`` and/or ``cols=C`` (equal cells, optional ``gutter=`` and
``margin=`` in pixels); or boxes ``x0 y0 x1 y1`` separated by ``;``, in pixels of the upright
(EXIF-rotated) image, or as fractions of its size when every number is between 0 and 1 and one
has a decimal point. File names are paths relative to the album folder; a bare file name also
matches a photo in a sub-folder when that name is unique.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import yaml

from identity_pipeline.collage.boxes import (
    CUT_MANUAL,
    DECIDED_MANUAL,
    KIND_MANUAL,
    Box,
    Cut,
    SplitResult,
    sort_boxes,
)

HINT_FILE_NAMES = ("split_hints.csv", "split_hints.yaml", "split_hints.yml")
HINT_SINGLE = "single"
HINT_GRID = "grid"
HINT_BOXES = "boxes"
_GRID_KEYS = ("rows", "cols", "gutter", "margin")


@dataclass(frozen=True)
class Hint:
    """What the user said about one photo. ``boxes`` hold pixels, or fractions if ``relative``."""

    file: str
    mode: str  # HINT_SINGLE, HINT_GRID or HINT_BOXES
    rows: int = 1
    cols: int = 1
    gutter: int = 0
    margin: int = 0
    boxes: tuple[tuple[float, float, float, float], ...] = ()
    relative: bool = False
    source: str = ""  # "split_hints.csv:7", for messages


def find_hints_file(album_dir: Path) -> Path | None:
    """The album's hints file, if any; two of them is an error (which one would win?)."""
    found = [album_dir / name for name in HINT_FILE_NAMES if (album_dir / name).is_file()]
    if len(found) > 1:
        names = " and ".join(path.name for path in found)
        raise ValueError(f"{album_dir}: both {names} exist; keep one split hints file")
    return found[0] if found else None


def parse_hints(path: Path) -> dict[str, Hint]:
    """Read a hints file (.csv, .yaml or .yml). Malformed lines raise ValueError naming the line."""
    return parse_hints_text(path.read_text(encoding="utf-8-sig"), path)


def parse_hints_text(text: str, path: Path) -> dict[str, Hint]:
    """The hints in ``text``, read as the file ``path`` (its suffix picks the format, its name
    goes into messages): what ``parse_hints`` does once the file is read."""
    suffix = path.suffix.lower()
    if suffix == ".csv":
        entries = _csv_entries(text)
    elif suffix in (".yaml", ".yml"):
        entries = _yaml_entries(text, path)
    else:
        raise ValueError(f"{path}: hints must be a .csv, .yaml or .yml file")
    hints: dict[str, Hint] = {}
    for line, name, spec in entries:
        where = f"{path.name}:{line}"
        if not name:
            raise ValueError(f"{where}: missing file name")
        key = PurePosixPath(name.replace("\\", "/")).as_posix()
        if key in hints:
            raise ValueError(f"{where}: {key!r} already has a hint at {hints[key].source}")
        try:
            hints[key] = _parse_spec(key, spec, where)
        except ValueError as error:
            raise ValueError(f"{where}: {error}") from None
    return hints


def hint_for(hints: Mapping[str, Hint], relative_path: str) -> Hint | None:
    """The hint for a photo: by its path in the album, else by a unique bare file name."""
    path = PurePosixPath(relative_path.replace("\\", "/"))
    if path.as_posix() in hints:
        return hints[path.as_posix()]
    by_name = [hint for key, hint in hints.items() if "/" not in key and key == path.name]
    return by_name[0] if len(by_name) == 1 else None


def apply_hint(hint: Hint, width: int, height: int) -> SplitResult:
    """The tiles a hint asks for in a ``width`` x ``height`` image (kind ``manual``)."""
    if width <= 0 or height <= 0:
        raise ValueError(f"{hint.source or hint.file}: image has no pixels")
    if hint.mode == HINT_SINGLE:
        boxes: list[Box] = [Box(0, 0, width, height)]
        cuts: list[Cut] = []
    elif hint.mode == HINT_GRID:
        boxes, cuts = _grid(hint, width, height)
    else:
        boxes = [_hint_box(hint, values, width, height) for values in hint.boxes]
        cuts = _box_cuts(boxes, width, height)
    return SplitResult(sort_boxes(boxes), KIND_MANUAL, 1.0, DECIDED_MANUAL, tuple(cuts))


# --- reading ------------------------------------------------------------------------------------


def _csv_entries(text: str) -> list[tuple[int, str, object]]:
    entries = []
    for line_number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        cells = [cell.strip() for cell in next(csv.reader(io.StringIO(line)))]
        if line_number == _first_content_line(text) and cells[0].lower() in ("file", "filename"):
            continue  # header
        # Specs may be split over several cells ("rows=2,cols=3" or "0,0,600,400").
        entries.append((line_number, cells[0], " ".join(cell for cell in cells[1:] if cell)))
    return entries


def _first_content_line(text: str) -> int:
    for line_number, line in enumerate(text.splitlines(), start=1):
        if line.strip() and not line.lstrip().startswith("#"):
            return line_number
    return 0


def _yaml_entries(text: str, path: Path) -> list[tuple[int, str, object]]:
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"{path.name}:{mark.line + 1}" if mark is not None else path.name
        raise ValueError(f"{where}: not valid YAML ({getattr(error, 'problem', error)})") from None
    if root is None:
        return []
    if not isinstance(root, yaml.MappingNode):
        raise ValueError(
            f"{path.name}:{root.start_mark.line + 1}: expected 'file name: spec' lines"
        )
    entries = []
    for key_node, value_node in root.value:
        line = key_node.start_mark.line + 1
        try:
            value = yaml.safe_load(yaml.serialize(value_node))
        except yaml.YAMLError as error:  # pragma: no cover - composed nodes always re-serialise
            raise ValueError(f"{path.name}:{line}: {error}") from None
        entries.append((line, str(key_node.value).strip(), value))
    return entries


# --- specs --------------------------------------------------------------------------------------


def _parse_spec(name: str, spec: object, where: str) -> Hint:
    if isinstance(spec, str):
        return _parse_text_spec(name, spec.strip(), where)
    if isinstance(spec, Mapping):
        unknown = sorted(set(map(str, spec)) - set(_GRID_KEYS))
        if unknown:
            raise ValueError(f"unknown key(s) {unknown}; use {', '.join(_GRID_KEYS)}")
        return _grid_hint(name, {str(k): v for k, v in spec.items()}, where)
    if isinstance(spec, Sequence):
        boxes = [_box_values(item) for item in spec]
        return _boxes_hint(name, boxes, where)
    raise ValueError(f"cannot read the spec {spec!r}; use single, rows=/cols= or boxes")


def _parse_text_spec(name: str, text: str, where: str) -> Hint:
    if not text:
        raise ValueError(f"no spec for {name!r}; use single, rows=R cols=C or x0 y0 x1 y1 boxes")
    if text.lower() in (HINT_SINGLE, "none", "1"):
        return Hint(name, HINT_SINGLE, source=where)
    if "=" in text:
        values: dict[str, object] = {}
        for part in text.replace(",", " ").split():
            key, sep, value = part.partition("=")
            if not sep or key.strip().lower() not in _GRID_KEYS:
                raise ValueError(f"cannot read {part!r}; expected rows=, cols=, gutter=, margin=")
            values[key.strip().lower()] = value.strip()
        return _grid_hint(name, values, where)
    boxes = [_box_values(chunk.split()) for chunk in text.split(";") if chunk.strip()]
    return _boxes_hint(name, boxes, where)


def _grid_hint(name: str, values: Mapping[str, object], where: str) -> Hint:
    numbers = {key: _whole_number(key, value) for key, value in values.items()}
    rows, cols = numbers.get("rows", 1), numbers.get("cols", 1)
    if "rows" not in numbers and "cols" not in numbers:
        raise ValueError("a grid needs rows= and/or cols=")
    if rows < 1 or cols < 1 or numbers.get("gutter", 0) < 0 or numbers.get("margin", 0) < 0:
        raise ValueError("rows and cols must be at least 1, gutter and margin at least 0")
    return Hint(
        name,
        HINT_GRID,
        rows=rows,
        cols=cols,
        gutter=numbers.get("gutter", 0),
        margin=numbers.get("margin", 0),
        source=where,
    )


def _whole_number(key: str, value: object) -> int:
    try:
        number = float(str(value))
    except ValueError:
        raise ValueError(f"{key}={value!r} is not a number") from None
    if number != int(number):
        raise ValueError(f"{key}={value!r} must be a whole number")
    return int(number)


def _box_values(item: object) -> tuple[float, float, float, float]:
    parts = item.split() if isinstance(item, str) else item
    if not isinstance(parts, Sequence) or len(parts) != 4:
        raise ValueError(f"a box is four numbers x0 y0 x1 y1, got {item!r}")
    try:
        x0, y0, x1, y1 = (float(str(part)) for part in parts)
    except ValueError:
        raise ValueError(f"a box is four numbers x0 y0 x1 y1, got {item!r}") from None
    if x1 <= x0 or y1 <= y0:
        raise ValueError(f"box {item!r} is empty (x1 must exceed x0 and y1 exceed y0)")
    if min(x0, y0) < 0:
        raise ValueError(f"box {item!r} has a negative coordinate")
    return (x0, y0, x1, y1)


def _boxes_hint(name: str, boxes: list[tuple[float, float, float, float]], where: str) -> Hint:
    if not boxes:
        raise ValueError(f"no boxes for {name!r}")
    values = [v for box in boxes for v in box]
    relative = max(values) <= 1.0 and any(v != int(v) for v in values)
    if not relative and any(v != int(v) for v in values):
        raise ValueError("pixel boxes must be whole numbers (or all fractions between 0 and 1)")
    return Hint(name, HINT_BOXES, boxes=tuple(boxes), relative=relative, source=where)


# --- tiles --------------------------------------------------------------------------------------


def _grid(hint: Hint, width: int, height: int) -> tuple[list[Box], list[Cut]]:
    xs = _splits(width, hint.cols, hint.gutter, hint.margin, hint)
    ys = _splits(height, hint.rows, hint.gutter, hint.margin, hint)
    boxes = [Box(x0, y0, x1, y1) for y0, y1 in ys for x0, x1 in xs]
    cuts = [
        Cut(0, (ys[i][1] + ys[i + 1][0]) // 2, width, (ys[i][1] + ys[i + 1][0]) // 2, CUT_MANUAL)
        for i in range(len(ys) - 1)
    ] + [
        Cut((xs[i][1] + xs[i + 1][0]) // 2, 0, (xs[i][1] + xs[i + 1][0]) // 2, height, CUT_MANUAL)
        for i in range(len(xs) - 1)
    ]
    return boxes, cuts


def _splits(extent: int, count: int, gutter: int, margin: int, hint: Hint) -> list[tuple[int, int]]:
    available = extent - 2 * margin - gutter * (count - 1)
    if available < count:
        raise ValueError(
            f"{hint.source or hint.file}: {count} cells with gutter {gutter} and margin {margin} "
            f"do not fit in {extent} pixels"
        )
    edges = [round(available * i / count) for i in range(count + 1)]
    return [
        (margin + edges[i] + gutter * i, margin + edges[i + 1] + gutter * i) for i in range(count)
    ]


def _hint_box(
    hint: Hint, values: tuple[float, float, float, float], width: int, height: int
) -> Box:
    x0, y0, x1, y1 = values
    if hint.relative:
        x0, x1, y0, y1 = x0 * width, x1 * width, y0 * height, y1 * height
    box = Box(round(x0), round(y0), round(x1), round(y1))
    clipped = box.clipped(width, height)
    if clipped.area == 0:
        raise ValueError(
            f"{hint.source or hint.file}: box {box.as_list()} lies outside the {width}x{height} image"
        )
    return clipped


def _box_cuts(boxes: list[Box], width: int, height: int) -> list[Cut]:
    """Each box edge that is not on the image border, for drawing."""
    cuts = set()
    for box in boxes:
        if box.y0 > 0:
            cuts.add(Cut(box.x0, box.y0, box.x1, box.y0, CUT_MANUAL))
        if box.y1 < height:
            cuts.add(Cut(box.x0, box.y1, box.x1, box.y1, CUT_MANUAL))
        if box.x0 > 0:
            cuts.add(Cut(box.x0, box.y0, box.x0, box.y1, CUT_MANUAL))
        if box.x1 < width:
            cuts.add(Cut(box.x1, box.y0, box.x1, box.y1, CUT_MANUAL))
    return sorted(cuts, key=lambda cut: (cut.y0, cut.x0, cut.y1, cut.x1))
