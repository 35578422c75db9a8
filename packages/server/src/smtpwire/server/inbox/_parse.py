"""A received message turned into what the API shows: mailpit's summary and
message fields, the header map, the attachment list with part IDs, and the
lower-cased text that search looks in (mailpit's search text: the people, the
subject, the text body, the HTML body's text and the attachments' file names).

This runs once per message, in the store's worker thread, when the message is
stored: listing and searching then read prepared columns and never parse again.
Only fetching one attachment parses the message anew (:func:`extract_part`).
"""

from __future__ import annotations

import email
import email.policy
import hashlib
import html
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from email.errors import HeaderParseError
from email.header import decode_header, make_header
from email.message import Message
from email.utils import getaddresses, parsedate_to_datetime
from typing import Any, Final

#: Text and HTML bodies beyond this are cut in the message JSON (``TextTruncated``):
#: the JSON is read whole, the raw source and the parts stay complete.
MAX_BODY_CHARS: Final = 1024 * 1024
#: How much of the text body, and of the HTML body's text, free-text search looks at.
MAX_SEARCH_CHARS: Final = 64 * 1024
SNIPPET_CHARS: Final = 250

_SPACE = re.compile(r"\s+")
_TAG_NAME = re.compile(r"/?([a-zA-Z][a-zA-Z0-9:-]*)")
_RAW_TEXT_END: Final = {
    "script": re.compile(r"</script", re.IGNORECASE),
    "style": re.compile(r"</style", re.IGNORECASE),
}
# Elements inside a word's flow: their tags join the text around them ("<b>A</b>BC"
# is "ABC"); any other tag separates words.
_INLINE: Final = frozenset(
    {
        "a", "abbr", "b", "bdi", "bdo", "big", "cite", "code", "data", "dfn", "em", "font",
        "i", "kbd", "mark", "q", "s", "samp", "small", "span", "strike", "strong", "sub",
        "sup", "time", "tt", "u", "var", "wbr",
    }
)  # fmt: skip
# compat32: plain strings for headers, which are decoded here (see _raw_values).
_POLICY = email.policy.compat32


@dataclass(frozen=True)
class Parsed:
    """What the store keeps of a message besides its bytes."""

    summary: dict[str, Any]  # mailpit's MessageSummary without ID, Read, Created
    detail: dict[str, Any]  # mailpit's Message without ID, Read
    headers: dict[str, list[str]]
    search_from: str
    search_to: str
    search_subject: str
    search_message_id: str
    search_all: str
    attachment_count: int


def parse(raw: bytes, rcpt_tos: Sequence[str], username: str | None, received: datetime) -> Parsed:
    message = email.message_from_bytes(raw, policy=_POLICY)
    sender = _first(_addresses(message, "From"))
    to, cc = _addresses(message, "To"), _addresses(message, "Cc")
    # As mailpit does: envelope recipients that no header names were Bcc'd.
    named = {item["Address"].lower() for item in (*to, *cc)}
    bcc = _addresses(message, "Bcc") + [
        {"Name": "", "Address": rcpt} for rcpt in rcpt_tos if rcpt.lower() not in named
    ]
    reply_to = _addresses(message, "Reply-To")
    subject = _header_text(message, "Subject")
    text, html_body, attachments, inline = _bodies(message)
    snippet_source = text if text.strip() else html_text(html_body[: SNIPPET_CHARS * 40])
    snippet = _SPACE.sub(" ", snippet_source[: SNIPPET_CHARS * 4]).strip()[:SNIPPET_CHARS]
    message_id = _header_text(message, "Message-ID").strip().strip("<>")
    common = {
        "MessageID": message_id,
        "From": sender,
        "To": to,
        "Cc": cc,
        "Bcc": bcc,
        "ReplyTo": reply_to,
        "Subject": subject,
        "Username": username or "",
        "Tags": [],
        "Size": len(raw),
    }
    summary = {**common, "Attachments": len(attachments), "Snippet": snippet}
    detail = {
        **common,
        "ReturnPath": _header_text(message, "Return-Path").strip().strip("<>"),
        "ListUnsubscribe": {
            "Header": _header_text(message, "List-Unsubscribe"),
            "Links": re.findall(r"<([^>]+)>", _header_text(message, "List-Unsubscribe")),
            "Errors": "",
            "HeaderPost": _header_text(message, "List-Unsubscribe-Post"),
        },
        "Date": _date(message, received),
        "Text": text[:MAX_BODY_CHARS],
        "HTML": html_body[:MAX_BODY_CHARS],
        "TextTruncated": len(text) > MAX_BODY_CHARS or len(html_body) > MAX_BODY_CHARS,
        "Inline": inline,
        "Attachments": attachments,
    }
    people = [sender] if sender else []
    # As mailpit's search text: the people, the subject, the text body and the
    # HTML body's text (mailpit takes one of the two), and the attachments' names.
    searched = [
        subject,
        _people_text([*people, *to, *cc, *bcc, *reply_to]),
        detail["ReturnPath"],
        message_id,
        _one_line(text[:MAX_SEARCH_CHARS]),
        _one_line(html_text(html_body[: MAX_SEARCH_CHARS * 4])[:MAX_SEARCH_CHARS]),
        *(item["FileName"] for item in (*attachments, *inline) if item["FileName"]),
    ]
    return Parsed(
        summary=summary,
        detail=detail,
        headers=header_map(message),
        search_from=_people_text(people),
        search_to=_people_text([*to, *cc, *bcc]),
        search_subject=subject.lower(),
        search_message_id=message_id.lower(),
        search_all="\n".join(part for part in searched if part).lower(),
        attachment_count=len(attachments),
    )


