"""Deterministic fault rules for the test server: by command, by address and by
attempt number, reply with a chosen code, delay, drop the connection or refuse TLS.

Rules are added from the test's thread (or over HTTP, from the web inbox in the
server's loop) and matched in the server's: every access holds one lock.  A rule
counts the commands it matches (``seen``) and the times it acted (``fired``), so a
test can check that its fault really happened; its ``id`` names it to the HTTP API.
"""

from __future__ import annotations

import itertools
import math
import re
import threading
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Final

from smtpwire.server.observe import Drop

__all__ = ["COMMANDS", "Drop", "Fault", "FaultRuleError", "FaultRules"]

# What a rule may name: the SMTP verbs, CONNECT (the greeting, or for implicit TLS
# the handshake) and MESSAGE (the reply to a message's data, after its last octet).
COMMANDS: Final = frozenset(
    {
        "CONNECT", "HELO", "EHLO", "LHLO", "STARTTLS", "AUTH", "MAIL", "RCPT", "DATA",
        "BDAT", "MESSAGE", "RSET", "NOOP", "QUIT", "VRFY", "EXPN", "HELP",
    }
)  # fmt: skip

_REPLY: Final = re.compile(r"[2-5][0-9][0-9]( [^\r\n\x00]*)?")
_CODE: Final = re.compile(r"[2-5][0-9][0-9]")


class FaultRuleError(ValueError):
    """A rule that cannot be added; ``field`` names the parameter at fault, so the
    HTTP API can point at the JSON field without checking every value twice."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(eq=False)
class Fault:
    """One rule: what it matches and what it does; ``seen``/``fired`` count its use."""

    command: str | None
    address: str | None
    attempts: frozenset[int] | None
    times: int | None
    reply: str | None = None
    delay: float = 0.0
    drop: Drop | None = None
    seen: int = 0
    fired: int = 0
    id: int = 0  # given by FaultRules, never reused by it: a stale id finds nothing

    def _matches(self, command: str, addresses: Collection[str]) -> bool:
        # A drop during data applies to a message sent with BDAT as with DATA.
        bdat_too = self.drop is Drop.DURING_DATA and command == "BDAT"
        if self.command is not None and self.command != command and not bdat_too:
            return False
        return self.address is None or self.address in addresses

    def _would_act(self) -> bool:
        """After counting a matching command: whether this rule acts on it."""
        if self.times is not None and self.fired >= self.times:
            return False
        return self.attempts is None or self.seen in self.attempts


@dataclass
class FaultRules:
    """The rules of one test server, first match wins (in the order added)."""

    implicit_tls: bool = False
    _rules: list[Fault] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def reply(
        self,
        code: int,
        text: str = "",
        *,
        command: str | None = None,
        address: str | None = None,
        attempt: int | Collection[int] | None = None,
        times: int | None = None,
        delay: float = 0.0,
    ) -> Fault:
        """Answer the matching command with ``code text`` instead of carrying it out
        (for ``MESSAGE``: instead of accepting the message, which is not recorded)."""
        reply = f"{code} {text}" if text else str(code)
        if _REPLY.fullmatch(reply) is None:
            culprit = "code" if _CODE.fullmatch(str(code)) is None else "text"
            raise FaultRuleError(
                culprit, f"not a reply: {reply!r} (a code 200-599, then text on one line)"
            )
        return self._add(command, address, attempt, times, reply=reply, delay=delay)

    def delay(
        self,
        seconds: float,
        *,
        command: str | None = None,
        address: str | None = None,
        attempt: int | Collection[int] | None = None,
        times: int | None = None,
    ) -> Fault:
        """Hold the reply to the matching command back for ``seconds``, then go on."""
        return self._add(command, address, attempt, times, delay=seconds, delay_name="seconds")

    def drop(
        self,
        *,
        command: str | None = None,
        address: str | None = None,
        attempt: int | Collection[int] | None = None,
        times: int | None = None,
    ) -> Fault:
        """Close the connection when the matching command arrives, without a reply."""
        return self._add(command, address, attempt, times, drop=Drop.BEFORE_REPLY)

    def drop_during_data(
        self,
        *,
        address: str | None = None,
        attempt: int | Collection[int] | None = None,
        times: int | None = None,
    ) -> Fault:
        """Answer DATA with 354, then hang up as soon as the message starts to arrive;
        a message sent with BDAT: hang up at its first chunk."""
        return self._add("DATA", address, attempt, times, drop=Drop.DURING_DATA)

    def refuse_tls(
        self, *, attempt: int | Collection[int] | None = None, times: int | None = None
    ) -> Fault:
        """STARTTLS answered ``454 4.7.0 TLS not available``; on an implicit-TLS server,
        the connection closed before the handshake."""
        if self.implicit_tls:
            return self._add("CONNECT", None, attempt, times, drop=Drop.BEFORE_REPLY)
        return self.reply(
            454, "4.7.0 TLS not available", command="STARTTLS", attempt=attempt, times=times
        )

    def clear(self) -> int:
        """Forget every rule; how many there were."""
        with self._lock:
            count = len(self._rules)
            self._rules.clear()
        return count

    def remove(self, rule: Fault | int) -> Fault | None:
        """Take out ``rule`` (or the rule with that ``id``); the rule taken out, or
        None when it is not (or no longer) there."""
        with self._lock:
            for index, candidate in enumerate(self._rules):
                if candidate is rule or (isinstance(rule, int) and candidate.id == rule):
                    return self._rules.pop(index)
        return None

    @property
    def rules(self) -> list[Fault]:
        with self._lock:
            return list(self._rules)

    def match(self, command: str, addresses: Collection[str] = ()) -> Fault | None:
        """The first rule that acts on this command (addresses compared lower-cased).
        Every matching rule counts the command, so each counts its own attempts."""
        lowered = {address.lower() for address in addresses}
        acting: Fault | None = None
        with self._lock:
            for rule in self._rules:
                if not rule._matches(command, lowered):
                    continue
                rule.seen += 1
                if acting is None and rule._would_act():
                    rule.fired += 1
                    acting = rule
        return acting

    def _add(
        self,
        command: str | None,
        address: str | None,
        attempt: int | Collection[int] | None,
        times: int | None,
        *,
        reply: str | None = None,
        delay: float = 0.0,
        drop: Drop | None = None,
        delay_name: str = "delay",
    ) -> Fault:
        verb = None if command is None else command.upper()
        if verb is not None and verb not in COMMANDS:
            raise FaultRuleError(
                "command", f"unknown command {command!r}: one of {', '.join(sorted(COMMANDS))}"
            )
        if delay < 0:
            raise FaultRuleError(delay_name, "a delay cannot be negative")
        if not math.isfinite(delay):  # NaN would pass every comparison, then stall asyncio
            raise FaultRuleError(delay_name, "a delay must be a finite number of seconds")
        if times is not None and times < 1:
            raise FaultRuleError("times", "times must be at least 1 (or None for always)")
        attempts = None if attempt is None else _attempts(attempt)
        target = None if address is None else address.lower()
        rule = Fault(verb, target, attempts, times, reply=reply, delay=delay, drop=drop)
        with self._lock:
            rule.id = next(self._ids)
            self._rules.append(rule)
        return rule


def _attempts(attempt: int | Collection[int]) -> frozenset[int]:
    numbers = frozenset([attempt] if isinstance(attempt, int) else attempt)
    if not numbers or min(numbers) < 1:
        raise FaultRuleError("attempt", "attempts are counted from 1")
    return numbers
