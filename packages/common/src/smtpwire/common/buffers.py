"""One receive buffer per event loop, for protocols that read into a buffer of their
own (``asyncio.BufferedProtocol``) instead of being handed fresh ``bytes`` per read.

asyncio's plain ``Protocol`` path allocates a 256 KiB buffer for every read and
shrinks it to what arrived; at that size the allocator maps and unmaps memory
each time, and the kernel faults the fresh pages in.  A protocol that reads into
the shared buffer copies out only the octets that arrived.

Sharing is safe because a read and its ``buffer_updated`` call happen in one
callback of the loop, which runs one callback at a time; the protocol copies (or
parses) what arrived before ``buffer_updated`` returns.
"""

from __future__ import annotations

import weakref
from typing import Final

__all__ = ["RECEIVE_BUFFER_SIZE", "receive_buffer"]

# asyncio's own read size (selector_events' max_size).
RECEIVE_BUFFER_SIZE: Final = 256 * 1024

_BUFFERS: weakref.WeakKeyDictionary[object, memoryview] = weakref.WeakKeyDictionary()


def receive_buffer(loop: object) -> memoryview:
    """The receive buffer of ``loop`` (an event loop): return it from
    ``get_buffer()`` and copy ``view[:count]`` out in ``buffer_updated(count)``."""
    view = _BUFFERS.get(loop)
    if view is None:
        view = _BUFFERS[loop] = memoryview(bytearray(RECEIVE_BUFFER_SIZE))
    return view