def header_map(message: Message) -> dict[str, list[str]]:
    """Every header, as Go's ``mail.Header`` (mailpit's) gives them: canonical
    names (``Message-Id``), sorted, each with its values in order, unfolded."""
    found: dict[str, list[str]] = {}
    for name, value in message.raw_items():
        unfolded = _SPACE.sub(" ", _text(value).replace("\r", "").replace("\n", " ")).strip()
        found.setdefault(_canonical(name), []).append(unfolded)
    return dict(sorted(found.items()))


@dataclass(frozen=True)
class Part:
    content_type: str
    file_name: str
    content: bytes


def extract_part(raw: bytes, part_id: str) -> Part | None:
    """The decoded content of the leaf part ``part_id`` (mailpit's numbering)."""
    message = email.message_from_bytes(raw, policy=_POLICY)
    for found_id, part in _leaves(message):
        if found_id == part_id:
            payload = part.get_payload(decode=True)
            content = payload if isinstance(payload, bytes) else b""
            return Part(part.get_content_type(), _file_name(part), content)
    return None


# -- the pieces ---------------------------------------------------------------------------


def _canonical(name: str) -> str:
    return "-".join(word[:1].upper() + word[1:].lower() for word in name.strip().split("-"))


# Headers are read raw and decoded here rather than through the email policy's
# header objects: those parse every address structurally, which made storing a
# small message several times slower.


def _raw_values(message: Message, name: str) -> list[str]:
    wanted = name.lower()
    return [_text(value) for key, value in message.raw_items() if key.lower() == wanted]


def _text(value: object) -> str:
    """A header as text: UTF-8 headers (SMTPUTF8) come out of the bytes parser
    with their non-ASCII octets as surrogates."""
    text = str(value)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("ascii", "surrogateescape").decode("utf-8", "replace")
    return text


def _decoded(value: str) -> str:
    unfolded = value.replace("\r", "").replace("\n", "")
    try:
        return str(make_header(decode_header(unfolded)))
    except (UnicodeError, LookupError, ValueError, HeaderParseError):
        return unfolded


def _header_text(message: Message, name: str) -> str:
    values = _raw_values(message, name)
    return _SPACE.sub(" ", _decoded(values[0])).strip() if values else ""


def _addresses(message: Message, name: str) -> list[dict[str, str]]:
    values = _raw_values(message, name)
    try:
        pairs = getaddresses(values)
    except (IndexError, ValueError, TypeError):
        return []
    return [
        {"Name": _decoded(display).strip(), "Address": address.strip()}
        for display, address in pairs
        if address
    ]


def _first(items: list[dict[str, str]]) -> dict[str, str] | None:
    return items[0] if items else None


def _people_text(people: Sequence[dict[str, str] | None]) -> str:
    return "\n".join(f"{p['Name']} <{p['Address']}>".lower() for p in people if p)


def _date(message: Message, received: datetime) -> str:
    values = _raw_values(message, "Date")
    when = None
    if values:
        try:
            when = parsedate_to_datetime(values[0].strip())
        except (TypeError, ValueError, IndexError):
            when = None
    if when is None:
        when = received
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return when.isoformat(timespec="milliseconds")


