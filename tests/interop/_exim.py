"""Exim 4 as a real MTA peer, run from Debian's packages without installing them.

Debian's ``exim4-daemon-light`` conflicts with the installed ``postfix`` package,
so :func:`obtain` fetches the .debs with ``apt-get download`` (exim4-daemon-light,
exim4-base, and any library package the binary cannot find here, such as libidn12)
and unpacks them with ``dpkg-deb -x`` into a directory of the test session's own.
Nothing is installed and nothing outside that directory changes.  What it takes,
each a reason to skip when missing (to fail, under CI: .ci/run provides them, and
runs ``apt-get update`` for the package lists): root, apt-get with package lists
and a reachable mirror, dpkg-deb, and ``unshare`` able to make a mount namespace.

Three obstacles, and what is done about each:

- The binary looks up its compiled-in user ``Debian-exim`` before it reads any
  configuration, and refuses uid 0 for it.  Each run of Exim gets a private mount
  namespace (``unshare --mount``) in which copies of /etc/passwd and /etc/group
  naming ``Debian-exim`` as ``nobody``'s uid and gid are bind-mounted over the real
  ones; the host never sees them.
- Libraries missing here are unpacked beside the binary and found through
  ``LD_LIBRARY_PATH`` (kept by ``keep_environment``).  Exim re-executes itself to
  deliver after dropping to its user; the loader ignores ``LD_LIBRARY_PATH`` for a
  set-uid program run that way, so the unpacked copy has its set-uid bit cleared
  (started as root it needs none: it gives up root itself, and its user can
  deliver by SMTP or to ``:blackhole:`` without it).
- ``-C`` makes Exim give up root ("exim user lost privilege for using -C option"),
  so every file it touches (spool, logs, configuration, certificates) lives in a
  directory made under /tmp, readable by all, its spool and log directories owned
  by Exim's user: pytest's own ``tmp_path`` (mode 0700) would hide them.

Exim is only ever run in the foreground, as a child of the test: ``-odf``
submissions that deliver before they exit, and a ``-bdf`` daemon stopped (and
reaped) by :func:`daemon`; :func:`reap_strays` ends, by pid, any process still
running the unpacked binary.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

PACKAGES = ("exim4-daemon-light", "exim4-base")
DOWNLOAD_TIMEOUT = 180.0  # seconds for apt-get download, per call
RUN_TIMEOUT = 60.0  # seconds: the most one Exim command may run
POLL = 0.05  # seconds between looks at a log
START_ATTEMPTS = 5  # free ports tried for the daemon, in case one is taken meanwhile
LOST_PRIVILEGE = "exim user lost privilege for using -C option"  # expected: see above

# sh -c SCRIPT exim PASSWD GROUP EXIM ARGS...: the copies over the real files, then
# exec, so the process the test holds is Exim itself.
_NAMESPACE_SCRIPT = (
    'passwd=$1; group=$2; shift 2; mount --bind "$passwd" /etc/passwd'
    ' && mount --bind "$group" /etc/group && exec "$@"'
)


class Unavailable(Exception):
    """Exim cannot be obtained or run here; the message says why."""


@dataclass(frozen=True)
class Exim:
    """The unpacked Exim and what running it needs."""

    root: Path
    binary: Path
    libraries: Path
    passwd: Path
    group: Path
    uid: int
    gid: int

    def command(self, config: Path, *arguments: str) -> list[str]:
        unshare = shutil.which("unshare") or "/usr/bin/unshare"
        return [
            unshare, "--mount", "--propagation", "private", "sh", "-c", _NAMESPACE_SCRIPT,
            "exim", str(self.passwd), str(self.group), str(self.binary), "-C", str(config),
            *arguments,
        ]  # fmt: skip

    def environment(self) -> dict[str, str]:
        environment = dict(os.environ)
        environment["LD_LIBRARY_PATH"] = str(self.libraries)
        return environment

    def run(
        self, config: Path, *arguments: str, message: bytes = b""
    ) -> subprocess.CompletedProcess[bytes]:
        """Runs Exim to its end with ``message`` on its standard input."""
        return subprocess.run(  # noqa: S603 - the unpacked Exim, arguments the test chose
            self.command(config, *arguments),
            input=message,
            capture_output=True,
            env=self.environment(),
            timeout=RUN_TIMEOUT,
            check=False,
        )


def _run(command: list[str], cwd: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(  # noqa: S603 - fixed system tools
            command, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired) as error:
        raise Unavailable(f"{command[0]}: {error}") from error


def _download(packages: list[str], directory: Path) -> None:
    result = _run(["apt-get", "download", *packages], directory, DOWNLOAD_TIMEOUT)
    if result.returncode != 0:
        errors = [line for line in result.stderr.splitlines() if not line.startswith("W:")]
        raise Unavailable(
            f"apt-get download {' '.join(packages)} failed: {' | '.join(errors[-3:])}"
        )


def _unpack(debs: Path, root: Path) -> None:
    for deb in sorted(debs.glob("*.deb")):
        result = _run(["dpkg-deb", "-x", str(deb), str(root)], debs, RUN_TIMEOUT)
        if result.returncode != 0:
            raise Unavailable(f"dpkg-deb -x {deb.name} failed: {result.stderr.strip()}")


def _missing_libraries(binary: Path, libraries: Path) -> list[str]:
    environment = dict(os.environ, LD_LIBRARY_PATH=str(libraries))
    result = subprocess.run(  # noqa: S603 - ldd on the unpacked binary
        ["ldd", str(binary)],  # noqa: S607 - ldd from PATH
        capture_output=True, text=True, env=environment, timeout=RUN_TIMEOUT, check=False,
    )  # fmt: skip
    return re.findall(r"^\s*(\S+) => not found", result.stdout, re.MULTILINE)


def _uninstalled_library_packages(directory: Path) -> list[str]:
    """exim4-daemon-light's library dependencies not installed here."""
    depends = _run(["apt-cache", "depends", PACKAGES[0]], directory, RUN_TIMEOUT)
    names = re.findall(r"^\s*\|?Depends: (lib[^\s<>]+)$", depends.stdout, re.MULTILINE)
    missing = []
    for name in names:
        status = _run(["dpkg-query", "-W", "-f=${Status}", name], directory, RUN_TIMEOUT)
        if "install ok installed" not in status.stdout:
            missing.append(name)
    return missing


