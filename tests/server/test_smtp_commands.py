"""The SMTP protocol's session commands against aiosmtpd 1.4.6's exact wire texts:
greeting, HELO/EHLO, NOOP, RSET, QUIT, VRFY, EXPN, HELP, verb parsing, and the
per-connection command limits."""

from __future__ import annotations

import re
import smtplib
import ssl
from typing import Any

import pytest

from smtpwire.server.smtp import CALL_LIMIT_DEFAULT, SMTP
from support.server import RawClient, serving

HOST = "testhost"
SUPPORTED = "Supported commands: AUTH DATA EHLO HELO HELP MAIL NOOP QUIT RCPT RSET VRFY"


class Plain:
    """A handler with no hooks: every command gets the server's default behaviour."""


def smtp(**kwargs: Any) -> Any:
    kwargs.setdefault("hostname", HOST)
    return lambda: SMTP(Plain(), **kwargs)


def connect(port: int) -> RawClient:
    client = RawClient(port)
    assert client.reply().code == 220
    return client


# -- greeting ---------------------------------------------------------------------------


def test_greeting_names_host_and_aiosmtpd_ident() -> None:
    with serving(smtp()) as server, RawClient(server.port) as client:
        assert str(client.reply()) == "220 testhost Python SMTP 1.4.6"


def test_greeting_with_custom_ident() -> None:
    with serving(smtp(ident="Identifying SMTP v2112")) as server, RawClient(server.port) as client:
        assert str(client.reply()) == "220 testhost Identifying SMTP v2112"


def test_smtplib_sees_greeting_and_extensions() -> None:
    with serving(smtp()) as server, smtplib.SMTP("127.0.0.1", server.port) as client:
        code, message = client.ehlo("client.example")
        assert (code, message) == (250, b"testhost\nSIZE 33554432\n8BITMIME\nHELP")
        assert client.esmtp_features == {"size": "33554432", "8bitmime": "", "help": ""}
        assert client.helo("client.example") == (250, b"testhost")
        assert client.noop() == (250, b"OK")
        assert client.quit() == (221, b"Bye")


# -- HELO / EHLO --------------------------------------------------------------------------


def test_helo_replies_with_server_hostname() -> None:
    with serving(smtp()) as server, connect(server.port) as client:
        assert str(client.command("HELO client.example")) == "250 testhost"
        assert server.call(lambda: server.protocols[0].session.host_name) == "client.example"
        assert server.call(lambda: server.protocols[0].session.extended_smtp) is False


@pytest.mark.parametrize(
    ("kwargs", "lines"),
    [
        ({}, ["testhost", "SIZE 33554432", "8BITMIME", "HELP"]),
        (
            {"enable_SMTPUTF8": True},
            ["testhost", "SIZE 33554432", "8BITMIME", "SMTPUTF8", "HELP"],
        ),
        ({"decode_data": True}, ["testhost", "SIZE 33554432", "HELP"]),
        (
            {"decode_data": True, "enable_SMTPUTF8": True},
            ["testhost", "SIZE 33554432", "SMTPUTF8", "HELP"],
        ),
        ({"data_size_limit": None}, ["testhost", "8BITMIME", "HELP"]),
        ({"data_size_limit": 0}, ["testhost", "8BITMIME", "HELP"]),
        ({"data_size_limit": 1000}, ["testhost", "SIZE 1000", "8BITMIME", "HELP"]),
        (
            {"auth_require_tls": False},
            ["testhost", "SIZE 33554432", "8BITMIME", "AUTH LOGIN PLAIN", "HELP"],
        ),
        (
            {"auth_require_tls": False, "auth_exclude_mechanism": ["LOGIN", "PLAIN"]},
            ["testhost", "SIZE 33554432", "8BITMIME", "HELP"],
        ),
        (
            {"tls_context": ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)},
            ["testhost", "SIZE 33554432", "8BITMIME", "STARTTLS", "HELP"],
        ),
    ],
    ids=[
        "default",
        "smtputf8",
        "decode_data",
        "decode_data-smtputf8",
        "size-none",
        "size-zero",
        "size-1000",
        "auth-no-tls",
        "auth-all-excluded",
        "starttls",
    ],
)
def test_ehlo_lines_in_aiosmtpd_order(kwargs: dict[str, Any], lines: list[str]) -> None:
    with serving(smtp(**kwargs)) as server, connect(server.port) as client:
        reply = client.command("EHLO client.example")
        assert reply.code == 250
        assert list(reply.lines) == lines
        assert server.call(lambda: server.protocols[0].session.extended_smtp) is True


def test_ehlo_wire_bytes() -> None:
    with serving(smtp()) as server, connect(server.port) as client:
        client.send(b"EHLO client.example\r\n")
        expected = b"250-testhost\r\n250-SIZE 33554432\r\n250-8BITMIME\r\n250 HELP\r\n"
        assert client.reply().to_bytes() == expected


