"""A TCP proxy in front of a real broker that holds its first connection silent.

The first client to connect meets a broker that accepted the connection and then stopped
answering (its publish waits for its socket timeout); every later connection is forwarded to
the real broker. ``held`` is set once the first connection is being held.
"""

from __future__ import annotations

import contextlib
import socket
import threading


class HoldFirstProxy:
    """Listen on a free loopback port; hold the first connection, forward the others.

    Args:
        target: The real broker's ``(host, port)``.
    """

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.held = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._sockets: list[socket.socket] = []

    def start(self) -> HoldFirstProxy:
        threading.Thread(target=self._accept, name="proxy-accept", daemon=True).start()
        return self

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            self._sockets.append(client)
            if not self.held.is_set():
                self.held.set()  # accepted, never answered
                continue
            upstream = socket.create_connection(self.target)
            self._sockets.append(upstream)
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=_pipe, args=(source, sink), daemon=True).start()

    def close(self) -> None:
        for sock in [self._listener, *self._sockets]:
            with contextlib.suppress(OSError):
                sock.close()


def _pipe(source: socket.socket, sink: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)
