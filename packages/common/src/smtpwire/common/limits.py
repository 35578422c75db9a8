"""RFC limits and timeouts as named constants.

Sizes are in octets and, where the RFC says so, include the terminating CRLF.
Timeouts are in seconds.  The ``*_CAP`` values are not RFC minimums but the
hardening caps smtpwire applies so that a hostile peer cannot grow memory without
bound.
"""

from __future__ import annotations

from typing import Final

# RFC 5321 section 4.5.3.1: size limits and minimums.
LOCAL_PART_MAX: Final = 64
DOMAIN_MAX: Final = 255
PATH_MAX: Final = 256  # including the angle brackets
COMMAND_LINE_MAX: Final = 512  # including CRLF
REPLY_LINE_MAX: Final = 512  # including CRLF
TEXT_LINE_MAX: Final = 1000  # including CRLF, not counting a stuffing dot
RECIPIENTS_MIN: Final = 100  # a server must accept at least this many RCPTs
MESSAGE_CONTENT_MIN: Final = 64 * 1024

# RFC 5321 section 4.5.3.2: timeouts (the client's are per command).
INITIAL_220_TIMEOUT: Final = 5 * 60
MAIL_TIMEOUT: Final = 5 * 60
RCPT_TIMEOUT: Final = 5 * 60
DATA_INITIATION_TIMEOUT: Final = 2 * 60
DATA_BLOCK_TIMEOUT: Final = 3 * 60
DATA_TERMINATION_TIMEOUT: Final = 10 * 60
SERVER_IDLE_TIMEOUT: Final = 5 * 60

# Extension limits.
SIZE_EXTENSION_ALLOWANCE: Final = 26  # RFC 1870: " SIZE=" plus 20 digits, added to MAIL's limit
SMTPUTF8_EXTENSION_ALLOWANCE: Final = 10  # RFC 6531: room for " SMTPUTF8"
AUTH_LINE_MAX: Final = 12288  # RFC 4954 section 4: base64 lines up to this must be handled
ENVID_MAX: Final = 100  # RFC 3461 section 4.4
ORCPT_MAX: Final = 500  # RFC 3461 section 4.2: the whole ORCPT parameter value

# Hardening caps (not from an RFC).
REPLY_LINE_CAP: Final = 8 * 1024  # a client refuses a longer reply line
REPLY_CAP: Final = 32 * 1024  # ... and a longer multi-line reply
DATA_SIZE_DEFAULT: Final = 33_554_432  # aiosmtpd's default message size limit (32 MiB)
