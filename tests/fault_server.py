"""A real HTTP server on loopback that stands in for an analytics provider and injects faults.

Delivery tests point a transport at :attr:`FaultServer.url` and program what the "provider"
does next: fail, answer slowly, drop or hold the connection, refuse connections for a while,
reject large bodies, or hold everything (a paused sink). Only requests answered 2xx count as
received, so a test proves "no message lost, none duplicated" by comparing
:meth:`FaultServer.message_ids` with the ids it sent::

    with FaultServer(status=202) as server:
        server.fail_next(2, 503, retry_after="1")
        server.drop_next(1)
        ...  # deliver through a transport pointed at server.url
        assert server.wait_for(len(sent), timeout=5)
        assert sorted(server.message_ids()) == sorted(sent)

Each request takes the next programmed fault, in the order programmed (one queue for
:meth:`~FaultServer.fail_next`, :meth:`~FaultServer.delay_next`, :meth:`~FaultServer.drop_next`
and :meth:`~FaultServer.hang_next`); the queued fault comes first, then the server's
standing rules (a body it cannot read is answered 400 or 415, a body over the size limit 413),
then the success status.

The server speaks HTTP/1.1 with keep-alive (so an httpx client reuses its connections),
always sends ``Content-Length``, reads request bodies by ``Content-Length`` or chunked
framing, and decompresses ``Content-Encoding: gzip`` bodies. Stdlib only.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import json
import socket
import socketserver
import sys
import threading
import time
import zlib
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Literal

__all__ = ["Fault", "FaultServer", "Received", "Request"]

HOST = "127.0.0.1"

Fault = Literal["fail", "delay", "drop", "hang", "too_large", "bad_request"]
"""What the server did out of the ordinary with a request (see :attr:`Request.fault`)."""

_POLL_INTERVAL = 0.02  # how long stopping the accept loop may take
_CLOSE_TIMEOUT = 1.0  # how long close() waits for the connection threads
_REBIND_TIMEOUT = 1.0  # how long refuse_for() keeps trying to listen again on the port
_MAX_LINE = 65536
_NO_BODY_STATUSES = frozenset({204, 304})


@dataclass(frozen=True)
class Request:
    """One request the server has seen, as a snapshot (a later snapshot may differ)."""

    index: int
    """Position in arrival order, from 0 (since the server started or was last reset)."""
    connection: int
    """Serial number of the TCP connection it came on: equal numbers mean a reused connection."""
    method: str
    path: str
    """The request target, query string included."""
    headers: Mapping[str, str]
    """Request headers, names lower-cased (repeated headers joined with ``", "``)."""
    body: bytes
    """The body after ``Content-Encoding`` was undone."""
    wire_size: int
    """Size of the body as sent (before decompression)."""
    json: Any
    """The body parsed as JSON, or ``None`` when the body is empty or not JSON."""
    message_ids: tuple[str, ...]
    """Every ``messageId`` in the body (the batch items' ids, or the single object's id), or
    the ``Idempotency-Key`` header of a single-message request."""
    fault: Fault | None = None
    """The fault injected or the rule applied: ``None`` for a plain answer."""
    status: int | None = None
    """The status answered; ``None`` if no answer was (or has yet been) sent: the request was
    dropped, hung, is still held, its client went away, or the server stopped first."""
    finished: bool = False
    """Whether the server is done with it: its answer is decided (and is being or has been
    sent) or it was given up. ``False`` while it is paused, delayed or hung."""

    @property
    def accepted(self) -> bool:
        """Whether it was answered 2xx (only those count as received)."""
        return self.status is not None and 200 <= self.status < 300


Received = Request
"""An accepted request (what :meth:`FaultServer.received` returns)."""


@dataclass(frozen=True)
class _Fail:
    status: int
    retry_after: str | None


@dataclass(frozen=True)
class _Delay:
    seconds: float


@dataclass(frozen=True)
class _Drop:
    pass


@dataclass(frozen=True)
class _Hang:
    pass


_Action = _Fail | _Delay | _Drop | _Hang

_FAULT_OF: dict[type[_Action], Fault] = {
    _Fail: "fail",
    _Delay: "delay",
    _Drop: "drop",
    _Hang: "hang",
}


class _BadRequestError(Exception):
    """The request cannot be read: answer ``status`` with ``reason``."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class FaultServer:
    """An HTTP server on ``127.0.0.1`` (ephemeral port) that plays a provider and injects faults.

    Use it as a context manager (or call :meth:`start` and :meth:`close`). Every method is
    thread-safe. Closing releases held requests without answering them, closes every
    connection and returns within about a second whatever the clients do.

    Args:
        status: The success status answered by default (200 like Segment, 202 like Accoil).
    """

    def __init__(self, *, status: int = 200) -> None:
        _check_status(status, low=200)
        self._initial_status = status
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        # Guards the listening socket, the accept loop and the re-listen timers. Taken before
        # self._lock when both are needed, never after.
        self._listen_lock = threading.Lock()
        self._records: list[Request] = []
        self._faults: deque[_Action] = deque()
        self._status = status
        self._max_body: int | None = None
        self._paused = False
        self._listening = False
        self._stopping = False
        self._errors: list[BaseException] = []
        self._httpd: _HTTPServer | None = None
        self._serve_thread: threading.Thread | None = None
        self._timers: list[threading.Timer] = []
        self._generation = 0
        self._port: int | None = None

    # -- life cycle ----------------------------------------------------------------------------

    def start(self) -> FaultServer:
        """Bind an ephemeral port on 127.0.0.1 and start serving (returns ``self``).

        Raises:
            RuntimeError: If the server was already started or closed.
        """
        with self._listen_lock:
            if self._httpd is not None or self._stopping:
                raise RuntimeError("a FaultServer can be started only once")
            httpd = _HTTPServer(self)
            self._httpd = httpd
            self._port = httpd.server_port
            self._serve(httpd)
        return self

    def close(self) -> None:
        """Stop: release held requests unanswered, close every connection and the socket.

        Idempotent; returns within about a second even with hung connections.
        """
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        threads: list[threading.Thread] = []
        with self._listen_lock:
            self._generation += 1
            timers, self._timers = self._timers, []
            for timer in timers:
                timer.cancel()
            threads.extend(timers)
            httpd = self._httpd
            if httpd is not None:
                self._stop_serving(httpd)
                httpd.socket.close()
                threads.extend(httpd.disconnect(idle_only=False, final=True))
        deadline = time.monotonic() + _CLOSE_TIMEOUT
        for thread in threads:
            if thread is not threading.current_thread():
                thread.join(max(0.0, deadline - time.monotonic()))

    def __enter__(self) -> FaultServer:
        if self._httpd is None:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def port(self) -> int:
        """The port the server listens on (the same one for its whole life)."""
        if self._port is None:
            raise RuntimeError("the FaultServer is not started")
        return self._port

    @property
    def url(self) -> str:
        """The base URL, ``http://127.0.0.1:PORT`` (no trailing slash)."""
        return f"http://{HOST}:{self.port}"

    @property
    def listening(self) -> bool:
        """Whether connections are accepted now (``False`` while refusing and once closed)."""
        with self._lock:
            return self._listening

    # -- what was seen -------------------------------------------------------------------------

    def requests(self) -> list[Request]:
        """Every request seen, faulted ones included, in arrival order."""
        with self._lock:
            return list(self._records)

    def received(self) -> list[Received]:
        """Every request answered 2xx, in arrival order."""
        with self._lock:
            return [record for record in self._records if record.accepted]

    def message_ids(self) -> list[str]:
        """The ``messageId`` of every message in the requests answered 2xx, in arrival order.

        Duplicates are kept: a message delivered twice appears twice.
        """
        with self._lock:
            return self._accepted_ids()

    def errors(self) -> list[BaseException]:
        """Unexpected exceptions raised while serving (bugs; a client going away is not one)."""
        with self._lock:
            return list(self._errors)

    @property
    def pending_faults(self) -> int:
        """How many programmed faults no request has taken yet."""
        with self._lock:
            return len(self._faults)

    def wait_for(self, count: int, timeout: float) -> bool:
        """Wait until :meth:`message_ids` has at least ``count`` entries.

        Returns:
            Whether it got there within ``timeout`` seconds.
        """
        with self._cond:
            return self._cond.wait_for(lambda: len(self._accepted_ids()) >= count, timeout)

    def wait_for_requests(self, count: int, timeout: float) -> bool:
        """Wait until at least ``count`` requests have arrived (answered or not).

        Returns:
            Whether they had within ``timeout`` seconds.
        """
        with self._cond:
            return self._cond.wait_for(lambda: len(self._records) >= count, timeout)

    def wait_idle(self, timeout: float) -> bool:
        """Wait until every request seen is finished (none paused, delayed or hung).

        Returns:
            Whether that happened within ``timeout`` seconds.
        """
        with self._cond:
            return self._cond.wait_for(
                lambda: all(record.finished for record in self._records), timeout
            )

    def wait_listening(self, timeout: float) -> bool:
        """Wait until the server accepts connections again (after :meth:`refuse_for`).

        Returns:
            Whether it does within ``timeout`` seconds.
        """
        with self._cond:
            return self._cond.wait_for(lambda: self._listening or self._stopping, timeout) and (
                self._listening
            )

    # -- faults --------------------------------------------------------------------------------

    def fail_next(self, n: int, status: int = 500, *, retry_after: str | None = None) -> None:
        """Answer the next ``n`` requests with ``status`` (4xx or 5xx), with ``Retry-After``."""
        _check_count(n)
        _check_status(status, low=400)
        self._queue(n, _Fail(status, retry_after))

    def delay_next(self, n: int, seconds: float) -> None:
        """Hold the next ``n`` requests for ``seconds``, then answer them as usual.

        A delayed request whose client has gone away by then (for example on a client
        timeout) is not answered and does not count as received.
        """
        _check_count(n)
        _check_seconds(seconds)
        self._queue(n, _Delay(seconds))

    def drop_next(self, n: int) -> None:
        """Close the connection of the next ``n`` requests without any response."""
        _check_count(n)
        self._queue(n, _Drop())

    def hang_next(self, n: int) -> None:
        """Never answer the next ``n`` requests: hold their connections until the server stops."""
        _check_count(n)
        self._queue(n, _Hang())

    def refuse_for(self, seconds: float) -> None:
        """Stop listening for ``seconds`` (connections are refused), then listen on the same port.

        Idle keep-alive connections are closed too, so a client cannot slip through on one;
        requests already being handled finish as programmed, closing their connection after.
        Calling it again while refusing restarts the period.
        """
        _check_seconds(seconds)
        with self._listen_lock:
            httpd = self._started()
            if self._stopping:
                raise RuntimeError("the FaultServer is closed")
            self._generation += 1
            for timer in self._timers:
                timer.cancel()
            self._timers = [timer for timer in self._timers if timer.is_alive()]
            self._stop_serving(httpd)
            httpd.disconnect(idle_only=True)
            timer = threading.Timer(seconds, self._listen_again, args=(self._generation,))
            timer.name = "fault-server-relisten"
            timer.daemon = True
            self._timers.append(timer)
            timer.start()

    def reject_larger_than(self, n_bytes: int | None) -> None:
        """Answer 413 to bodies larger than ``n_bytes`` once decompressed; ``None`` lifts it."""
        if n_bytes is not None and n_bytes < 0:
            raise ValueError(f"n_bytes must be >= 0 or None, not {n_bytes!r}")
        with self._lock:
            self._max_body = n_bytes

    def set_status(self, status: int) -> None:
        """Answer ``status`` from now on when no fault applies (2xx counts as received)."""
        _check_status(status, low=200)
        with self._lock:
            self._status = status

    def pause(self) -> None:
        """Hold every request (arrived or arriving) unanswered until :meth:`resume`."""
        with self._lock:
            self._paused = True

    def resume(self) -> None:
        """Release the requests held by :meth:`pause`; they then go on as programmed."""
        with self._cond:
            self._paused = False
            self._cond.notify_all()

    def reset(self) -> None:
        """Forget what was seen and programmed: records, queued faults, size limit, pause, status.

        Listens again at once if refusing. Hung requests stay hung until the server stops;
        :meth:`errors` are kept.
        """
        with self._listen_lock:
            if self._httpd is not None and not self._stopping and not self._listening:
                self._generation += 1
                for timer in self._timers:
                    timer.cancel()
                self._listen(self._httpd)
            with self._cond:
                self._records = []
                self._faults.clear()
                self._max_body = None
                self._status = self._initial_status
                self._paused = False
                self._cond.notify_all()

    # -- internals -----------------------------------------------------------------------------

    def _queue(self, n: int, action: _Action) -> None:
        with self._lock:
            self._faults.extend([action] * n)

    def _accepted_ids(self) -> list[str]:
        return [mid for record in self._records if record.accepted for mid in record.message_ids]

    def _started(self) -> _HTTPServer:
        if self._httpd is None:
            raise RuntimeError("the FaultServer is not started")
        return self._httpd

    def _serve(self, httpd: _HTTPServer) -> None:
        """Run the accept loop (``_listen_lock`` held, the socket listening)."""
        thread = threading.Thread(
            target=httpd.serve_forever,
            kwargs={"poll_interval": _POLL_INTERVAL},
            name="fault-server-accept",
            daemon=True,
        )
        thread.start()
        self._serve_thread = thread
        with self._cond:
            self._listening = True
            self._cond.notify_all()

    def _stop_serving(self, httpd: _HTTPServer) -> None:
        """Stop the accept loop and close the listening socket (``_listen_lock`` held)."""
        with self._cond:
            was_listening, self._listening = self._listening, False
            self._cond.notify_all()
        if was_listening and self._serve_thread is not None:
            httpd.shutdown()
            self._serve_thread.join()
            self._serve_thread = None
        httpd.socket.close()

    def _listen(self, httpd: _HTTPServer) -> None:
        """Bind the same port again and serve (``_listen_lock`` held)."""
        deadline = time.monotonic() + _REBIND_TIMEOUT
        while True:
            try:
                httpd.rebind()
                break
            except OSError as exc:
                if time.monotonic() >= deadline:
                    self._record_error(exc)
                    return
                time.sleep(0.02)
        self._serve(httpd)

    def _listen_again(self, generation: int) -> None:
        with self._listen_lock:
            if generation != self._generation or self._stopping or self._httpd is None:
                return
            self._listen(self._httpd)

    def _record_error(self, exc: BaseException) -> None:
        with self._lock:
            self._errors.append(exc)

    def _closes_connections(self) -> bool:
        """Whether answers should close their connection (refusing or stopping)."""
        with self._lock:
            return self._stopping or not self._listening


