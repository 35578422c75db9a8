"""The properties each fuzz target checks, in plain Python.

One ``check_*`` function per target takes the fuzzer's raw input and raises
:class:`~fuzz_input.PropertyViolation` (or lets an undocumented exception escape)
when something is wrong.  The atheris targets (``target.py``) and the regression
tests (``tests/fuzz_regressions``) both call these, so a reproducer replays
through exactly the same checks without atheris.

Allowed exceptions are the documented ones of :mod:`smtpwire.common.errors`;
anything else escaping a parser is a finding.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Callable
from typing import Any

from fuzz_input import FuzzInput, amplify, check, chunks
from session_driver import check_session_bytes, check_session_commands, check_wire_replies
from smtpwire.client.protocol import SMTPProtocol
from smtpwire.common.charsets import find_unsafe
from smtpwire.common.commands import (
    PathArgument,
    format_command,
    format_mail_from,
    parse_mail_from,
    parse_rcpt_to,
    split_command,
)
from smtpwire.common.data import (
    BareNewlinePolicy,
    DataDecoder,
    encode_data,
    iter_encode_data,
    normalize_line_endings,
)
from smtpwire.common.errors import (
    CommandSyntaxError,
    CommandTooLongError,
    MalformedReplyError,
    ParameterSyntaxError,
    ProtocolError,
    ReplyError,
    ReplyTooLongError,
    SASLAbortedError,
    SASLError,
)
from smtpwire.common.extensions import format_ehlo_reply, parse_ehlo_reply
from smtpwire.common.lines import LineReader, LineTooLong
from smtpwire.common.mail_parameters import (
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
from smtpwire.common.parameters import decode_xtext, encode_xtext, format_parameters
from smtpwire.common.replies import ReplyParser, SMTPReply, parse_reply
from smtpwire.common.sasl import (
    b64decode,
    b64encode,
    cram_md5_response,
    cram_md5_verify,
    decode_client_response,
    decode_cram_md5,
    decode_login,
    decode_plain,
    decode_xoauth2,
    encode_login,
    encode_plain,
    encode_xoauth2,
)
from smtpwire.common.server_commands import read_path
from smtpwire.common.server_input import ChunkLineEndings, ExactBytes, Inbound
from smtpwire.common.server_rules import (
    CommandGate,
    CommandRefusal,
    parse_mail_dsn,
    parse_rcpt_parameters,
)
from smtpwire.server.proxy_protocol import HeaderCollector, ProxyData, get_proxy, parse_header

__all__ = ["TARGETS"]

POLICIES = tuple(BareNewlinePolicy)
_VERB = re.compile(r"[A-Z][A-Z0-9_-]*\Z")
_XTEXT = re.compile(r"(?:[\x21-\x2a\x2c-\x3c\x3e-\x7e]|\+[0-9A-F]{2})*\Z")


def _text(payload: bytes, utf8: bool) -> str:
    """Bytes as the server would hand them to a parser (surrogate escapes kept)."""
    return payload.decode("utf-8" if utf8 else "latin-1", "surrogateescape")


# -- replies (client side) ---------------------------------------------------------------


def _reference_replies(
    stream: bytes, max_line: int, max_reply: int
) -> tuple[list[SMTPReply], type[ReplyError] | None, bool]:
    """What a parser must make of ``stream``, line by line: the replies, the kind of
    error (None if none) and whether a partial reply is left over."""
    replies: list[SMTPReply] = []
    lines: list[str] = []
    code = 0
    size = 0
    start = 0
    while (end := stream.find(b"\n", start)) >= 0:
        line = stream[start : end + 1]
        size += len(line)
        if len(line) > max_line or size > max_reply:
            return replies, ReplyTooLongError, True
        body = line[:-1]
        if body.endswith(b"\r"):
            body = body[:-1]
        separator, text = body[3:4], body[4:]
        if (
            len(body) < 3
            or not body[:3].isdigit()
            or body[:1] not in b"2345"
            or separator not in (b"", b" ", b"-")
            or b"\r" in text
            or b"\x00" in text
            or (lines and int(body[:3]) != code)
        ):
            return replies, MalformedReplyError, True
        code = int(body[:3])
        lines.append(text.decode("utf-8", "surrogateescape"))
        if separator != b"-":
            replies.append(SMTPReply(code, lines))
            lines, size = [], 0
        start = end + 1
    rest = stream[start:]
    if len(rest) > max_line or size + len(rest) > max_reply:
        return replies, ReplyTooLongError, True
    return replies, None, bool(rest or lines)


def check_reply_parser(data: bytes) -> None:
    """ReplyParser fed random chunks agrees with a line-by-line reference: the same
    replies, the same kind of error at the same place, bounded buffers; every reply
    round-trips through ``to_bytes``."""
    source = FuzzInput(data)
    max_line = source.pick((8192, 512, 3, 4, 16, 80))
    max_reply = source.pick((32768, 1024, 8, 64, 200))
    seed = source.octet()
    stream = amplify(source.rest(), source.octet() % 24 - 16)
    expected, error, partial = _reference_replies(stream, max_line, max_reply)
    parser = ReplyParser(max_line_length=max_line, max_reply_length=max_reply)
    got: list[SMTPReply] = []
    raised: ReplyError | None = None
    for piece in chunks(stream, seed):
        try:
            got.extend(parser.feed(piece))
        except ReplyError as exc:
            raised = exc
            break
        check(len(parser._buffer) <= max_line, "partial line buffered past the line cap")
    if raised is None:
        check(error is None, f"reference fails with {error}, parser accepted")
        check(got == expected, f"replies differ: {got[:3]} != {expected[:3]}")
        check(parser.has_partial == partial, "has_partial disagrees")
    else:
        check(error is not None and isinstance(raised, error), f"{raised!r} but expected {error}")
        check(got == expected[: len(got)], "replies before the error differ")
        try:
            parser.feed(b"250 OK\r\n")
        except ReplyError as again:
            check(again is raised, "a failed parser raised a different error")
        else:
            check(False, "a failed parser accepted more input")
    for reply in got:
        check(200 <= reply.code <= 599, f"code {reply.code}")
        check(parse_reply(reply.to_bytes()) == reply, f"{reply!r} does not round-trip")


# -- command lines (server side) ----------------------------------------------------------

Line = tuple[bytes, bool] | None  # (line, ended with bare LF) or None for too long


def _reference_lines(stream: bytes, max_length: int) -> list[Line]:
    out: list[Line] = []
    for piece in stream.split(b"\n")[:-1]:
        bare = not piece.endswith(b"\r")
        line = piece if bare else piece[:-1]
        out.append(None if len(line) + 2 > max_length else (line, bare))
    return out


def check_command_line(data: bytes) -> None:
    """LineReader in random chunks gives the reference's lines in bounded memory;
    split_command raises only CommandSyntaxError and its split round-trips through
    format_command; the gate answers every line with a command or a valid reply."""
    source = FuzzInput(data)
    max_length = source.pick((512, 3, 8, 64, 1000))
    utf8 = source.flag()
    policy = source.pick(POLICIES)
    seed = source.octet()
    stream = amplify(source.rest(), source.octet() % 24 - 16)
    reader = LineReader(max_length)
    got: list[Line] = []
    for piece in chunks(stream, seed):
        reader.feed(piece)
        while (line := reader.next_line()) is not None:
            got.append(None if isinstance(line, LineTooLong) else (line, reader.last_line_bare_lf))
        check(reader.buffered <= max_length, f"{reader.buffered} octets buffered")
    expected = _reference_lines(stream, max_length)
    check(got == expected, "lines differ from the reference")
    gate = CommandGate({"HELO", "EHLO", "MAIL", "RCPT", "DATA", "NOOP"}, bare_newline=policy)
    replies: list[str] = []
    for item in got[:200]:
        if item is None:
            continue
        line, bare = item
        _check_split(line, max_length, utf8)
        screened = gate.screen(line, max_length=max_length, bare_lf=bare, utf8=utf8)
        if isinstance(screened, CommandRefusal):
            replies.append(screened.reply)
        else:
            check(_VERB.match(screened.verb), f"gate let through verb {screened.verb!r}")
    check_wire_replies(replies, ascii_only=not utf8)


def _check_split(line: bytes, max_length: int, utf8: bool) -> None:
    try:
        verb, argument = split_command(line, max_length=max_length, utf8=utf8)
    except CommandTooLongError:
        check(len(line) + 2 > max_length, "a short line was called too long")
        return
    except CommandSyntaxError:
        return
    check(_VERB.match(verb), f"verb {verb!r}")
    check(argument == argument.strip(" "), "argument not stripped")
    check(utf8 or argument.isascii(), "non-ASCII argument without utf8")
    if find_unsafe(argument) is None and line.isascii():
        wire = format_command(verb, argument) if argument else format_command(verb)
        again = split_command(wire[:-2], max_length=None, utf8=utf8)
        check(again == (verb, argument), f"{(verb, argument)} became {again}")


# -- MAIL/RCPT paths and parameters -------------------------------------------------------

_PARAMETER_PARSERS: dict[str, Callable[[str | None], object]] = {
    "SIZE": parse_size,
    "BODY": parse_body,
    "RET": parse_ret,
    "ENVID": parse_envid,
    "NOTIFY": parse_notify,
    "ORCPT": parse_orcpt,
    "AUTH": parse_auth_parameter,
}


def _parse_path(
    argument: str, *, rcpt: bool, utf8: bool, strict: bool, limit: int | None
) -> PathArgument | None:
    parser = parse_rcpt_to if rcpt else parse_mail_from
    try:
        return parser(argument, utf8=utf8, strict=strict, max_local_part=limit)
    except CommandSyntaxError:
        return None


def check_paths(data: bytes) -> None:
    """MAIL/RCPT arguments, strict and lenient: only CommandSyntaxError; what strict
    accepts lenient accepts alike; an accepted path is safe text and survives
    format_mail_from and a new parse; parameter values and the server's reading
    of them raise only documented errors or give valid replies."""
    source = FuzzInput(data)
    rcpt, utf8, strict = source.flag(), source.flag(), source.flag()
    limit = source.pick((None, 64, 1, 5))
    argument = _text(source.rest(), True)
    keyword = "TO:" if rcpt else "FROM:"
    parsed = _parse_path(argument, rcpt=rcpt, utf8=utf8, strict=strict, limit=limit)
    replies: list[str] = []
    read = read_path(
        argument, keyword, "501 Syntax error", utf8=utf8, max_local_part=limit, extended=strict
    )
    if isinstance(read, str):
        replies.append(read)
    if parsed is not None:
        check(find_unsafe(parsed.address) is None, f"unsafe address {parsed.address!r}")
        check(utf8 or parsed.address.isascii(), "non-ASCII address without utf8")
        check(not rcpt or parsed.address, "null forward-path accepted")
        keywords = [parameter.keyword for parameter in parsed.parameters]
        check(len(set(keywords)) == len(keywords), "a parameter given twice")
        if strict:
            lenient = _parse_path(argument, rcpt=rcpt, utf8=utf8, strict=False, limit=limit)
            check(lenient == parsed, f"strict {parsed} but lenient {lenient}")
        _check_reformat(parsed, rcpt=rcpt, utf8=utf8)
        for parameter in parsed.parameters:
            value_parser = _PARAMETER_PARSERS.get(parameter.keyword)
            if value_parser is not None:
                with contextlib.suppress(ParameterSyntaxError):
                    value_parser(parameter.value)
        values = {parameter.keyword: parameter.value for parameter in parsed.parameters}
        for reply in (parse_mail_dsn(values), parse_rcpt_parameters(values, dsn=True)):
            if isinstance(reply, str):
                replies.append(reply)
    for parse in (parse_bdat, parse_auth_command):
        with contextlib.suppress(ParameterSyntaxError):
            parse(argument)
    check_wire_replies(replies, ascii_only=False)


def _check_reformat(parsed: PathArgument, *, rcpt: bool, utf8: bool) -> None:
    try:
        wire = format_mail_from(parsed.address, parsed.parameters, utf8=utf8)
    except (ProtocolError, ValueError):
        return  # the client refuses some things a lenient server takes
    verb, argument = split_command(wire[:-2], max_length=None, utf8=utf8)
    check(verb == "MAIL", "format_mail_from made another verb")
    again = _parse_path(argument, rcpt=False, utf8=utf8, strict=False, limit=None)
    check(again == parsed, f"{parsed} formatted as {wire!r} parses as {again}")


# -- xtext ------------------------------------------------------------------------------------


def check_xtext(data: bytes) -> None:
    """decode_xtext raises only ParameterSyntaxError and never yields a control
    character; encode/decode round-trip; ORCPT and format_parameters round-trip."""
    source = FuzzInput(data)
    allow_utf8, as_utf8 = source.flag(), source.flag()
    text = _text(source.rest(), as_utf8)
    try:
        decoded = decode_xtext(text, allow_utf8=allow_utf8)
    except ParameterSyntaxError:
        decoded = None
    if decoded is not None:
        check(find_unsafe(decoded) is None, f"xtext decoded to unsafe {decoded!r}")
        check(allow_utf8 or decoded.isascii(), "non-ASCII without allow_utf8")
        check(decode_xtext(encode_xtext(decoded)) == decoded, "decoded text does not round-trip")
    for function in (parse_envid, parse_orcpt, parse_auth_parameter):
        with contextlib.suppress(ParameterSyntaxError):
            function(text)
    if find_unsafe(text) is None:
        encoded = encode_xtext(text)
        check(_XTEXT.match(encoded), f"encode_xtext made {encoded!r}")
        check(decode_xtext(encoded) == text, f"{text!r} does not round-trip")
        for address_type in ("rfc822", "utf-8"):
            try:
                value = format_orcpt(text, address_type)
            except ValueError:  # UnsafeCharacterError included
                continue
            parsed = parse_orcpt(value)
            check(parsed == (address_type, text), f"ORCPT {text!r} became {parsed}")
    try:
        formatted = format_parameters([("X-FUZZ", text)], utf8=as_utf8)
    except (ValueError, ProtocolError):  # UnsafeCharacterError, NonASCIIError
        return
    check(formatted == f" X-FUZZ={text}", f"format_parameters made {formatted!r}")


# -- SASL -------------------------------------------------------------------------------------

_SASL_DECODERS: tuple[Callable[[Any], object], ...] = (
    b64decode,
    decode_client_response,
    decode_login,
    decode_plain,
    decode_cram_md5,
    decode_xoauth2,
)


def check_sasl(data: bytes) -> None:
    """Every decoder, given bytes or the text a server decoded them to, raises only
    SASLError; decoded fields have their shapes; encoders round-trip."""
    source = FuzzInput(data)
    as_text = source.flag()
    payload = source.rest()
    response: str | bytes = _text(payload, True) if as_text else payload
    for decoder in _SASL_DECODERS:
        try:
            result = decoder(response)
        except SASLAbortedError:
            check(payload.strip() == b"*", "aborted without '*'")
            continue
        except SASLError:
            continue
        if decoder is decode_plain:
            check(all(b"\x00" not in field for field in result), "NUL in a PLAIN field")  # type: ignore[attr-defined]
        if decoder is b64decode:
            check(b64decode(b64encode(result)) == result, "base64 does not round-trip")  # type: ignore[arg-type]
    username, _, password = payload.partition(b"\x00")
    if b"\x00" not in password:
        check(decode_plain(encode_plain(username, password)) == (b"", username, password), "PLAIN")
        check(decode_login(encode_login(password)) == password, "LOGIN")
        if username and b" " not in username:
            answer = cram_md5_response(username, password, b64encode(payload))
            user, digest = decode_cram_md5(answer)
            check(user == username and cram_md5_verify(digest, payload, password), "CRAM-MD5")
    try:
        user_text, token = username.decode(), password.decode()
        encoded = encode_xoauth2(user_text, token)
    except ValueError:  # UnicodeDecodeError, or ^A/CR/LF refused
        return
    check(decode_xoauth2(encoded) == (user_text, token), "XOAUTH2 does not round-trip")


# -- DATA ------------------------------------------------------------------------------------


def _reference_message(
    data: bytes, policy: BareNewlinePolicy, max_size: int | None, max_line: int | None
) -> tuple[bytes, bool] | None:
    """(content, whether any rule is broken) of a message that ends in ``data``, or
    None when it does not end; written line by line, not the decoder's way."""
    wire = b"\r\n" + data
    end = wire.find(b"\r\n.\r\n")
    if end < 0:
        return None
    segment = wire[: end + 2]
    bare = re.search(rb"\r(?!\n)|(?<!\r)\n", segment) is not None
    broken = bare and policy is BareNewlinePolicy.REJECT
    normalize = policy is BareNewlinePolicy.NORMALIZE
    if max_line is not None:
        start = 0
        while (lf := segment.find(b"\n", start)) >= 0:
            dotted = segment[start : start + 1] == b"." and (
                normalize or segment[start - 2 : start] == b"\r\n"
            )
            broken = broken or lf - start > max_line - 1 + dotted
            start = lf + 1
    if normalize:
        segment = re.sub(rb"\r\n|\r|\n", b"\r\n", segment)
    lines = segment.split(b"\r\n")[1:-1]
    content = b"".join((line[1:] if line[:1] == b"." else line) + b"\r\n" for line in lines)
    broken = broken or (max_size is not None and len(content) > max_size)
    return content, broken


