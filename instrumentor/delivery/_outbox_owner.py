"""Who holds an outbox lease, and whether that holder is provably gone.

A lease owner is ``host|boot|pidns|pid|start|nonce``: the host name, the kernel's boot id, the
PID namespace, the process id and its start time (``/proc/<pid>/stat`` field 22), and a random
nonce per store. A lease is freed early (before it expires) only when its owner is provably dead:

* same host and a different boot id: the machine restarted, every process of then is gone;
* same host, boot and PID namespace, and the pid is gone or now belongs to a process that
  started at another time (pid reuse).

Anything else (another host, another PID namespace such as another container, this process, an
owner written by an older version) is left alone until the lease expires: a live lease is
never taken away. Where ``/proc`` does not exist (macOS), boot id, namespace and start time are
empty and only "the pid is gone" counts.
"""

from __future__ import annotations

import os
import socket
import uuid

__all__ = ["new_owner", "owner_is_dead"]

_SEPARATOR = "|"


def _read(path: str) -> str:
    try:
        with open(path, encoding="ascii", errors="replace") as file:
            return file.read().strip()
    except OSError:
        return ""


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot; ``""`` without /proc, None if gone."""
    if not os.path.isdir("/proc/self"):
        return ""
    stat = _read(f"/proc/{pid}/stat")
    if not stat:
        return None
    fields = stat.rpartition(")")[2].split()  # the name (field 2) may hold spaces and ")"
    return fields[19] if len(fields) > 19 else ""


def _namespace() -> str:
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""


def _here() -> tuple[str, str, str]:
    return (
        socket.gethostname().replace(_SEPARATOR, "_"),
        _read("/proc/sys/kernel/random/boot_id"),
        _namespace(),
    )


def new_owner() -> str:
    """A lease owner string for this process, unique to the caller (a fresh nonce)."""
    host, boot, namespace = _here()
    pid = os.getpid()
    start = _start_time(pid) or ""
    return _SEPARATOR.join((host, boot, namespace, str(pid), start, uuid.uuid4().hex[:12]))


def owner_is_dead(owner: str) -> bool:
    """Whether the process that wrote ``owner`` is provably gone (see the module's rules)."""
    parts = owner.split(_SEPARATOR)
    if len(parts) != 6:
        return False  # an older or foreign format: wait for the lease to expire
    host, boot, namespace, pid_text, start, _ = parts
    here_host, here_boot, here_namespace = _here()
    if host != here_host or not pid_text.isdigit():
        return False
    if boot and here_boot and boot != here_boot:
        return True
    if boot != here_boot or namespace != here_namespace:
        return False
    pid = int(pid_text)
    now = _start_time(pid)
    if now is None:
        return True  # no such process
    if now == "" or start == "":
        return pid != os.getpid() and not _alive(pid)
    return now != start  # the pid was reused by a younger process


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True
