"""The soak's well-behaved clients: smtpwire.client's SMTP and SMTPPool in the
event loop, smtplib in threads and Postfix's smtp-source in a subprocess.

Each sends messages until told to stop, and retries a message after a 4xx or a
connection error (the server may be restarting) with the same id and the next
attempt number, as a real MTA's queue would; a 250 or a 5xx is final.  Every
attempt's outcome goes to the :class:`~_soak_ledger.Ledger`.
"""

from __future__ import annotations

import asyncio
import random
import smtplib
import ssl
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from _soak_ledger import (
    ACCEPTED,
    CONNECTION,
    RECIPIENT,
    REFUSED,
    SENDER,
    SOURCE_RECIPIENT,
    Ledger,
    build_message,
    outcome_of,
)
from _soak_server import PASSWORD, USERNAME
from smtpwire.client import SMTP
from smtpwire.client.errors import (
    SMTPException,
    SMTPRecipientsRefused,
    SMTPResponseException,
    SMTPServerDisconnected,
    SMTPTimeoutError,
)
from smtpwire.client.pool import SMTPPool

MAX_ATTEMPTS = 40
CLIENT_TIMEOUT = 30.0
SOURCE_TIMEOUT = 300.0
TRANSPORTS = ("plain", "starttls", "smtps")


@dataclass(frozen=True)
class Target:
    """Where the servers listen: plain and STARTTLS (offered, not required) on
    one port, implicit TLS on another; AUTH is offered once TLS is on."""

    host: str
    plain_port: int
    smtps_port: int
    cafile: str
    size_limit: int

    def context(self) -> ssl.SSLContext:
        """A client context trusting the soak's CA only (and checking the name)."""
        return ssl.create_default_context(cafile=self.cafile)

    def port(self, transport: str) -> int:
        return self.smtps_port if transport == "smtps" else self.plain_port


class Control:
    """When to stop: ``stopping`` ends the sending of new messages; a message
    under way is retried until it has a final answer, ``MAX_ATTEMPTS`` or the
    hard deadline; ``aborted`` (Ctrl-C) stops everything at once."""

    def __init__(self) -> None:
        self.stopping = threading.Event()
        self.aborted = threading.Event()
        self.hard_deadline = float("inf")

    def stop(self, grace: float) -> None:
        self.hard_deadline = time.monotonic() + grace
        self.stopping.set()

    def may_retry(self, attempt: int) -> bool:
        return (
            attempt < MAX_ATTEMPTS
            and time.monotonic() < self.hard_deadline
            and not self.aborted.is_set()
        )


def backoff(attempt: int, rng: random.Random) -> float:
    """Seconds before the next attempt: paces retries while a server restarts
    (this is load pacing, not synchronisation)."""
    return min(0.05 * 2.0 ** (attempt - 1), 1.0) * (0.5 + rng.random())


@dataclass(frozen=True)
class Plan:
    size: int
    fault: str  # the X-Soak-Fault of the first attempt ("" for none)
    later_fault: str  # of the retries
    kind: str  # as counted in the fault table ("" for an ordinary message)


def plan(rng: random.Random, size_limit: int) -> Plan:
    """What the next message is: mostly ordinary, some with a fault the server
    handles (numbers chosen so every fault occurs many times a minute)."""
    draw = rng.random()
    if draw < 0.02:
        return Plan(size_limit + 10_000, "", "", "oversize (552)")
    if draw < 0.04:  # the handler raises (451), the retry goes through
        return Plan(rng.randint(200, 5_000), "raise", "", "handler raises (451, retried)")
    if draw < 0.06:
        return Plan(rng.randint(200, 5_000), "reject", "reject", "handler refuses (550)")
    if draw < 0.07:
        delay = f"sleep={rng.uniform(0.2, 2.0):.2f}"
        return Plan(rng.randint(200, 5_000), delay, delay, "slow handler (0.2-2 s)")
    if draw < 0.09:
        return Plan(rng.randint(50_000, 200_000), "", "", "")
    return Plan(rng.randint(200, 8_000), "", "", "")


Attempt = Callable[[bytes], Awaitable[str]]


async def deliver(
    ledger: Ledger, control: Control, rng: random.Random, *, client: str, secure: bool,
    send: Attempt, size_limit: int,
) -> None:  # fmt: skip
    """One message, attempt after attempt, until it has a final answer."""
    chosen = plan(rng, size_limit)
    message_id = ledger.new_message(client, secure=secure, authenticated=secure)
    if chosen.kind:
        ledger.fault(chosen.kind)
    attempt = 1
    while True:
        fault = chosen.fault if attempt == 1 else chosen.later_fault
        outcome = await send(build_message(message_id, attempt, chosen.size, fault))
        ledger.told(message_id, attempt, outcome)
        if outcome in (ACCEPTED, REFUSED) or not control.may_retry(attempt):
            return
        attempt += 1
        await asyncio.sleep(backoff(attempt, rng))


def classify(error: BaseException, ledger: Ledger) -> str:
    """What smtpwire.client's exception told the client."""
    if isinstance(error, SMTPRecipientsRefused):
        return outcome_of(error.recipients[0].code)
    if isinstance(error, SMTPResponseException):
        return outcome_of(error.code)
    if isinstance(error, (SMTPServerDisconnected, SMTPTimeoutError, OSError, TimeoutError)):
        return CONNECTION  # SMTPConnectError is an OSError (ConnectionError); so is ssl's
    ledger.unexpected_error(f"smtpwire.client: {error!r}")
    return CONNECTION


