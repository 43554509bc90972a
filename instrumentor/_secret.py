"""The secret string that holds the API key: it never shows itself in a repr, str or log line."""

from __future__ import annotations

import hmac

__all__ = ["Secret"]


class Secret:
    """A secret string (the API key) that never shows itself in a repr, str or log line.

    Args:
        value: The secret.
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The secret itself, for the one place that must send it."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return hmac.compare_digest(self._value.encode(), other.reveal().encode())

    def __hash__(self) -> int:
        return hash((Secret, self._value))

    def __bool__(self) -> bool:
        return bool(self._value)

    def fingerprint(self) -> str:
        """8 hex digits that tell two secrets apart without revealing either.

        The first 8 hex digits of HMAC-SHA256 of the secret, keyed with a fixed label: it
        names a key in outbox channels and logs; it cannot be turned back into the key.
        """
        digest = hmac.new(b"instrumentor key fingerprint", self._value.encode(), "sha256")
        return digest.hexdigest()[:8]