def _exim_user() -> tuple[int, int]:
    try:
        nobody = pwd.getpwnam("nobody")
    except KeyError:
        return 65534, 65534
    return nobody.pw_uid, nobody.pw_gid


def _readable_by_all(path: Path, stop: Path) -> None:
    """Mode 0755 on ``path`` and every directory up to ``stop`` (included)."""
    for directory in [path, *path.parents]:
        directory.chmod(0o755)
        if directory == stop:
            break


def obtain(directory: Path) -> Exim:
    """Downloads and unpacks Exim into ``directory`` (which must be readable by all)
    and checks that it runs; raises :class:`Unavailable` saying why it cannot."""
    if os.geteuid() != 0:
        raise Unavailable("running Exim from its unpacked .debs needs root")
    for tool in ("apt-get", "apt-cache", "dpkg-deb", "dpkg-query", "unshare", "mount", "ldd"):
        if shutil.which(tool) is None:
            raise Unavailable(f"{tool} not found")
    debs, root = directory / "debs", directory / "root"
    debs.mkdir()
    root.mkdir()
    _download(list(PACKAGES), debs)
    _unpack(debs, root)
    binary = root / "usr/sbin/exim4"
    libraries = root / "usr/lib/x86_64-linux-gnu"
    if not binary.is_file():
        raise Unavailable(f"{binary} is not in the packages")
    if _missing_libraries(binary, libraries):
        extra = _uninstalled_library_packages(debs)
        if extra:
            _download(extra, debs)
            _unpack(debs, root)
    libraries.mkdir(parents=True, exist_ok=True)
    missing = _missing_libraries(binary, libraries)
    if missing:
        raise Unavailable(f"Exim needs libraries not found here: {', '.join(missing)}")
    mode = binary.stat().st_mode
    binary.chmod(mode & ~(stat.S_ISUID | stat.S_ISGID))
    uid, gid = _exim_user()
    passwd, group = directory / "passwd", directory / "group"
    passwd.write_text(
        Path("/etc/passwd").read_text()
        + f"Debian-exim:x:{uid}:{gid}::/nonexistent:/usr/sbin/nologin\n"
    )
    group.write_text(Path("/etc/group").read_text() + f"Debian-exim:x:{gid}:\n")
    _readable_by_all(directory, directory)
    exim = Exim(root, binary, libraries, passwd, group, uid, gid)
    version = exim.run(Path("/dev/null"), "-bV")
    output = (version.stdout + version.stderr).decode(errors="replace")
    if version.returncode != 0 or "Exim version" not in output:
        raise Unavailable(f"Exim does not run here: {output.strip()[-500:]}")
    return exim


