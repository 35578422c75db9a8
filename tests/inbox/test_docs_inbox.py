"""docs/inbox.md, run: its Python block in a fresh process, and every curl example, in
the page's order, against a live inbox holding a message (with ``curl`` when it is
installed, else the command is parsed and issued with urllib).

The page's address (http://127.0.0.1:8026) becomes the live server's, ``$ID`` the
stored message's ID.  An example expects a 2xx answer unless its line ends with a
comment naming the status (``# 404``).  The events stream never ends by itself: it is
read for a moment and then cut off.
"""

from __future__ import annotations

import re
import shlex
import shutil
import smtplib
import subprocess
import sys
import urllib.error
import urllib.request
from base64 import b64encode
from email.message import EmailMessage
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from inbox.conftest import LiveInbox

PAGE = Path(__file__).resolve().parents[2] / "docs" / "inbox.md"
DOC_URL = "http://127.0.0.1:8026"
TIMEOUT = 20.0
_SH_BLOCK = re.compile(r"```sh\n(.*?)```", re.DOTALL)
_STATUS_COMMENT = re.compile(r"#\s*(\d{3})\s*$")


def curl_examples() -> list[str]:
    text = PAGE.read_text(encoding="utf-8")
    lines = [line.strip() for block in _SH_BLOCK.findall(text) for line in block.splitlines()]
    return [line for line in lines if line.startswith("curl ")]


def test_the_page_has_an_example_for_every_endpoint() -> None:
    examples = "\n".join(curl_examples())
    for path in (
        "/api/v1/messages", "/api/v1/message/$ID", "/headers", "/raw", "/view/$ID.raw",
        "/part/", "/api/v1/search", "-X PUT", "-X DELETE", "/api/smtpwire/message/$ID/session",
        "/api/smtpwire/message/$ID/html", "/api/smtpwire/wait", "/api/smtpwire/events",
        "/api/smtpwire/info",
    ):  # fmt: skip
        assert path in examples, path


def test_the_python_example_runs(tmp_path: Path) -> None:
    [block] = re.findall(r"```python\n(.*?)```", PAGE.read_text(encoding="utf-8"), re.DOTALL)
    result = subprocess.run(  # noqa: S603 - this interpreter, the page's own code
        [sys.executable, "-W", "error", "-c", block],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("http://127.0.0.1:")


def deliver(live: LiveInbox) -> None:
    message = EmailMessage()
    message["From"] = "Ann <ann@example.com>"
    message["To"] = "bob@example.com"
    message["Subject"] = "Report"
    message.set_content("Hi Bob, the report is attached.\n")
    message.add_alternative("<p>Hi Bob</p>", subtype="html")
    message.add_attachment(b"%PDF", maintype="application", subtype="pdf", filename="r.pdf")
    with smtplib.SMTP(*live.smtp_address) as client:
        client.send_message(message)


def newest_id(live: LiveInbox) -> str | None:
    url = f"{live.url}/api/v1/messages?limit=1"
    with urllib.request.urlopen(url, timeout=TIMEOUT) as listing:  # noqa: S310
        found = re.search(r'"ID": "(\w+)"', listing.read().decode())
    return None if found is None else found[1]


def command_for(example: str, url: str, message_id: str) -> tuple[list[str], int | None]:
    """The example as an argument list for the live server, and the status it expects
    (None: any 2xx)."""
    expected = _STATUS_COMMENT.search(example)
    line = example.replace(DOC_URL, url).replace("$ID", message_id)
    # '"'$ID'"' in the page splices the variable into a quoted JSON body.
    line = line.replace(f"'\"'{message_id}'\"'", f'"{message_id}"')
    return shlex.split(line, comments=True), int(expected[1]) if expected else None


def run_with_curl(argv: list[str], workdir: Path, streaming: bool) -> tuple[int, str]:
    extra = ["--max-time", "1"] if streaming else []
    result = subprocess.run(  # noqa: S603 - curl, with the page's own arguments
        [*argv, *extra, "-w", "\n%{http_code}"],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
        cwd=workdir,
    )
    if streaming:
        assert result.returncode == 28, result.stderr  # cut off by --max-time, as meant
    else:
        assert result.returncode == 0, result.stderr
    body, _, status = result.stdout.rpartition("\n")
    return int(status), body


def run_with_urllib(argv: list[str], workdir: Path, streaming: bool) -> tuple[int, str]:
    """The curl options the page uses: -s, -N, -o FILE, -X METHOD, -H HEADER,
    -d DATA, -u USER:PASSWORD, and the URL."""
    method, data, headers, output, url = None, None, {}, None, ""
    arguments = iter(argv[1:])
    for argument in arguments:
        if argument in ("-s", "-N"):
            continue
        if argument == "-X":
            method = next(arguments)
        elif argument == "-H":
            name, _, value = next(arguments).partition(":")
            headers[name.strip()] = value.strip()
        elif argument == "-d":
            data = next(arguments).encode()
        elif argument == "-o":
            output = workdir / next(arguments)
        elif argument == "-u":
            headers["Authorization"] = "Basic " + b64encode(next(arguments).encode()).decode()
        else:
            url = argument
    request = urllib.request.Request(url, data=data, method=method, headers=headers)  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as response:  # noqa: S310
            body = response.readline() if streaming else response.read()
            status = response.status
    except urllib.error.HTTPError as error:
        status, body = error.code, error.read()
        error.close()
    if output is not None:
        output.write_bytes(body)
    return status, body.decode("utf-8", "replace")


@pytest.mark.parametrize("runner", ["curl", "urllib"])
def test_every_curl_example(live_inbox: LiveInbox, runner: str, tmp_path: Path) -> None:
    if runner == "curl" and shutil.which("curl") is None:
        pytest.skip("curl is not installed (the urllib case runs the examples)")
    deliver(live_inbox)
    deliver(live_inbox)
    run = run_with_curl if runner == "curl" else run_with_urllib
    for example in curl_examples():
        # Each example acts on a message that is there (the deletes remove some).
        message_id = newest_id(live_inbox)
        if message_id is None:
            deliver(live_inbox)
            message_id = newest_id(live_inbox)
        assert message_id is not None
        argv, expected = command_for(example, live_inbox.url, message_id)
        if "-u" in argv:
            continue  # needs a server with --web-auth: tests/inbox/test_cli_web.py
        status, body = run(argv, tmp_path, "/events" in example)
        if expected is None:
            assert 200 <= status < 300, (example, status, body)
        else:
            assert status == expected, (example, status, body)
    assert (tmp_path / "report.pdf").read_bytes() == b"%PDF"