def _leaves(part: Message, prefix: str = "") -> Iterator[tuple[str, Message]]:
    """The non-multipart parts with their part IDs: "1", "1.2", … as enmime
    (mailpit's parser) numbers them; a message that is not multipart is part "1"."""
    if not part.is_multipart():
        yield (prefix or "1"), part
        return
    children = part.get_payload()
    if not isinstance(children, list):
        return
    for index, child in enumerate(children, start=1):
        if isinstance(child, Message):
            yield from _leaves(child, f"{prefix}.{index}" if prefix else str(index))


def _bodies(message: Message) -> tuple[str, str, list[dict[str, Any]], list[dict[str, Any]]]:
    text = html_body = ""
    attachments: list[dict[str, Any]] = []
    inline: list[dict[str, Any]] = []
    for part_id, part in _leaves(message):
        disposition = part.get_content_disposition()
        content_type = part.get_content_type()
        is_body = disposition != "attachment" and not _file_name(part)
        if is_body and content_type == "text/plain" and not text:
            text = _decoded_text(part)
            continue
        if is_body and content_type == "text/html" and not html_body:
            html_body = _decoded_text(part)
            continue
        if part_id == "1" and not message.is_multipart() and content_type.startswith("text/"):
            continue  # a single-part message of another text type is its body, not a file
        entry = _attachment(part_id, part)
        (inline if disposition != "attachment" and part.get("Content-ID") else attachments).append(
            entry
        )
    return text, html_body, attachments, inline


def _attachment(part_id: str, part: Message) -> dict[str, Any]:
    payload = part.get_payload(decode=True)
    content = payload if isinstance(payload, bytes) else b""
    return {
        "PartID": part_id,
        "FileName": _file_name(part),
        "ContentType": part.get_content_type(),
        "ContentID": str(part.get("Content-ID", "")).strip().strip("<>"),
        "Size": len(content),
        "Checksums": {
            "MD5": hashlib.md5(content, usedforsecurity=False).hexdigest(),
            "SHA1": hashlib.sha1(content, usedforsecurity=False).hexdigest(),
            "SHA256": hashlib.sha256(content).hexdigest(),
        },
    }


def _file_name(part: Message) -> str:
    try:
        name = part.get_filename()
    except (IndexError, ValueError, TypeError):
        name = None
    return name or ""


def _decoded_text(part: Message) -> str:
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        return ""
    charset = part.get_content_charset() or "utf-8"
    try:
        text = payload.decode(charset, errors="replace")
    except LookupError:  # an unknown charset name
        text = payload.decode("utf-8", errors="replace")
    return text.replace("\r\n", "\n")


def _one_line(text: str) -> str:
    """Runs of white space as one space: a phrase matches across line breaks."""
    return _SPACE.sub(" ", text).strip()


def html_text(markup: str) -> str:
    """The text of an HTML body: tags dropped (inline ones joining the text around
    them, others parting it), comments, scripts and style sheets left out,
    character references decoded.

    One pass with ``str.find``, linear in the length of the markup whatever it
    holds (a regular expression for ``<script>…</script>`` is quadratic on markup
    full of unclosed ``<script`` tags).  A tag, comment, script or style sheet
    left open ends the text."""
    pieces: list[str] = []
    position, length = 0, len(markup)
    while position < length:
        start = markup.find("<", position)
        if start < 0:
            pieces.append(markup[position:])
            break
        pieces.append(markup[position:start])
        following = markup[start + 1 : start + 2]
        if not following or not (
            following.isascii() and (following.isalpha() or following in "/!?")
        ):
            pieces.append("<")  # "a < b": text, not a tag
            position = start + 1
            continue
        if markup.startswith("<!--", start):
            end = markup.find("-->", start + 4)
            if end < 0:
                break
            pieces.append(" ")
            position = end + 3
            continue
        end = markup.find(">", start + 1)
        if end < 0:
            break
        position = end + 1
        tag = _TAG_NAME.match(markup, start + 1)
        name = tag.group(1).lower() if tag is not None else ""
        if name in _RAW_TEXT_END and tag is not None and not tag.group(0).startswith("/"):
            closing = _RAW_TEXT_END[name].search(markup, position)
            if closing is None:
                break
            position = closing.start()  # its end tag is read next, as a tag
            pieces.append(" ")
            continue
        pieces.append("" if name in _INLINE else " ")
    return html.unescape("".join(pieces))
