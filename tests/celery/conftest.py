"""Real brokers and real Celery worker processes for the Celery tests.

Every test gets its own queue names (``it-<random>.*``), a loopback :class:`FaultServer` as the
provider, and, when it asks for one, a worker process (``python -m celery ... worker
--pool=solo``) that delivers to that server. A broker that is not reachable skips the test
with the reason (a failure under CI=true, see tests/conftest.py).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import instrumentor
from instrumentor import bound_context, configure, track
from instrumentor.celery import CeleryQueue
from instrumentor.transports import AccoilTransport, MemoryTransport
from tests.celery.worker_app import KEY, make_app
from tests.fault_server import FaultServer
from tests.plan import Events
from tests.support import ROOT

BROKERS = {
    "redis": "redis://127.0.0.1:6379/13",
    "rabbitmq": "amqp://guest:guest@127.0.0.1:5672//",
}


def reachable(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1.0):
        return True
    return False


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_until(condition: Any, timeout: float, interval: float = 0.05) -> bool:
    """Poll ``condition()`` until it is true or ``timeout`` seconds have passed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return bool(condition())


class Worker:
    """A real Celery worker process of the tests' app (``tests.celery.worker_app``).

    By default it consumes the delivery and task queues of ``prefix`` with the solo pool;
    ``queues`` chooses others, ``pool="prefork"`` runs one child process, ``env`` adds
    ``TEST_CELERY_*`` switches (see the worker app).
    """

    def __init__(
        self,
        broker: str,
        prefix: str,
        provider: str,
        log: Path,
        *,
        queues: str | None = None,
        pool: str = "solo",
        env: dict[str, str] | None = None,
    ) -> None:
        self.log_path = log
        clean = {k: v for k, v in os.environ.items() if not k.startswith("ANALYTICS_")}
        clean.update(
            TEST_CELERY_BROKER=broker, TEST_CELERY_PREFIX=prefix, TEST_CELERY_PROVIDER=provider
        )
        clean.update(env or {})
        concurrency = ["--concurrency", "1"] if pool == "prefork" else []
        with log.open("w") as out:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "celery",
                    "-A",
                    "tests.celery.worker_app",
                    "worker",
                    f"--pool={pool}",
                    *concurrency,
                    "-Q",
                    queues or f"{prefix}.deliver,{prefix}.tasks",
                    "--without-heartbeat",
                    "--without-gossip",
                    "--without-mingle",
                    "--loglevel=INFO",
                    "--hostname",
                    f"{prefix}-{uuid.uuid4().hex[:6]}@%h",
                ],
                cwd=ROOT,
                env=clean,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = 60) -> None:
        ready = wait_until(
            lambda: " ready." in self.log() or self.process.poll() is not None, timeout
        )
        assert ready, f"the worker did not start:\n{self.log()}"
        assert self.process.poll() is None, f"the worker exited:\n{self.log()}"

    def wait_log(self, text: str, timeout: float = 60) -> None:
        """Wait until the worker's log says ``text``."""
        assert wait_until(lambda: text in self.log(), timeout), (text, self.log())

    def children(self) -> list[int]:
        """The pool's child processes (prefork)."""
        found = subprocess.run(
            ["pgrep", "-P", str(self.process.pid)], capture_output=True, text=True, check=False
        )
        return [int(pid) for pid in found.stdout.split()]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()  # warm shutdown: finishes the task at hand
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


class Stack:
    """One test's world: broker URL, queue prefix, provider server, web-side app and queue."""

    def __init__(self, broker: str, server: FaultServer, tmp: Path) -> None:
        self.broker = broker
        self.server = server
        self.tmp = tmp
        self.prefix = f"it-{uuid.uuid4().hex[:12]}"
        self.app, self.queue = make_app(broker, self.prefix)
        self.workers: list[Worker] = []

    @property
    def celery_queue(self) -> CeleryQueue:
        return self.queue

    def start_worker(
        self,
        *,
        queues: str | None = None,
        pool: str = "solo",
        env: dict[str, str] | None = None,
        ready: bool = True,
    ) -> Worker:
        worker = Worker(
            self.broker,
            self.prefix,
            self.server.url,
            self.tmp / f"worker-{len(self.workers)}.log",
            queues=queues,
            pool=pool,
            env=env,
        )
        self.workers.append(worker)
        if ready:
            worker.wait_ready()
        return worker

    def waiting(self, suffix: str) -> int:
        """Messages waiting (ready, not held by a consumer) on the queue ``<prefix>.<suffix>``."""
        with self.app.connection_for_write() as connection:
            bound = self.app.amqp.queues[f"{self.prefix}.{suffix}"](connection.default_channel)
            bound.declare()
            return int(bound.queue_declare().message_count)

    def close(self) -> None:
        instrumentor.shutdown(2.0)
        for worker in self.workers:
            worker.stop()
        with contextlib.suppress(Exception), self.app.connection_for_write() as connection:
            for suffix in ("deliver", "tasks", "dead"):
                name = f"{self.prefix}.{suffix}"
                self.app.amqp.queues[name](connection.default_channel).delete()


def broker_stack(name: str, tmp_path: Path) -> Iterator[Stack]:
    """A Stack on broker ``name`` (skipped with the reason when the broker is not running)."""
    port = 6379 if name == "redis" else 5672
    if not reachable(port):
        pytest.skip(f"{name} is not reachable on 127.0.0.1:{port}; start it to run this test")
    with FaultServer(status=202) as server:
        running = Stack(BROKERS[name], server, tmp_path)
        try:
            yield running
        finally:
            running.close()


@pytest.fixture(params=sorted(BROKERS))
def stack(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Stack]:
    """A Stack on each broker."""
    yield from broker_stack(request.param, tmp_path)


@pytest.fixture
def rabbitmq_stack(tmp_path: Path) -> Iterator[Stack]:
    """A Stack on RabbitMQ only (for what only RabbitMQ can show)."""
    yield from broker_stack("rabbitmq", tmp_path)


@pytest.fixture
def redis_stack(tmp_path: Path) -> Iterator[Stack]:
    """A Stack on Redis only."""
    yield from broker_stack("redis", tmp_path)


def web_side(stack: Stack) -> MemoryTransport:
    """Configure this process to publish to the stack's broker; the memory copy sees the ids."""
    memory = MemoryTransport()
    configure(
        transports=[memory, AccoilTransport(KEY, endpoint=stack.server.url)],
        queue=stack.celery_queue,
    )
    return memory


def track_events(count: int, users: int = 3) -> None:
    for i in range(count):
        with bound_context(user_id=f"u_{i % users}", account_id="acc_1", project_id="proj_1"):
            track(Events.REPORT_CREATED, properties={"n": i})


class RedisServer:
    """A throwaway redis-server on its own port, without persistence: stop it and start it."""

    def __init__(self, tmp: Path) -> None:
        self.port = free_port()
        self.tmp = tmp
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        assert binary is not None
        self.process = subprocess.Popen(
            [
                *(binary, "--port", str(self.port), "--bind", "127.0.0.1"),
                *("--save", "", "--appendonly", "no", "--dir", str(self.tmp)),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        assert wait_until(lambda: reachable(self.port), 10), "redis-server did not start"

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
        self.process = None


@pytest.fixture
def throwaway_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server the test can stop and start (skipped when redis-server is not installed)."""
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed; install it to run the broker-outage test")
    server = RedisServer(tmp_path)
    try:
        yield server
    finally:
        server.stop()
