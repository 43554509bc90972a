"""Attribution: does every track land on the right groups, and what does it cost in requests?

A simulated product: 2,000 users in 100 accounts, each account with 3 workspaces of 4 projects
(account > workspace > project). Activity is Zipf-distributed over users. Before each event a
user may switch project (5%), switch workspace (2%) or see his plan change (1%, free/pro cycles,
so traits also change *back*). Events are at the project (60%), workspace (25%) or account (15%)
level.

Every event goes through ``@tracks``-equivalent ``track()`` with a real ``AccoilTransport``
(v2) to a loopback HTTP server, through the default queue. The captured requests are then
replayed through Accoil's membership rule: a track belongs to the groups its user was last
linked to at each level (by an identify's ``groupId`` for the account, and by group calls
carrying the ``userId``); the event name gives its level, as the plan does for Accoil. The
replayed groups are compared with the truth (the groups bound when the event happened).

Contenders, run one after the other in one process with the same events:

* ``membership (default)``: instrumentor's defaults (``bundle_ttl=3600``).
* ``naive (bundle_ttl=0)``: identify + every group call of the path + the track, every time:
  what the seed did before de-duplication, and what a stateless integration does.

Reported per contender: attribution accuracy (goal 100%), HTTP requests per tracked event
(goal <= 1.3 for the default; the naive form costs up to 5) and the bundle state's memory per
remembered user (allocations made in ``instrumentor/_bundle.py`` still alive after the run,
measured with ``tracemalloc``).

    python benchmarks/bench_attribution.py [--events N] [--users N] [--seed S]
"""

from __future__ import annotations

import argparse
import bisect
import gc
import itertools
import json
import random
import threading
import time
import tracemalloc
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import instrumentor
from instrumentor import EventRegistry, _state, bound_context, event, track
from instrumentor.transports import AccoilTransport

LEVELS = ("account", "workspace", "project")
GOAL_ACCURACY = 1.0
GOAL_REQUESTS_PER_EVENT = 1.3


class Events(EventRegistry):
    TASK_COMPLETED = event("Task_Completed", category="core_value", group_level="project")
    WORKSPACE_RENAMED = event(
        "Workspace_Renamed", category="configuration", group_level="workspace"
    )
    PLAN_VIEWED = event("Plan_Viewed", category="billing", group_level="account")


LEVEL_OF = {member.routing.name: member.routing.level for member in Events}
EVENT_MIX = ((Events.TASK_COMPLETED, 0.60), (Events.WORKSPACE_RENAMED, 0.25))


@dataclass
class User:
    """One simulated user: where he is now, and his plan."""

    user_id: str
    account: int
    workspace: int
    project: int
    plan: str = "free"

    def groups(self) -> dict[str, str]:
        ws = f"ws_{self.account}_{self.workspace}"
        return {
            "account": f"acc_{self.account}",
            "workspace": ws,
            "project": f"proj_{self.account}_{self.workspace}_{self.project}",
        }


@dataclass
class Step:
    """One event of the script: who, which event, and the truth at that moment."""

    user: str
    event: Any
    groups: dict[str, str]
    plan: str


def script(events: int, users: int, seed: int) -> list[Step]:
    """The same sequence of switches, trait changes and events for every contender."""
    rng = random.Random(seed)
    people = [
        User(f"usr_{i}", account=i % 100, workspace=rng.randrange(3), project=rng.randrange(4))
        for i in range(users)
    ]
    weights = list(itertools.accumulate(1.0 / (rank + 1) ** 1.1 for rank in range(users)))
    steps: list[Step] = []
    for _ in range(events):
        person = people[bisect.bisect_left(weights, rng.random() * weights[-1])]
        roll = rng.random()
        if roll < 0.02:
            person.workspace, person.project = rng.randrange(3), rng.randrange(4)
        elif roll < 0.07:
            person.project = rng.randrange(4)
        if rng.random() < 0.01:
            person.plan = "pro" if person.plan == "free" else "free"
        pick, chosen = rng.random(), Events.PLAN_VIEWED
        for member, share in EVENT_MIX:
            if pick < share:
                chosen = member
                break
            pick -= share
        steps.append(Step(person.user_id, chosen, person.groups(), person.plan))
    return steps


@dataclass
class Capture:
    """The requests the loopback ingress accepted, in arrival order."""

    requests: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


@contextmanager
def ingress() -> Iterator[tuple[str, Capture]]:
    """A loopback stand-in for in.accoil.com that records every request and answers 202."""
    capture = Capture()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with capture.lock:
                capture.requests.append((self.path, body))
            self.send_response(202)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", capture
    finally:
        server.shutdown()
        server.server_close()


def replay(requests: list[tuple[str, dict[str, Any]]]) -> list[tuple[str, dict[str, str]]]:
    """Each track with the groups Accoil credits it to: the user's last links, by membership."""
    links: dict[str, dict[str, str]] = {}
    credited: list[tuple[str, dict[str, str]]] = []
    for path, body in requests:
        user: str | None = body.get("userId")
        if user is None:  # an account-only group call: it links nobody
            continue
        if path == "/v2/identify" and "groupId" in body:
            links.setdefault(user, {})["account"] = body["groupId"]
        elif path == "/v2/group":
            level = body.get("traits", {}).get("group_type")
            links.setdefault(user, {})[level] = body["groupId"]
        elif path == "/v2/track":
            credited.append((user, dict(links.get(user, {}))))
    return credited


