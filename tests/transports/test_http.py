"""The shared HTTP pieces: Retry-After parsing, the status taxonomy, one client per process."""

from __future__ import annotations

import email.utils
import os
import time
import warnings

import httpx
import pytest

from instrumentor.exceptions import (
    DeliveryError,
    PayloadTooLargeError,
    PermanentDeliveryError,
    RetryableDeliveryError,
)
from instrumentor.transports._http import (
    MAX_RETRY_AFTER,
    ClientHolder,
    error_for_exception,
    error_for_response,
    parse_retry_after,
)

NOW = 1_714_564_800.0


def _http_date(timestamp: float) -> str:
    return email.utils.formatdate(timestamp, usegmt=True)


def _client() -> httpx.Client:
    return httpx.Client(transport=httpx.MockTransport(lambda request: httpx.Response(202)))


class TestParseRetryAfter:
    @pytest.mark.parametrize(
        ("value", "expected"),
        [("120", 120.0), (" 3.5 ", 3.5), ("0", 0.0)],
    )
    def test_seconds(self, value: str, expected: float) -> None:
        """A number of seconds is read as such."""
        assert parse_retry_after(value) == expected

    def test_negative_seconds_mean_now(self) -> None:
        """A negative delay is clamped to zero."""
        assert parse_retry_after("-5") == 0.0

    def test_huge_seconds_are_clamped(self) -> None:
        """A delay beyond MAX_RETRY_AFTER is clamped to it."""
        assert parse_retry_after("86400") == MAX_RETRY_AFTER

    def test_http_date_in_the_future(self) -> None:
        """An HTTP date is read as the seconds from now until then."""
        assert parse_retry_after(_http_date(NOW + 60), now=NOW) == 60.0

    def test_http_date_far_in_the_future_is_clamped(self) -> None:
        """An HTTP date days ahead is clamped to MAX_RETRY_AFTER."""
        assert parse_retry_after(_http_date(NOW + 86400), now=NOW) == MAX_RETRY_AFTER

    def test_http_date_in_the_past_means_now(self) -> None:
        """An HTTP date already past means no wait."""
        assert parse_retry_after(_http_date(NOW - 60), now=NOW) == 0.0

    def test_http_date_against_the_clock(self) -> None:
        """Without ``now`` an HTTP date is measured against the current time."""
        waited = parse_retry_after(_http_date(time.time() + 120))
        assert waited is not None
        assert 100 <= waited <= 120

    @pytest.mark.parametrize("value", [None, "", "soon", "nan", "Mon, 99 Foo 2024"])
    def test_absent_or_unreadable(self, value: str | None) -> None:
        """An absent or unreadable header gives None."""
        assert parse_retry_after(value) is None


class TestErrorForResponse:
    @pytest.mark.parametrize("status", [200, 201, 202, 204])
    def test_success(self, status: int) -> None:
        """Every 2xx is success."""
        assert error_for_response(httpx.Response(status), "POST /x") is None

    @pytest.mark.parametrize(
        ("status", "kind"),
        [
            (408, RetryableDeliveryError),
            (429, RetryableDeliveryError),
            (500, RetryableDeliveryError),
            (502, RetryableDeliveryError),
            (503, RetryableDeliveryError),
            (504, RetryableDeliveryError),
            (413, PayloadTooLargeError),
            (400, PermanentDeliveryError),
            (401, PermanentDeliveryError),
            (403, PermanentDeliveryError),
            (404, PermanentDeliveryError),
            (422, PermanentDeliveryError),
            (501, PermanentDeliveryError),
            (505, PermanentDeliveryError),
        ],
    )
    def test_status_table(self, status: int, kind: type[DeliveryError]) -> None:
        """Each status maps to its class of the retry taxonomy, named in the message."""
        error = error_for_response(httpx.Response(status), "POST /v2/track")
        assert type(error) is kind
        assert str(error) == f"POST /v2/track answered {status}"
        if isinstance(error, (RetryableDeliveryError, PermanentDeliveryError)):
            assert error.status == status

    def test_retry_after_is_honoured(self) -> None:
        """A retryable answer carries its Retry-After in seconds."""
        response = httpx.Response(429, headers={"Retry-After": "7"})
        error = error_for_response(response, "POST /x")
        assert isinstance(error, RetryableDeliveryError)
        assert error.retry_after == 7.0

    def test_no_retry_after(self) -> None:
        """Without Retry-After the wait is left to the retry policy."""
        error = error_for_response(httpx.Response(503), "POST /x")
        assert isinstance(error, RetryableDeliveryError)
        assert error.retry_after is None


class TestErrorForException:
    @pytest.mark.parametrize(
        "exc", [httpx.ConnectError("refused"), httpx.ReadTimeout("slow"), OSError("reset")]
    )
    def test_always_retryable(self, exc: Exception) -> None:
        """A failure without an answer is retryable and names what failed and why."""
        error = error_for_exception(exc, "POST /v1/batch")
        assert isinstance(error, RetryableDeliveryError)
        assert error.status is None
        assert str(error).startswith(f"POST /v1/batch failed: {type(exc).__name__}")


class TestClientHolder:
    def test_reuses_one_client(self) -> None:
        """get() builds the client once and returns it again and again."""
        built: list[httpx.Client] = []

        def factory() -> httpx.Client:
            built.append(_client())
            return built[-1]

        holder = ClientHolder(factory)
        try:
            assert holder.get() is holder.get()
            assert len(built) == 1
        finally:
            holder.close()

    def test_close_then_get_opens_a_new_client(self) -> None:
        """After close() the old client is closed and get() builds a new one."""
        holder = ClientHolder(_client)
        first = holder.get()
        holder.close()
        assert first.is_closed
        second = holder.get()
        try:
            assert second is not first
            assert not second.is_closed
        finally:
            holder.close()

    @pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork()")
    def test_child_gets_a_new_client_after_fork(self) -> None:
        """After os.fork() the child builds its own client; the parent keeps its own."""
        holder = ClientHolder(_client)
        parent_client = holder.get()
        with warnings.catch_warnings():
            # 3.12+ warns when forking a process that has threads (pytest's or other tests').
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
        if pid == 0:  # the child: report by exit status only, never return into pytest
            status = 1
            try:
                child_client = holder.get()
                ok = child_client is not parent_client and child_client is holder.get()
                status = 0 if ok else 1
            finally:
                os._exit(status)
        _, wait_status = os.waitpid(pid, 0)
        try:
            assert os.waitstatus_to_exitcode(wait_status) == 0
            assert holder.get() is parent_client
            assert not parent_client.is_closed
        finally:
            holder.close()
