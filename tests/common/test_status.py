"""SMTPStatus (aiosmtplib's names) and EnhancedStatusCode (RFC 3463)."""

from __future__ import annotations

import enum
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from smtpwire.common.status import EnhancedStatusCode, SMTPStatus

# aiosmtplib 5.1.3 typing.SMTPStatus, member for member (reference/aiosmtplib.md 1.7).
AIOSMTPLIB_STATUS = {
    "invalid_response": -1,
    "system_status_ok": 211,
    "help_message": 214,
    "ready": 220,
    "closing": 221,
    "auth_successful": 235,
    "completed": 250,
    "will_forward": 251,
    "cannot_vrfy": 252,
    "auth_continue": 334,
    "start_input": 354,
    "domain_unavailable": 421,
    "mailbox_unavailable": 450,
    "error_processing": 451,
    "insufficient_storage": 452,
    "tls_not_available": 454,
    "unrecognized_command": 500,
    "unrecognized_parameters": 501,
    "command_not_implemented": 502,
    "bad_command_sequence": 503,
    "parameter_not_implemented": 504,
    "domain_does_not_accept_mail": 521,
    "access_denied": 530,
    "auth_failed": 535,
    "mailbox_does_not_exist": 550,
    "user_not_local": 551,
    "storage_exceeded": 552,
    "mailbox_name_invalid": 553,
    "transaction_failed": 554,
    "syntax_error": 555,
}


def test_reference_table_is_complete() -> None:
    assert len(AIOSMTPLIB_STATUS) == 30


@pytest.mark.parametrize(("name", "value"), sorted(AIOSMTPLIB_STATUS.items()))
def test_aiosmtplib_member_present_with_same_value(name: str, value: int) -> None:
    member = SMTPStatus[name]
    assert member.value == value
    assert member == value
    assert SMTPStatus(value) is member
    assert member.name == name


def test_smtpstatus_is_an_int_enum() -> None:
    assert issubclass(SMTPStatus, enum.IntEnum)
    assert isinstance(SMTPStatus.completed, int)
    assert SMTPStatus.completed + 1 == 251
    assert SMTPStatus.completed < SMTPStatus.start_input


def test_smtpstatus_values_are_unique() -> None:
    values = [member.value for member in SMTPStatus]
    assert len(values) == len(set(values))
    # No aliases: every name maps to its own member.
    assert len(SMTPStatus.__members__) == len(list(SMTPStatus))


def test_every_member_except_invalid_response_is_a_wire_code() -> None:
    for member in SMTPStatus:
        if member is SMTPStatus.invalid_response:
            assert member == -1
        else:
            assert 200 <= member <= 599, member


def test_unknown_value_is_not_a_member() -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - Enum lookup failure is a plain ValueError
        SMTPStatus(299)


# --- EnhancedStatusCode ------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "fields"),
    [
        ("2.0.0", (2, 0, 0)),
        ("5.7.8", (5, 7, 8)),
        ("4.4.2", (4, 4, 2)),
        ("5.1.10", (5, 1, 10)),
        ("2.123.999", (2, 123, 999)),
        ("4.999.0", (4, 999, 0)),
    ],
)
def test_parse_valid(text: str, fields: tuple[int, int, int]) -> None:
    status = EnhancedStatusCode.parse(text)
    assert status == fields
    assert (status.klass, status.subject, status.detail) == fields
    assert str(status) == text


def test_parse_returns_an_enhanced_status_code() -> None:
    assert type(EnhancedStatusCode.parse("2.0.0")) is EnhancedStatusCode


@pytest.mark.parametrize(
    "text",
    [
        "",
        "2",
        "2.0",
        "2.0.",
        "2..0",
        ".0.0",
        "2.0.0.0",
        "1.0.0",
        "3.0.0",
        "6.0.0",
        "0.0.0",
        "2.1000.0",
        "2.0.1000",
        " 2.0.0",
        "2.0.0 ",
        "2.0.0\n",
        "2.0.0 OK",
        "a.b.c",
        "2.a.0",
        "2-0-0",
        "2,0,0",
        "\u0662.0.0",  # ARABIC-INDIC DIGIT TWO
        "2.\u0660.0",  # ARABIC-INDIC DIGIT ZERO
        "+2.0.0",
    ],
)
def test_parse_invalid_raises_value_error(text: str) -> None:
    with pytest.raises(ValueError, match="enhanced status code"):
        EnhancedStatusCode.parse(text)


@pytest.mark.parametrize(
    ("status", "text"),
    [
        (EnhancedStatusCode(2, 0, 0), "2.0.0"),
        (EnhancedStatusCode(5, 7, 8), "5.7.8"),
        (EnhancedStatusCode(4, 12, 345), "4.12.345"),
    ],
)
def test_str(status: EnhancedStatusCode, text: str) -> None:
    assert str(status) == text
    assert f"{status}" == text


def test_leading_zeros_parse_to_numbers() -> None:
    status = EnhancedStatusCode.parse("5.01.001")
    assert status == (5, 1, 1)
    assert str(status) == "5.1.1"


def test_enhanced_status_code_is_a_value() -> None:
    assert EnhancedStatusCode(5, 7, 8) == EnhancedStatusCode.parse("5.7.8")
    assert hash(EnhancedStatusCode(5, 7, 8)) == hash(EnhancedStatusCode.parse("5.7.8"))
    with pytest.raises(AttributeError):
        EnhancedStatusCode(5, 7, 8).klass = 4  # type: ignore[misc]


@given(
    klass=st.sampled_from([2, 4, 5]),
    subject=st.integers(min_value=0, max_value=999),
    detail=st.integers(min_value=0, max_value=999),
)
def test_str_parse_round_trip(klass: int, subject: int, detail: int) -> None:
    status = EnhancedStatusCode(klass, subject, detail)
    assert EnhancedStatusCode.parse(str(status)) == status


@given(text=st.text(max_size=12))
def test_parse_accepts_only_the_grammar(text: str) -> None:
    grammar = re.fullmatch(r"[245]\.[0-9]{1,3}\.[0-9]{1,3}", text)
    if grammar is None:
        with pytest.raises(ValueError, match="enhanced status code"):
            EnhancedStatusCode.parse(text)
    else:
        assert str(EnhancedStatusCode.parse(text)) == ".".join(
            str(int(part)) for part in text.split(".")
        )