@pytest.mark.parametrize("verb", ["HELO", "EHLO", "helo", "ehlo"])
@pytest.mark.parametrize("line_end", ["", "   "])
def test_greeting_command_without_hostname(verb: str, line_end: str) -> None:
    with serving(smtp()) as server, connect(server.port) as client:
        assert str(client.command(verb + line_end)) == f"501 Syntax: {verb.upper()} hostname"
        assert server.call(lambda: server.protocols[0].session.host_name) is None


@pytest.mark.parametrize("first", ["HELO", "EHLO"])
@pytest.mark.parametrize("again", ["HELO", "EHLO"])
def test_helo_and_ehlo_reset_the_transaction(first: str, again: str) -> None:
    with serving(smtp()) as server, connect(server.port) as client:
        assert client.command(f"{first} one.example").code == 250
        assert str(client.command("MAIL FROM:<anne@example.com>")) == "250 OK"
        assert str(client.command("RCPT TO:<bart@example.com>")) == "250 OK"
        assert client.command(f"{again} two.example").code == 250
        envelope = server.call(lambda: server.protocols[0].envelope)
        assert (envelope.mail_from, envelope.rcpt_tos) == (None, [])
        session = server.call(lambda: server.protocols[0].session)
        assert session.host_name == "two.example"
        assert session.extended_smtp is (again == "EHLO")
        # A new MAIL is not "nested": the earlier one was forgotten.
        assert str(client.command("MAIL FROM:<carl@example.com>")) == "250 OK"
        assert str(client.command("DATA")) == "503 Error: need RCPT command"


# -- NOOP, RSET, QUIT ---------------------------------------------------------------------


@pytest.mark.parametrize("line", ["NOOP", "noop", "NOOP anything at all", "NOOP   "])
def test_noop(line: str) -> None:
    with serving(smtp()) as server, connect(server.port) as client:
        assert str(client.command(line)) == "250 OK"


def test_rset_forgets_the_transaction() -> None:
    with serving(smtp()) as server, connect(server.port) as client:
        client.command("EHLO client.example")
        client.command("MAIL FROM:<anne@example.com>")
        client.command("RCPT TO:<bart@example.com>")
        assert str(client.command("RSET")) == "250 OK"
        envelope = server.call(lambda: server.protocols[0].envelope)
        assert (envelope.mail_from, envelope.rcpt_tos) == (None, [])
        # The session survives: no new EHLO is needed.
        assert str(client.command("MAIL FROM:<carl@example.com>")) == "250 OK"


def test_rset_with_argument_is_a_syntax_error_and_keeps_the_transaction() -> None:
    with serving(smtp()) as server, connect(server.port) as client:
        client.command("HELO client.example")
        client.command("MAIL FROM:<anne@example.com>")
        assert str(client.command("RSET FOO")) == "501 Syntax: RSET"
        assert server.call(lambda: server.protocols[0].envelope.mail_from) == "anne@example.com"


def test_quit_says_bye_and_closes() -> None:
    with serving(smtp()) as server, connect(server.port) as client:
        assert str(client.command("QUIT")) == "221 Bye"
        assert client.closed_by_server()
        assert server.tasks_pending() == 0


def test_quit_with_argument_is_a_syntax_error_and_keeps_the_connection() -> None:
    with serving(smtp()) as server, connect(server.port) as client:
        assert str(client.command("QUIT now")) == "501 Syntax: QUIT"
        assert str(client.command("NOOP")) == "250 OK"
        assert str(client.command("QUIT")) == "221 Bye"
        assert client.closed_by_server()


# -- VRFY, EXPN ----------------------------------------------------------------------------

CANNOT_VRFY = "252 Cannot VRFY user, but will accept message and attempt delivery"


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("VRFY", "501 Syntax: VRFY <address>"),
        ("VRFY <anne@example.com>", CANNOT_VRFY),
        ("VRFY anne@example.com", CANNOT_VRFY),
        ("VRFY anne", CANNOT_VRFY),
        ("VRFY Anne Arthur", CANNOT_VRFY),
        ("VRFY @@", "502 Could not VRFY @@"),
    ],
    ids=["no-arg", "angle", "bare-address", "bare-name", "user-name", "unparsable"],
)
def test_vrfy(line: str, expected: str) -> None:
    with serving(smtp()) as server, connect(server.port) as client:
        assert str(client.command(line)) == expected


@pytest.mark.parametrize("line", ["EXPN", "EXPN staff@example.com"])
def test_expn_is_not_implemented(line: str) -> None:
    with serving(smtp()) as server, connect(server.port) as client:
        assert str(client.command(line)) == "502 EXPN not implemented"


