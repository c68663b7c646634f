"""The labeling app's small CSV files, read one way: UTF-8, a header, comments, errors by line.

``labels.csv``, ``rejections.csv`` and ``accepted_cuts.csv`` are written by the app and may be
edited by hand, so every problem names its file and line: text that is not UTF-8, a missing or
wrong header, malformed CSV. Blank lines and lines starting with ``#`` are skipped.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterator
from pathlib import Path

# (path, 1-based line, message) -> the caller's own error type
LineError = Callable[[Path | str, int, str], Exception]


def read_text(path: Path, error: LineError) -> str | None:
    """The file's text (a UTF-8 byte-order mark dropped), or None when it does not exist."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as problem:
        line = data[: problem.start].count(b"\n") + 1
        raise error(path, line, "not valid UTF-8 text") from problem


def table_rows(
    text: str, header: tuple[str, ...], path: Path | str, error: LineError
) -> Iterator[tuple[int, list[str]]]:
    """(line number, stripped cells) of every data row, after checking the header."""
    reader = csv.reader(io.StringIO(text.removeprefix("\ufeff"), newline=""), strict=True)
    header_seen = False
    try:
        for row in reader:
            line = reader.line_num
            if not row or (len(row) == 1 and not row[0].strip()) or row[0].lstrip().startswith("#"):
                continue
            cells = [cell.strip() for cell in row]
            if not header_seen:
                if tuple(cell.lower() for cell in cells) != header:
                    raise error(
                        path,
                        line,
                        f"expected the header {','.join(header)!r}, got {','.join(row)!r}",
                    )
                header_seen = True
                continue
            yield line, cells
    except csv.Error as problem:
        raise error(path, reader.line_num or 1, f"not valid CSV ({problem})") from problem
