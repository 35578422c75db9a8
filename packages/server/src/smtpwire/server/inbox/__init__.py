"""The web inbox: every message the server accepts, kept in SQLite (in memory or
in a file) and shown over HTTP, with an API compatible with mailpit's v1 and
smtpwire's own additions (the SMTP session, waiting, live events).

``smtpwire-server --web 127.0.0.1:8026`` runs it beside the SMTP server; from
Python, :class:`Inbox` is a handler and ``Inbox.serve_web()`` the web side
(which needs aiohttp: ``pip install 'smtpwire-server[web]'``).  See docs/inbox.md.
"""

from __future__ import annotations

from ._database import StoreError
from ._inbox import Inbox, InboxObserver, StoringHandler
from ._store import MessageStore

__all__ = ["Inbox", "InboxObserver", "MessageStore", "StoreError", "StoringHandler"]