def accuracy(steps: list[Step], credited: list[tuple[str, dict[str, str]]]) -> float:
    """The share of tracks credited to exactly the groups bound when they happened."""
    by_user: dict[str, list[dict[str, str]]] = {}
    for user, groups in credited:
        by_user.setdefault(user, []).append(groups)
    right = 0
    seen: dict[str, int] = {}
    for step in steps:
        index = seen.get(step.user, 0)
        seen[step.user] = index + 1
        replayed = by_user.get(step.user, [])
        got = replayed[index] if index < len(replayed) else {}
        path = LEVELS[: LEVELS.index(step.event.routing.level) + 1]
        right += all(got.get(level) == step.groups[level] for level in path)
    return right / len(steps)


def per_event_requests(steps: list[Step], requests: list[tuple[str, dict[str, Any]]]) -> list[int]:
    """How many requests each step cost: its track and the calls sent just before it.

    A destination keeps each user's calls in order, so a user's calls up to his k-th track
    belong to his k-th event.
    """
    queues: dict[str, list[int]] = {}
    pending: dict[str, int] = {}
    for path, body in requests:
        user = body.get("userId") or ""
        pending[user] = pending.get(user, 0) + 1
        if path == "/v2/track":
            queues.setdefault(user, []).append(pending.pop(user))
    taken: dict[str, int] = {}
    costs: list[int] = []
    for step in steps:
        index = taken.get(step.user, 0)
        taken[step.user] = index + 1
        costs.append(queues[step.user][index] if index < len(queues.get(step.user, [])) else 0)
    return costs


def bundle_bytes() -> int:
    """Bytes allocated in instrumentor/_bundle.py and still alive (the bundle state)."""
    snapshot = tracemalloc.take_snapshot().filter_traces(
        [tracemalloc.Filter(True, "*instrumentor/_bundle.py")]
    )
    return sum(stat.size for stat in snapshot.statistics("filename"))


def play(steps: list[Step]) -> None:
    """Track every step with its user's identity bound, as a request would."""
    for step in steps:
        with bound_context(
            user_id=step.user,
            user_traits={"plan": step.plan},
            account_id=step.groups["account"],
            workspace_id=step.groups["workspace"],
            project_id=step.groups["project"],
        ):
            track(step.event)


class Discard:
    """A transport that drops everything, delivered inline (no queue, no thread)."""

    inline = True

    def deliver(self, batch: Any) -> None:
        pass

    def close(self) -> None:
        pass


def memory(steps: list[Step], **settings: Any) -> tuple[int, float]:
    """Users remembered and bytes per user of the bundle state after ``steps`` (no delivery).

    A separate pass, because tracing allocations slows everything down: the emissions go to
    a receiver that drops them, and what stays allocated in ``_bundle.py`` is the state.
    """

    gc.collect()
    tracemalloc.start()
    instrumentor.configure(transports=[Discard()], strict=True, **settings)
    play(steps)
    runtime = _state.current()
    state = runtime.bundles if runtime is not None else None
    users = state.remembered() if state is not None else 0
    state_bytes = bundle_bytes()
    tracemalloc.stop()
    return users, state_bytes / users if users else 0.0


def run(name: str, steps: list[Step], **settings: Any) -> dict[str, Any]:
    """Play ``steps`` through instrumentor with ``settings``; measure what Accoil received."""
    users, per_user = memory(steps, **settings)
    with ingress() as (url, capture):
        instrumentor.configure(
            transports=[AccoilTransport("bench_key", endpoint=url)], strict=True, **settings
        )
        started = time.perf_counter()
        play(steps)
        result = instrumentor.flush(120)
        seconds = time.perf_counter() - started
        requests = list(capture.requests)
    tracks = sum(1 for path, _ in requests if path == "/v2/track")
    costs = per_event_requests(steps, requests)
    later = costs[len(costs) // 2 :]
    return {
        "later half": sum(later) / len(later),
        "contender": name,
        "events": len(steps),
        "tracks received": tracks,
        "pending": result.pending,
        "accuracy": accuracy(steps, replay(requests)),
        "requests/event": len(requests) / len(steps),
        "users remembered": users,
        "bytes/user": per_user,
        "seconds": seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--users", type=int, default=2_000)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    steps = script(args.events, args.users, args.seed)
    rows = [
        run("membership (default)", steps),
        run("naive (bundle_ttl=0)", steps, bundle_ttl=0),
    ]
    print(f"{args.events:,} events, {args.users:,} users, seed {args.seed}\n")
    print(
        "| contender | accuracy | HTTP requests / event | the same, later half of the events "
        "| users remembered | bytes / user |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for row in rows:
        print(
            f"| {row['contender']} | {row['accuracy']:.2%} | {row['requests/event']:.3f} "
            f"| {row['later half']:.3f} | {row['users remembered']:,} | {row['bytes/user']:,.0f} |"
        )
        if row["tracks received"] != row["events"] or row["pending"]:
            print(f"  ! {row['contender']}: {row['tracks received']} tracks received")
    default = rows[0]
    print()
    for label, ok in (
        (f"accuracy {default['accuracy']:.2%} (goal 100%)", default["accuracy"] >= GOAL_ACCURACY),
        (
            f"requests/event {default['requests/event']:.3f} (goal <= {GOAL_REQUESTS_PER_EVENT})",
            default["requests/event"] <= GOAL_REQUESTS_PER_EVENT,
        ),
    ):
        print(f"{'PASS' if ok else 'MISS'}: {label}")


if __name__ == "__main__":
    main()
