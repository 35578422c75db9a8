"""Soak with faults (issue 20): smtpwire.server under many kinds of client for a
long time, with faults injected, and every message accounted for exactly.

``python3 benchmarks/soak.py`` (or ``nox -s soak``) runs 10 minutes;
``--quick`` one minute (for CI); ``--duration SECONDS`` any length.

What runs (see docs/soak.md):

- two smtpwire command-line servers (``_soak_servers.py``) on free loopback
  ports with a trustme CA made at start: STARTTLS offered (plain clients too) on
  asyncio's loop, implicit TLS on uvloop; the modern extension set
  (PIPELINING, CHUNKING), AUTH PLAIN once TLS is on, a 256 KiB size limit, and
  a handler (``_soak_server.py``) that appends each message's id to a store
  file, fsync'd, before its 250;
- clients (``_soak_clients.py``): smtpwire.client ``SMTP`` (DATA and BDAT,
  each transport), two ``SMTPPool``s, ``smtplib`` in threads, Postfix's
  ``smtp-source`` in a subprocess; they retry 4xx and connection errors;
- faults: oversize messages (552), a handler that raises (451) or refuses (550)
  or sleeps, chosen per message by a header; raw-socket clients that vanish
  mid-command, mid-DATA, mid-BDAT, mid-TLS-handshake or after the final dot
  (``_soak_faults.py``); slow clients; and server restarts: SIGTERM (the
  graceful drain answers 421 to what is left), then a new process on the port.

At the end (``_soak_ledger.py``): every attempt answered 250 stored exactly
once, nothing stored after a 4xx or 5xx or from an abandoned message, stores
in the duplicate window counted apart; each server's RSS (start, peak, end;
growth over 50 MiB after warm-up is a failure) and its open file descriptors
before the load and after a quiet period.  Any violation: exit status 1.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import concurrent.futures
import contextlib
import random
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

import trustme

from _servers import MIB, SMTP_SOURCE, free_port, postfix_tool_left_out, uvloop_installed
from _soak_clients import (
    Control,
    Target,
    pool_sender,
    smtp_options,
    smtp_source_worker,
    smtplib_worker,
    smtpwire_worker,
)
from _soak_faults import FaultClient, slow_client
from _soak_ledger import OUTCOMES, Accounting, Ledger, account, read_stores
from _soak_servers import SoakServer, open_fds
from smtpwire.client.pool import SMTPPool

SIZE_LIMIT = 256 * 1024
RSS_GROWTH_LIMIT = 50.0  # MiB after warm-up
SAMPLE_EVERY = 2.0
GRACE = 60.0  # after the load stops: for messages under way to get a final answer
WAIT_FOR_CLIENTS = GRACE + 45.0
QUIET_DEADLINE = 15.0


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=float, help="seconds of load (default 600)")
    parser.add_argument("--quick", action="store_true", help="60 seconds (for CI)")
    parser.add_argument("--restart-every", type=float, help="seconds between restarts")
    parser.add_argument("--seed", type=int, default=None, help="for the clients' choices")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    options = parser.parse_args()
    duration = options.duration or (60.0 if options.quick else 600.0)
    if duration < 10:
        parser.error("--duration must be at least 10 seconds")
    restart_every = options.restart_every or max(8.0, min(45.0, duration / 5))
    seed = options.seed if options.seed is not None else random.randrange(1 << 30)
    workdir = Path(tempfile.mkdtemp(prefix="smtpwire-soak-"))
    try:
        failed = asyncio.run(Soak(workdir, duration, restart_every, seed).run())
    except (KeyboardInterrupt, asyncio.CancelledError):  # Ctrl-C, or SIGTERM
        print("\ninterrupted: everything started has been stopped", file=sys.stderr)
        failed = True
    finally:
        if options.keep:
            print(f"work directory kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    raise SystemExit(1 if failed else 0)


class Soak:
    def __init__(self, workdir: Path, duration: float, restart_every: float, seed: int) -> None:
        self.workdir = workdir
        self.duration = duration
        self.restart_every = restart_every
        self.seed = seed
        self.warm_up = min(20.0, duration / 4)
        self.ledger = Ledger()
        self.control = Control()
        self.servers: list[SoakServer] = []
        self.restarts: list[tuple[str, int | None, float]] = []  # server, status, seconds
        self.fds: dict[str, tuple[int | None, int | None, int | None]] = {}
        self.failures: list[str] = []

    async def run(self) -> bool:
        """The whole soak; True when anything failed."""
        loop = asyncio.get_running_loop()
        main_task = asyncio.current_task()
        assert main_task is not None
        loop.add_signal_handler(signal.SIGTERM, main_task.cancel)
        threads = concurrent.futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="smtplib")
        tasks: list[asyncio.Future[None]] = []
        try:
            target = self._start_servers()
            tasks = self._start_clients(target, threads)
            background = [
                asyncio.ensure_future(self._restarts()),
                asyncio.ensure_future(self._sample()),
            ]
            # The soak's length: load runs meanwhile (this sleep defines the run).
            await self._watch(tasks, self.duration)
            self.control.stop(GRACE)
            background[0].cancel()
            await asyncio.wait([background[0]])
            done, pending = await asyncio.wait(tasks, timeout=WAIT_FOR_CLIENTS)
            for task in done:
                if task.exception() is not None:
                    self.failures.append(f"a client crashed: {task.exception()!r}")
            if pending:
                self.failures.append(
                    f"{len(pending)} clients still busy {WAIT_FOR_CLIENTS} s after the end"
                )
            await self._quiet()
            background[1].cancel()
            for server in self.servers:
                status = await asyncio.to_thread(server.stop)
                if status != 0:
                    self.failures.append(
                        f"{server.name}: exit status {status} on the final SIGTERM"
                    )
        finally:
            self.control.aborted.set()
            self.control.stopping.set()
            for task in tasks:
                task.cancel()
            for server in self.servers:
                server.kill()
            threads.shutdown(wait=True, cancel_futures=True)
            loop.remove_signal_handler(signal.SIGTERM)
        stored = read_stores(i.store for s in self.servers for i in s.incarnations)
        result = account(self.ledger, stored)
        self._report(result)
        return bool(result.violations or self.failures)

    def _start_servers(self) -> Target:
        ca = trustme.CA()
        certificate = ca.issue_cert("localhost", "127.0.0.1")
        pem = self.workdir / "server.pem"
        certificate.private_key_and_cert_chain_pem.write_to_path(str(pem))
        ca.cert_pem.write_to_path(str(self.workdir / "ca.pem"))
        tls_loop = "uvloop" if uvloop_installed() else "asyncio"
        starttls = SoakServer(
            "starttls", free_port(), loop="asyncio", size_limit=SIZE_LIMIT, workdir=self.workdir,
            tls_options=["--tlscert", str(pem), "--tlskey", str(pem), "--no-requiretls"],
        )  # fmt: skip
        self.servers.append(starttls)
        smtps = SoakServer(
            "smtps", free_port(), loop=tls_loop, size_limit=SIZE_LIMIT, workdir=self.workdir,
            tls_options=["--smtpscert", str(pem), "--smtpskey", str(pem)],
        )  # fmt: skip
        self.servers.append(smtps)
        for server in self.servers:
            server.start()
            server.sample()
        return Target(
            "127.0.0.1", starttls.port, smtps.port, str(self.workdir / "ca.pem"), SIZE_LIMIT
        )

    def _start_clients(
        self, target: Target, threads: concurrent.futures.ThreadPoolExecutor
    ) -> list[asyncio.Future[None]]:
        rng = random.Random(self.seed)
        ledger, control = self.ledger, self.control

        def seeded() -> random.Random:
            return random.Random(rng.randrange(1 << 30))

        tasks: list[asyncio.Future[None]] = []
        for transport in ("plain", "starttls", "smtps"):
            for chunking in (False, True):
                name = f"smtpwire SMTP {transport}{' BDAT' if chunking else ''}"
                tasks.append(asyncio.ensure_future(
                    smtpwire_worker(
                        name, target, transport=transport, chunking=chunking, ledger=ledger,
                        control=control, rng=seeded(),
                    )
                ))  # fmt: skip
        for transport, chunking in (("plain", False), ("starttls", True)):
            name = f"SMTPPool {transport}{' BDAT' if chunking else ''}"
            tasks.append(asyncio.ensure_future(
                self._pool(name, target, transport, chunking, seeded())
            ))  # fmt: skip
        for transport in ("plain", "starttls", "smtps"):
            tasks.append(asyncio.ensure_future(asyncio.wrap_future(threads.submit(
                smtplib_worker, f"smtplib {transport}", target, transport=transport,
                ledger=ledger, control=control, seed=rng.randrange(1 << 30),
            ))))  # fmt: skip
        if SMTP_SOURCE.exists():
            tasks.append(asyncio.ensure_future(
                smtp_source_worker(target, ledger, control, str(SMTP_SOURCE))
            ))  # fmt: skip
        else:
            print(postfix_tool_left_out(SMTP_SOURCE))
        for _ in range(2):
            faults = FaultClient(target, ledger, control, seeded())
            tasks.append(asyncio.ensure_future(faults.run(pause=0.1)))
        tasks.append(asyncio.ensure_future(slow_client(target, ledger, control, seeded())))
        return tasks

    async def _pool(
        self, name: str, target: Target, transport: str, chunking: bool, rng: random.Random
    ) -> None:
        options = smtp_options(target, transport)
        async with SMTPPool(
            max_connections=3,
            max_messages_per_connection=50,
            chunking=chunking,
            **options,  # type: ignore[arg-type]
        ) as pool:
            senders = [
                pool_sender(
                    name, pool, target=target, secure=transport != "plain", ledger=self.ledger,
                    control=self.control, rng=random.Random(rng.randrange(1 << 30)),
                )
                for _ in range(6)
            ]  # fmt: skip
            await asyncio.gather(*senders)

    async def _watch(self, tasks: list[asyncio.Future[None]], seconds: float) -> None:
        """Wait out the run, but stop early if a client crashed (its error is reported)."""
        done, _ = await asyncio.wait(tasks, timeout=seconds, return_when=asyncio.FIRST_EXCEPTION)
        if done:
            self.failures.append("a client ended before the run did")

    async def _restarts(self) -> None:
        """SIGTERM one server, then start it again on its port; in turn."""
        started = time.monotonic()
        turn = 0
        while True:
            # The restart schedule (pacing): every restart_every seconds after the
            # warm-up, none in the last 10 s (the final quiet period must be clean).
            await asyncio.sleep(
                self.restart_every if turn else max(self.warm_up, self.restart_every / 2)
            )
            if time.monotonic() - started > self.duration - 10:
                return
            server = self.servers[turn % len(self.servers)]
            turn += 1
            status = await asyncio.to_thread(server.stop)
            self.restarts.append((server.name, status, server.incarnations[-1].stop_seconds or 0.0))
            if status != 0:
                self.failures.append(f"{server.name}: exit status {status} after SIGTERM")
            await asyncio.to_thread(server.start)

    async def _sample(self) -> None:
        while True:
            for server in self.servers:
                server.sample()
            await asyncio.sleep(SAMPLE_EVERY)  # the sampling period

    async def _quiet(self) -> None:
        """The clients are gone: each server process should drop back to the file
        descriptors it had when it started (the process serving now: after a
        restart that is a later incarnation, compared with its own start, since a
        fresh process may differ from the first one by what its loop made lazily)."""
        for server in self.servers:
            incarnation = server.current
            pid = incarnation.pid
            baseline = incarnation.fds_at_start
            at_start = open_fds(pid)
            deadline = time.monotonic() + QUIET_DEADLINE
            count = at_start
            while time.monotonic() < deadline:
                count = open_fds(pid)
                if count is not None and count <= (baseline or 0):
                    break
                await asyncio.sleep(0.25)  # polling /proc: nothing to wait on
            server.sample()
            self.fds[server.name] = (baseline, at_start, count)
            if baseline is None or count is None or count > baseline:
                self.failures.append(
                    f"{server.name}: {count} fds after the quiet period, {baseline} before the load"
                )

    # -- the report ----------------------------------------------------------------------------

    def _report(self, result: Accounting) -> None:
        print(f"\nsmtpwire soak: {self.duration:.0f} s, seed {self.seed}, "
              f"{len(self.restarts)} restarts every {self.restart_every:.0f} s")  # fmt: skip
        print(
            f"\n  {'client':28} {'messages':>9} "
            + " ".join(f"{o:>8}" for o in ("250", "4xx", "5xx", "conn err"))
        )
        for client in sorted(result.messages):
            told = result.told.get(client, collections.Counter())
            counts = " ".join(f"{told.get(outcome, 0):>8}" for outcome in OUTCOMES)
            print(f"  {client:28} {result.messages[client]:>9} {counts}")
        runs = self.ledger.source_runs
        succeeded = sum(1 for run in runs if run.returncode == 0)
        print(f"  {'smtp-source':28} {result.source_messages:>9} "
              f"({len(runs)} runs, {succeeded} complete; "
            f"{result.source_stored} stored)")  # fmt: skip
        print("\n  faults injected")
        for kind, count in sorted(self.ledger.faults.items()):
            print(f"    {kind:50} {count:>7}")
        for name, status, seconds in self.restarts:
            print(f"    restart of {name}: exit status {status}, stopped in {seconds:.2f} s")
        print("\n  accounting")
        print(f"    messages with a 250 (each stored once)      {result.accepted:>8}")
        print(f"    refused 5xx (none stored)                   {result.refused:>8}")
        print(f"    no final answer (gave up / run ended)       {result.unresolved:>8}")
        print(f"    abandoned by fault clients (none stored)    {result.abandoned:>8}")
        print(f"    stored lines, all servers                   {result.stored_lines:>8}")
        print(f"    stored without a 250 (duplicate window)     {result.window_stores:>8}")
        print(f"      of which delivered twice                  {result.window_duplicates:>8}")
        print(f"    violations                                  {len(result.violations):>8}")
        for violation in result.violations[:20]:
            print(f"      {violation}")
        for description, count in self.ledger.unexpected.items():
            print(f"    unexpected client error x{count}: {description}")
        print(
            "\n  servers            RSS MiB start / peak / end   growth after warm-up"
            "   fds before / quiet start / end"
        )
        for server in self.servers:
            samples = [value for i in server.incarnations for _, value in i.rss_samples]
            growth = [
                g for i in server.incarnations if (g := i.growth_after(self.warm_up)) is not None
            ]
            worst = max(growth, default=0.0)
            if worst > RSS_GROWTH_LIMIT:
                self.failures.append(f"{server.name}: RSS grew {worst:.1f} MiB after warm-up")
            rss_text = (
                f"{samples[0] / MIB:6.1f} / {max(samples) / MIB:6.1f} / {samples[-1] / MIB:6.1f}"
                if samples else "no samples"
            )  # fmt: skip
            before, quiet_start, end = self.fds.get(server.name, (None, None, None))
            print(f"  {server.name:8} {server.loop:8} x{len(server.incarnations)}  {rss_text}"
                  f"   {worst:8.1f} MiB           {before} / {quiet_start} / {end}")  # fmt: skip
        for server in self.servers:
            for kind, count in server.log_exceptions().items():
                injected = kind == "_soak_server.HandlerFault"
                print(f"  {server.name} log: {count} x {kind}{' (injected)' if injected else ''}")
                if not injected:
                    self.failures.append(f"{server.name}: {count} x {kind} in its log")
        for failure in self.failures:
            print(f"  FAILED: {failure}")
        verdict = "FAILED" if result.violations or self.failures else "OK"
        print(f"\n  {verdict}")


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        main()
