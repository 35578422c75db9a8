"""The benchmark scripts stop in one line that says what is missing and how to
install it, before measuring anything, when an anchor they compare with is not
there: aiosmtplib (wire_core.py), aiosmtpd (server_workers.py), Postfix's
smtp-source and smtp-sink.  None says it in silence (a row quietly left out) or
points to a file that is not in the repository.

Each script runs as ``nox -s bench`` runs it, in a fresh interpreter, with the
tool made missing there: a module through ``sys.modules`` (``None`` is "not
installed"), a Postfix tool through the path ``_servers.py`` looks for it at.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
WAIT = 60.0
NOX_HINT = "(or run the benchmarks with: python3 -m nox -s bench)"
POSTFIX_HINT = "apt-get install postfix (Debian, Ubuntu; only this tool of it runs)"

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the benchmarks read /proc")


def run_script(
    script: str,
    *args: str,
    missing: tuple[str, ...] = (),
    present: tuple[str, ...] = (),
    tools_at: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """``benchmarks/<script> args`` with the modules ``missing`` uninstalled, the
    modules ``present`` importable (empty stand-ins where absent), and Postfix's
    tools looked for in ``tools_at``."""
    lines = [
        "import importlib.machinery, importlib.util, runpy, sys, types",
        f"sys.path.insert(0, {str(BENCHMARKS)!r})",
        f"sys.argv = [{script!r}, *{list(args)!r}]",
    ]
    lines += [f"sys.modules[{name!r}] = None" for name in missing]
    for name in present:
        lines += [
            f"if importlib.util.find_spec({name!r}) is None:",
            f"    stand_in = types.ModuleType({name!r})",
            f"    stand_in.__spec__ = importlib.machinery.ModuleSpec({name!r}, None)",
            f"    sys.modules[{name!r}] = stand_in",
        ]
    if tools_at is not None:
        lines += [
            "import pathlib, _servers",
            f"_servers.SMTP_SINK = pathlib.Path({tools_at!r}) / 'smtp-sink'",
            f"_servers.SMTP_SOURCE = pathlib.Path({tools_at!r}) / 'smtp-source'",
        ]
    lines.append(f"runpy.run_path({str(BENCHMARKS / script)!r}, run_name='__main__')")
    return subprocess.run(  # noqa: S603 - this interpreter, a fixed script
        [sys.executable, "-c", "\n".join(lines)],
        capture_output=True,
        text=True,
        timeout=WAIT,
        check=False,
    )


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 1, result.stderr
    assert result.stdout == ""
    [line] = result.stderr.splitlines()
    return line


def test_wire_core_without_aiosmtplib() -> None:
    result = run_script("wire_core.py", "--size-mib", "1", "--repeat", "1", missing=("aiosmtplib",))
    assert one_line(result) == f"aiosmtplib is not installed: pip install aiosmtplib {NOX_HINT}"


def test_server_workers_without_aiosmtpd() -> None:
    result = run_script("server_workers.py", "--messages", "10", missing=("aiosmtpd",))
    expected = f"aiosmtpd is not installed: pip install aiosmtpd==1.4.6 {NOX_HINT}"
    assert one_line(result) == expected


@pytest.mark.parametrize("script", ["server_workers.py", "server_throughput.py"])
def test_without_smtp_source(script: str, tmp_path: Path) -> None:
    result = run_script(script, present=("aiosmtpd",), tools_at=str(tmp_path))
    expected = f"smtp-source is not installed ({tmp_path}/smtp-source): {POSTFIX_HINT}"
    assert one_line(result) == expected


def test_client_throughput_without_smtp_sink(tmp_path: Path) -> None:
    result = run_script(
        "client_throughput.py",
        "--into",
        "smtp-sink",
        present=("aiosmtplib",),
        tools_at=str(tmp_path),
    )
    expected = f"smtp-sink is not installed ({tmp_path}/smtp-sink): {POSTFIX_HINT}"
    assert one_line(result) == expected


def test_no_script_points_to_a_file_outside_the_repository() -> None:
    for script in sorted(BENCHMARKS.glob("*.py")):
        text = script.read_text(encoding="utf-8")
        assert "DESIGN.md" not in text, script.name
