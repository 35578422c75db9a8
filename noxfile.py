"""Development sessions: ``nox`` runs tests, tests_uvloop, lint, typecheck,
packaging, a quick fuzz run and a one-minute soak; ``nox -s bench`` runs the
benchmarks.

The tests run on every supported Python (3.10 to 3.13) that is installed.  Where
the extra versions come from pyenv, only pyenv's global version answers by
default, so PYENV_VERSION is set (current version first) before nox looks for
interpreters.  Versions that are not installed are left out rather than failing,
so the README's command works on a machine with a single Python.  tests_uvloop
runs the whole suite once more, on one Python, with uvloop as the event loop
(users of ``smtpwire-server[uvloop]`` run the code on it).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nox

SUPPORTED = ("3.10", "3.11", "3.12", "3.13")
ROOT = Path(__file__).parent
PACKAGES = ("./packages/common", "./packages/client", "./packages/server", ".")
# anyio, trio and pytest-asyncio: tests/plugin/test_async_frameworks.py and the
# testing guide's examples run the pytest plugin's async tests under anyio (asyncio and
# trio backends) and pytest-asyncio (strict and auto mode), as users do.
TEST_DEPENDENCIES = (
    "pytest>=8",
    "pytest-timeout",
    "hypothesis",
    "trustme",
    "anyio",
    "trio",
    "pytest-asyncio>=0.24",
    # aiohttp: the web inbox's HTTP side (the [web] extra) and the client of tests/inbox.
    "aiohttp",
    # mailpit-api-client: mailpit's own Python client, to prove the API compatible.
    "mailpit-api-client",
    # selenium: drives Debian's chromium (installed by .ci/run) in tests/inbox/test_browser.py.
    "selenium",
    # pytest-xdist: the suite spends most of its time waiting on sockets and child
    # processes, so two workers halve it on two cores (every test binds port 0 and
    # keeps its files in its own temporary directory).
    "pytest-xdist",
)
SOURCES = ("packages", "tests", "benchmarks", "fuzz", "noxfile.py")
RESULTS = "benchmarks/results"
SMTP_SINK = Path("/usr/sbin/smtp-sink")
SMTP_SOURCE = Path("/usr/sbin/smtp-source")

nox.options.sessions = [
    "tests", "tests_uvloop", "lint", "typecheck", "packaging", "fuzz", "soak",
]  # fmt: skip
nox.options.error_on_missing_interpreters = False


def _expose_pyenv_versions() -> None:
    if shutil.which("pyenv") is None:
        return
    listed = subprocess.run(
        ["pyenv", "versions", "--bare"], capture_output=True, text=True, check=False
    ).stdout.split()
    newest: dict[str, tuple[int, ...]] = {}
    for version in listed:
        if re.fullmatch(r"3\.\d+\.\d+", version):
            parts = tuple(int(part) for part in version.split("."))
            minor = f"{parts[0]}.{parts[1]}"
            if minor in SUPPORTED and parts > newest.get(minor, ()):
                newest[minor] = parts
    if not newest:
        return
    # pyenv's shims set PYENV_VERSION to the running version: keep it (and any
    # other the user chose) first, then add the newest patch release of each minor.
    current = ".".join(str(part) for part in sys.version_info[:3])
    given = [version for version in os.environ.get("PYENV_VERSION", "").split(":") if version]
    chosen = [".".join(map(str, parts)) for parts in newest.values()]
    ordered = list(dict.fromkeys([*given, current, *chosen]))
    os.environ["PYENV_VERSION"] = ":".join(ordered)


def _installed_pythons() -> list[str]:
    found = []
    for version in SUPPORTED:
        try:
            result = subprocess.run(
                [f"python{version}", "-c", "import venv, ensurepip"],
                capture_output=True,
                check=False,
                timeout=30,
            )
        except (OSError, subprocess.TimeoutExpired):
            continue
        if result.returncode == 0:
            found.append(version)
    return found


_expose_pyenv_versions()
PYTHONS = _installed_pythons() or [f"{sys.version_info[0]}.{sys.version_info[1]}"]
# The sessions that need one interpreter: 3.11 where it is installed, else the newest.
ONE_PYTHON = ["3.11"] if "3.11" in PYTHONS else PYTHONS[-1:]
# pytest-xdist workers: one per core, at most four (more would make the suite's
# time-bounded tests compete for the cores); none on a single core.
WORKERS = min(os.cpu_count() or 1, 4)
PARALLEL = ["-n", str(WORKERS)] if WORKERS > 1 else []


@nox.session(python=PYTHONS)
def tests(session: nox.Session) -> None:
    """Install the three packages and the meta-distribution, then run pytest."""
    session.install(*PACKAGES, *TEST_DEPENDENCIES)
    session.run("pytest", *PARALLEL, *session.posargs)


@nox.session(python=ONE_PYTHON)
def tests_uvloop(session: nox.Session) -> None:
    """The whole suite on uvloop: the server package with its ``uvloop`` extra, and
    SMTPWIRE_TEST_LOOP=uvloop, which tests/conftest.py turns into uvloop's event
    loop policy (so every loop the tests make is a uvloop loop)."""
    if sys.platform == "win32":
        session.skip("uvloop does not exist for Windows")
    server_with_uvloop = "./packages/server[uvloop]"
    packages = [server_with_uvloop if path == "./packages/server" else path for path in PACKAGES]
    session.install(*packages, *TEST_DEPENDENCIES)
    session.run("pytest", *PARALLEL, *session.posargs, env={"SMTPWIRE_TEST_LOOP": "uvloop"})


@nox.session(python=ONE_PYTHON)
def lint(session: nox.Session) -> None:
    """ruff check and ruff format --check over the whole repository."""
    session.install("ruff")
    session.run("ruff", "check", *SOURCES)
    session.run("ruff", "format", "--check", *SOURCES)


@nox.session(python=ONE_PYTHON)
def typecheck(session: nox.Session) -> None:
    """mypy --strict over the three packages (with pytest and cryptography, which the
    test-mail subpackage smtpwire.server.testing uses when they are there)."""
    # aiohttp: the web inbox (the server's [web] extra) is typed against it.
    session.install("mypy", "pytest>=8", "cryptography", "aiohttp", *PACKAGES)
    session.run(
        "mypy", "--strict", "-p", "smtpwire.common", "-p", "smtpwire.client",
        "-p", "smtpwire.server",
    )  # fmt: skip


@nox.session(python=ONE_PYTHON)
def packaging(session: nox.Session) -> None:
    """Every distribution as it would be published: build the sdist and the wheel of
    all four (isolated builds, as for an upload), ``twine check --strict`` them, install
    the built wheels (not the checkout) and run tests/test_packaging.py and
    tests/test_distributions.py against them (licence, project URLs, classifiers, the
    readme, LICENSE inside every archive, ``send()``'s types as a user's mypy sees them)."""
    session.install("build", "twine", "mypy", *TEST_DEPENDENCIES)
    dist = Path(session.create_tmp()).resolve() / "dist"
    shutil.rmtree(dist, ignore_errors=True)
    for path in PACKAGES:
        session.run("python", "-m", "build", "--outdir", str(dist), path)
    built = sorted(str(path) for path in dist.iterdir())
    session.run("twine", "check", "--strict", *built)
    wheels = [path for path in built if path.endswith(".whl")]
    session.install("--no-index", "--force-reinstall", "--no-deps", *wheels)
    session.run("python", "-m", "pip", "check")
    session.run(
        "pytest", "tests/test_packaging.py", "tests/test_distributions.py", *session.posargs,
        env={"SMTPWIRE_DIST": str(dist)},
    )  # fmt: skip


@nox.session(python=ONE_PYTHON)
def bench(session: nox.Session) -> None:
    """Benchmarks S5 (wire core), S2 (client), S1 (server throughput, and with
    ``--workers 2``), S3 (one big message), S4 (idle connections), each beside
    its anchors: aiosmtplib and aiosmtpd are benchmark-only dependencies,
    Postfix's smtp-sink and smtp-source (Debian package postfix) are used where
    installed.  uvloop (the server's extra) is installed too: S1 measures both
    Python servers on asyncio's loop and on uvloop's.  Results also go to
    benchmarks/results/.  ``nox -s bench -- --quick`` runs a short version of
    every scenario; other arguments go to wire_core.py."""
    with_uvloop = ["uvloop"] if sys.platform != "win32" else []
    session.install(*PACKAGES, *with_uvloop, "aiosmtplib", "aiosmtpd==1.4.6")
    quick = "--quick" in session.posargs
    core_arguments = [argument for argument in session.posargs if argument != "--quick"]
    if quick:
        core_arguments = ["--size-mib", "10", "--repeat", "2", *core_arguments]
    session.run(
        "python", "benchmarks/wire_core.py", "--json", f"{RESULTS}/wire_core.json",
        *core_arguments,
    )  # fmt: skip
    # S2: into smtpwire.server always, into Postfix's smtp-sink where it is installed.
    into = "all" if SMTP_SINK.exists() else "smtpwire.server"
    if into != "all":
        session.log("S2 into smtp-sink skipped: smtp-sink missing (Debian package postfix)")
    session.run(
        "python", "benchmarks/client_throughput.py", "--into", into,
        *(["--messages", "500", "--repeat", "2"] if quick else []),
        "--json", f"{RESULTS}/client_throughput.json",
    )  # fmt: skip
    shortened = ["--quick"] if quick else []
    with_sink = SMTP_SINK.exists()
    if not with_sink:
        session.log("S1 and S3 without smtp-sink: missing (Debian package postfix)")
    if SMTP_SOURCE.exists():
        servers = "smtpwire,aiosmtpd" + (",smtp-sink" if with_sink else "")
        session.run(
            "python", "benchmarks/server_throughput.py", "--servers", servers, *shortened,
            "--json", f"{RESULTS}/server_throughput.json",
        )  # fmt: skip
        # S1 with --workers 2 against one worker (and aiosmtpd) on this machine.
        session.run(
            "python", "benchmarks/server_workers.py",
            *(["--messages", "1000", "--repeat", "2"] if quick else []),
        )  # fmt: skip
    else:
        session.log("S1 skipped: smtp-source missing (Debian package postfix)")
    receivers = "smtpwire handle_DATA,smtpwire handle_DATA_STREAM,aiosmtpd handle_DATA"
    session.run(
        "python", "benchmarks/server_big_message.py",
        "--receivers", receivers + (",smtp-sink" if with_sink else ""), *shortened,
        "--json", f"{RESULTS}/server_big_message.json",
    )  # fmt: skip
    session.run(
        "python", "benchmarks/server_idle_connections.py", *shortened,
        "--json", f"{RESULTS}/server_idle_connections.json",
    )  # fmt: skip


@nox.session(python=ONE_PYTHON)
def coverage(session: nox.Session) -> None:
    """The test suite under coverage (branches), with the report per module."""
    session.install(*PACKAGES, *TEST_DEPENDENCIES, "coverage")
    session.run(
        "coverage",
        "run",
        "--branch",
        "--source=smtpwire.common,smtpwire.client,smtpwire.server",
        "-m",
        "pytest",
        *session.posargs,
    )
    session.run("coverage", "report", "--show-missing")


@nox.session(python=ONE_PYTHON)
def fuzz(session: nox.Session) -> None:
    """Coverage-guided fuzzing with atheris (libFuzzer): one target per parser and
    state machine, each checking properties (see docs/fuzzing.md).  ``nox -s fuzz --
    --quick`` runs every target briefly (about two minutes in all); ``nox -s fuzz
    -- --time 600`` gives each target 600 seconds; other arguments go to
    fuzz/run.py (``--targets``, ``--artifacts``, ``--json``)."""
    session.install("atheris", "./packages/common", "./packages/client", "./packages/server")
    # With no arguments (as in the default sessions, so CI runs it) the quick form.
    session.run("python", "fuzz/run.py", *(session.posargs or ["--quick"]))


@nox.session(python=ONE_PYTHON)
def soak(session: nox.Session) -> None:
    """Soak with faults (benchmarks/soak.py, docs/soak.md): many kinds of client
    against smtpwire's command-line server for 10 minutes, with faults and server
    restarts, then exact accounting of every message, memory and file descriptors;
    fails on any violation.  With no arguments (as in the default sessions, so CI
    runs it) the one-minute ``--quick`` form; ``nox -s soak -- --duration 600`` the
    ten minutes.  smtp-source (Debian package postfix) is used where installed."""
    with_uvloop = ["uvloop"] if sys.platform != "win32" else []
    session.install(*PACKAGES, *with_uvloop, "trustme")
    session.run("python", "benchmarks/soak.py", *(session.posargs or ["--quick"]))


# Mutation testing (docs/mutation.md): the modules mutated by default, under
# packages/*/src/smtpwire/, and the tests run against each mutant of a package.
MUTATE_DEFAULT = (
    "common/commands.py", "common/replies.py", "common/data.py",
    "common/server_rules.py", "common/server_session.py",
)  # fmt: skip
MUTATE_TESTS = {"common": ("tests/common",), "client": ("tests/common", "tests/client")}


@nox.session(python=ONE_PYTHON)
def mutate(session: nox.Session) -> None:
    """Mutation testing with mutmut 3 (slow: not in the default sessions, not in CI).

    mutmut wants the code under ``src/`` and edits a copy of it, so the session
    builds a scratch tree in the session's temp dir (``src/smtpwire`` from the three
    packages, ``tests/``, the root pyproject.toml with a ``[tool.mutmut]`` table
    appended) and runs there: the checkout is never touched.  Arguments ending in
    ``.py`` choose the modules to mutate (e.g. ``common/server_rules.py`` or
    ``client/protocol.py``; default: smtpwire.common's parsers and session); the
    others go to ``mutmut run`` (e.g. ``--max-children 2``).  Each mutant runs
    tests/common (and tests/client for a client module), only the tests that reach
    the mutated function.  The survivors are listed at the end; ``mutmut show NAME``
    in the scratch tree shows one."""
    import json  # noqa: PLC0415 - only this session needs it

    # The suite's own test dependencies: its pytest configuration names their options.
    session.install("mutmut>=3.3,<4", *TEST_DEPENDENCIES)
    targets = [argument for argument in session.posargs if argument.endswith(".py")]
    passed_on = [argument for argument in session.posargs if not argument.endswith(".py")]
    targets = targets or list(MUTATE_DEFAULT)
    work = Path(session.create_tmp()).resolve() / "mutate"
    shutil.rmtree(work, ignore_errors=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for package in ("common", "client", "server"):
        source = ROOT / "packages" / package / "src" / "smtpwire"
        shutil.copytree(source, work / "src" / "smtpwire", dirs_exist_ok=True, ignore=ignore)
    shutil.copytree(ROOT / "tests", work / "tests", ignore=ignore)
    shutil.copytree(ROOT / "docs", work / "docs")  # some tests check the guides' examples
    for target in targets:
        if not (work / "src" / "smtpwire" / target).is_file():
            session.error(f"{target}: no such module under packages/*/src/smtpwire/")
    tests = dict.fromkeys(
        path for target in targets for path in MUTATE_TESTS[target.split("/", 1)[0]]
    )
    settings = {
        "source_paths": ["src"],
        "only_mutate": [f"src/smtpwire/{target}" for target in targets],
        # No xdist inside mutmut's forked workers; the packaging probe runs a fresh
        # interpreter, which cannot see mutmut's copy of the code.
        "pytest_add_cli_args": [
            "-p", "no:benchmark", "-p", "no:cacheprovider", "-p", "no:xdist",
            "--ignore=tests/common/test_package.py",
        ],
        "pytest_add_cli_args_test_selection": list(tests),
        "also_copy": ["docs"],
    }  # fmt: skip
    table = "".join(f"{key} = {json.dumps(value)}\n" for key, value in settings.items())
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    (work / "pyproject.toml").write_text(f"{pyproject}\n[tool.mutmut]\n{table}", encoding="utf-8")
    session.chdir(work)
    # Tests that start a fresh interpreter (the command lines) import the unmutated
    # copy: mutmut's own copy only runs inside its workers.
    session.run("mutmut", "run", *passed_on, env={"PYTHONPATH": str(work / "src")})
    session.run("mutmut", "export-cicd-stats")
    stats = json.loads((work / "mutants" / "mutmut-cicd-stats.json").read_text(encoding="utf-8"))
    killed, total = stats["killed"], stats["total"]
    session.log(f"mutation score: {killed}/{total} killed ({100 * killed / max(total, 1):.1f} %)")
    session.run("mutmut", "results")