# -- a working directory per test ------------------------------------------------------


@dataclass(frozen=True)
class Workdir:
    """One Exim instance's files: configuration, spool, logs."""

    path: Path

    @property
    def config(self) -> Path:
        return self.path / "exim.conf"

    @property
    def spool(self) -> Path:
        return self.path / "spool"

    @property
    def logs(self) -> Path:
        return self.path / "log"

    def log(self, name: str) -> str:
        """``mainlog``, ``rejectlog`` or ``paniclog``; empty when Exim wrote none."""
        path = self.logs / name
        return path.read_text(errors="replace") if path.exists() else ""

    def panics(self) -> list[str]:
        """The panic log's lines, but for the one every run with ``-C`` writes."""
        return [
            line for line in self.log("paniclog").splitlines() if not line.endswith(LOST_PRIVILEGE)
        ]

    def file(self, name: str, content: bytes) -> Path:
        """A file Exim's user can read (certificates, keys, CA bundles)."""
        path = self.path / name
        path.write_bytes(content)
        path.chmod(0o644)
        return path


@contextmanager
def workdir(exim: Exim) -> Iterator[Workdir]:
    path = Path(tempfile.mkdtemp(prefix="smtpwire-exim-", dir="/tmp"))  # see above: not tmp_path
    try:
        path.chmod(0o755)
        work = Workdir(path)
        for owned in (work.spool, work.logs):
            owned.mkdir()
            os.chown(owned, exim.uid, exim.gid)
        yield work
    finally:
        reap_strays(exim)
        shutil.rmtree(path, ignore_errors=True)


def settings(exim: Exim, work: Workdir) -> str:
    """The main section every instance shares: its own spool and logs, no DNS or
    ident lookups, its own path for re-executing itself."""
    return f"""\
primary_hostname = exim.test
exim_path = {exim.binary}
spool_directory = {work.spool}
log_file_path = {work.logs}/%slog
keep_environment = LD_LIBRARY_PATH
host_lookup =
rfc1413_hosts =
message_size_limit = 50M
daemon_startup_retries = 0
"""


# -- running the daemon ---------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def wait_for(check: Callable[[], bool], what: str, timeout: float) -> None:
    """Polls ``check()`` until true, at most ``timeout`` seconds."""
    end = time.monotonic() + timeout
    while not check():
        if time.monotonic() > end:
            raise AssertionError(f"gave up after {timeout} s waiting for {what}")
        time.sleep(POLL)


@contextmanager
def daemon(exim: Exim, work: Workdir) -> Iterator[int]:
    """``exim -bdf`` listening on a free loopback port (yielded); SIGTERM and reaped
    on the way out.  The configuration must set ``local_interfaces = 127.0.0.1``."""
    for _ in range(START_ATTEMPTS):
        port = free_port()
        started = f"listening for SMTP on [127.0.0.1]:{port}"
        with tempfile.TemporaryFile() as output:
            process = subprocess.Popen(  # noqa: S603 - the unpacked Exim, our configuration
                exim.command(work.config, "-bdf", "-oX", str(port)),
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                env=exim.environment(),
            )
            try:
                wait_for(
                    lambda: started in work.log("mainlog") or process.poll() is not None,  # noqa: B023
                    "Exim's daemon to start",
                    RUN_TIMEOUT,
                )
                if process.poll() is None:
                    yield port
                    return
                output.seek(0)
                said = output.read().decode(errors="replace") + work.log("paniclog")
                if "Address already in use" not in said:
                    raise AssertionError(f"Exim's daemon did not start: {said}")
            finally:
                _stop(process)
    raise AssertionError(f"no free port for Exim in {START_ATTEMPTS} tries")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


def _strays(exim: Exim) -> list[int]:
    """Processes running the unpacked binary (children of ours: receivers and
    deliveries the daemon started)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with suppress(OSError):
                if os.readlink(entry / "exe") == str(exim.binary):
                    found.append(int(entry.name))
    return found


def reap_strays(exim: Exim, grace: float = 5.0) -> list[int]:
    """Waits up to ``grace`` seconds for Exim processes started by the test to end,
    then kills what is left, by pid; returns the pids that had to be killed."""
    end = time.monotonic() + grace
    while (left := _strays(exim)) and time.monotonic() < end:
        time.sleep(POLL)
    for pid in left:
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return left
