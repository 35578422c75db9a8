"""Reply codes (RFC 5321 section 4.2.3) and enhanced status codes (RFC 3463)."""

from __future__ import annotations

import enum
import re
from typing import NamedTuple

__all__ = ["EnhancedStatusCode", "SMTPStatus"]


@enum.unique
class SMTPStatus(enum.IntEnum):
    """The reply codes a client or server meets, named as aiosmtplib names them.

    ``invalid_response`` (-1) is not a wire code: a client reports it for a reply it
    could not parse.
    """

    invalid_response = -1
    system_status_ok = 211
    help_message = 214
    ready = 220
    closing = 221
    auth_successful = 235
    completed = 250
    will_forward = 251
    cannot_vrfy = 252
    auth_continue = 334
    start_input = 354
    domain_unavailable = 421
    mailbox_unavailable = 450
    error_processing = 451
    insufficient_storage = 452
    tls_not_available = 454
    unable_to_accommodate_parameters = 455
    unrecognized_command = 500
    unrecognized_parameters = 501
    command_not_implemented = 502
    bad_command_sequence = 503
    parameter_not_implemented = 504
    domain_does_not_accept_mail = 521
    access_denied = 530
    auth_mechanism_too_weak = 534
    auth_failed = 535
    encryption_required = 538
    mailbox_does_not_exist = 550
    user_not_local = 551
    storage_exceeded = 552
    mailbox_name_invalid = 553
    transaction_failed = 554
    syntax_error = 555


_ENHANCED = re.compile(r"([245])\.(\d{1,3})\.(\d{1,3})\Z", re.ASCII)


class EnhancedStatusCode(NamedTuple):
    """``class.subject.detail`` as in RFC 3463 (e.g. ``5.7.8``)."""

    klass: int
    subject: int
    detail: int

    @classmethod
    def parse(cls, text: str) -> EnhancedStatusCode:
        """Parse ``"x.y.z"``; raises :class:`ValueError` when it is not one."""
        match = _ENHANCED.match(text)
        if match is None:
            raise ValueError(f"not an enhanced status code: {text!r}")
        return cls(int(match[1]), int(match[2]), int(match[3]))

    def __str__(self) -> str:
        return f"{self.klass}.{self.subject}.{self.detail}"
