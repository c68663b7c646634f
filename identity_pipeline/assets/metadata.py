"""Metadata helpers shared by the asset shells: tables and contact sheets for the UI."""

from collections.abc import Sequence
from pathlib import Path

import dagster as dg
import pandas as pd
from PIL import Image

from identity_pipeline.previews import SheetItem, contact_sheet, encode_image, inline_markdown_image
from identity_pipeline.storage import atomic_write_bytes

MAX_TABLE_ROWS = 50


def markdown_table(frame: pd.DataFrame, max_rows: int = MAX_TABLE_ROWS) -> str:
    """A Markdown table of the first rows (pipes escaped); notes how many rows were left out."""
    shown = frame.head(max_rows)
    header = "| " + " | ".join(map(str, shown.columns)) + " |"
    rule = "|" + "---|" * len(shown.columns)
    rows = [
        "| " + " | ".join(str(value).replace("|", "\\|").replace("\n", " ") for value in row) + " |"
        for row in shown.itertuples(index=False)
    ]
    more = [f"\n_{len(frame) - max_rows} more rows not shown_"] if len(frame) > max_rows else []
    return "\n".join([header, rule, *rows, *more])


def table_metadata(frame: pd.DataFrame, max_rows: int = MAX_TABLE_ROWS) -> dg.MetadataValue:
    """A Dagster table (rendered as a table in the UI) of the first ``max_rows`` rows."""
    shown = frame.head(max_rows)
    schema = dg.TableSchema(
        columns=[dg.TableColumn(str(name), _column_type(shown[name])) for name in shown.columns]
    )
    records = [
        dg.TableRecord({str(k): plain_value(v) for k, v in row.items()})
        for row in shown.to_dict(orient="records")
    ]
    return dg.MetadataValue.table(records, schema=schema)


def _column_type(series: pd.Series) -> str:
    if pd.api.types.is_bool_dtype(series):
        return "bool"
    if pd.api.types.is_integer_dtype(series):
        return "int"
    if pd.api.types.is_float_dtype(series):
        return "float"
    return "string"


def plain_value(value: object) -> str | int | float | bool | None:
    """A value Dagster metadata can hold: numpy scalars unwrapped, NaN/NA as None."""
    if value is None or value is pd.NA or (isinstance(value, float) and value != value):
        return None
    if isinstance(value, bool | int | float | str):
        return value
    if hasattr(value, "item"):
        return value.item()  # numpy scalars
    return str(value)


def sheet_metadata(
    folder: Path, name: str, items: Sequence[SheetItem], alt: str, columns: int = 8, cell: int = 128
) -> dict[str, dg.MetadataValue]:
    """Write a full-size contact sheet beside the asset and return it inline (small) + its path."""
    sheet = contact_sheet(items, cell=cell, columns=columns)
    path = atomic_write_bytes(folder / f"{name}.jpg", encode_image(sheet, "JPEG", 88))
    return {
        name: dg.MetadataValue.md(inline_markdown_image(sheet, alt)),
        f"{name}_path": dg.MetadataValue.path(str(path)),
    }


def image_metadata(name: str, path: Path, alt: str | None = None) -> dict[str, dg.MetadataValue]:
    """An image file already written beside the asset: inline (small) and its path."""
    with Image.open(path) as image:
        inline = inline_markdown_image(image.convert("RGB"), alt or name)
    return {name: dg.MetadataValue.md(inline), f"{name}_path": dg.MetadataValue.path(str(path))}