class _Connection:
    __slots__ = ("busy", "number", "thread")

    def __init__(self, number: int, thread: threading.Thread) -> None:
        self.number = number
        self.thread = thread
        self.busy = False


class _HTTPServer(ThreadingHTTPServer):
    """The stdlib server, with its connections tracked so they can be closed at will."""

    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True

    def __init__(self, owner: FaultServer) -> None:
        self.owner = owner
        # Guards the registry, and every shutdown/close of a connection socket, so that a
        # socket is never shut down after its descriptor was closed (and maybe reused).
        self._connections_lock = threading.Lock()
        self._connections: dict[socket.socket, _Connection] = {}
        self._connection_count = 0
        self._final = False
        super().__init__((HOST, 0), _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind would resolve the host name (socket.getfqdn): skip it.
        socketserver.TCPServer.server_bind(self)
        self.server_name = HOST
        self.server_port = self.socket.getsockname()[1]

    def rebind(self) -> None:
        """Listen again on the same address with a new socket (SO_REUSEADDR)."""
        self.socket = socket.socket(self.address_family, self.socket_type)
        try:
            self.server_bind()
            self.server_activate()
        except OSError:
            self.socket.close()
            raise

    def process_request(
        self, request: socket.socket | tuple[bytes, socket.socket], client_address: Any
    ) -> None:
        assert isinstance(request, socket.socket)
        thread = threading.Thread(
            target=self._serve_connection, args=(request, client_address), daemon=True
        )
        with self._connections_lock:
            if self._final:
                self.shutdown_request(request)
                return
            self._connection_count += 1
            thread.name = f"fault-server-connection-{self._connection_count}"
            self._connections[request] = _Connection(self._connection_count, thread)
        thread.start()

    def _serve_connection(self, request: socket.socket, client_address: Any) -> None:
        try:
            self.finish_request(request, client_address)
        except Exception:
            self.handle_error(request, client_address)
        finally:
            with self._connections_lock:
                self._connections.pop(request, None)
                self.shutdown_request(request)

    def handle_error(
        self, request: socket.socket | tuple[bytes, socket.socket], client_address: Any
    ) -> None:
        exc = sys.exc_info()[1]
        if exc is None or isinstance(exc, OSError):
            return  # the client went away, or the server shut the connection: expected
        self.owner._record_error(exc)

    def connection(self, request: socket.socket) -> _Connection | None:
        with self._connections_lock:
            return self._connections.get(request)

    def disconnect(self, *, idle_only: bool, final: bool = False) -> list[threading.Thread]:
        """Shut connections down (only those between requests if ``idle_only``).

        Returns:
            The threads serving the connections shut down.
        """
        threads = []
        with self._connections_lock:
            self._final = self._final or final
            for sock, connection in self._connections.items():
                if idle_only and connection.busy:
                    continue
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                threads.append(connection.thread)
        return threads


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: _HTTPServer
    request: socket.socket

    def log_message(self, format: str, *args: Any) -> None:
        """Keep the test output quiet."""

    def parse_request(self) -> bool:
        self._set_busy(True)
        return super().parse_request()

    def handle_one_request(self) -> None:
        try:
            super().handle_one_request()
        finally:
            self._set_busy(False)
            if self.server.owner._closes_connections():
                self.close_connection = True

    def _set_busy(self, busy: bool) -> None:
        connection = self.server.connection(self.request)
        if connection is not None:
            connection.busy = busy

    def do_POST(self) -> None:
        self._handle()

    def do_GET(self) -> None:
        self._handle()

    def do_PUT(self) -> None:
        self._handle()

    def do_PATCH(self) -> None:
        self._handle()

    def do_DELETE(self) -> None:
        self._handle()

    # -- one request ---------------------------------------------------------------------------

    def _handle(self) -> None:
        owner = self.server.owner
        problem: _BadRequestError | None = None
        try:
            raw = self._read_body()
        except _BadRequestError as exc:  # framing we cannot follow: answer, then close
            raw, problem = b"", exc
            self.close_connection = True
        except (EOFError, OSError):  # the client went away mid-body
            self.close_connection = True
            return
        body = raw
        payload: Any = None
        if problem is None:
            try:
                body = _decode(raw, self.headers.get("Content-Encoding", ""))
                payload = json.loads(body) if body.strip() else None
            except _BadRequestError as exc:
                problem = exc
            except ValueError:
                problem = _BadRequestError(400, "the body is not JSON")
        connection = self.server.connection(self.request)
        headers: dict[str, str] = {}
        for name, value in self.headers.items():
            key = name.lower()
            headers[key] = f"{headers[key]}, {value}" if key in headers else str(value)

        with owner._cond:
            records = owner._records
            index = len(records)
            action = owner._faults.popleft() if owner._faults else None
            records.append(
                Request(
                    index=index,
                    connection=connection.number if connection is not None else 0,
                    method=self.command,
                    path=self.path,
                    headers=headers,
                    body=body,
                    wire_size=len(raw),
                    json=payload,
                    message_ids=_message_ids(payload, headers) if problem is None else (),
                    fault=_FAULT_OF[type(action)] if action is not None else None,
                )
            )
            owner._cond.notify_all()
        try:
            self._respond(owner, records, index, action, problem)
        finally:
            with owner._cond:
                records[index] = dataclasses.replace(records[index], finished=True)
                owner._cond.notify_all()

    def _respond(
        self,
        owner: FaultServer,
        records: list[Request],
        index: int,
        action: _Action | None,
        problem: _BadRequestError | None,
    ) -> None:
        with owner._cond:
            owner._cond.wait_for(lambda: not owner._paused or owner._stopping)
            if isinstance(action, _Hang):
                owner._cond.wait_for(lambda: owner._stopping)
            elif isinstance(action, _Delay):
                owner._cond.wait_for(lambda: owner._stopping, action.seconds)
                owner._cond.wait_for(lambda: not owner._paused or owner._stopping)
            if owner._stopping or isinstance(action, (_Drop, _Hang)):
                self.close_connection = True
                return
            extra: dict[str, str] = {}
            fault = records[index].fault
            if isinstance(action, _Fail):
                status, reason = action.status, "injected failure"
                if action.retry_after is not None:
                    extra["Retry-After"] = action.retry_after
            elif problem is not None:
                status, reason, fault = problem.status, problem.reason, fault or "bad_request"
            elif owner._max_body is not None and len(records[index].body) > owner._max_body:
                status, reason, fault = 413, "payload too large", fault or "too_large"
            else:
                status, reason = owner._status, ""
            if self._client_gone():
                self.close_connection = True
                return
            records[index] = dataclasses.replace(
                records[index], status=status, fault=fault, finished=True
            )
            if owner._stopping or not owner._listening:
                self.close_connection = True
            owner._cond.notify_all()
        answer: dict[str, Any] = {"success": True} if 200 <= status < 300 else {"error": reason}
        self._send(status, answer, extra)

    def _send(self, status: int, answer: Mapping[str, Any], extra: Mapping[str, str]) -> None:
        content = b"" if status in _NO_BODY_STATUSES else json.dumps(answer).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            if status not in _NO_BODY_STATUSES:
                self.send_header("Content-Length", str(len(content)))
            for name, value in extra.items():
                self.send_header(name, value)
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            if content:
                self.wfile.write(content)
        except OSError:
            self.close_connection = True

    def _client_gone(self) -> bool:
        """Whether the client closed its end (it timed out, say) while the request was held."""
        sock = self.request
        timeout = sock.gettimeout()
        try:
            sock.settimeout(0.0)
            return sock.recv(1, socket.MSG_PEEK) == b""
        except BlockingIOError:
            return False
        except OSError:
            return True
        finally:
            with contextlib.suppress(OSError):
                sock.settimeout(timeout)

    def _read_body(self) -> bytes:
        transfer_encoding = self.headers.get("Transfer-Encoding", "").strip().lower()
        if transfer_encoding:
            if transfer_encoding != "chunked":
                raise _BadRequestError(501, f"unsupported Transfer-Encoding {transfer_encoding!r}")
            return self._read_chunked()
        length = self.headers.get("Content-Length")
        if length is None:
            return b""
        try:
            size = int(length)
        except ValueError:
            raise _BadRequestError(400, f"invalid Content-Length {length!r}") from None
        if size < 0:
            raise _BadRequestError(400, f"invalid Content-Length {length!r}")
        return self._read_exact(size)

    def _read_chunked(self) -> bytes:
        parts: list[bytes] = []
        while True:
            line = self._read_line()
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise _BadRequestError(400, "invalid chunk size") from None
            if size == 0:
                while self._read_line().strip():  # trailers, up to the empty line
                    pass
                return b"".join(parts)
            parts.append(self._read_exact(size))
            self._read_line()

    def _read_line(self) -> bytes:
        line = self.rfile.readline(_MAX_LINE + 1)
        if not line:
            raise EOFError
        if len(line) > _MAX_LINE:
            raise _BadRequestError(400, "line too long")
        return line

    def _read_exact(self, size: int) -> bytes:
        data = self.rfile.read(size)
        if len(data) < size:
            raise EOFError
        return data


def _decode(raw: bytes, content_encoding: str) -> bytes:
    encoding = content_encoding.strip().lower()
    if encoding in ("", "identity"):
        return raw
    if encoding in ("gzip", "x-gzip"):
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError, zlib.error):
            raise _BadRequestError(400, "the body is not valid gzip") from None
    raise _BadRequestError(415, f"unsupported Content-Encoding {encoding!r}")


def _message_ids(payload: Any, headers: Mapping[str, str]) -> tuple[str, ...]:
    """The batch items' ``messageId``s, or the one of a single-message request.

    Accoil's calls carry no id in the body; the transport sends it as ``Idempotency-Key``.
    """
    key = headers.get("idempotency-key")
    if key is not None and not (isinstance(payload, dict) and "batch" in payload):
        return (key,)
    if isinstance(payload, dict):
        batch = payload.get("batch")
        items = batch if isinstance(batch, list) else [payload]
    elif isinstance(payload, list):
        items = payload
    else:
        return ()
    return tuple(
        item["messageId"]
        for item in items
        if isinstance(item, dict) and isinstance(item.get("messageId"), str)
    )


def _check_count(n: int) -> None:
    if n < 1:
        raise ValueError(f"n must be >= 1, not {n!r}")


def _check_seconds(seconds: float) -> None:
    if not seconds >= 0:
        raise ValueError(f"seconds must be >= 0, not {seconds!r}")


def _check_status(status: int, *, low: int) -> None:
    if not low <= status <= 599:
        raise ValueError(f"status must be between {low} and 599, not {status!r}")
