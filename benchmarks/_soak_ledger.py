"""The soak's accounting: what each client was told about each message, what
the servers stored, and the comparison of the two.

Every message has an id (``X-Soak-Id``) and each try at sending it an attempt
number (``X-Soak-Attempt``), so a stored line names the very attempt that
stored it.  That makes the checks exact rather than statistical:

- an attempt answered 250 is stored exactly once (no loss, no double store);
- an attempt answered 4xx or 5xx is not stored (a 4xx that was stored anyway
  would be delivered twice by the retry);
- an attempt that ended in a connection error may or may not be stored: that
  is SMTP's known duplicate window (the server stored the message, its 250 was
  lost); such stores are counted apart, and a message stored that way *and*
  again after a later 250 is a window duplicate, not a violation;
- a message a fault client abandoned before its end (mid-DATA, mid-BDAT) is
  never stored;
- each stored message arrived as it was sent: TLS when the client used TLS,
  authenticated when it logged in.

smtp-source's messages carry no id; each run has its own sender and ``-N``
numbers the recipients, so a run is checked as a whole (no message stored
twice; all of them stored when the run reported success).

Clients run in the event loop and in threads: every change holds one lock.
"""

from __future__ import annotations

import collections
import itertools
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

# What a client was told about one attempt.
ACCEPTED = "250"
TEMPORARY = "4xx"
REFUSED = "5xx"
CONNECTION = "connection error"
OUTCOMES = (ACCEPTED, TEMPORARY, REFUSED, CONNECTION)

SENDER = "soak@example.org"
RECIPIENT = "inbox@example.org"
SOURCE_RECIPIENT = "rcpt@soak.test"
BODY_LINE = b"The quick brown fox jumps over the lazy dog, again and again and again.\r\n"


def outcome_of(code: int) -> str:
    """An SMTP reply code as the retry logic sees it."""
    if 200 <= code < 300:
        return ACCEPTED
    if 400 <= code < 500:
        return TEMPORARY
    if 500 <= code < 600:
        return REFUSED
    return CONNECTION  # a malformed reply (code -1): the connection is unusable


def build_message(message_id: str, attempt: int, size: int, fault: str = "") -> bytes:
    """A message of about ``size`` octets of body, CRLF lines, no dot at a line start."""
    header = (
        f"From: <{SENDER}>\r\nTo: <{RECIPIENT}>\r\nSubject: soak {message_id}\r\n"
        f"X-Soak-Id: {message_id}\r\nX-Soak-Attempt: {attempt}\r\n"
    )
    if fault:
        header += f"X-Soak-Fault: {fault}\r\n"
    lines = max(1, size // len(BODY_LINE))
    return header.encode() + b"\r\n" + BODY_LINE * lines


@dataclass
class Entry:
    """One message: who sent it, how, and what each attempt was told."""

    client: str
    secure: bool  # sent over TLS (STARTTLS or implicit)
    authenticated: bool
    abandoned: bool = False  # a fault client gave up before the message's end
    told: dict[int, str] = field(default_factory=dict)  # attempt -> outcome

    def accepted(self) -> bool:
        return ACCEPTED in self.told.values()


@dataclass(frozen=True)
class Stored:
    message_id: str
    attempt: int
    tls: bool
    authenticated: bool
    pid: int


@dataclass
class SourceRun:
    """One smtp-source run: its sender names its messages."""

    sender: str
    messages: int
    returncode: int | None = None


class Ledger:
    """The client half of the accounting, shared by every client."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._numbers = itertools.count(1)
        self.entries: dict[str, Entry] = {}
        self.source_runs: list[SourceRun] = []
        self.faults: collections.Counter[str] = collections.Counter()
        self.unexpected: collections.Counter[str] = collections.Counter()

    def new_message(
        self, client: str, *, secure: bool, authenticated: bool, abandoned: bool = False
    ) -> str:
        with self._lock:
            message_id = f"{client}-{next(self._numbers)}"
            self.entries[message_id] = Entry(client, secure, authenticated, abandoned)
        return message_id

    def told(self, message_id: str, attempt: int, outcome: str) -> None:
        with self._lock:
            self.entries[message_id].told[attempt] = outcome

    def fault(self, kind: str) -> None:
        with self._lock:
            self.faults[kind] += 1

    def unexpected_error(self, description: str) -> None:
        """An error the classification did not foresee (reported, and retried)."""
        with self._lock:
            self.unexpected[description[:160]] += 1

    def source_run(self, messages: int) -> SourceRun:
        with self._lock:
            run = SourceRun(f"src{len(self.source_runs) + 1}@soak.test", messages)
            self.source_runs.append(run)
        return run


def read_stores(paths: Iterable[Path]) -> list[Stored]:
    """Every line of every server process's store; a torn last line (a process
    killed mid-write) would show up as a malformed line and is reported as such."""
    stored = []
    for path in paths:
        if not path.exists():
            continue
        for line in path.read_text().splitlines():
            parts = line.split("\t")
            if len(parts) != 5:
                stored.append(Stored(f"<malformed: {line[:60]!r}>", 0, False, False, 0))
                continue
            message_id, attempt, tls, authenticated, pid = parts
            stored.append(
                Stored(message_id, int(attempt), tls == "1", authenticated == "1", int(pid))
            )
    return stored


@dataclass
class Accounting:
    """The comparison's results; ``violations`` lists what must not happen."""

    messages: collections.Counter[str] = field(default_factory=collections.Counter)
    told: dict[str, collections.Counter[str]] = field(default_factory=dict)
    accepted: int = 0
    refused: int = 0
    unresolved: int = 0  # gave up after retries, or the run ended first
    stored_lines: int = 0
    window_stores: int = 0  # stored after a connection error: no 250 reached the client
    window_duplicates: int = 0  # of which the message was stored again by a later attempt
    abandoned: int = 0
    source_messages: int = 0
    source_stored: int = 0
    violations: list[str] = field(default_factory=list)

    def violate(self, kind: str, detail: str) -> None:
        self.violations.append(f"{kind}: {detail}")


