"""What a person reads: the score table as text/Markdown, the confusion matrix and the curves as
pictures (Pillow, no plotting dependency), and everything as plain JSON (NaN -> null).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw, ImageFont

from identity_pipeline.evaluation.metrics import FidelityScores

# Columns of the printed table (the full table has more, see metrics.TABLE_COLUMNS).
SHOWN_COLUMNS = (
    "identity",
    "images",
    "images_without_face",
    "faces_per_image",
    "likeness",
    "real_baseline",
    "identified",
    "train_nn",
    "holdout_nn",
    "copy_gap",
    "copy_rate",
    "others_like_identity",
    "confusion_sim",
    "confused_with",
    "bleed",
    "real_cross",
)

SUMMARY_KEYS = (
    "likeness",
    "real_baseline",
    "identification",
    "diagonal_dominance",
    "bleed",
    "copy_gap",
    "copy_rate",
    "no_face_rate",
    "faces_per_image",
)

_TEXT = (40, 40, 40)
CURVE_COLOURS = {
    "likeness": (30, 90, 170),
    "bleed": (200, 60, 40),
    "identification": (60, 150, 60),
    "no_face_rate": (150, 150, 150),
    "real_baseline": (30, 90, 170),
}


def plain(value: Any) -> Any:
    """JSON-safe: NaN/inf -> None, numpy scalars -> Python, frames -> records, recursively."""
    if isinstance(value, pd.DataFrame):
        return [plain(row) for row in value.to_dict(orient="records")]
    if isinstance(value, Mapping):
        return {str(key): plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [plain(item) for item in value]
    if isinstance(value, np.ndarray):
        return plain(value.tolist())
    if value is None or value is pd.NA:
        return None
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def matrix_json(matrix: pd.DataFrame) -> dict[str, Any]:
    return {
        "rows": [str(name) for name in matrix.index],
        "columns": [str(name) for name in matrix.columns],
        "values": plain(matrix.to_numpy(dtype=float)),
    }


def scores_json(scores: FidelityScores) -> dict[str, Any]:
    return {
        "summary": plain(scores.summary),
        "identities": plain(scores.table),
        "confusion": matrix_json(scores.confusion),
        "others_confusion": matrix_json(scores.others_confusion),
        "real_confusion": matrix_json(scores.real_confusion),
    }


def format_number(value: Any, digits: int = 3) -> str:
    if value is None or value is pd.NA:
        return "-"
    if isinstance(value, bool | np.bool_):
        return str(bool(value))
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating):
        return "-" if not math.isfinite(float(value)) else f"{float(value):.{digits}f}"
    return str(value)


def shown_table(table: pd.DataFrame, columns: Sequence[str] = SHOWN_COLUMNS) -> pd.DataFrame:
    """The printed columns, numbers rounded to text ("-" where undefined)."""
    present = [column for column in columns if column in table.columns]
    return table[present].apply(lambda column: column.map(format_number))


def text_table(frame: pd.DataFrame) -> str:
    """A fixed-width table for a terminal."""
    header = [str(column) for column in frame.columns]
    rows = [[str(value) for value in row] for row in frame.itertuples(index=False)]
    widths = [max(len(text) for text in column) for column in zip(header, *rows, strict=True)]
    lines = ["  ".join(text.rjust(width) for text, width in zip(header, widths, strict=True))]
    lines.append("  ".join("-" * width for width in widths))
    lines += ["  ".join(t.rjust(w) for t, w in zip(row, widths, strict=True)) for row in rows]
    return "\n".join(lines)


def text_matrix(matrix: pd.DataFrame, title: str) -> str:
    frame = matrix.apply(lambda column: column.map(format_number))
    frame.insert(0, title, [str(name) for name in matrix.index])
    return text_table(frame.reset_index(drop=True))


def text_report(scores: FidelityScores) -> str:
    """The table, the summary and the confusion matrices, for a terminal."""
    parts = [text_table(shown_table(scores.table)), ""]
    parts.append(
        "summary: "
        + ", ".join(f"{key}={format_number(scores.summary.get(key))}" for key in SUMMARY_KEYS)
    )
    parts += ["", "confusion (generated-for x real-of, subject faces):"]
    parts.append(text_matrix(scores.confusion, "generated_for"))
    if np.isfinite(scores.others_confusion.to_numpy(dtype=float)).any():
        parts += ["", "others (other faces in images for x real-of):"]
        parts.append(text_matrix(scores.others_confusion, "others_for"))
    parts += ["", "real vs real (diagonal: distinct photos of one person):"]
    parts.append(text_matrix(scores.real_confusion, "real"))
    return "\n".join(parts)


# ----------------------------------------------------------------------------------------------
# Pictures


def _colour(value: float, low: float = -0.1, high: float = 0.8) -> tuple[int, int, int]:
    """White (low) -> orange -> dark red (high); grey for undefined."""
    if not math.isfinite(value):
        return (215, 215, 215)
    t = min(1.0, max(0.0, (value - low) / (high - low)))
    if t < 0.5:
        u = t / 0.5
        return (255, int(255 - 90 * u), int(255 - 200 * u))
    u = (t - 0.5) / 0.5
    return (int(255 - 115 * u), int(165 - 140 * u), int(55 - 35 * u))


def _short(text: str, limit: int = 14) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def confusion_image(
    blocks: Sequence[tuple[str, pd.DataFrame]], cell: int = 44, label_width: int = 110
) -> Image.Image:
    """Heatmaps side by side (e.g. generated subjects, others, real vs real), values printed.

    Rows are who the images were generated for (or whose real photos), columns whose real
    photos they are compared with; the diagonal should be the darkest cell of each row.
    """
    font = ImageFont.load_default()
    shown = [(title, matrix) for title, matrix in blocks if matrix.shape[1] > 0]
    if not shown:
        image = Image.new("RGB", (320, 60), (255, 255, 255))
        ImageDraw.Draw(image).text((8, 20), "(no reference photos: no matrix)", fill=_TEXT)
        return image
    header = 100  # title + rotated column labels
    gap = 24
    widths = [label_width + cell * matrix.shape[1] for _, matrix in shown]
    height = header + cell * max(matrix.shape[0] for _, matrix in shown) + 10
    image = Image.new("RGB", (sum(widths) + gap * (len(shown) - 1) + 10, height), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    x0 = 5
    for (title, matrix), width in zip(shown, widths, strict=True):
        draw.text((x0, 4), title, fill=(0, 0, 0), font=font)
        for column, name in enumerate(matrix.columns):
            label = Image.new("RGB", (header - 22, 12), (255, 255, 255))
            ImageDraw.Draw(label).text((0, 0), _short(str(name)), fill=_TEXT, font=font)
            rotated = label.rotate(90, expand=True)
            image.paste(rotated, (x0 + label_width + column * cell + cell // 2 - 6, 20))
        for row, name in enumerate(matrix.index):
            y = header + row * cell
            draw.text((x0, y + cell // 2 - 6), _short(str(name), 17), fill=_TEXT, font=font)
            for column, other in enumerate(matrix.columns):
                value = float(matrix.iloc[row, column])
                x = x0 + label_width + column * cell
                outline = (0, 0, 0) if str(name) == str(other) else (255, 255, 255)
                draw.rectangle((x, y, x + cell - 2, y + cell - 2), fill=_colour(value))
                draw.rectangle((x, y, x + cell - 2, y + cell - 2), outline=outline)
                text = format_number(value, 2)
                draw.text((x + 6, y + cell // 2 - 6), text, fill=(0, 0, 0), font=font)
        x0 += width + gap
    return image


def curves_image(
    steps: Sequence[int],
    series: Mapping[str, Sequence[float]],
    baseline: float | None = None,
    chosen_step: int | None = None,
    width: int = 640,
    height: int = 320,
) -> Image.Image:
    """Scores against training steps; the real-vs-real baseline dashed; the chosen step marked."""
    image = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    left, right, top, bottom = 48, 12, 36, 34
    plot_w, plot_h = width - left - right, height - top - bottom
    draw.rectangle((left, top, left + plot_w, top + plot_h), outline=(160, 160, 160))
    draw.text((left, 4), "identity fidelity per checkpoint", fill=(0, 0, 0), font=font)
    legend_x = left
    for name in series:
        colour = CURVE_COLOURS.get(name, (90, 90, 90))
        draw.rectangle((legend_x, 22, legend_x + 10, 30), fill=colour)
        draw.text((legend_x + 14, 20), name, fill=_TEXT, font=font)
        legend_x += 24 + int(draw.textlength(name, font=font))
    if baseline is not None and math.isfinite(baseline):
        draw.text((legend_x, 20), "--- real baseline", fill=CURVE_COLOURS["real_baseline"])
    values = [v for vs in series.values() for v in vs if v is not None and math.isfinite(v)]
    if baseline is not None and math.isfinite(baseline):
        values.append(baseline)
    if not steps or not values:
        draw.text((left + 8, top + 8), "(no scores: no faces found)", fill=(120, 0, 0), font=font)
        return image
    low, high = min(0.0, min(values)), max(values)
    if high - low < 1e-9:
        high = low + 1.0
    first, last = min(steps), max(steps)
    span = max(1, last - first)

    def point(step: int, value: float) -> tuple[float, float]:
        return (
            left + plot_w * (step - first) / span,
            top + plot_h * (1 - (value - low) / (high - low)),
        )

    if chosen_step is not None:
        x, _ = point(chosen_step, low)
        draw.line((x, top, x, top + plot_h), fill=(200, 200, 200), width=5)
        draw.text((x + 4, top + 2), f"chosen: step {chosen_step}", fill=(0, 0, 0), font=font)
    if baseline is not None and math.isfinite(baseline):
        _, y = point(first, baseline)
        for x in range(left, left + plot_w, 10):
            draw.line((x, y, x + 5, y), fill=CURVE_COLOURS["real_baseline"], width=1)
    for name, vs in series.items():
        colour = CURVE_COLOURS.get(name, (90, 90, 90))
        points = [
            point(step, value)
            for step, value in zip(steps, vs, strict=True)
            if value is not None and math.isfinite(value)
        ]
        if len(points) > 1:
            draw.line(points, fill=colour, width=2)
        for x, y in points:
            draw.ellipse((x - 3, y - 3, x + 3, y + 3), fill=colour)
    for fraction in (0.0, 0.5, 1.0):
        value = high - fraction * (high - low)
        draw.text((4, top + plot_h * fraction - 6), f"{value:.2f}", fill=(60, 60, 60), font=font)
    shown = sorted(set(steps)) if len(set(steps)) <= 10 else [first, last]
    for step in shown:
        x, _ = point(step, low)
        draw.line((x, top + plot_h, x, top + plot_h + 4), fill=(120, 120, 120))
        label = str(step)
        x_text = min(max(x - draw.textlength(label, font=font) / 2, 0), width - 30)
        draw.text((x_text, top + plot_h + 6), label, fill=(60, 60, 60), font=font)
    draw.text((width - right - 60, height - 12), "training step", fill=(60, 60, 60), font=font)
    return image
