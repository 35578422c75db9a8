"""A limit on failed AUTH attempts per client address, across sessions.

The error budget (``error_limit``) ends one session after too many errors, but a
password-guessing client simply reconnects.  :class:`AuthFailureLimiter` counts the
credentials refused per client address over a sliding window; while an address is
over the limit, AUTH answers ``454 4.7.0`` (temporary: a real user retries later,
as RFC 4954 section 6 allows) without asking the authenticator.  The session itself
stays open, so mail that needs no AUTH is not refused.

One limiter is shared by the sessions of one server: a :class:`Controller` with
``modern=True`` makes one; pass ``auth_failure_limiter=`` to ``SMTP`` (the same
object to every connection) to use one elsewhere.  Memory is bounded: at most
``max_addresses`` addresses are tracked, the least recently failing dropped first.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable
from typing import Final

__all__ = ["AUTH_THROTTLED", "AuthFailureLimiter"]

AUTH_THROTTLED: Final = "454 4.7.0 Too many failed authentication attempts, try again later"


class AuthFailureLimiter:
    """At most ``max_failures`` refused credentials per address in ``window``
    seconds; the address is throttled until its oldest failure leaves the window."""

    __slots__ = ("_clock", "_failures", "max_addresses", "max_failures", "window")

    def __init__(
        self,
        max_failures: int = 30,
        window: float = 600.0,
        *,
        max_addresses: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_failures < 1 or window <= 0 or max_addresses < 1:
            raise ValueError("max_failures and max_addresses must be >= 1, window > 0")
        self.max_failures = max_failures
        self.window = window
        self.max_addresses = max_addresses
        self._clock = clock
        # address -> times of its recent failures, oldest first; the dict's order is
        # that of the latest failure, so the first entry is the one to drop.
        self._failures: collections.OrderedDict[str, collections.deque[float]] = (
            collections.OrderedDict()
        )

    def throttled(self, address: str) -> bool:
        """Whether ``address`` is over the limit now."""
        failures = self._failures.get(address)
        if failures is None:
            return False
        self._expire(failures, self._clock())
        if not failures:
            del self._failures[address]
            return False
        return len(failures) >= self.max_failures

    def record_failure(self, address: str) -> None:
        """Credentials from ``address`` were refused."""
        now = self._clock()
        failures = self._failures.pop(address, None)
        if failures is None:
            failures = collections.deque(maxlen=self.max_failures)
            if len(self._failures) >= self.max_addresses:
                self._failures.popitem(last=False)
        self._expire(failures, now)
        failures.append(now)
        self._failures[address] = failures

    def _expire(self, failures: collections.deque[float], now: float) -> None:
        horizon = now - self.window
        while failures and failures[0] <= horizon:
            failures.popleft()


def client_address(peer: object) -> str | None:
    """The client's IP address from a session's peer (None for a Unix socket)."""
    if isinstance(peer, tuple) and peer and isinstance(peer[0], str):
        return peer[0]
    return None
