"""The durable SQLite outbox, offline: an outage, a "restart", and nothing lost.

A tiny HTTP server on 127.0.0.1 plays a Segment-compatible provider. First it is down (503):
the events wait in the outbox file, and a new destination on the same file (as after a crash
or a deploy) delivers them once the provider is back.

    python examples/outbox.py
"""

from __future__ import annotations

import json
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import instrumentor
from instrumentor import EventRegistry, bound_context, event
from instrumentor.delivery import OutboxDestination, outbox_status
from instrumentor.transports import SegmentTransport


class Events(EventRegistry):
    """The plan of this example."""

    INVOICE_PAID = event("Invoice_Paid", category="billing")


class Provider(BaseHTTPRequestHandler):
    """Answers 503 while ``down`` is set, else 200; counts the messages it accepted."""

    down = threading.Event()
    accepted: ClassVar[list[str]] = []

    def do_POST(self) -> None:
        body: Any = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        status = 503 if self.down.is_set() else 200
        if status == 200:
            self.accepted.extend(m["messageId"] for m in body["batch"])
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


def destination(url: str, path: Path) -> OutboxDestination:
    """A Segment-compatible destination that queues through the outbox at ``path``."""
    return OutboxDestination(SegmentTransport("wk_example", endpoint=url), path=path, linger=0.05)


def main() -> None:
    """Track during an outage, "restart", deliver."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), Provider)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    path = Path(tempfile.mkdtemp()) / "analytics.db"

    Provider.down.set()
    first = destination(url, path)
    instrumentor.configure(transports=[first])
    for account in ("acc_1", "acc_2", "acc_3"):
        with bound_context(user_id="usr_1", account_id=account):
            Events.INVOICE_PAID.track()
    result = instrumentor.flush(1)
    print(f"provider down: pending={result.pending} in_outbox={result.in_outbox}")
    print(f"outbox: {outbox_status(path).pending} messages waiting")
    instrumentor.shutdown(0.5)  # the process "dies": the messages stay in the file

    Provider.down.clear()
    second = destination(url, path)  # a new process on the same file delivers at start
    result = second.flush(10)
    print(f"after the restart: pending={result.pending}")
    print(
        f"provider accepted {len(Provider.accepted)} messages, "
        f"{len(set(Provider.accepted))} distinct"
    )
    print(f"outbox: {outbox_status(path).pending} messages waiting")
    server.shutdown()


if __name__ == "__main__":
    main()
