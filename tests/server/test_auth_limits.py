"""AuthFailureLimiter on its own: the sliding window, the bound on addresses."""

from __future__ import annotations

import pytest

from smtpwire.server.auth_limits import AuthFailureLimiter, client_address


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_an_address_is_throttled_at_the_limit_and_freed_as_failures_age() -> None:
    clock = Clock()
    limiter = AuthFailureLimiter(3, window=60.0, clock=clock)
    for _ in range(2):
        limiter.record_failure("192.0.2.1")
        clock.now += 10
    assert not limiter.throttled("192.0.2.1")
    limiter.record_failure("192.0.2.1")
    assert limiter.throttled("192.0.2.1")
    assert not limiter.throttled("192.0.2.2")  # per address
    clock.now += 41  # the first failure (at 1000) leaves the window at 1060
    assert not limiter.throttled("192.0.2.1")


def test_memory_is_bounded_by_max_addresses() -> None:
    limiter = AuthFailureLimiter(1, max_addresses=2, clock=Clock())
    for address in ("192.0.2.1", "192.0.2.2", "192.0.2.3"):
        limiter.record_failure(address)
    # The least recently failing address was dropped first.
    assert [limiter.throttled(a) for a in ("192.0.2.1", "192.0.2.2", "192.0.2.3")] == [
        False,
        True,
        True,
    ]


@pytest.mark.parametrize(
    ("peer", "address"),
    [(("192.0.2.1", 25), "192.0.2.1"), (("::1", 25, 0, 0), "::1"), ("/run/smtp.sock", None)],
)
def test_client_address(peer: object, address: str | None) -> None:
    assert client_address(peer) == address


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="max_failures"):
        AuthFailureLimiter(0)