def _decode(
    stream: bytes, seed: int, make: Callable[[], DataDecoder]
) -> tuple[bytes, tuple[object, ...]]:
    decoder = make()
    out: list[bytes] = []
    remainder = b""
    pieces = chunks(stream, seed)
    for piece in pieces:
        out.append(decoder.feed(piece))
        check(len(decoder._pending) <= 5, "the decoder holds back more than a terminator")
        if decoder.done:
            remainder = decoder.remainder + b"".join(pieces)
            break
    state = (decoder.done, decoder.violation, decoder.bare_lf, decoder.bare_cr, decoder.size)
    return b"".join(out), (*state, remainder, decoder.wire_size)


def check_data_decoder(data: bytes) -> None:
    """The DATA decoder under each policy: the same content, violation and remainder
    however the bytes are split; it ends exactly at the first CRLF.CRLF; without a
    violation its content is the reference's.  The encoder's output decodes back."""
    source = FuzzInput(data)
    policy = source.pick(POLICIES)
    max_size = source.pick((None, 0, 10, 100, 4096))
    max_line = source.pick((1000, None, 3, 4, 10, 80))
    seeds = (source.octet(), source.octet())
    stream = amplify(source.rest(), source.octet() % 24 - 16)

    def make() -> DataDecoder:
        return DataDecoder(max_size=max_size, max_line_length=max_line, bare_newline=policy)

    whole, whole_state = _decode(stream, 0, make)
    for seed in seeds:
        split, split_state = _decode(stream, seed, make)
        if whole_state[1] is not None:
            # After a violation the caller discards the message: what was handed out
            # before it was noticed, and the size so far, may depend on the split.
            split, split_state = whole, (*split_state[:4], whole_state[4], *split_state[5:])
        check(split == whole, f"content differs when split with seed {seed}")
        check(split_state == whole_state, f"{split_state[:6]} != {whole_state[:6]} (seed {seed})")
    done, violation = whole_state[0], whole_state[1]
    terminator = (b"\r\n" + stream).find(b"\r\n.\r\n")
    check(done == (terminator >= 0), "the message ended other than at CRLF.CRLF")
    if done:
        check(whole_state[5] == stream[terminator + 3 :], "wrong remainder")
        reference = _reference_message(stream, policy, max_size, max_line)
        check(reference is not None, "no reference message")
        content, broken = reference  # type: ignore[misc]
        check((violation is not None) == broken, f"violation {violation}, reference {broken}")
        if violation is None:
            check(whole == content, "content differs from the reference")
    _check_encoder(stream[:65536], seeds[0])