def account(ledger: Ledger, stored: list[Stored]) -> Accounting:
    result = Accounting()
    by_attempt: dict[tuple[str, int], list[Stored]] = collections.defaultdict(list)
    by_message: dict[str, list[Stored]] = collections.defaultdict(list)
    sources: dict[str, list[Stored]] = collections.defaultdict(list)
    for line in stored:
        result.stored_lines += 1
        if line.message_id.startswith("src:"):
            sources[line.message_id.split(":")[1]].append(line)
        else:
            by_attempt[line.message_id, line.attempt].append(line)
            by_message[line.message_id].append(line)
    for message_id in by_message.keys() - ledger.entries.keys():
        result.violate("stored, never sent", message_id)
    for message_id, entry in ledger.entries.items():
        _account_message(result, message_id, entry, by_attempt, by_message[message_id])
    _account_sources(result, ledger.source_runs, sources)
    return result


def _account_message(
    result: Accounting,
    message_id: str,
    entry: Entry,
    by_attempt: dict[tuple[str, int], list[Stored]],
    copies: list[Stored],
) -> None:
    result.messages[entry.client] += 1
    told = result.told.setdefault(entry.client, collections.Counter())
    for outcome in entry.told.values():
        told[outcome] += 1
    if entry.abandoned:
        result.abandoned += 1
        if copies:  # its end never left the client: nothing to deliver
            result.violate("abandoned message stored", f"{message_id} ({len(copies)} copies)")
        return
    if entry.accepted():
        result.accepted += 1
    elif REFUSED in entry.told.values():
        result.refused += 1
    else:
        result.unresolved += 1
    window = 0
    for attempt, outcome in entry.told.items():
        stored_here = len(by_attempt.get((message_id, attempt), ()))
        if outcome == ACCEPTED and stored_here != 1:
            kind = "lost after 250" if stored_here == 0 else "stored twice by one 250"
            result.violate(kind, f"{message_id} attempt {attempt} ({stored_here} copies)")
        elif outcome in (TEMPORARY, REFUSED) and stored_here:
            result.violate(f"stored after {outcome}", f"{message_id} attempt {attempt}")
        elif outcome == CONNECTION and stored_here:
            window += stored_here
    for line in copies:
        if line.attempt not in entry.told:
            result.violate("stored, attempt never made", f"{message_id} attempt {line.attempt}")
        if line.tls != entry.secure or line.authenticated != entry.authenticated:
            result.violate(
                "session state differs",
                f"{message_id}: sent tls={entry.secure} auth={entry.authenticated}, "
                f"stored tls={line.tls} auth={line.authenticated}",
            )
    result.window_stores += window
    if window and len(copies) > 1:
        result.window_duplicates += 1


def _account_sources(
    result: Accounting, runs: list[SourceRun], sources: dict[str, list[Stored]]
) -> None:
    known = {run.sender for run in runs}
    for sender in sources.keys() - known:
        result.violate("stored, never sent", f"smtp-source sender {sender}")
    for run in runs:
        lines = sources.get(run.sender, [])
        recipients = collections.Counter(line.message_id for line in lines)
        result.source_messages += run.messages
        result.source_stored += len(recipients)
        doubled = [rcpt for rcpt, count in recipients.items() if count > 1]
        if doubled:  # smtp-source never sends a message twice
            result.violate("smtp-source message stored twice", f"{run.sender}: {doubled[:3]}")
        if len(recipients) > run.messages:
            result.violate("smtp-source: more stored than sent", run.sender)
        if run.returncode == 0 and len(recipients) != run.messages:
            result.violate(
                "smtp-source run succeeded but messages are missing",
                f"{run.sender}: {len(recipients)} of {run.messages}",
            )
