"""smtpwire.common: the sans-I/O SMTP wire core shared by the client and the server.

No sockets, no asyncio, no threads: bytes in, values out, bytes out.  Modules:

- :mod:`.replies` and :mod:`.status`: reply values, the incremental reply parser,
  the reply formatter, reply codes and enhanced status codes;
- :mod:`.lines`, :mod:`.commands`, :mod:`.addresses`, :mod:`.parameters`: command
  lines, MAIL/RCPT paths and ESMTP parameters, parsed (server) and formatted (client);
- :mod:`.mail_parameters`: typed SIZE, BODY, DSN (RET, ENVID, NOTIFY, ORCPT) and AUTH=
  values, and the BDAT and AUTH command arguments;
- :mod:`.data`: the DATA encoder (client) and incremental decoder (server);
- :mod:`.server_rules`: the checks a server applies to each received command line
  (:class:`CommandGate`) and its MAIL/RCPT parameter rules;
  :mod:`.server_commands`: what each command is answered before the application's
  hook (EHLO's lines, HELP, the transaction's order, DATA/BDAT refusals);
  :mod:`.server_input`: a server's received bytes framed as command lines or the
  message being read (DATA, BDAT chunks, the bare-LF policy across chunks);
- :mod:`.extensions`: EHLO replies; :mod:`.sasl`: AUTH encodings;
- :mod:`.limits` and :mod:`.errors`: RFC limits and the exception hierarchy.
"""

from __future__ import annotations

from . import limits
from .addresses import check_domain, check_mailbox, format_path, split_mailbox
from .commands import (
    PathArgument,
    format_command,
    format_mail_from,
    format_rcpt_to,
    parse_mail_from,
    parse_rcpt_to,
    split_command,
)
from .data import (
    BareNewlinePolicy,
    DataDecoder,
    DataEncoder,
    DataViolation,
    encode_crlf_data,
    encode_data,
    iter_encode_data,
    normalize_line_endings,
)
from .errors import (
    AddressSyntaxError,
    CommandSyntaxError,
    CommandTooLongError,
    LineTooLongError,
    MalformedReplyError,
    NonASCIIError,
    ParameterSyntaxError,
    ProtocolError,
    ReplyError,
    ReplyTooLongError,
    SASLAbortedError,
    SASLDecodeError,
    SASLError,
    UnsafeCharacterError,
)
from .extensions import Extensions, format_ehlo_reply, parse_ehlo_reply
from .lines import LINE_TOO_LONG, LineReader, LineTooLong
from .mail_parameters import (
    AuthCommand,
    BdatCommand,
    OriginalRecipient,
    format_notify,
    format_orcpt,
    parse_auth_command,
    parse_auth_parameter,
    parse_bdat,
    parse_body,
    parse_envid,
    parse_notify,
    parse_orcpt,
    parse_ret,
    parse_size,
)
from .parameters import (
    Parameter,
    decode_xtext,
    encode_xtext,
    format_parameters,
    parse_parameters,
)
from .replies import ReplyParser, SMTPReply, format_reply, parse_reply
from .server_rules import (
    CommandGate,
    CommandRefusal,
    MailDSN,
    RcptDSN,
    ReceivedCommand,
    check_mail_parameters,
    parse_mail_dsn,
    parse_rcpt_parameters,
)
from .status import EnhancedStatusCode, SMTPStatus

__all__ = [
    "LINE_TOO_LONG",
    "AddressSyntaxError",
    "AuthCommand",
    "BareNewlinePolicy",
    "BdatCommand",
    "CommandGate",
    "CommandRefusal",
    "CommandSyntaxError",
    "CommandTooLongError",
    "DataDecoder",
    "DataEncoder",
    "DataViolation",
    "EnhancedStatusCode",
    "Extensions",
    "LineReader",
    "LineTooLong",
    "LineTooLongError",
    "MailDSN",
    "MalformedReplyError",
    "NonASCIIError",
    "OriginalRecipient",
    "Parameter",
    "ParameterSyntaxError",
    "PathArgument",
    "ProtocolError",
    "RcptDSN",
    "ReceivedCommand",
    "ReplyError",
    "ReplyParser",
    "ReplyTooLongError",
    "SASLAbortedError",
    "SASLDecodeError",
    "SASLError",
    "SMTPReply",
    "SMTPStatus",
    "UnsafeCharacterError",
    "check_domain",
    "check_mail_parameters",
    "check_mailbox",
    "decode_xtext",
    "encode_crlf_data",
    "encode_data",
    "encode_xtext",
    "format_command",
    "format_ehlo_reply",
    "format_mail_from",
    "format_notify",
    "format_orcpt",
    "format_parameters",
    "format_path",
    "format_rcpt_to",
    "format_reply",
    "iter_encode_data",
    "limits",
    "normalize_line_endings",
    "parse_auth_command",
    "parse_auth_parameter",
    "parse_bdat",
    "parse_body",
    "parse_ehlo_reply",
    "parse_envid",
    "parse_mail_dsn",
    "parse_mail_from",
    "parse_notify",
    "parse_orcpt",
    "parse_parameters",
    "parse_rcpt_parameters",
    "parse_rcpt_to",
    "parse_reply",
    "parse_ret",
    "parse_size",
    "split_command",
    "split_mailbox",
]