def _check_encoder(content: bytes, seed: int) -> None:
    encoded = encode_data(content)
    check(b"".join(iter_encode_data(chunks(content, seed))) == encoded, "chunked encoding differs")
    decoder = DataDecoder(max_line_length=None)
    decoded = decoder.feed(encoded)
    check(decoder.done and decoder.remainder == b"", "encoded data did not end exactly")
    normal = normalize_line_endings(content)
    expected = normal if normal.endswith(b"\r\n") else normal + b"\r\n"
    check(decoded == expected, "encoded content does not decode back")


# -- BDAT chunks ------------------------------------------------------------------------------


def check_bdat(data: bytes) -> None:
    """ExactBytes takes exactly its size and returns the rest; ChunkLineEndings
    applies the policy the same over any split; Inbound switches from lines to a
    chunk and back without losing or misreading an octet."""
    source = FuzzInput(data)
    size = source.integer(0, 600)
    policy = source.pick(POLICIES)
    keep, seed = source.flag(), source.octet()
    stream = amplify(source.rest(), source.octet() % 24 - 16)
    chunk = ExactBytes(size, keep=keep)
    taken: list[bytes] = []
    remainder = b""
    pieces = chunks(stream, seed)
    for piece in [b"", *pieces]:
        if chunk.done:
            remainder += piece
            continue
        taken.append(chunk.feed(piece))
        remainder = chunk.remainder
    check(chunk.done == (len(stream) >= size), "ExactBytes done at the wrong octet")
    check(b"".join(taken) == (stream[:size] if keep else b""), "ExactBytes took other octets")
    if chunk.done:
        check(remainder == stream[size:], "ExactBytes lost the octets after the chunk")
    endings = ChunkLineEndings(policy)
    out = b"".join(endings.feed(piece) for piece in chunks(stream, seed)) + endings.flush()
    bare = re.search(rb"\r(?!\n)|(?<!\r)\n", stream) is not None
    if policy is BareNewlinePolicy.REJECT:
        # A refused message is discarded by the caller, whatever was handed out.
        check(endings.refused == bare, "REJECT refused the wrong message")
        check(bare or out == stream, "REJECT changed the content")
    else:
        check(not endings.refused, f"{policy} refused")
        expected = stream if policy is BareNewlinePolicy.KEEP else normalize_line_endings(stream)
        check(out == expected, f"{policy} changed the content")
    _check_inbound(stream, size, seed)


