"""The labeling page's web app (Starlette): the page, its JSON state, face crops, label edits.

It reads ``<data root>/assets/face_clusters/table.parquet`` and ``<data root>/labels.csv`` on each
request that needs them, so a re-materialized asset or a hand-edited labels file shows on reload.
Edits are label writes (atomic, with a backup); a malformed labels file is reported and never
overwritten. Serve it on 127.0.0.1 only (``serve``): it has no authentication.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PIL import Image
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from identity_pipeline.labeling.crops import (
    TableCropper,
    jpeg_bytes,
    placeholder,
    tile_paths_from_assets,
)
from identity_pipeline.labeling.cuts_routes import cuts_routes
from identity_pipeline.labeling.http import json_error, json_object
from identity_pipeline.labeling.labels import LabelError, LabelsFileError
from identity_pipeline.labeling.page import PAGE_HTML
from identity_pipeline.labeling.state import (
    LabelingBook,
    NeedsNameError,
    clusters_table_path,
    state_json,
)
from identity_pipeline.labeling.suggestions_page import suggestion_routes
from identity_pipeline.storage import DataLayout

LOCALHOST = "127.0.0.1"
DEFAULT_PORT = 8765
CROP_CACHE_SIZE = 2048

CropSource = Callable[[str], Image.Image | bytes | None]


def label_page_url(port: int = DEFAULT_PORT) -> str:
    """Where ``identity-pipeline label`` serves the page (for links in asset metadata)."""
    return f"http://{LOCALHOST}:{port}/"


class _Crops:
    """JPEG bytes per face id, from the given source or from the clusters table's images."""

    def __init__(self, book: LabelingBook, layout: DataLayout, source: CropSource | None) -> None:
        self._book = book
        self._layout = layout
        self._source = source
        self._cropper: TableCropper | None = None
        self._cropper_table: object = None
        self._cache: OrderedDict[str, bytes] = OrderedDict()
        self._lock = threading.Lock()

    def _default_source(self) -> CropSource:
        table = self._book.table()
        if self._cropper is None or self._cropper_table is not table:
            needs_tiles = "tile_path" not in table or table["tile_path"].isna().any()
            tiles = tile_paths_from_assets(self._layout) if needs_tiles else {}
            self._cropper = TableCropper(table, self._layout.root, tiles)
            self._cropper_table = table
            self._cache.clear()
        return self._cropper

    def jpeg(self, face_id: str) -> bytes:
        with self._lock:
            if face_id in self._cache:
                self._cache.move_to_end(face_id)
                return self._cache[face_id]
        source = self._source or self._default_source()
        produced = source(face_id)
        data = produced if isinstance(produced, bytes) else jpeg_bytes(produced or placeholder())
        with self._lock:
            self._cache[face_id] = data
            while len(self._cache) > CROP_CACHE_SIZE:
                self._cache.popitem(last=False)
        return data


def create_app(
    data_root: Path | str,
    *,
    clusters_path: Path | None = None,
    labels_path: Path | None = None,
    crop_source: CropSource | None = None,
) -> Starlette:
    """The app for one data root. ``crop_source(face_id)`` may supply crops (a PIL image or
    JPEG bytes); by default they are cut from the tile images the clusters table points to."""
    layout = DataLayout(Path(data_root).expanduser().resolve())
    book = LabelingBook(
        clusters_path or clusters_table_path(layout), labels_path or layout.labels_path
    )
    crops = _Crops(book, layout, crop_source)

    def page(request: Request) -> Response:
        return HTMLResponse(PAGE_HTML)

    def state(request: Request) -> Response:
        try:
            return JSONResponse(state_json(book.state()))
        except FileNotFoundError:
            return json_error(
                f"no face clusters yet ({book.clusters_path} is missing): materialize the "
                "face_clusters asset, or run `identity-pipeline cluster`",
                503,
            )
        except LabelsFileError as error:
            return json_error(
                f"{error}. Fix the file by hand; the page will not overwrite it.", 409
            )

    def crop(request: Request) -> Response:
        face_id = request.path_params["face_id"]
        try:
            data = crops.jpeg(face_id)
        except FileNotFoundError:
            return json_error("no face clusters yet", 503)
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "max-age=3600"})

    def edit(action: Callable[[dict[str, Any]], object]) -> Callable[[Request], Any]:
        async def endpoint(request: Request) -> Response:
            body = await json_object(request)
            if isinstance(body, Response):
                return body
            try:
                # File reads and writes happen in a worker thread, not on the event loop.
                labels = await run_in_threadpool(action, body)
            except NeedsNameError as error:
                return json_error(str(error), 409, needs_name=True)
            except LabelsFileError as error:
                return json_error(f"{error}. Nothing was written; fix the file by hand.", 409)
            except LabelError as error:
                return json_error(str(error), 400)
            except FileNotFoundError:
                return json_error("no face clusters yet", 503)
            return JSONResponse({"ok": True, "labels": len(labels)})  # type: ignore[arg-type]

        return endpoint

    def faces_of(body: dict[str, Any]) -> list[str]:
        faces = body.get("faces")
        if not isinstance(faces, list) or not all(isinstance(f, str) for f in faces):
            raise LabelError("'faces' must be a list of face ids")
        return faces

    def text(body: dict[str, Any], key: str, required: bool = True) -> str | None:
        value = body.get(key)
        if value is None and not required:
            return None
        if not isinstance(value, str):
            raise LabelError(f"'{key}' must be a string")
        return value

    routes = [
        Route("/", page),
        Route("/api/state", state),
        Route("/crop/{face_id}.jpg", crop),
        Route(
            "/api/name",
            edit(lambda b: book.name_group(text(b, "group"), text(b, "name"))),  # type: ignore[arg-type]
            methods=["POST"],
        ),
        Route(
            "/api/move",
            edit(
                lambda b: book.move_faces(
                    faces_of(b),
                    target_key=text(b, "target", required=False),
                    target_name=text(b, "name_target", required=False),
                    name=text(b, "name", required=False),
                )
            ),
            methods=["POST"],
        ),
        Route(
            "/api/merge",
            edit(
                lambda b: book.merge_groups(
                    text(b, "source"),  # type: ignore[arg-type]
                    text(b, "target"),  # type: ignore[arg-type]
                    name=text(b, "name", required=False),
                )
            ),
            methods=["POST"],
        ),
        Route("/api/ignore", edit(lambda b: book.ignore_faces(faces_of(b))), methods=["POST"]),
        Route("/api/clear", edit(lambda b: book.clear_faces(faces_of(b))), methods=["POST"]),
        *cuts_routes(layout),  # the cuts review page, /cuts
        *suggestion_routes(book),
    ]
    # Only this machine's names: a DNS-rebinding page cannot reach the app under its own name.
    app = Starlette(
        routes=routes,
        middleware=[Middleware(TrustedHostMiddleware, allowed_hosts=[LOCALHOST, "localhost"])],
    )
    app.state.book = book
    return app


def serve(data_root: Path | str, port: int = DEFAULT_PORT, **options: Any) -> None:
    """Run the page on 127.0.0.1:``port`` until interrupted (never on other interfaces)."""
    import uvicorn

    uvicorn.run(create_app(data_root, **options), host=LOCALHOST, port=port, log_level="warning")
