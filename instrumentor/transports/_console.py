"""The debug transport: what ``ANALYTICS_DEBUG=true`` turns on. Prints, never sends."""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Sequence
from typing import Any, TextIO

from instrumentor._messages import Message
from instrumentor._state import active
from instrumentor.exceptions import INVALID_MESSAGE, PartialDeliveryError

__all__ = ["ConsoleTransport", "redact"]

# A key is sensitive when, lowercased with separators removed, it ends with one of these:
# "access_token", "client_secret", "X-Api-Key" are; "author", "token_count" are not.
_SENSITIVE_SUFFIXES = (
    "password", "passwd", "pwd", "passphrase", "secret", "token", "apikey", "authorization",
    "auth", "credential", "credentials", "privatekey", "cookie", "sessionid", "signature",
)  # fmt: skip


def _is_sensitive(key: object) -> bool:
    folded = re.sub(r"[^a-z0-9]", "", str(key).lower())
    return folded.endswith(_SENSITIVE_SUFFIXES)


REDACTED = "[REDACTED]"


def redact(data: Any, secrets: Sequence[str] = ()) -> Any:
    """Replace values under sensitive keys, and any occurrence of ``secrets``, with a marker.

    Args:
        data: JSON-compatible data (as produced by ``Message.to_dict()``).
        secrets: Exact secret strings (e.g. the API key) to blank out wherever they appear.
    """
    if isinstance(data, dict):
        return {k: REDACTED if _is_sensitive(k) else redact(v, secrets) for k, v in data.items()}
    if isinstance(data, list):
        return [redact(v, secrets) for v in data]
    if isinstance(data, str):
        for secret in secrets:
            if secret and secret in data:
                data = data.replace(secret, REDACTED)
    return data


class ConsoleTransport:
    """Prints one readable line per message instead of sending it.

    Debug mode (``ANALYTICS_DEBUG=true``, ``configure(debug=True)``) installs one, in place of
    every transport given to ``configure()`` that sends: those are held back until debug is off.

    Values under sensitive keys (``password``, ``access_token``, ``client_secret``, ``api_key``,
    ...) and the configured API key wherever it appears are replaced with ``[REDACTED]``. It
    prints on the emitting thread: a development tool, not a production transport.

    Args:
        stream: Where to write; standard error (looked up at each write) by default.
        logger: Log each line on this logger at INFO instead of writing to a stream.
        indent: Pretty-print the JSON with this indentation.
    """

    #: Delivered on the emitting thread, without a queue (no I/O worth queueing).
    inline = True

    def __init__(
        self,
        stream: TextIO | None = None,
        *,
        logger: logging.Logger | None = None,
        indent: int | None = None,
    ) -> None:
        self._stream = stream
        self._logger = logger
        self._indent = indent

    def format(self, message: Message) -> str:
        """The line printed for ``message`` (a lone surrogate in it is printed as ``?``)."""
        key = active().settings.api_key
        data = redact(message.to_dict(), (key.reveal(),) if key else ())
        body = json.dumps(data, indent=self._indent, ensure_ascii=False, sort_keys=False)
        line = f"[instrumentor debug] {message.type}: {body}"
        return line.encode("utf-8", "replace").decode("utf-8")  # any stream can write it

    def deliver(self, batch: Sequence[Message]) -> None:
        """Print (or log) every message of ``batch``.

        Raises:
            PartialDeliveryError: After printing the others, if a message could not be
                formatted (it is marked :data:`~instrumentor.exceptions.INVALID_MESSAGE`).
        """
        lines: list[str] = []
        failed: list[tuple[Message, str]] = []
        for message in batch:
            try:
                lines.append(self.format(message))
            except Exception as exc:  # that message only
                reason = f"cannot be printed as JSON ({type(exc).__name__}) ({INVALID_MESSAGE})"
                failed.append((message, reason))
        if self._logger is not None:
            for line in lines:
                self._logger.info("%s", line)
        elif lines:
            stream = self._stream or sys.stderr
            stream.write("".join(line + "\n" for line in lines))
            stream.flush()
        if failed:
            raise PartialDeliveryError(
                f"{len(failed)} of {len(batch)} messages could not be printed: {failed[0][1]}",
                failed=failed,
            )

    def close(self) -> None:
        """Nothing to release."""

    def __repr__(self) -> str:
        if self._logger is not None:
            target = f"logger={self._logger.name!r}"
        elif self._stream is not None:
            target = f"stream={getattr(self._stream, 'name', type(self._stream).__name__)!r}"
        else:
            target = "stderr"
        return f"ConsoleTransport({target})"
