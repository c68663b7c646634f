"""What every page's routes share: errors as JSON, and the JSON object a POST must send."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse


def json_error(message: str, status: int, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": message, **extra}, status_code=status)


async def json_object(request: Request) -> dict[str, Any] | JSONResponse:
    """The request's body as a JSON object, or the error response that says why it is not one."""
    # JSON only: a cross-site form or no-cors fetch cannot send this content type.
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
        return json_error("send JSON (Content-Type: application/json)", 415)
    try:
        body = await request.json()
    except ValueError:
        return json_error("the request body must be JSON", 400)
    if not isinstance(body, dict):
        return json_error("the request body must be a JSON object", 400)
    return body
