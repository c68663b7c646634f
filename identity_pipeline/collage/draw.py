"""Cut lines and tile outlines drawn over a collage, for contact sheets."""

from __future__ import annotations

from PIL import Image, ImageDraw

from identity_pipeline.collage.boxes import CUT_GUTTER, CUT_MANUAL, CUT_SEAM, SplitResult

CUT_COLOURS = {
    CUT_GUTTER: (0, 200, 255),  # cyan: a gutter, the easy case
    CUT_SEAM: (255, 40, 200),  # magenta: a seam with no gutter, worth a look
    CUT_MANUAL: (255, 200, 0),  # amber: from the hints file
}
TILE_OUTLINE = (60, 255, 60)


def draw_cuts(image: Image.Image, result: SplitResult) -> Image.Image:
    """A copy of ``image`` with each tile outlined and each cut line drawn in its source colour.

    Line widths scale with the image so the lines survive the contact sheet's thumbnailing.
    """
    canvas = image.convert("RGB").copy()
    draw = ImageDraw.Draw(canvas)
    width = max(2, round(max(canvas.size) / 200))
    for box in result.boxes:
        draw.rectangle(
            (box.x0, box.y0, max(box.x0, box.x1 - 1), max(box.y0, box.y1 - 1)),
            outline=TILE_OUTLINE,
            width=max(1, width // 2),
        )
    for cut in result.cuts:
        colour = CUT_COLOURS.get(cut.source, (255, 255, 255))
        draw.line((cut.x0, cut.y0, cut.x1, cut.y1), fill=colour, width=width)
    return canvas
