"""The JS client, ``static/instrumentor.js``, served by the backend with caching headers."""

from __future__ import annotations

import functools
import hashlib
from importlib import resources

from instrumentor.integrations._endpoint import Reply

__all__ = ["script_reply", "script_source"]

_MAX_AGE = 3600


@functools.lru_cache(maxsize=1)
def script_source() -> bytes:
    """The bytes of ``instrumentor.js``, shipped as package data."""
    package = resources.files("instrumentor.integrations")
    return (package / "static" / "instrumentor.js").read_bytes()


@functools.lru_cache(maxsize=1)
def _etag() -> str:
    return '"' + hashlib.sha256(script_source()).hexdigest()[:20] + '"'


def script_reply(method: str, if_none_match: str | None = None) -> Reply:
    """The answer to ``GET {prefix}/instrumentor.js``: the script, 304 if cached, 405 otherwise.

    Args:
        method: The request's method (``GET`` and ``HEAD`` are served).
        if_none_match: The ``If-None-Match`` header, for a 304 when the script is unchanged.
    """
    if method.upper() not in ("GET", "HEAD"):
        return Reply(405, b"", (("allow", "GET, HEAD"),))
    headers = (
        ("cache-control", f"public, max-age={_MAX_AGE}"),
        ("etag", _etag()),
        ("x-content-type-options", "nosniff"),
    )
    if if_none_match is not None and _etag() in (tag.strip() for tag in if_none_match.split(",")):
        return Reply(304, b"", headers)
    # The server leaves the body out for HEAD; the length stays the script's.
    content_type = ("content-type", "text/javascript; charset=utf-8")
    return Reply(200, script_source(), (content_type, *headers))
