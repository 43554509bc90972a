"""The files ``lint`` scans: which, what each is called, and scanning them, in parallel if many.

:class:`Layout` turns the paths given on the command line into real paths of Python files
(default skips, exclude globs, each file once) and says how each is shown, whether it is in
the analytics package, and its module name. :func:`scan_files` reads and scans them, in worker
processes (``--jobs``) when there are enough files for that to pay.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path

from instrumentor.cli._common import CLIError, Finding
from instrumentor.cli._scan import ModuleScan, PlanIndex, scan_module
from instrumentor.cli._suppress import Suppression, read_suppressions

__all__ = [
    "DEFAULT_SKIP",
    "PARALLEL_FROM",
    "FileScan",
    "Layout",
    "ScanJob",
    "Task",
    "content_digest",
    "default_jobs",
    "excluded",
    "relative_path",
    "scan_files",
]

#: Directories never descended into.
DEFAULT_SKIP = frozenset({".venv", "venv", "node_modules", ".git", "__pycache__", "build", "dist"})


def excluded(relative: str, patterns: Sequence[str]) -> bool:
    """Whether ``relative`` (to the project root) matches an exclude glob.

    A pattern with a ``/`` matches the path or one of its parent folders, from the root
    (``app/legacy``, ``app/*/migrations``); one without matches any single component
    (``migrations``, ``*_pb2.py``).
    """
    parts = relative.split("/")
    for pattern in patterns:
        pattern = pattern.strip().removeprefix("./").rstrip("/")
        if "/" in pattern:
            prefixes = ("/".join(parts[: i + 1]) for i in range(len(parts)))
            if any(fnmatchcase(prefix, pattern) for prefix in prefixes):
                return True
        elif any(fnmatchcase(part, pattern) for part in parts):
            return True
    return False


def relative_path(path: str, base: str) -> str:
    """``path`` (absolute) relative to ``base`` with ``/`` separators, else ``path`` itself."""
    if path == base:
        return ""
    if path.startswith(base + os.sep):
        path = path[len(base) + 1 :]
    return path.replace(os.sep, "/")


class Layout:
    """Paths as the rules see them.

    Exclude globs and the analytics package are relative to the project root (the folder of
    pyproject.toml, else the working directory); findings show paths relative to the working
    directory. Both sides are real paths, so a symlinked path to the project lints the same.
    """

    def __init__(self, root: Path, patterns: Sequence[str], packages: Sequence[str]) -> None:
        self.root = os.path.realpath(root)
        self.cwd = os.path.realpath(os.getcwd())
        self.patterns = patterns
        self.packages = [
            (p if "/" in p or p.endswith(".py") else p.replace(".", "/")).strip("/")
            for p in packages
        ]

    def shown(self, path: str) -> str:
        """What findings show for the absolute ``path``."""
        return relative_path(path, self.cwd)

    def in_package(self, path: str) -> bool:
        """Whether the absolute ``path`` belongs to the analytics package."""
        relative = relative_path(path, self.root)
        return any(
            relative in (p, f"{p}.py") or relative.startswith(f"{p}/") for p in self.packages
        )

    def module(self, path: str) -> str | None:
        """The dotted module name of ``path`` from the root (``src/`` left out), if inside it."""
        relative = relative_path(path, self.root)
        if relative == path or not relative.endswith(".py"):
            return None
        parts = relative.removesuffix(".py").split("/")
        if parts[0] == "src" and len(parts) > 1:
            parts = parts[1:]
        return ".".join(parts)

    def project_modules(self) -> frozenset[str]:
        """The project's top-level modules: the analytics package's, and the root's.

        Every module in the root (or its ``src/``), and every folder there that holds a ``.py``
        file, counts: an SDK's name among them (a project's own ``analytics`` package) is the
        project's, not the SDK.
        """
        names = {
            p.removeprefix("src/").partition("/")[0].removesuffix(".py") for p in self.packages
        }
        for folder in (self.root, os.path.join(self.root, "src")):
            try:
                entries = os.listdir(folder)
            except OSError:
                continue
            for entry in entries:
                full = os.path.join(folder, entry)
                if entry.endswith(".py") and os.path.isfile(full):
                    names.add(entry.removesuffix(".py"))
                elif entry.isidentifier() and entry not in DEFAULT_SKIP and _holds_python(full):
                    names.add(entry)
        return frozenset(names)

    def tasks(self, paths: Sequence[str]) -> list[Task]:
        """What :func:`scan_files` needs to know of each file to lint."""
        return [
            (path, self.shown(path), self.in_package(path), self.module(path))
            for path in self.files(paths)
        ]

    def files(self, paths: Sequence[str]) -> Iterator[str]:
        """The real paths of the Python files to lint (named files always), each once."""
        seen: set[str] = set()
        for path in self._files(paths):
            if path not in seen:
                seen.add(path)
                yield path

    def _files(self, paths: Sequence[str]) -> Iterator[str]:
        for given in paths:
            start = os.path.abspath(given)
            if os.path.isfile(start):  # the folder's real path; a symlinked file keeps its name
                start = os.path.join(
                    os.path.realpath(os.path.dirname(start)), os.path.basename(start)
                )
                if not excluded(relative_path(start, self.root), self.patterns):
                    yield start
                continue
            if not os.path.isdir(start):
                raise CLIError(f"{given}: no such file or directory")
            for folder, dirs, files in os.walk(os.path.realpath(start)):
                relative = relative_path(folder, self.root)
                relative = f"{relative}/" if relative else ""
                dirs[:] = sorted(
                    d
                    for d in dirs
                    if d not in DEFAULT_SKIP and not excluded(f"{relative}{d}", self.patterns)
                )
                for name in sorted(files):
                    if name.endswith(".py") and not excluded(f"{relative}{name}", self.patterns):
                        yield os.path.join(folder, name)


def _holds_python(folder: str) -> bool:
    try:
        with os.scandir(folder) as entries:
            return any(entry.name.endswith(".py") for entry in entries)
    except OSError:  # not a folder, or not readable
        return False


#: (real path, path as findings show it, in the analytics package, module name) of one file.
Task = tuple[str, str, bool, str | None]

#: Below this many files, starting worker processes costs more than it saves.
PARALLEL_FROM = 500


@dataclass(frozen=True)
class FileScan:
    """One file's result.

    Attributes:
        path: The path as findings show it.
        scan: Its findings and references (an ``unreadable-file`` finding if it was not read).
        suppressions: Its ignore comments by line; ``None`` when the file could not be read.
        digest: :func:`content_digest` of the bytes scanned; empty when the file was not read.
    """

    path: str
    scan: ModuleScan
    suppressions: dict[int, Suppression] | None
    digest: str = ""


def content_digest(source: bytes) -> str:
    """What identifies a file's bytes in the lint cache (SHA-256, 128 bits of it in hex)."""
    return hashlib.sha256(source).hexdigest()[:32]


@dataclass(frozen=True)
class ScanJob:
    """Read and scan one file: what every file's scan shares (sent once per batch of files)."""

    plan: PlanIndex
    package_hint: str
    project_modules: frozenset[str]

    def __call__(self, task: Task) -> FileScan:
        """Read and scan the file ``task`` names."""
        try:
            with open(task[0], "rb") as fh:
                source = fh.read()
        except OSError as exc:
            message = f"cannot read: {exc.strerror or exc}"
            unread = ModuleScan(findings=[Finding("unreadable-file", message, path=task[1])])
            return FileScan(task[1], unread, None)
        return self.scan(task, source)

    def scan(self, task: Task, source: bytes) -> FileScan:
        """Scan ``source``, the bytes read from the file ``task`` names."""
        _, shown, in_package, module = task
        scan = scan_module(
            source,
            shown,
            self.plan,
            may_import_sdks=in_package,
            package_hint=self.package_hint,
            module=module,
            project_modules=self.project_modules,
        )
        return FileScan(shown, scan, read_suppressions(source), content_digest(source))


def default_jobs() -> int:
    """The CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS, Windows
        return os.cpu_count() or 1


def scan_files(tasks: Sequence[Task], job: ScanJob, jobs: int) -> Iterable[FileScan]:
    """Every file's :class:`FileScan`, in the order of ``tasks``.

    With ``jobs`` > 1 and at least :data:`PARALLEL_FROM` files, in that many worker processes
    (forked from a clean server process where the platform has one); if they cannot start,
    in this process.
    """
    if jobs <= 1 or len(tasks) < PARALLEL_FROM:
        return map(job, tasks)
    context: multiprocessing.context.BaseContext
    if "forkserver" in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context("forkserver")  # not fork: the plan may run threads
        context.set_forkserver_preload([__name__])  # imported once, then forked per worker
    else:  # pragma: no cover - Windows
        context = multiprocessing.get_context("spawn")
    chunk = max(16, len(tasks) // (jobs * 4))
    try:
        with ProcessPoolExecutor(jobs, mp_context=context) as pool:
            return list(pool.map(job, tasks, chunksize=chunk))
    except (OSError, BrokenProcessPool):  # no processes here (a sandbox): one is enough
        return map(job, tasks)
