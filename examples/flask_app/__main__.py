"""Run the example: ``python -m examples.flask_app [--host 127.0.0.1] [--port 8000]``.

``--port 0`` picks a free port; the first line printed is ``listening on http://HOST:PORT``.
SIGTERM stops it gracefully (instrumentor's exit flush runs). ``flask --app
examples.flask_app.app run`` works too.
"""

from __future__ import annotations

import argparse
import signal
import threading
from typing import Any

from werkzeug.serving import make_server

from examples.flask_app.app import app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    server = make_server(args.host, args.port, app, threaded=True)
    print(f"listening on http://{args.host}:{server.server_port}", flush=True)

    def stop(*_: Any) -> None:  # shutdown() waits for serve_forever: not from its own thread
        threading.Thread(target=server.shutdown).start()

    signal.signal(signal.SIGTERM, stop)
    server.serve_forever()


if __name__ == "__main__":
    main()
