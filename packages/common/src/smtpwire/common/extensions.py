"""EHLO replies: service extensions parsed and formatted (RFC 5321 section 4.1.1.1).

Keywords are case-insensitive; :class:`Extensions` stores them upper-cased and
answers lookups in any case.  The old ``AUTH=LOGIN PLAIN`` form some servers
still send alongside ``AUTH`` is merged into the AUTH mechanisms.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Final

from .errors import MalformedReplyError, UnsafeCharacterError
from .replies import SMTPReply, format_reply

__all__ = ["Extensions", "format_ehlo_reply", "parse_ehlo_reply"]

_KEYWORD: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*\Z")


class Extensions(Mapping[str, str]):
    """The extensions a server advertised: keyword → parameter string (``""`` if none).

    Also a read-only mapping, so ``"size" in ext`` and ``ext["SIZE"]`` work in
    any case; iteration yields upper-case keywords in advertised order.
    """

    __slots__ = ("_items", "auth_mechanisms", "domain", "greeting")

    def __init__(
        self,
        items: Iterable[tuple[str, str]] = (),
        *,
        domain: str = "",
        greeting: str = "",
        auth_mechanisms: Iterable[str] = (),
    ) -> None:
        self._items: dict[str, str] = {}
        for keyword, parameters in items:
            self._items.setdefault(keyword.upper(), parameters)
        self.domain = domain
        self.greeting = greeting
        advertised = [*self._items.get("AUTH", "").split(), *auth_mechanisms]
        self.auth_mechanisms: tuple[str, ...] = tuple(dict.fromkeys(m.upper() for m in advertised))

    def __getitem__(self, keyword: str) -> str:
        return self._items[keyword.upper()]

    def __contains__(self, keyword: object) -> bool:
        return isinstance(keyword, str) and keyword.upper() in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Extensions({self._items!r}, domain={self.domain!r})"

    @property
    def size_limit(self) -> int | None:
        """The SIZE limit (RFC 1870); None if SIZE is absent, has no number, or is 0
        (which means "no fixed limit")."""
        value = self._items.get("SIZE", "").strip()
        # ASCII digits only (RFC 1870), and no more than 20 of them: the text comes
        # from the server and int() would refuse thousands of digits.
        if not (value.isascii() and value.isdigit() and len(value) <= 20):
            return None
        return int(value) or None

    def lines(self) -> list[str]:
        """The extension lines as they appear in an EHLO reply."""
        return [f"{keyword} {params}" if params else keyword for keyword, params in self.items()]


def parse_ehlo_reply(reply: SMTPReply) -> Extensions:
    """Read the extensions out of a 250 EHLO reply.

    The first line is ``domain [greeting]``; each other line is ``KEYWORD
    [params]``.  A line whose keyword is malformed is ignored, as RFC 5321 asks of
    clients for extensions they do not know; a non-250 reply raises
    :class:`MalformedReplyError`.
    """
    if reply.code != 250:
        raise MalformedReplyError(f"EHLO was refused: {reply.code} {reply.message}")
    domain, _, greeting = reply.lines[0].strip().partition(" ")
    items: list[tuple[str, str]] = []
    legacy_auth: list[str] = []
    for line in reply.lines[1:]:
        keyword, _, parameters = line.strip().partition(" ")
        if keyword[:5].upper() == "AUTH=":
            legacy_auth.extend(keyword[5:].split())
            legacy_auth.extend(parameters.split())
            continue
        if not _KEYWORD.match(keyword):
            continue
        items.append((keyword, " ".join(parameters.split())))
    return Extensions(items, domain=domain, greeting=greeting, auth_mechanisms=legacy_auth)


def format_ehlo_reply(
    domain: str, extensions: Mapping[str, str] | Iterable[str], *, greeting: str = ""
) -> bytes:
    """A whole EHLO reply: ``250-domain greeting`` then one line per extension."""
    lines = [f"{domain} {greeting}" if greeting else domain]
    items = (
        extensions.items()
        if isinstance(extensions, Mapping)
        else (tuple(line.partition(" ")[::2]) for line in extensions)
    )
    for keyword, parameters in items:
        if not _KEYWORD.match(keyword):
            raise UnsafeCharacterError(f"malformed extension keyword: {keyword!r}")
        lines.append(f"{keyword} {parameters}" if parameters else keyword)
    return format_reply(250, lines)
