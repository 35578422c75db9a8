"""smtpwire.common.buffers: one receive buffer per event loop, freed with it."""

from __future__ import annotations

import gc
import weakref

from smtpwire.common.buffers import RECEIVE_BUFFER_SIZE, receive_buffer


class FakeLoop:
    """Any object that can be weakly referenced stands for a loop here."""


def test_one_writable_buffer_per_loop() -> None:
    first, second = FakeLoop(), FakeLoop()
    view = receive_buffer(first)
    assert len(view) == RECEIVE_BUFFER_SIZE
    assert not view.readonly
    assert receive_buffer(first) is view
    other = receive_buffer(second)
    assert other is not view
    view[:5] = b"hello"
    assert bytes(other[:5]) != b"hello"  # separate memory, not a shared one


def test_the_buffer_goes_with_its_loop() -> None:
    loop = FakeLoop()
    view = receive_buffer(loop)
    backing = view.obj  # the bytearray behind the view
    referrers = len(gc.get_referrers(backing))
    loop_ref = weakref.ref(loop)
    del view, loop
    gc.collect()
    assert loop_ref() is None
    # Only this test's name for it is left: the view kept for the loop went with it.
    assert len(gc.get_referrers(backing)) < referrers
