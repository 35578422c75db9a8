"""Every Python block of the other documentation pages (PAGES: docs/client.md,
docs/server.md, docs/deploy.md, docs/wire-core.md, docs/migrating*.md and the
README), run as written: each block is a program of its own, run by this interpreter
in a fresh process with warnings as errors.  Blocks that define pytest tests are the
business of test_docs_testing.py; the pages other tests run are in COVERED_ELSEWHERE,
and every page with a Python block must be in one or the other.

A client example names a made-up server ("smtp.example.org", port 587): it is pointed
at a plaintext test server on 127.0.0.1 instead, the only change made to any block.

A block the page marks as a fragment -- ```` ```python fragment ```` or an HTML comment
``<!-- fragment -->`` on the line before it -- is only compiled (top-level ``await``
allowed), not run.  Blocks that cannot run as written and are not marked yet are listed
in KNOWN_FRAGMENTS with the reason; they are expected to fail (strictly: once a page
is fixed, its entry must go).
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from smtpwire.server.testing import SMTPTestServer

ROOT = Path(__file__).resolve().parent.parent
PAGES = (
    "docs/client.md",
    "docs/server.md",
    "docs/deploy.md",
    "docs/wire-core.md",
    "docs/migrating.md",
    "docs/migrating-aiosmtplib.md",
    "README.md",
)
# Pages whose Python blocks another test runs: page -> that test file.
COVERED_ELSEWHERE = {
    "docs/inbox.md": "tests/inbox/test_docs_inbox.py",
    "docs/testing.md": "tests/test_docs_testing.py",
}
# The pages whose pytest examples (blocks that define tests) test_docs_testing.py runs.
TEST_EXAMPLE_PAGES = ("docs/testing.md", "README.md")
# A block after "<!-- fragment -->" (or "<!-- fragment: why -->") is only compiled.
_BLOCK = re.compile(r"(<!-- fragment(?:: [^>]*)? -->\n)?```python( fragment)?\n(.*?)```", re.DOTALL)
_TEST = re.compile(r"^(?:async )?def test_", re.MULTILINE)
_MADE_UP_SERVER = re.compile(r'hostname="smtp\.example\.org", port=\d+')
WAIT = 60.0

# (page, block number): why it cannot run as written.
KNOWN_FRAGMENTS: dict[tuple[str, int], str] = {}


def blocks() -> list[tuple[str, int, str, bool]]:
    found = []
    for page in PAGES:
        text = (ROOT / page).read_text()
        for number, match in enumerate(_BLOCK.finditer(text)):
            comment, info, code = match.groups()
            if _TEST.search(code):
                continue
            found.append((page, number, code, bool(comment or info)))
    return found


BLOCKS = blocks()


def params() -> list[object]:
    cases = []
    for page, number, code, fragment in BLOCKS:
        marks = []
        reason = KNOWN_FRAGMENTS.get((page, number))
        if reason is not None:
            marks.append(pytest.mark.xfail(reason=reason, strict=True))
        cases.append(pytest.param(code, fragment, id=f"{page}-{number}", marks=marks))
    return cases


@pytest.fixture(scope="module")
def test_server() -> Iterator[SMTPTestServer]:
    with SMTPTestServer() as server:
        yield server


@pytest.mark.parametrize(("code", "fragment"), params())
def test_the_block_runs(code: str, fragment: bool, test_server: SMTPTestServer) -> None:
    if fragment:
        compile(code, "<fragment>", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
        return
    if "uvloop" in code:
        pytest.importorskip("uvloop")
    program = _MADE_UP_SERVER.sub(f'hostname="127.0.0.1", port={test_server.port}', code)
    program = program.replace("start_tls=True", "start_tls=False")
    result = subprocess.run(  # noqa: S603 - this interpreter, the page's own code
        [sys.executable, "-W", "error", "-c", program],
        capture_output=True,
        text=True,
        timeout=WAIT,
        check=False,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


def test_every_page_has_blocks() -> None:
    assert {page for page, *_ in BLOCKS} == set(PAGES)


def test_every_known_fragment_is_still_a_block() -> None:
    present = {(page, number) for page, number, *_ in BLOCKS}
    assert set(KNOWN_FRAGMENTS) <= present


def pages_with_python() -> set[str]:
    candidates = [*sorted((ROOT / "docs").glob("*.md")), ROOT / "README.md"]
    return {
        path.relative_to(ROOT).as_posix()
        for path in candidates
        if _BLOCK.search(path.read_text(encoding="utf-8"))
    }


def test_every_page_with_python_blocks_is_run_by_some_test() -> None:
    """A new page (or a first Python block on an old one) cannot go untested: it
    belongs in PAGES, or in COVERED_ELSEWHERE with the test that runs it."""
    assert pages_with_python() - set(PAGES) - set(COVERED_ELSEWHERE) == set()
    assert set(PAGES).isdisjoint(COVERED_ELSEWHERE)
    for page, test in COVERED_ELSEWHERE.items():
        assert page in (ROOT / test).read_text(encoding="utf-8"), f"{test} does not read {page}"


def test_blocks_that_define_tests_are_on_pages_whose_tests_are_run() -> None:
    """PAGES skips blocks that define pytest tests: only test_docs_testing.py runs
    them, and only on its pages."""
    for page in PAGES:
        for match in _BLOCK.finditer((ROOT / page).read_text(encoding="utf-8")):
            if _TEST.search(match.group(3)):
                assert page in TEST_EXAMPLE_PAGES, f"{page} has a pytest example nothing runs"
    runner = (ROOT / "tests/test_docs_testing.py").read_text(encoding="utf-8")
    assert all(page in runner for page in TEST_EXAMPLE_PAGES)
