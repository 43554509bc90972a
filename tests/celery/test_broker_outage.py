"""A broker that goes away for a while: the caller never waits, nothing is lost.

A throwaway ``redis-server`` (no persistence) is the broker. It is stopped after a first
delivery, 1,000 events are tracked while it is down (each a ``deque.append``: the destination's
thread is busy retrying the publish, the caller is not), then it comes back and everything
arrives once.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import instrumentor
from instrumentor import bound_context, configure, track
from instrumentor.transports import AccoilTransport, MemoryTransport
from tests.celery.conftest import RedisServer, Stack, wait_until
from tests.celery.worker_app import KEY
from tests.fault_server import FaultServer
from tests.plan import Events

pytestmark = pytest.mark.services


def test_events_tracked_while_the_broker_is_down_wait_in_the_queue(
    throwaway_redis: RedisServer, tmp_path: Path
) -> None:
    """Events tracked while the broker is down are queued, never dropped, and arrive once."""
    throwaway_redis.start()
    with FaultServer(status=202) as server:
        stack = Stack(throwaway_redis.url, server, tmp_path)
        try:
            stack.start_worker()
            memory = MemoryTransport()
            configure(
                transports=[memory, AccoilTransport(KEY, endpoint=server.url)],
                queue=stack.celery_queue,
            )
            with bound_context(user_id="u_1", account_id="acc_1", project_id="proj_1"):
                track(Events.REPORT_CREATED)
            assert server.wait_for(4, 60)  # the path works before the outage

            throwaway_redis.stop()
            before = instrumentor.stats()
            completed = 0
            with bound_context(user_id="u_1", account_id="acc_1", project_id="proj_1"):
                for i in range(1000):
                    track(Events.REPORT_CREATED, properties={"n": i})
                    completed += 1  # the call returned while the broker was down
            assert completed == 1000
            # Give the publishing thread time to meet the dead broker (and retry).
            assert wait_until(lambda: instrumentor.stats().get("delivery_retrying", 0) > 0, 30)
            stats = instrumentor.stats()
            # Everything was appended to the queue, nothing was published yet.
            assert stats["enqueued"] - before["enqueued"] == 1000, stats
            assert stats.get("delivered", 0) == before.get("delivered", 0), stats
            assert stats["queue_depth"] + stats.get("in_flight", 0) >= 999, stats
            # Counters are process-wide (earlier tests in this process count too): compare.
            dropped = {k: v - before.get(k, 0) for k, v in stats.items() if k.startswith("dropped")}
            assert not any(dropped.values()), stats
            assert stats.get("failed", 0) == before.get("failed", 0), stats

            throwaway_redis.start()  # same port; the worker and the publisher reconnect
            sent = [m.message_id for m in memory.messages]
            assert server.wait_for(len(sent), 120), (len(server.message_ids()), len(sent))
            assert sorted(server.message_ids()) == sorted(sent)
        finally:
            stack.close()