def _check_inbound(stream: bytes, size: int, seed: int) -> None:
    """``BDAT`` line, then the chunk, then lines: what Inbound makes of it."""
    wire = b"BDAT %d\r\n" % size + stream
    inbound = Inbound(512)
    lines: list[bytes | LineTooLong] = []
    content: list[bytes] = []
    started = False
    for piece in chunks(wire, seed):
        reading = inbound.feed(piece)
        while not reading:
            if started:
                content.extend(inbound.take_content())
                started = False
            line = inbound.next_line()
            if line is None:
                break
            if not lines and line == b"BDAT %d" % size:
                started = True
                inbound.begin_message(ExactBytes(size))
                reading = inbound.reading_message
            lines.append(line)
        check(inbound.buffered <= 512, "Inbound holds more than a line")
    if started and not inbound.reading_message:
        content.extend(inbound.take_content())
    got = b"".join(content)
    check(got == stream[: len(got)] and len(got) <= size, "the chunk's content is wrong")
    if len(stream) >= size:
        check(got == stream[:size], "the chunk was not taken whole")
        expected = [b"BDAT %d" % size, *_lines_of(stream[size:])]
        check(lines == expected, "lines after the chunk were misread")


def _lines_of(stream: bytes) -> list[bytes | LineTooLong]:
    reader = LineReader(512)
    reader.feed(stream)
    out: list[bytes | LineTooLong] = []
    while (line := reader.next_line()) is not None:
        out.append(line)
    return out


