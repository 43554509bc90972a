"""The FastAPI and Flask examples in debug mode: the server prints the event with its identity."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.integrations.servers import App


@pytest.mark.parametrize("example", ["examples.fastapi_app", "examples.flask_app"])
def test_debug_output_shows_the_server_side_identity(example: str) -> None:
    """In debug mode the example apps print each track with the server's user and group."""
    app = App(example, ANALYTICS_DEBUG="true")
    try:
        with httpx.Client(base_url=app.url, follow_redirects=True) as http:
            assert http.get("/login", params={"user": "usr_1"}).status_code == 200
            track = http.post("/analytics/track", json={"event": "Filter_Applied"})
            refused = http.post("/analytics/track", json={"event": "Dashboard_Exported"})
            exported = http.post("/dashboards/export")
        assert (track.status_code, refused.status_code, exported.status_code) == (202, 422, 200)
    finally:
        err = app.stop()
    tracks = [
        json.loads(line.split(": ", 1)[1])
        for line in err.splitlines()
        if line.startswith("[instrumentor debug] track:")
    ]
    assert [(t["event"], t["userId"], t["context"]["groupId"]) for t in tracks] == [
        ("Filter_Applied", "usr_1", "ws_1"),
        ("Dashboard_Exported", "usr_1", "ws_1"),
    ]
