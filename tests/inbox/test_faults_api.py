"""The fault rules over HTTP (``/api/smtpwire/faults``, docs/inbox.md): rules posted
with urllib to the web inbox of a test server (``SMTPTestServer(web=True)``) act on
real SMTP sessions (smtplib); they are listed with their counts and deleted one by
one or all at once; bad input answers 400 naming the field; a web inbox without a
test server behind it (the command line's) answers 404.  All JSON."""

from __future__ import annotations

import json
import shutil
import smtplib
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from inbox.test_docs_inbox import command_for, curl_examples, run_with_curl, run_with_urllib
from smtpwire.server.inbox._api_faults import ACTIONS, CHECKS, PARAMETERS
from smtpwire.server.testing import FaultRuleError, FaultRules, SMTPTestServer

if TYPE_CHECKING:
    from inbox.conftest import LiveInbox

WAIT = 10.0
SENDER = "app@example.com"
RECIPIENT = "ann@example.com"
BODY = "Subject: hi\r\n\r\nhello\r\n"


@pytest.fixture
def server() -> Iterator[SMTPTestServer]:
    with SMTPTestServer(web=True) as running:
        yield running


def call(
    method: str, url: str, body: Any = None, *, raw: bytes | None = None
) -> tuple[int, Any, str]:
    """The status, the JSON answer and its content type of one HTTP request."""
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    request = urllib.request.Request(url, data=data, method=method)  # noqa: S310 - loopback
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=WAIT) as response:  # noqa: S310
            return response.status, json.load(response), response.headers.get_content_type()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, json.load(error), error.headers.get_content_type()


def add(server: SMTPTestServer, rule: dict[str, Any]) -> dict[str, Any]:
    status, answer, _ = call("POST", f"{server.web_url}/api/smtpwire/faults", rule)
    assert status == 201, answer
    return dict(answer)


def listed(server: SMTPTestServer) -> list[dict[str, Any]]:
    status, answer, _ = call("GET", f"{server.web_url}/api/smtpwire/faults")
    assert status == 200
    return list(answer["faults"])


def send(server: SMTPTestServer) -> dict[str, tuple[int, bytes]]:
    with smtplib.SMTP(*server.address, timeout=WAIT) as client:
        return client.sendmail(SENDER, [RECIPIENT], BODY)


# --- rules that act on real SMTP sessions ---------------------------------------------------


def test_a_reply_rule_makes_mail_get_the_scripted_reply(server: SMTPTestServer) -> None:
    rule = add(server, {"action": "reply", "command": "MAIL", "code": 451, "text": "4.3.0 Later"})
    assert rule == {
        "id": rule["id"], "action": "reply", "code": 451, "text": "4.3.0 Later", "delay": 0.0,
        "command": "MAIL", "address": None, "attempt": None, "times": None, "seen": 0, "fired": 0,
    }  # fmt: skip
    with pytest.raises(smtplib.SMTPSenderRefused) as refused:
        send(server)
    assert (refused.value.smtp_code, refused.value.smtp_error) == (451, b"4.3.0 Later")
    [counted] = listed(server)
    assert (counted["seen"], counted["fired"]) == (1, 1)
    assert len(server.inbox) == 0


def test_a_drop_rule_closes_the_connection_at_data(server: SMTPTestServer) -> None:
    add(server, {"action": "drop", "command": "DATA"})
    with pytest.raises(smtplib.SMTPServerDisconnected):
        send(server)
    assert len(server.inbox) == 0


def test_times_one_then_normal_service(server: SMTPTestServer) -> None:
    rule = add(server, {"action": "reply", "command": "RCPT", "code": 450, "times": 1})
    with pytest.raises(smtplib.SMTPRecipientsRefused):
        send(server)
    assert send(server) == {}
    assert server.inbox.wait_for(1, timeout=WAIT)[0].rcpt_tos == (RECIPIENT,)
    [counted] = listed(server)
    assert (counted["id"], counted["seen"], counted["fired"]) == (rule["id"], 2, 1)


def test_clearing_restores_normal_service(server: SMTPTestServer) -> None:
    add(server, {"action": "reply", "command": "MAIL", "code": 451})
    add(server, {"action": "drop", "command": "DATA"})
    status, answer, _ = call("DELETE", f"{server.web_url}/api/smtpwire/faults")
    assert (status, answer) == (200, {"deleted": 2})
    assert listed(server) == []
    assert server.faults.rules == []
    assert send(server) == {}
    assert len(server.inbox) == 1


