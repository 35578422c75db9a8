"""mailpit's search language, the part of it this inbox keeps, turned into an
SQL condition: ``from:``, ``to:``, ``subject:``, ``message-id:``, ``is:read``,
``is:unread``, ``has:attachment``, free words and ``"quoted phrases"``, each
term negated by a leading ``-`` or ``!``; terms are combined with AND.

Every term is a case-insensitive substring test (``instr`` on columns stored
lower-cased), so no user text ever becomes SQL or a LIKE pattern.  Free words
look in mailpit's search text (see :mod:`._parse`); ``message-id:`` looks at the
Message-ID alone, as mailpit's does.
"""

from __future__ import annotations

import re
from typing import Final

_SPACE = re.compile(r"\s+")
_TERM = re.compile(r'([-!]?)(?:([a-zA-Z-]+):)?(?:"([^"]*)"?|(\S+))')

# A term's field -> the column it looks in.
_COLUMNS: Final = {
    "from": "search_from",
    "to": "search_to",
    "subject": "search_subject",
    "message-id": "search_message_id",
    None: "search_all",
}
_FLAGS: Final = {
    ("is", "read"): "read = 1",
    ("is", "unread"): "read = 0",
    ("has", "attachment"): "attachments > 0",
    ("has", "attachments"): "attachments > 0",
}


class SearchError(ValueError):
    """A query that cannot be searched for (the API answers 400)."""


def compile_query(query: str) -> tuple[str, list[str]]:
    """The WHERE condition and its parameters for ``query``."""
    conditions: list[str] = []
    parameters: list[str] = []
    for match in _TERM.finditer(query.strip()):
        negate, field, quoted, bare = match.groups()
        # White space as the stored text has it: one space for any run.
        value = _SPACE.sub(" ", quoted if quoted is not None else bare or "").lower()
        key = field.lower() if field else None
        if key == "message-id":
            value = value.strip("<>")  # as written in the header: <id@host>
        if key is not None and (key, value) in _FLAGS:
            condition = _FLAGS[(key, value)]
        elif key in _COLUMNS:
            if not value:
                continue
            condition = f"instr({_COLUMNS[key]}, ?) > 0"
            parameters.append(value)
        else:
            # An unknown field ("tag:x", "before:…"): searched for as text, like a word.
            condition = "instr(search_all, ?) > 0"
            parameters.append(match.group(0).lstrip("-!").lower())
        conditions.append(f"NOT ({condition})" if negate else condition)
    if not conditions:
        raise SearchError("Error: no search query")
    return " AND ".join(conditions), parameters