def smtp_options(target: Target, transport: str) -> dict[str, object]:
    options: dict[str, object] = {
        "hostname": target.host, "port": target.port(transport), "timeout": CLIENT_TIMEOUT,
        "local_hostname": "soak.client",
    }  # fmt: skip
    if transport == "plain":
        options["start_tls"] = False
    else:
        options["tls_context"] = target.context()
        options["username"], options["password"] = USERNAME, PASSWORD
        if transport == "smtps":
            options["use_tls"] = True
        else:
            options["start_tls"] = True
    return options


async def smtpwire_worker(
    name: str, target: Target, *, transport: str, chunking: bool, ledger: Ledger,
    control: Control, rng: random.Random,
) -> None:  # fmt: skip
    """One SMTP connection, reused from message to message, reopened when lost."""
    client: SMTP | None = None

    async def send(content: bytes) -> str:
        nonlocal client
        try:
            if client is None or not client.is_connected:
                client = SMTP(chunking=chunking, **smtp_options(target, transport))  # type: ignore[arg-type]
                await client.connect()  # logs in too, when given a username
            await client.sendmail(SENDER, [RECIPIENT], content)
            return ACCEPTED
        except (SMTPException, OSError, TimeoutError) as error:
            outcome = classify(error, ledger)
            if outcome not in (ACCEPTED, REFUSED) and client is not None:
                client.close()
                client = None  # after a 4xx or an error, start afresh
            return outcome

    try:
        while not control.stopping.is_set():
            await deliver(
                ledger,
                control,
                rng,
                client=name,
                secure=transport != "plain",
                send=send,
                size_limit=target.size_limit,
            )
    finally:
        if client is not None:
            client.close()


async def pool_sender(
    name: str, pool: SMTPPool, *, target: Target, secure: bool, ledger: Ledger,
    control: Control, rng: random.Random,
) -> None:  # fmt: skip
    """One of several tasks sharing a pool: their sends queue up in it, so a
    pooled connection pipelines one message's end with the next one's start."""

    async def send(content: bytes) -> str:
        try:
            await pool.sendmail(SENDER, [RECIPIENT], content)
            return ACCEPTED
        except (SMTPException, OSError, TimeoutError) as error:
            return classify(error, ledger)

    while not control.stopping.is_set():
        await deliver(
            ledger,
            control,
            rng,
            client=name,
            secure=secure,
            send=send,
            size_limit=target.size_limit,
        )


def smtplib_worker(
    name: str, target: Target, *, transport: str, ledger: Ledger, control: Control, seed: int
) -> None:
    """A thread: smtplib, blocking, one connection reused, reopened when lost."""
    rng = random.Random(seed)
    client: smtplib.SMTP | None = None

    def connect() -> smtplib.SMTP:
        port = target.port(transport)
        if transport == "smtps":
            made: smtplib.SMTP = smtplib.SMTP_SSL(
                target.host, port, timeout=CLIENT_TIMEOUT, context=target.context()
            )
        else:
            made = smtplib.SMTP(target.host, port, timeout=CLIENT_TIMEOUT)
        try:
            if transport == "starttls":
                made.starttls(context=target.context())
            if transport != "plain":
                made.login(USERNAME, PASSWORD)
        except BaseException:
            made.close()
            raise
        return made

    def send(content: bytes) -> str:
        nonlocal client
        try:
            if client is None:
                client = connect()
            client.sendmail(SENDER, [RECIPIENT], content)
            return ACCEPTED
        except smtplib.SMTPRecipientsRefused as error:
            code = next(iter(error.recipients.values()))[0]
            outcome = outcome_of(code)
        except smtplib.SMTPResponseException as error:
            outcome = outcome_of(error.smtp_code)
        except (smtplib.SMTPServerDisconnected, OSError):
            outcome = CONNECTION
        except smtplib.SMTPException as error:
            ledger.unexpected_error(f"smtplib: {error!r}")
            outcome = CONNECTION
        if outcome != REFUSED and client is not None:
            client.close()  # after a 4xx or an error, start afresh
            client = None
        return outcome

    try:
        while not control.stopping.is_set():
            chosen = plan(rng, target.size_limit)
            message_id = ledger.new_message(
                name, secure=transport != "plain", authenticated=transport != "plain"
            )
            if chosen.kind:
                ledger.fault(chosen.kind)
            attempt = 1
            while True:
                fault = chosen.fault if attempt == 1 else chosen.later_fault
                outcome = send(build_message(message_id, attempt, chosen.size, fault))
                ledger.told(message_id, attempt, outcome)
                if outcome in (ACCEPTED, REFUSED) or not control.may_retry(attempt):
                    break
                attempt += 1
                # Retry pacing; the wait ends early on Ctrl-C.
                control.aborted.wait(backoff(attempt, rng))
    finally:
        if client is not None:
            client.close()


async def smtp_source_worker(
    target: Target, ledger: Ledger, control: Control, executable: str
) -> None:
    """smtp-source runs one after another: 3 sessions, connections reused (-d),
    120 messages of 1 KiB a run, each run with its own sender (its messages'
    identity, with -N's numbered recipients).  It does not retry: a run that
    meets a restart fails, and what it had sent is still accounted."""
    while not control.stopping.is_set():
        run = ledger.source_run(120)
        command = [
            executable, "-N", "-d", "-s", "3", "-m", str(run.messages), "-l", "1024",
            "-f", run.sender, "-t", SOURCE_RECIPIENT, f"{target.host}:{target.plain_port}",
        ]  # fmt: skip
        process = await asyncio.create_subprocess_exec(
            *command, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
        )
        try:
            run.returncode = await asyncio.wait_for(process.wait(), SOURCE_TIMEOUT)
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
        if run.returncode != 0:
            # Pacing while the server restarts, not synchronisation.
            await asyncio.sleep(0.5)