def test_one_rule_is_deleted_by_its_id(server: SMTPTestServer) -> None:
    first = add(server, {"action": "reply", "command": "MAIL", "code": 451, "times": 1})
    second = add(server, {"action": "reply", "command": "RCPT", "code": 550})
    url = f"{server.web_url}/api/smtpwire/faults/{first['id']}"
    assert call("GET", url)[:2] == (200, first)
    status, removed, _ = call("DELETE", url)
    assert (status, removed["id"]) == (200, first["id"])
    assert [rule["id"] for rule in listed(server)] == [second["id"]]
    # An id is never reused: the deleted one stays gone, whatever is added later.
    assert add(server, {"action": "drop", "command": "VRFY"})["id"] > second["id"]
    for method in ("GET", "DELETE"):
        status, answer, _ = call(method, url)
        assert (status, answer) == (404, {"Error": f"no fault rule {first['id']}"})
    with pytest.raises(smtplib.SMTPRecipientsRefused):
        send(server)


def test_a_delay_rule_holds_the_reply_back(server: SMTPTestServer) -> None:
    add(server, {"action": "delay", "command": "MAIL", "seconds": 0.3, "times": 1})
    with smtplib.SMTP(*server.address, timeout=WAIT) as client:
        client.ehlo()
        started = time.monotonic()
        assert client.mail(SENDER)[0] == 250
        assert time.monotonic() - started >= 0.3


def test_address_and_attempt_filters(server: SMTPTestServer) -> None:
    add(
        server,
        {"action": "reply", "command": "RCPT", "code": 550, "text": "5.1.1 Gone",
         "address": "Gone@Example.com", "attempt": [1, 2]},
    )  # fmt: skip
    with smtplib.SMTP(*server.address, timeout=WAIT) as client:
        refused = client.sendmail(SENDER, [RECIPIENT, "gone@example.com"], BODY)
    assert refused == {"gone@example.com": (550, b"5.1.1 Gone")}
    [rule] = listed(server)
    assert (rule["address"], rule["attempt"], rule["seen"]) == ("gone@example.com", [1, 2], 1)


def test_drop_during_data_and_refuse_tls_are_there_too(server: SMTPTestServer) -> None:
    during = add(server, {"action": "drop_during_data", "address": RECIPIENT})
    assert (during["action"], during["command"]) == ("drop_during_data", "DATA")
    with pytest.raises(smtplib.SMTPServerDisconnected):
        send(server)
    tls = add(server, {"action": "refuse_tls", "times": 1})
    assert (tls["action"], tls["command"], tls["code"]) == ("reply", "STARTTLS", 454)


def test_python_and_http_share_the_rules(server: SMTPTestServer) -> None:
    from_python = server.faults.reply(421, "4.3.2 Busy", command="CONNECT", attempt=3)
    from_http = add(server, {"action": "delay", "seconds": 0, "command": "NOOP"})
    assert [rule["id"] for rule in listed(server)] == [from_python.id, from_http["id"]]
    assert listed(server)[0]["attempt"] == [3]
    assert [rule.id for rule in server.faults.rules] == [from_python.id, from_http["id"]]
    server.reset()  # what the plugin does between two tests
    assert listed(server) == []


# --- bad input -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rule", "field"),
    [
        ({}, "action"),
        ({"action": "explode"}, "action"),
        ({"action": ["reply"]}, "action"),
        ({"action": "reply"}, "code"),
        ({"action": "reply", "code": "451"}, "code"),
        ({"action": "reply", "code": 451.0}, "code"),
        ({"action": "reply", "code": True}, "code"),
        ({"action": "reply", "code": 600}, "code"),
        ({"action": "reply", "code": 45}, "code"),
        ({"action": "reply", "code": 451, "text": "two\r\nlines"}, "text"),
        ({"action": "reply", "code": 451, "text": 4}, "text"),
        ({"action": "reply", "code": 451, "command": "MAIL FROM"}, "command"),
        ({"action": "reply", "code": 451, "command": 1}, "command"),
        ({"action": "reply", "code": 451, "address": ["a@b"]}, "address"),
        ({"action": "reply", "code": 451, "attempt": 0}, "attempt"),
        ({"action": "reply", "code": 451, "attempt": []}, "attempt"),
        ({"action": "reply", "code": 451, "attempt": ["1"]}, "attempt"),
        ({"action": "reply", "code": 451, "times": 0}, "times"),
        ({"action": "reply", "code": 451, "times": 1.5}, "times"),
        ({"action": "reply", "code": 451, "delay": -1}, "delay"),
        ({"action": "reply", "code": 451, "delay": "1"}, "delay"),
        ({"action": "reply", "code": 451, "seconds": 1}, "seconds"),  # delay's, not reply's
        ({"action": "reply", "code": 451, "to": "a@b"}, "to"),  # the filter is "address"
        ({"action": "delay"}, "seconds"),
        ({"action": "delay", "seconds": -0.5}, "seconds"),
        ({"action": "delay", "seconds": 1e999}, "seconds"),  # JSON's way to infinity
        ({"action": "delay", "seconds": 1, "code": 451}, "code"),
        ({"action": "drop", "code": 451}, "code"),
        ({"action": "drop_during_data", "command": "MAIL"}, "command"),
        ({"action": "refuse_tls", "address": "a@b"}, "address"),
    ],
)
def test_bad_input_answers_400_naming_the_field(
    server: SMTPTestServer, rule: dict[str, Any], field: str
) -> None:
    status, answer, content_type = call("POST", f"{server.web_url}/api/smtpwire/faults", rule)
    assert (status, content_type, answer["Field"]) == (400, "application/json", field)
    assert answer["Error"].startswith(f"{field}: ")
    assert listed(server) == []  # nothing half-added


