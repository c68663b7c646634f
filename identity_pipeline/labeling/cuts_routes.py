"""The cuts review page's routes, added to the labeling app (``server.create_app``).

``/cuts`` is the page; ``/api/cuts`` its JSON (albums, the chosen album's photos least sure
first); ``/cuts/photo/<album>/<photo_id>.jpg`` the upright photo, shrunk; ``POST /api/cuts/save``
a decision (tiles), ``POST /api/cuts/splitter`` takes a photo's hint away. Files are read on each
request, so a re-materialized photo_tiles table or a hand-edited hints file shows on reload.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from identity_pipeline.labeling.accepted_cuts import AcceptedCutsError
from identity_pipeline.labeling.cuts import (
    album_cuts,
    back_to_splitter,
    cut_albums,
    photo_jpeg,
    save_cuts,
)
from identity_pipeline.labeling.cuts_page import CUTS_PAGE_HTML
from identity_pipeline.labeling.hint_edits import CutsError, HintsFileError
from identity_pipeline.labeling.http import json_error, json_object
from identity_pipeline.storage import DataLayout

PHOTO_SIDES = (160, 1600)  # the queue's thumbnails, the editor's photo
PHOTO_CACHE_SIZE = 256


class _PhotoCache:
    """JPEG bytes per (album, photo id, side): ids are content hashes, so never stale."""

    def __init__(self, layout: DataLayout) -> None:
        self._layout = layout
        self._cache: OrderedDict[tuple[str, str, int], bytes] = OrderedDict()
        self._lock = threading.Lock()

    def jpeg(self, album: str, photo_id: str, side: int) -> bytes:
        key = (album, photo_id, side)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        data = photo_jpeg(self._layout, album, photo_id, side)
        with self._lock:
            self._cache[key] = data
            while len(self._cache) > PHOTO_CACHE_SIZE:
                self._cache.popitem(last=False)
        return data


def cuts_routes(layout: DataLayout) -> list[Route]:
    """The routes of the cuts review page over one data root."""
    photos = _PhotoCache(layout)

    def page(request: Request) -> Response:
        return HTMLResponse(CUTS_PAGE_HTML)

    def state(request: Request) -> Response:
        albums = cut_albums(layout)
        if not albums:
            message = (
                "No album has a photo_tiles table yet: materialize photo_tiles (make ui, or "
                "make demo), then reload."
            )
            return JSONResponse({"albums": [], "album": None, "message": message})
        album = request.query_params.get("album") or albums[0]
        try:
            cuts = album_cuts(layout, album)
        except CutsError as error:
            return json_error(str(error), 404)
        return JSONResponse({"albums": albums, **cuts.to_json()})

    def photo(request: Request) -> Response:
        try:
            side = int(request.query_params.get("side", PHOTO_SIDES[-1]))
        except ValueError:
            return json_error("side must be a whole number", 400)
        side = min(PHOTO_SIDES, key=lambda allowed: abs(allowed - side))
        album, photo_id = request.path_params["album"], request.path_params["photo_id"]
        try:
            data = photos.jpeg(album, photo_id, side)
        except CutsError as error:
            return json_error(str(error), 404)
        except OSError as error:
            return json_error(f"cannot read the photo: {error}", 404)
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "max-age=3600"})

    def edit(action: Callable[[dict[str, Any]], Any]) -> Callable[[Request], Any]:
        async def endpoint(request: Request) -> Response:
            body = await json_object(request)
            if isinstance(body, Response):
                return body
            try:
                decision = await run_in_threadpool(action, body)
            except (HintsFileError, AcceptedCutsError) as error:
                return json_error(f"{error}. Nothing was written; fix the file by hand.", 409)
            except CutsError as error:
                return json_error(str(error), 400)
            return JSONResponse({"ok": True, **decision.to_json()})

        return endpoint

    def text(body: dict[str, Any], key: str) -> str:
        value = body.get(key)
        if not isinstance(value, str) or not value:
            raise CutsError(f"'{key}' must be a non-empty string")
        return value

    def boxes(body: dict[str, Any]) -> list[list[int]]:
        value = body.get("boxes")
        if not isinstance(value, list) or not all(
            isinstance(box, list)
            and len(box) == 4
            and all(isinstance(v, int) and not isinstance(v, bool) for v in box)
            for box in value
        ):
            raise CutsError("'boxes' must be a list of [x0, y0, x1, y1] whole-number lists")
        return value

    return [
        Route("/cuts", page),
        Route("/api/cuts", state),
        Route("/cuts/photo/{album}/{photo_id}.jpg", photo),
        Route(
            "/api/cuts/save",
            edit(lambda b: save_cuts(layout, text(b, "album"), text(b, "photo"), boxes(b))),
            methods=["POST"],
        ),
        Route(
            "/api/cuts/splitter",
            edit(lambda b: back_to_splitter(layout, text(b, "album"), text(b, "photo"))),
            methods=["POST"],
        ),
    ]
