"""The JS client, ``static/instrumentor.js``, served compact by the backend with caching headers.

The file in the package is commented for people; what is served drops the comments and the
indentation (the file is written so that this is safe: comments on lines of their own, no
multi-line strings), which keeps it well under the couple of kilobytes the page pays for.
"""

from __future__ import annotations

import functools
import hashlib
from importlib import resources

from instrumentor.integrations._http import Reply

__all__ = ["compact_script", "script_reply", "script_source"]

_MAX_AGE = 3600
_BANNER = b"/*! instrumentor.js: frontend events through your backend */"


@functools.lru_cache(maxsize=1)
def script_source() -> bytes:
    """The bytes of ``instrumentor.js`` as shipped (package data), comments and all."""
    package = resources.files("instrumentor.integrations")
    return (package / "static" / "instrumentor.js").read_bytes()


def compact_script(source: bytes) -> bytes:
    """``source`` without ``/* */`` comment blocks, ``//`` comment lines, indentation or blanks.

    Only comments on lines of their own are removed; code is never rewritten.
    """
    kept = [_BANNER]
    in_block = False
    for raw in source.splitlines():
        line = raw.strip()
        if in_block or line.startswith(b"/*"):
            in_block = not line.endswith(b"*/")
        elif line and not line.startswith(b"//"):
            kept.append(line)
    return b"\n".join(kept) + b"\n"


@functools.lru_cache(maxsize=1)
def _served() -> tuple[bytes, str]:
    body = compact_script(script_source())
    return body, '"' + hashlib.sha256(body).hexdigest()[:20] + '"'


def script_reply(method: str, if_none_match: str | None = None) -> Reply:
    """The answer to ``GET {prefix}/instrumentor.js``: the script, 304 if cached, 405 otherwise.

    Args:
        method: The request's method (``GET`` and ``HEAD`` are served).
        if_none_match: The ``If-None-Match`` header, for a 304 when the script is unchanged.

    Raises:
        OSError: If the script is missing from the installed package
            (:meth:`TrackEndpoint.script <instrumentor.integrations.TrackEndpoint.script>`
            answers 404 then).
    """
    if method.upper() not in ("GET", "HEAD"):
        return Reply(405, b"", (("allow", "GET, HEAD"),))
    body, etag = _served()
    headers = (
        ("cache-control", f"public, max-age={_MAX_AGE}"),
        ("etag", etag),
        ("x-content-type-options", "nosniff"),
    )
    if if_none_match is not None and etag in (tag.strip() for tag in if_none_match.split(",")):
        return Reply(304, b"", headers)
    content_type = ("content-type", "text/javascript; charset=utf-8")
    return Reply(200, body, (content_type, *headers))
