"""Queued delivery to Accoil's ingress API, pointed at a local stand-in server.

Runs offline: a tiny HTTP server on 127.0.0.1 plays Accoil (it answers 202 to everything, as
Accoil does) and prints what it receives. Point ``endpoint`` at https://in.accoil.com (the
default) and use your real key to send for real.

    python examples/accoil_local.py
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import instrumentor
from instrumentor import EventRegistry, bound_context, event, tracks
from instrumentor.delivery import Destination
from instrumentor.transports import AccoilTransport


class Events(EventRegistry):
    """The plan of this example."""

    DASHBOARD_SHARED = event("Dashboard_Shared", category="collaboration", group_level="workspace")


PRINT_LOCK = threading.Lock()


class FakeAccoil(BaseHTTPRequestHandler):
    """Answers 202 Accepted, like Accoil, and prints each call."""

    def do_POST(self) -> None:
        body: Any = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        auth = "yes" if self.headers.get("Authorization", "").startswith("Basic ") else "no"
        with PRINT_LOCK:  # users are delivered in parallel: keep lines whole
            print(f"  {self.path}  auth={auth}  {json.dumps(body, sort_keys=True)}", flush=True)
        self.send_response(202)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@tracks(Events.DASHBOARD_SHARED)
def share_dashboard(dashboard_id: str) -> str:
    """Business code."""
    return dashboard_id


def main() -> None:
    """Deliver a few events to the local stand-in and show the delivery counters."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeAccoil)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    transport = AccoilTransport("sk_example_not_real", endpoint=url, max_in_flight=4)
    instrumentor.configure(transports=[Destination(transport, linger=0.05)])
    print(f"delivering to {url}:")
    for user in ("usr_1", "usr_2"):
        with bound_context(user_id=user, account_id="acc_1", workspace_id="ws_1"):
            share_dashboard("dash_9")
    result = instrumentor.flush(5)
    print(f"flush: delivered={result.delivered} pending={result.pending}")
    stats = instrumentor.stats()
    print(f"stats: enqueued={stats['enqueued']} delivered={stats['delivered']}")
    server.shutdown()


if __name__ == "__main__":
    main()