@pytest.mark.parametrize("raw", [b"", b"not json", b"[1, 2]", b'"reply"', b"\xff\xfe"])
def test_a_body_that_is_not_a_json_object_answers_400(server: SMTPTestServer, raw: bytes) -> None:
    status, answer, _ = call("POST", f"{server.web_url}/api/smtpwire/faults", raw=raw)
    assert status == 400
    assert "JSON" in answer["Error"]


@pytest.mark.parametrize("rule_id", ["one", "-1", "1.5", "\u0661"])  # ARABIC-INDIC DIGIT ONE
def test_a_rule_id_that_is_not_a_number_answers_400(server: SMTPTestServer, rule_id: str) -> None:
    url = f"{server.web_url}/api/smtpwire/faults/{urllib.parse.quote(rule_id)}"
    for method in ("GET", "DELETE"):
        status, answer, _ = call(method, url)
        assert (status, answer["Field"]) == (400, "id")


def test_nan_is_no_delay() -> None:
    # Python's json reads NaN; so does the Python API take float("nan"): both refuse it.
    with pytest.raises(FaultRuleError) as caught:
        FaultRules().delay(float("nan"))
    assert caught.value.field == "seconds"


def test_every_parameter_of_every_action_has_a_json_check() -> None:
    # The fields are read from FaultRules' signatures: a parameter added there must
    # get a type check here, or posting it would fail with a KeyError (a 500).
    assert set(ACTIONS) == {"reply", "delay", "drop", "drop_during_data", "refuse_tls"}
    for parameters in PARAMETERS.values():
        assert set(parameters) <= set(CHECKS)
    assert PARAMETERS["reply"] == {
        "code": True, "text": False, "command": False, "address": False,
        "attempt": False, "times": False, "delay": False,
    }  # fmt: skip


# --- where there are no rules ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/smtpwire/faults"),
        ("POST", "/api/smtpwire/faults"),
        ("DELETE", "/api/smtpwire/faults"),
        ("GET", "/api/smtpwire/faults/1"),
        ("DELETE", "/api/smtpwire/faults/1"),
    ],
)
def test_a_web_inbox_without_a_test_server_answers_404(
    live_inbox: LiveInbox, method: str, path: str
) -> None:
    body = {"action": "drop"} if method == "POST" else None
    status, answer, content_type = call(method, live_inbox.url + path, body)
    assert (status, content_type) == (404, "application/json")
    assert "no fault rules" in answer["Error"]


# --- docs/inbox.md ----------------------------------------------------------------------------


@pytest.mark.parametrize("runner", ["curl", "urllib"])
def test_the_pages_examples_succeed_against_a_test_server(
    server: SMTPTestServer, runner: str, tmp_path: Path
) -> None:
    """tests/inbox/test_docs_inbox.py runs the page against the command line's inbox,
    where these examples answer 404 (as they are marked); here they run, in the
    page's order, where they are meant for."""
    if runner == "curl" and shutil.which("curl") is None:
        pytest.skip("curl is not installed (the urllib case runs the examples)")
    examples = [line for line in curl_examples() if "/api/smtpwire/faults" in line]
    assert len(examples) == 7
    run = run_with_curl if runner == "curl" else run_with_urllib
    for example in examples:
        argv, marked = command_for(example, server.web_url, "")
        assert marked == 404  # what the command line's inbox answers
        status, body = run(argv, tmp_path, False)
        assert 200 <= status < 300, (example, status, body)
        if "-X POST" in example:
            assert server.faults.rules[-1].id == json.loads(body)["id"]
    assert server.faults.rules == []  # the last example deletes them all
