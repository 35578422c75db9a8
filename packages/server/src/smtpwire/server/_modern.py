"""The ESMTP extensions aiosmtpd lacks, and the switch that turns them on together.

Every one is off by default so that ``SMTP(handler)`` keeps aiosmtpd's EHLO reply
byte for byte; ``modern=True`` turns the whole set on (the CLI does by default),
and each keyword argument overrides the switch for its own extension.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from smtpwire.common.data import BareNewlinePolicy

__all__ = [
    "RCPT_LIMIT_DEFAULT",
    "RCPT_LIMIT_FLOOR",
    "BareNewlinePolicy",
    "Extensions",
    "with_enhanced_code",
]

# RFC 5321 section 4.5.3.1.8: a server must accept at least 100 recipients.
RCPT_LIMIT_FLOOR: Final = 100
RCPT_LIMIT_DEFAULT: Final = 1000


@dataclass(frozen=True)
class Extensions:
    """Which of the modern extensions a server offers (resolved at construction)."""

    pipelining: bool = False
    chunking: bool = False
    dsn: bool = False
    enhanced_status_codes: bool = False
    limits: bool = False
    rcpt_limit: int = RCPT_LIMIT_DEFAULT
    # For command lines and DATA alike: KEEP is aiosmtpd's behaviour, REJECT is
    # Postfix's smtpd_forbid_bare_newline, NORMALIZE reads a bare LF as a line end.
    bare_lf: BareNewlinePolicy = BareNewlinePolicy.KEEP

    @classmethod
    def resolve(
        cls,
        *,
        modern: bool,
        pipelining: bool | None,
        chunking: bool | None,
        dsn: bool | None,
        enhanced_status_codes: bool | None,
        rcpt_limit: int,
        bare_lf: BareNewlinePolicy | str,
    ) -> Extensions:
        if rcpt_limit < RCPT_LIMIT_FLOOR:
            raise ValueError(f"rcpt_limit must be at least {RCPT_LIMIT_FLOOR} (RFC 5321 4.5.3.1.8)")

        def chosen(value: bool | None) -> bool:
            return modern if value is None else value

        return cls(
            pipelining=chosen(pipelining),
            chunking=chosen(chunking),
            dsn=chosen(dsn),
            enhanced_status_codes=chosen(enhanced_status_codes),
            limits=modern,
            rcpt_limit=rcpt_limit,
            bare_lf=BareNewlinePolicy(bare_lf),
        )

    def ehlo_keywords(self) -> list[str]:
        """The keywords after aiosmtpd's own (which keep their order)."""
        keywords = []
        if self.pipelining:
            keywords.append("PIPELINING")
        if self.chunking:
            keywords += ["CHUNKING", "BINARYMIME"]
        if self.dsn:
            keywords.append("DSN")
        if self.enhanced_status_codes:
            keywords.append("ENHANCEDSTATUSCODES")
        if self.limits:
            keywords.append(f"LIMITS RCPTMAX={self.rcpt_limit}")
        return keywords


# --- ENHANCEDSTATUSCODES (RFC 2034, codes from RFC 3463) -------------------------------

_HAS_CODE: Final = re.compile(r"[245]\.\d{1,3}\.\d{1,3}(?: |$)")

# (reply code, command) first, then the reply code alone.
_BY_COMMAND: Final[dict[tuple[str, str], str]] = {
    ("250", "MAIL"): "2.1.0",
    ("250", "RCPT"): "2.1.5",
    ("251", "RCPT"): "2.1.5",
    ("250", "DATA"): "2.6.0",
    ("250", "BDAT"): "2.6.0",
    ("252", "VRFY"): "2.5.0",
    ("550", "RCPT"): "5.1.1",
    ("550", "MAIL"): "5.1.0",
    ("553", "MAIL"): "5.1.7",
}
_BY_CODE: Final[dict[str, str]] = {
    "421": "4.3.0",
    "450": "4.2.0",
    "451": "4.3.0",
    "452": "4.3.1",
    "454": "4.7.0",
    "500": "5.5.2",
    "501": "5.5.4",
    "502": "5.5.1",
    "503": "5.5.1",
    "504": "5.5.4",
    "530": "5.7.0",
    "550": "5.0.0",
    "552": "5.3.4",
    "553": "5.1.3",
    "554": "5.0.0",
    "555": "5.5.4",
}
_UNMARKED: Final = frozenset({"EHLO", "HELO", "LHLO"})


def with_enhanced_code(status: str, command: str | None) -> str:
    """``status`` with an RFC 3463 code after the reply code, unless it has one or
    is exempt (RFC 2034: the greeting, HELO/EHLO replies, and 3xx replies)."""
    code, text = status[:3], status[4:]
    if (
        len(status) < 4
        or not code.isdigit()
        or code[0] not in "245"
        or command is None
        or command in _UNMARKED
        or _HAS_CODE.match(text)
    ):
        return status
    enhanced = _BY_COMMAND.get((code, command)) or _BY_CODE.get(code) or f"{code[0]}.0.0"
    return f"{status[:4]}{enhanced} {text}" if text else f"{status[:4]}{enhanced}"
