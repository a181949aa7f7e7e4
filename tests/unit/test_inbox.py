"""A peer's inbox: messages in the order sent, never more than its bound; a full one holds them."""

from __future__ import annotations

import threading

import pytest

from splitrec_core.channel.inbox import PeerInbox

KB = 1 << 10


def _message(size: int, fill: int = 0) -> memoryview:
    return memoryview(bytes([fill]) * size)


def test_messages_are_taken_in_the_order_they_came():
    # Prepare
    inbox = PeerInbox(limit=64 * KB, patience_s=1)

    # Execute
    for i, kind in enumerate(["embedding", "gradient", "embedding"]):
        assert inbox.put(kind, _message(KB, fill=i))
    taken = [inbox.take(timeout_s=1) for _ in range(3)]

    # Assert
    assert [(kind, payload[0]) for kind, payload in taken] == [
        ("embedding", 0), ("gradient", 1), ("embedding", 2)]
    assert (inbox.held, inbox.peak, inbox.taken) == (0, 3 * KB, 3)


def test_a_full_inbox_admits_nothing_more_until_a_message_is_taken():
    # Prepare: room for three messages of 10 KB
    inbox = PeerInbox(limit=30 * KB, patience_s=60)
    for _ in range(3):
        assert inbox.put("embedding", _message(10 * KB))
    admitted = threading.Event()
    reader = threading.Thread(target=lambda: inbox.put("embedding", _message(10 * KB))
                              and admitted.set())

    # Execute: the fourth waits, as the thread reading a stream would
    reader.start()
    reader.join(0.5)
    waited = reader.is_alive() and not admitted.is_set()
    inbox.take(timeout_s=1)
    reader.join(10)

    # Assert: it waited while the inbox was full, and got in once a message was taken
    assert waited
    assert admitted.is_set()
    assert inbox.peak == 30 * KB == inbox.limit


def test_nothing_taken_within_the_patience_closes_the_inbox():
    inbox = PeerInbox(limit=10 * KB, patience_s=0.1)
    assert inbox.put("embedding", _message(10 * KB))

    assert not inbox.put("embedding", _message(KB))  # the party never took the first

    assert inbox.closed and inbox.held == 10 * KB
    assert inbox.take(timeout_s=1)[0] == "embedding"  # what waited can still be taken
    assert inbox.take(timeout_s=1) is None


def test_a_message_larger_than_the_bound_gets_into_an_empty_inbox():
    # (else a party waiting for it would wait for ever: the bound is the limit or one message)
    inbox = PeerInbox(limit=10 * KB, patience_s=0.1)

    assert inbox.put("psi_positions", _message(50 * KB))
    assert not inbox.put("split_mask", _message(KB))
    assert inbox.peak == 50 * KB


@pytest.mark.timeout(60)
def test_closing_wakes_a_party_that_waits():
    inbox = PeerInbox(limit=10 * KB, patience_s=1)
    got: list[object] = []
    waiting = threading.Thread(target=lambda: got.append(inbox.take(timeout_s=600)))
    waiting.start()

    inbox.close()
    waiting.join(30)

    assert got == [None]
    assert not inbox.put("embedding", _message(KB))