# -- HELP ------------------------------------------------------------------------------------


def test_help_lists_commands() -> None:
    with serving(smtp()) as server, connect(server.port) as client:
        assert str(client.command("HELP")) == "250 " + SUPPORTED
        client.command("EHLO client.example")
        assert str(client.command("HELP")) == "250 " + SUPPORTED


@pytest.mark.parametrize(
    ("topic", "text"),
    [
        ("HELO", "HELO hostname"),
        ("EHLO", "EHLO hostname"),
        ("MAIL", "MAIL FROM: <address>"),
        ("RCPT", "RCPT TO: <address>"),
        ("DATA", "DATA"),
        ("RSET", "RSET"),
        ("NOOP", "NOOP [ignored]"),
        ("QUIT", "QUIT"),
        ("VRFY", "VRFY <address>"),
        ("AUTH", "AUTH <mechanism>"),
        ("HELP", "HELP [command]"),
        ("mail", "MAIL FROM: <address>"),
    ],
)
def test_help_topic_before_ehlo(topic: str, text: str) -> None:
    with serving(smtp()) as server, connect(server.port) as client:
        assert str(client.command(f"HELP {topic}")) == f"250 Syntax: {text}"


@pytest.mark.parametrize(
    ("greeting", "topic", "text"),
    [
        ("EHLO", "MAIL", "MAIL FROM: <address> [SP <mail-parameters>]"),
        ("EHLO", "RCPT", "RCPT TO: <address> [SP <mail-parameters>]"),
        ("EHLO", "HELO", "HELO hostname"),
        ("HELO", "MAIL", "MAIL FROM: <address>"),
        ("HELO", "RCPT", "RCPT TO: <address>"),
    ],
)
def test_help_topic_after_greeting(greeting: str, topic: str, text: str) -> None:
    with serving(smtp()) as server, connect(server.port) as client:
        client.command(f"{greeting} client.example")
        assert str(client.command(f"HELP {topic}")) == f"250 Syntax: {text}"


@pytest.mark.parametrize("topic", ["me!", "FOO", "EXPN", "STARTTLS"])
def test_help_unknown_or_undocumented_topic(topic: str) -> None:
    with serving(smtp()) as server, connect(server.port) as client:
        assert str(client.command(f"HELP {topic}")) == "501 " + SUPPORTED


def test_help_lists_starttls_only_with_a_tls_context() -> None:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    with serving(smtp(tls_context=context)) as server, connect(server.port) as client:
        assert str(client.command("HELP")) == (
            "250 Supported commands: AUTH DATA EHLO HELO HELP MAIL NOOP QUIT RCPT RSET "
            "STARTTLS VRFY"
        )
        assert str(client.command("HELP STARTTLS")) == "250 Syntax: STARTTLS"


# -- verb parsing -----------------------------------------------------------------------------


@pytest.mark.parametrize(("line", "verb"), [("FOO", "FOO"), ("foo bar baz", "FOO"), ("X-Y", "X-Y")])
def test_unknown_command(line: str, verb: str) -> None:
    with serving(smtp()) as server, connect(server.port) as client:
        assert str(client.command(line)) == f'500 Error: command "{verb}" not recognized'
        assert str(client.command("NOOP")) == "250 OK"


@pytest.mark.parametrize("raw", [b"", b"\x80FAIL", b"\x80 FAIL", b"N\xc3\x98OP"])
def test_empty_line_and_non_ascii_verb_are_bad_syntax(raw: bytes) -> None:
    with serving(smtp(enable_SMTPUTF8=True)) as server, connect(server.port) as client:
        assert str(client.command(raw)) == "500 Error: bad syntax"
        assert str(client.command("NOOP")) == "250 OK"


def test_non_ascii_argument_without_smtputf8() -> None:
    with serving(smtp()) as server, connect(server.port) as client:
        assert str(client.command("NOOP caf\u00e9".encode())) == "500 Error: strict ASCII mode"
        assert str(client.command(b"HELO \xff")) == "500 Error: strict ASCII mode"
        assert server.call(lambda: server.protocols[0].session.host_name) is None


def test_non_ascii_argument_with_smtputf8_is_decoded() -> None:
    with serving(smtp(enable_SMTPUTF8=True)) as server, connect(server.port) as client:
        assert str(client.command("HELO caf\u00e9.example".encode())) == "250 testhost"
        assert server.call(lambda: server.protocols[0].session.host_name) == "caf\u00e9.example"


def test_bare_lf_terminates_a_command_and_arguments_are_stripped() -> None:
    with serving(smtp()) as server, connect(server.port) as client:
        client.send(b"HELO   client.example  \n")
        assert str(client.reply()) == "250 testhost"
        assert server.call(lambda: server.protocols[0].session.host_name) == "client.example"


