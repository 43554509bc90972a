"""The lint cache: each file's scan, by its bytes, so that an unchanged file is not parsed again.

One cache file per project (its root and the working directory), in the user's cache folder
(:func:`cache_dir`), holds an entry per linted file: the hash of the bytes that were scanned,
how the file was seen (its shown path, whether it is in the analytics package, its module name)
and what the scan found (findings, plan references, suppressions). The file also records the
*fingerprint* of everything else a scan depends on (the plan's registries and members, the
analytics package's hint, the project's top-level modules, instrumentor's version and lint code,
the Python version); a different fingerprint discards every entry. Rules that look across files
(``unused-event``, suppressions left unused) are never cached: they run on every invocation
over the cached and fresh scans alike, so the output is the same with or without the cache.

Safe by construction: a cache file is written whole to a temporary file then renamed over the
old one (two runs at once each leave a complete file), carries a hash of its contents (a
truncated, corrupt or hand-edited file is ignored, as is one that cannot be read or decoded),
and any failure to create or write the folder is ignored (the lint runs without it). Only the
lint process reads and writes it, never its ``--jobs`` workers. Entries not used for
:data:`MAX_AGE_DAYS` days are dropped, and so are cache files.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import instrumentor
from instrumentor.cli._common import Finding
from instrumentor.cli._files import FileScan, ScanJob, Task, content_digest, scan_files
from instrumentor.cli._index import ModuleScan
from instrumentor.cli._suppress import Suppression

__all__ = ["ENV_VAR", "MAX_AGE_DAYS", "LintCache", "cache_dir", "scan_cached"]

#: Overrides the folder of instrumentor's cache (the lint cache is its ``lint`` subfolder).
ENV_VAR = "INSTRUMENTOR_CACHE_DIR"
#: An entry, or a whole cache file, not used for this many days is dropped.
MAX_AGE_DAYS = 30
_FORMAT = 1
_MAGIC = b"instrumentor-lint-cache"
#: The modules whose code shapes a file's scan: edited in place (an editable install), they
#: change the fingerprint although the version does not.
_CODE = ("_calls", "_common", "_files", "_index", "_lint_cache", "_scan", "_suppress", "_walk")


def cache_dir() -> Path | None:
    r"""The folder of instrumentor's cache: ``INSTRUMENTOR_CACHE_DIR``, else the user cache.

    ``%LOCALAPPDATA%\instrumentor\Cache`` on Windows, ``~/Library/Caches/instrumentor`` on
    macOS, ``$XDG_CACHE_HOME/instrumentor`` (default ``~/.cache/instrumentor``) elsewhere;
    ``None`` when there is no home folder to put it in.
    """
    override = os.environ.get(ENV_VAR)
    if override:
        return Path(override).expanduser()
    try:
        home = Path.home()
    except (RuntimeError, KeyError, OSError):  # no HOME, no passwd entry
        return None
    if sys.platform == "win32":
        local = os.environ.get("LOCALAPPDATA")
        base = Path(local) if local else home / "AppData" / "Local"
        return base / "instrumentor" / "Cache"
    if sys.platform == "darwin":
        return home / "Library" / "Caches" / "instrumentor"
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    return (Path(xdg) if os.path.isabs(xdg) else home / ".cache") / "instrumentor"


def _code_signature() -> list[Any]:
    signature: list[Any] = []
    for name in (*(f"instrumentor.cli.{m}" for m in _CODE), "instrumentor._naming"):
        path = getattr(sys.modules.get(name), "__file__", None) or ""
        try:
            stat = os.stat(path)
        except OSError:
            signature.append([name])
            continue
        signature.append([name, stat.st_size, stat.st_mtime_ns])
    return signature


def fingerprint(job: ScanJob) -> str:
    """A hash of everything a file's scan depends on, but the file and how it is seen."""
    parts = {
        "format": _FORMAT,
        "instrumentor": instrumentor.__version__,
        "code": _code_signature(),
        "python": [sys.implementation.name, sys.version],
        "plan": [
            [r.qualname, r.module, sorted(r.members.items()), sorted(r.attributes)]
            for r in job.plan.registries
        ],
        "package_hint": job.package_hint,
        "project_modules": sorted(job.project_modules),
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def _today() -> int:
    return int(time.time() // 86400)


def _encode(task: Task, result: FileScan, day: int) -> list[Any] | None:
    """``result`` as a JSON entry, or ``None`` when it is not worth keeping."""
    shown = task[1]
    if result.suppressions is None or not result.digest:  # not read: ask again next time
        return None
    scan = result.scan
    if any(f.path != shown for f in scan.findings):
        return None
    return [
        result.digest,
        shown,
        task[2],
        task[3],
        day,
        [[f.rule, f.message, f.line, f.column, f.hint, f.severity] for f in scan.findings],
        sorted([list(pair) for pair in scan.used_members]),
        sorted(scan.used_names),
        sorted(scan.dynamic_lookups),
        [[s.line, s.column, sorted(s.rules), s.reason] for s in result.suppressions.values()],
    ]


def _strings(value: Any) -> list[str]:
    if not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
        raise ValueError("not a list of strings")
    return value


def _finding(shown: str, row: Any) -> Finding:
    rule, message, line, column, hint, severity = row
    texts = (rule, message, hint)
    numbers = (line, column)
    if not all(isinstance(t, str) for t in texts) or not all(type(n) is int for n in numbers):
        raise ValueError("a malformed finding")
    if severity not in ("error", "warning"):
        raise ValueError("a malformed severity")
    return Finding(rule, message, shown, line, column, hint, severity)


def _suppression(row: Any) -> Suppression:
    line, column, rules, reason = row
    if type(line) is not int or type(column) is not int or not isinstance(reason, str):
        raise ValueError("a malformed suppression")
    return Suppression(line, column, frozenset(_strings(rules)), reason)


def _decode(entry: list[Any]) -> FileScan:
    """The :class:`FileScan` an entry holds; ``ValueError`` (or ``TypeError``) when malformed.

    Its digest and shown path were compared with the file's already.
    """
    digest, shown, _, _, _, findings, members, names, lookups, suppressions = entry
    if not (type(findings) is type(members) is type(names) is type(lookups) is list):
        raise ValueError("a malformed entry")
    scan = ModuleScan()  # most files have no finding and no reference: a quick way for them
    if findings:
        scan.findings = [_finding(shown, row) for row in findings]
    if members:
        scan.used_members = {(a, b) for a, b in map(_strings, members)}
    if names:
        scan.used_names = set(_strings(names))
    if lookups:
        scan.dynamic_lookups = set(_strings(lookups))
    by_line = {s.line: s for s in map(_suppression, suppressions)} if suppressions else {}
    if type(suppressions) is not list:
        raise ValueError("a malformed entry")
    return FileScan(shown, scan, by_line, digest)


class LintCache:
    """One project's cache file: read once when opened, written once by :meth:`save`."""

    def __init__(self, folder: Path, key: str, fingerprint: str) -> None:
        self.folder = folder
        self.path = folder / f"{key}.cache"
        self.fingerprint = fingerprint
        self.today = _today()
        self.loaded, self.seen = self._read()
        self.touched: dict[str, list[Any]] = {}
        self.changed = False

    @classmethod
    def open(cls, job: ScanJob, root: str, cwd: str) -> LintCache | None:
        """The cache of the project at ``root`` linted from ``cwd``; ``None`` if there is none."""
        base = cache_dir()
        if base is None:
            return None
        key = hashlib.sha256(f"{root}\0{cwd}".encode()).hexdigest()[:32]
        return cls(base / "lint", key, fingerprint(job))

    def _read(self) -> tuple[dict[str, Any], tuple[int, int, int] | None]:
        """The entries on disk (empty when missing, unreadable, corrupt or of another plan)."""
        try:
            with open(self.path, "rb") as fh:
                stat = os.fstat(fh.fileno())
                data = fh.read()
            seen = (stat.st_ino, stat.st_size, stat.st_mtime_ns)
            header, _, body = data.partition(b"\n")
            magic, version, digest = header.split(b" ")
            if (magic, version) != (_MAGIC, str(_FORMAT).encode()):
                return {}, seen
            if hashlib.sha256(body).hexdigest().encode() != digest:
                return {}, seen
            content = json.loads(body)
            if content["fingerprint"] != self.fingerprint:
                return {}, seen
            entries = content["entries"]
            return (entries if isinstance(entries, dict) else {}), seen
        except (OSError, ValueError, TypeError, KeyError, RecursionError, MemoryError):
            return {}, None

    def get(self, task: Task, digest: str) -> FileScan | None:
        """The cached scan of ``task``'s file whose bytes hash to ``digest``, if any."""
        entry = self.loaded.get(task[0])
        try:
            if not (isinstance(entry, list) and len(entry) == 10):
                return None
            if entry[0] != digest or entry[1:4] != [task[1], task[2], task[3]]:
                return None
            result = _decode(entry)
        except (ValueError, TypeError):
            return None
        if entry[4] != self.today:
            self.changed = True
            entry = [*entry[:4], self.today, *entry[5:]]
        self.touched[task[0]] = entry
        return result

    def put(self, task: Task, result: FileScan) -> None:
        """Keep ``result``, the fresh scan of ``task``'s file."""
        entry = _encode(task, result, self.today)
        if entry is not None:
            self.touched[task[0]] = entry
            self.changed = True

    def save(self) -> None:
        """Write the entries used or made in this run, and those of the last 30 days.

        Nothing is written when every entry used was already on disk, as of today. Every
        failure (no folder, no space, no permission) is ignored: the cache is only a cache.
        """
        if not self.changed:
            return
        with contextlib.suppress(OSError, ValueError, TypeError):
            self._save()

    def _save(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        tag = self.folder / "CACHEDIR.TAG"
        if not tag.exists():
            tag.write_text(
                "Signature: 8a477f597d28d172789f06886806bc55\n"
                "# instrumentor's lint cache: safe to delete (see docs/governance-lint.md)\n"
            )
        current = self.loaded
        try:
            stat = os.stat(self.path)
            if (stat.st_ino, stat.st_size, stat.st_mtime_ns) != self.seen:
                current = {**self.loaded, **self._read()[0]}  # another run wrote meanwhile
        except OSError:
            pass
        oldest = self.today - MAX_AGE_DAYS
        entries = {
            path: entry
            for path, entry in {**current, **self.touched}.items()
            if isinstance(entry, list)
            and len(entry) == 10
            and type(entry[4]) is int
            and entry[4] >= oldest
        }
        body = json.dumps(
            {"fingerprint": self.fingerprint, "entries": entries}, separators=(",", ":")
        ).encode()
        digest = hashlib.sha256(body).hexdigest().encode()
        header = b" ".join([_MAGIC, str(_FORMAT).encode(), digest])
        self._replace(header + b"\n" + body)
        self._prune()

    def _replace(self, data: bytes) -> None:
        fd, temp = tempfile.mkstemp(dir=self.folder, prefix=".tmp-", suffix=".cache")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(temp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            raise

    def _prune(self) -> None:
        """Remove cache files unused for 30 days, and temporary files left by a crash."""
        now = time.time()
        with os.scandir(self.folder) as entries:
            for entry in entries:
                if not entry.name.endswith(".cache"):
                    continue
                with contextlib.suppress(OSError):
                    age = now - entry.stat(follow_symlinks=False).st_mtime
                    stale = entry.name.startswith(".tmp-") and age > 3600  # left by a crash
                    if stale or age > MAX_AGE_DAYS * 86400:
                        os.unlink(entry.path)


def scan_cached(
    tasks: Sequence[Task], job: ScanJob, jobs: int, cache: LintCache
) -> Iterable[FileScan]:
    """Every file's :class:`FileScan`, in the order of ``tasks``: cached, or scanned and kept.

    Each file is read and hashed here; with ``jobs`` > 1 the files that changed are scanned by
    :func:`scan_files` (worker processes, which read them again and hash what they scanned).
    """
    results: list[FileScan | None] = []
    misses: list[tuple[int, Task]] = []
    for task in tasks:
        source = _read(task[0])
        if source is None:
            results.append(None)
            misses.append((len(results) - 1, task))
            continue
        hit = cache.get(task, content_digest(source))
        if hit is None and jobs <= 1:  # scan now, while the bytes are at hand
            hit = job.scan(task, source)
            cache.put(task, hit)
        elif hit is None:
            misses.append((len(results), task))
        results.append(hit)
    scanned = scan_files([task for _, task in misses], job, jobs)
    for (position, task), result in zip(misses, scanned, strict=True):
        results[position] = result
        cache.put(task, result)
    cache.save()
    return [result for result in results if result is not None]


def _read(path: str) -> bytes | None:
    """The bytes of the file at ``path``, else ``None`` (unbuffered: one read of its size)."""
    try:
        with open(path, "rb", buffering=0) as fh:
            return fh.readall()
    except OSError:  # the scan reads it again, and reports it
        return None
