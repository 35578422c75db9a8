"""A private Postfix MTA for the interop tests: its own configuration, queue, data
directory and log file under a temporary directory, its smtpd on a free loopback
port, no DNS, no chroot, and never a daemon left running.

Postfix's master must start as root (it binds, then drops every daemon to
``mail_owner``), and the Debian package must be installed (``postfix``, with its
``postfix`` user and ``postdrop`` group).  Where either is missing the tests are
skipped, naming what is missing (under CI, where both are there, they fail: see
:func:`interop.peers.require_tool`).

The temporary directory is made under /tmp, open for reading to all: the daemons
run as ``postfix`` and must reach the queue, the data directory and the log, which
pytest's private ``tmp_path`` (mode 0700) would hide from them.
"""

from __future__ import annotations

import grp
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from interop.peers import WAIT, require_tool, run_peer, transcript, which_or

POSTFIX = "/usr/sbin/postfix"
START_ATTEMPTS = 3  # free ports tried, in case another process takes one first
POLL = 0.05  # seconds between looks at the queue or the log
QUEUE_ID = r"[0-9A-F]{6,}"

# Every service a test needs, none chrooted (column 5 "n"), plus postlogd for
# maillog_file.  The smtpd line is added with the port chosen at start.
MASTER_CF = """\
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


def base_settings(root: Path) -> dict[str, str]:
    """main.cf for a private, loopback-only, DNS-free instance that delivers nowhere
    until a test says where (``relayhost`` or ``default_transport``)."""
    return {
        "compatibility_level": "3.6",
        "queue_directory": str(root / "queue"),
        "data_directory": str(root / "data"),
        "mail_owner": "postfix",
        "setgid_group": "postdrop",
        "myhostname": "mta.test",
        "mydomain": "mta.test",
        "myorigin": "$myhostname",
        "mydestination": "",
        "inet_interfaces": "loopback-only",
        "inet_protocols": "ipv4",
        "mynetworks": "127.0.0.0/8",
        "disable_dns_lookups": "yes",
        "smtp_host_lookup": "native",
        "lmtp_host_lookup": "native",
        "smtpd_peername_lookup": "no",
        "maillog_file": str(root / "maillog"),
        "maillog_file_prefixes": str(root),
        # Mail from 127.0.0.1 keeps its headers as they came: no Date, Message-ID
        # or domain added, so what arrives can be compared with what was sent.
        "local_header_rewrite_clients": "",
        "alias_maps": "",
        "alias_database": "",
        "local_recipient_maps": "",
        "biff": "no",
        "smtputf8_enable": "yes",
        "smtpd_banner": "$myhostname ESMTP",
        "message_size_limit": str(8 * 1024 * 1024),
        # A deferred recipient is tried again within about a second, not minutes.
        "queue_run_delay": "1s",
        "minimal_backoff_time": "1s",
        "maximal_backoff_time": "2s",
        "delay_warning_time": "0",
    }


def supported(postfix: str, parameter: str) -> bool:
    """Whether this Postfix knows ``parameter`` (some arrived in patch releases)."""
    postconf = str(Path(postfix).with_name("postconf"))
    result = run_peer([postconf, "-d", "-h", parameter])
    return result.returncode == 0 and "unknown parameter" not in result.stderr


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def require_postfix() -> str:
    """The postfix command, when a private instance can run here; else skip (fail
    under CI)."""
    postfix = require_tool(which_or("postfix", POSTFIX), "postfix")
    problem = ""
    try:
        pwd.getpwnam("postfix")
        grp.getgrnam("postdrop")
    except KeyError:
        problem = "the postfix user or the postdrop group is missing"
    if os.geteuid() != 0:
        problem = "a private Postfix needs root: its master drops to mail_owner"
    return require_tool(postfix, "postfix", works=not problem, why=problem)


@dataclass
class Postfix:
    """One private instance; :func:`private_postfix` makes, starts and stops it."""

    postfix: str
    root: Path
    port: int = 0

    @property
    def config(self) -> Path:
        return self.root / "config"

    @property
    def queue(self) -> Path:
        return self.root / "queue"

    @property
    def maillog(self) -> Path:
        return self.root / "maillog"

    def command(self, name: str) -> str:
        return str(Path(self.postfix).with_name(name))

    def run(self, *arguments: str) -> subprocess.CompletedProcess[str]:
        return run_peer([self.postfix, "-c", str(self.config), *arguments])

    def configure(self, settings: Mapping[str, str]) -> None:
        # Root's, as Postfix wants them; post-install makes what goes inside.
        self.config.mkdir(mode=0o755, exist_ok=True)
        self.queue.mkdir(mode=0o755, exist_ok=True)
        main = "".join(f"{name} = {value}\n" for name, value in settings.items())
        (self.config / "main.cf").write_text(main)
        smtpd = f"127.0.0.1:{self.port} inet n - n - - smtpd\n"
        (self.config / "master.cf").write_text(smtpd + MASTER_CF)

    def master_pid(self) -> int | None:
        try:
            return int((self.queue / "pid" / "master.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def stop(self) -> None:
        """``postfix stop``, then the master killed if it is still there."""
        pid = self.master_pid()
        if pid is None or not alive(pid):
            return
        self.run("stop")
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline and alive(pid):
            time.sleep(POLL)
        if alive(pid):
            # Its process group: the master and every daemon it started.
            with suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)

    def log(self) -> str:
        try:
            return self.maillog.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def queued(self) -> str:
        """``postqueue -p``: "Mail queue is empty" or the queued messages."""
        result = run_peer([self.command("postqueue"), "-c", str(self.config), "-p"])
        assert result.returncode == 0, transcript(result)
        return result.stdout

    def wait_until(self, done: Callable[[], bool], what: str, timeout: float) -> None:
        """Polls ``done`` until it holds; fails after ``timeout`` seconds with the
        queue and the end of the log."""
        deadline = time.monotonic() + timeout
        while not done():
            if time.monotonic() > deadline:
                tail = "\n".join(self.log().splitlines()[-40:])
                raise AssertionError(
                    f"not within {timeout} s: {what}\n{self.queued()}\nmaillog:\n{tail}"
                )
            time.sleep(POLL)

    def wait_for_empty_queue(self, timeout: float) -> None:
        self.wait_until(
            lambda: "Mail queue is empty" in self.queued(), "the queue emptied", timeout
        )

    def message_ids(self) -> dict[str, str]:
        """Queue id -> Message-ID (without its angle brackets), from cleanup's log."""
        pattern = rf"postfix/cleanup\[\d+\]: ({QUEUE_ID}): message-id=<([^>]*)>"
        return dict(re.findall(pattern, self.log()))


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def listening(port: int) -> bool:
    """Whether smtpd answers on ``port``: a greeting, then QUIT (so that the log
    shows a clean session, not a lost connection)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as sock:
            reader = sock.makefile("rb")
            greeting = reader.readline()
            sock.sendall(b"QUIT\r\n")
            reader.readline()
            return greeting.startswith(b"220 ")
    except OSError:
        return False


@contextmanager
def private_postfix(settings: Mapping[str, str]) -> Iterator[Postfix]:
    """A started private Postfix with :func:`base_settings` updated by ``settings``
    (where ``{root}`` stands for its directory); stopped, and its directory removed,
    on exit.  Skipped (failed under CI) when it cannot start."""
    postfix = require_postfix()
    root = Path(tempfile.mkdtemp(prefix="postfix-", dir="/tmp"))  # see the module docstring
    root.chmod(0o755)
    instance = Postfix(postfix, root)
    try:
        for _ in range(START_ATTEMPTS):
            instance.port = free_port()
            configured = base_settings(root)
            configured.update({name: value.format(root=root) for name, value in settings.items()})
            instance.configure(configured)
            # "postfix start" runs "postfix check" first (and fails if it does).
            started = instance.run("start")
            if started.returncode == 0 and listening(instance.port):
                break
            instance.stop()
        else:
            why = f"Postfix cannot start here: {transcript(started)}\n{instance.log()}"
            require_tool(postfix, "postfix", works=False, why=why)
        yield instance
    finally:
        try:
            instance.stop()
        finally:
            shutil.rmtree(root, ignore_errors=True)