def test_pipelined_commands_are_answered_in_order() -> None:
    with serving(smtp()) as server, connect(server.port) as client:
        client.send(b"HELO a.example\r\nMAIL FROM:<anne@example.com>\r\nFOO\r\nNOOP\r\nRSET\r\n")
        assert [str(reply) for reply in client.replies(5)] == [
            "250 testhost",
            "250 OK",
            '500 Error: command "FOO" not recognized',
            "250 OK",
            "250 OK",
        ]


def test_command_line_too_long() -> None:
    with serving(smtp()) as server, connect(server.port) as client:
        assert str(client.command("NOOP " + "a" * 508)) == "500 Command line too long"
        assert str(client.command("NOOP " + "a" * 507)) == "250 OK"  # exactly 512
        assert str(client.command("NOOP " + "a" * 5000)) == "500 Command line too long"
        assert str(client.command("NOOP")) == "250 OK"


# -- limits ------------------------------------------------------------------------------------


def test_fifth_unrecognized_command_closes_the_connection() -> None:
    with serving(smtp()) as server, connect(server.port) as client:
        for number in range(1, 5):
            assert str(client.command(f"FOO{number}")) == (
                f'500 Error: command "FOO{number}" not recognized'
            )
            # Known commands do not replenish the budget.
            assert str(client.command("NOOP")) == "250 OK"
        assert str(client.command("FOO5")) == "502 5.5.1 Too many unrecognized commands, goodbye."
        assert client.closed_by_server()


def test_unrecognized_budget_is_per_connection() -> None:
    with serving(smtp()) as server:
        for _ in range(2):
            with connect(server.port) as client:
                for _ in range(4):
                    assert client.command("BOGUS").code == 500
                assert str(client.command("NOOP")) == "250 OK"


def test_command_call_limit_int() -> None:
    with serving(smtp(command_call_limit=3)) as server, connect(server.port) as client:
        for _ in range(3):
            assert str(client.command("noop")) == "250 OK"
        assert str(client.command("RSET")) == "250 OK"  # every verb has its own count
        assert str(client.command("NOOP")) == "421 4.7.0 NOOP sent too many times"
        assert client.closed_by_server()


def test_command_call_limit_dict_with_default() -> None:
    limits = {"NOOP": 2, "*": 3}
    with serving(smtp(command_call_limit=limits)) as server, connect(server.port) as client:
        for _ in range(3):
            assert str(client.command("RSET")) == "250 OK"
        for _ in range(2):
            assert str(client.command("NOOP")) == "250 OK"
        assert str(client.command("RSET")) == "421 4.7.0 RSET sent too many times"
        assert client.closed_by_server()


def test_command_call_limit_dict_without_default_uses_call_limit_default() -> None:
    with serving(smtp(command_call_limit={"NOOP": 1})) as server, connect(server.port) as client:
        assert str(client.command("NOOP")) == "250 OK"
        for _ in range(CALL_LIMIT_DEFAULT):
            assert str(client.command("RSET")) == "250 OK"
        assert str(client.command("RSET")) == "421 4.7.0 RSET sent too many times"
        assert client.closed_by_server()


def test_command_call_limits_are_per_connection() -> None:
    with serving(smtp(command_call_limit=1)) as server:
        for _ in range(2):
            with connect(server.port) as client:
                assert str(client.command("NOOP")) == "250 OK"
                assert str(client.command("NOOP")) == "421 4.7.0 NOOP sent too many times"
                assert client.closed_by_server()


def test_no_call_limit_by_default() -> None:
    with serving(smtp()) as server, connect(server.port) as client:
        client.send(b"NOOP\r\n" * (CALL_LIMIT_DEFAULT + 5))
        assert {str(reply) for reply in client.replies(CALL_LIMIT_DEFAULT + 5)} == {"250 OK"}


@pytest.mark.parametrize(
    ("limit", "message"),
    [
        ("5", "command_call_limit must be int or Dict[str, int]"),
        (5.0, "command_call_limit must be int or Dict[str, int]"),
        ({"NOOP": "5"}, "All command_call_limit values must be int"),
        ({"NOOP": 5, "*": None}, "All command_call_limit values must be int"),
    ],
)
async def test_command_call_limit_bad_types(limit: Any, message: str) -> None:
    with pytest.raises(TypeError, match=f"^{re.escape(message)}$"):
        SMTP(Plain(), command_call_limit=limit)


@pytest.mark.parametrize("timeout", [0, -1, -0.5])
async def test_proxy_protocol_timeout_must_be_positive(timeout: float) -> None:
    with pytest.raises(ValueError, match=r"^proxy_protocol_timeout must be > 0$"):
        SMTP(Plain(), proxy_protocol_timeout=timeout)