# -- PROXY protocol ---------------------------------------------------------------------------


class _Stream:
    """An async reader over bytes (what get_proxy reads from); never suspends."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.asked: list[int] = []

    async def read(self, n: int = -1) -> bytes:
        self.asked.append(n)
        piece, self.data = (self.data, b"") if n < 0 else (self.data[:n], self.data[n:])
        return piece

    async def readexactly(self, n: int) -> bytes:
        raise NotImplementedError

    async def readuntil(self, separator: bytes = b"\n") -> bytes:
        raise NotImplementedError


def _run(coroutine: Any) -> Any:
    """Run a coroutine that never suspends, without an event loop."""
    try:
        coroutine.send(None)
    except StopIteration as stop:
        return stop.value
    coroutine.close()
    check(False, "the coroutine suspended")
    return None


def check_proxy(data: bytes) -> None:
    """parse_header never raises and reports problems in ``error``; the collector
    finds the same header however the bytes are split, and get_proxy never reads
    past the header."""
    source = FuzzInput(data)
    seed = source.octet()
    stream = amplify(source.rest(), source.octet() % 24 - 18)
    header = parse_header(stream)
    _check_proxy_data(header, stream)
    collectors = []
    for split_seed in (0, seed):
        collector = HeaderCollector()
        for piece in chunks(stream, split_seed):
            if collector.done:
                collector.remainder += piece
                continue
            check(collector.needed >= 1, "nothing needed before the header is done")
            collector.feed(piece)
        check(len(collector.pending) <= 16 + 65535, "the collector buffers too much")
        collectors.append((collector.done, collector.header, collector.remainder))
    check(collectors[0] == collectors[1], "the collector depends on the split")
    done, whole, remainder = collectors[0]
    if done:
        check(whole + remainder == stream, "header and remainder are not the input")
    reader = _Stream(stream)
    result = _run(get_proxy(reader))
    check(isinstance(result, ProxyData), "get_proxy returned something else")
    _check_proxy_data(result, None)
    if done:
        check(reader.data == remainder, "get_proxy read past the header")
        check(result == parse_header(whole), "get_proxy and parse_header disagree")


def _check_proxy_data(header: ProxyData, raw: bytes | None) -> None:
    _ = header.tlv, repr(header), header.same_attribs(version=header.version)
    if not header.valid:
        check(header.error or header.protocol is None, "invalid without a reason")
        return
    check(header.version in (1, 2), f"version {header.version}")
    if raw is not None:
        check(header.whole_raw == raw, "whole_raw is not the header")
    for port in (header.src_port, header.dst_port):
        check(port is None or 0 <= port <= 65535, f"port {port}")


# -- EHLO ------------------------------------------------------------------------------------


def check_ehlo(data: bytes) -> None:
    """parse_ehlo_reply: MalformedReplyError for a non-250, otherwise extensions
    with valid upper-case keywords that survive format_ehlo_reply."""
    source = FuzzInput(data)
    payload = source.rest()
    try:
        replies = ReplyParser().feed(payload)
    except ReplyError:
        replies = []
    text_lines = _text(payload, True).split("\n")
    with contextlib.suppress(ValueError):
        replies.append(SMTPReply(250, text_lines))
    for reply in replies:
        try:
            extensions = parse_ehlo_reply(reply)
        except MalformedReplyError:
            check(reply.code != 250, "a 250 EHLO reply refused")
            continue
        check(reply.code == 250, "a refusal read as extensions")
        size = extensions.size_limit
        check(size is None or size >= 1, f"SIZE {size}")
        for keyword in extensions:
            check(_VERB.match(keyword) or keyword[:1].isdigit(), f"keyword {keyword!r}")
            check(keyword in extensions and keyword.lower() in extensions, "lookup failed")
        _ = extensions.auth_mechanisms, extensions.lines(), repr(extensions)
        if not extensions.domain:
            continue
        wire = format_ehlo_reply(extensions.domain, extensions, greeting=extensions.greeting)
        again = parse_ehlo_reply(parse_reply(wire))
        check(dict(again) == dict(extensions), "extensions do not round-trip")
        check(again.domain == extensions.domain, "domain does not round-trip")


# -- the client's reply handling -----------------------------------------------------------


class _Loop:
    """What SMTPProtocol needs of a loop to take data (weak-referenceable)."""

    def create_future(self) -> asyncio.Future[None]:
        raise NotImplementedError


class _Transport:
    def __init__(self) -> None:
        self.closed = False

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def write(self, data: bytes) -> None:
        pass


def _client(stream: bytes, seed: int, expected: int) -> tuple[SMTPProtocol, _Transport]:
    protocol = SMTPProtocol(_Loop())  # type: ignore[arg-type]
    transport = _Transport()
    protocol.connection_made(transport)  # type: ignore[arg-type]
    protocol.expect(expected)
    for piece in chunks(stream, seed):
        protocol.data_received(piece)
    return protocol, transport


def check_client_replies(data: bytes) -> None:
    """SMTPProtocol.data_received fed a server's output in random chunks never
    raises; errors become SMTPResponseException/SMTPServerDisconnected; it keeps
    no more replies than it expects; an unsolicited 421 closes; the result does
    not depend on the split unless the stream is malformed."""
    source = FuzzInput(data)
    expected, seed = source.octet() % 8, source.octet()
    stream = amplify(source.rest(), source.octet() % 24 - 16)
    whole, whole_transport = _client(stream, 0, expected)
    split, split_transport = _client(stream, seed, expected)
    for protocol, transport in ((whole, whole_transport), (split, split_transport)):
        check(len(protocol._replies) <= expected + 1, "more replies kept than expected")
        error = protocol._error
        check(error is None or type(error).__name__.startswith("SMTP"), f"error {error!r}")
        check(transport.closed == protocol.closed, "closed without closing the transport")
    _, malformed, _ = _reference_replies(stream, 8192, 32768)
    if malformed is None:
        # A well-formed stream: the split must not matter (a malformed one may fail
        # before or after an unsolicited 421, depending on where it is cut).
        check(list(split._replies) == list(whole._replies), "replies depend on the split")
        check(type(split._error) is type(whole._error), "the error depends on the split")
        check(split.closed == whole.closed, "closing depends on the split")
    else:
        check(whole._error is not None, "a malformed stream went unnoticed")


TARGETS: dict[str, Callable[[bytes], None]] = {
    "reply_parser": check_reply_parser,
    "command_line": check_command_line,
    "paths": check_paths,
    "xtext": check_xtext,
    "sasl": check_sasl,
    "data_decoder": check_data_decoder,
    "bdat": check_bdat,
    "proxy": check_proxy,
    "ehlo": check_ehlo,
    "session_bytes": check_session_bytes,
    "session_commands": check_session_commands,
    "client_replies": check_client_replies,
}
