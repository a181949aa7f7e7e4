"""Ports splitrec picks for parties to listen on stay out of the OS's outgoing range.

On one host, a party that dials a port of the outgoing range before its peer listens can be given
that very port as its source and connect to itself (TCP's simultaneous open: about once in ten
thousand loopback attempts here, a TLS handshake then failing with "unexpected message").
"""

from __future__ import annotations

import socket

from splitrec_core.channel.flight.addresses import free_port_block, free_ports, outgoing_ports
from splitrec_core.psi.rr22_links import loopback_pairs


def _listenable(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def test_ports_picked_for_listening_are_free_and_below_the_outgoing_range():
    # Execute
    block = free_port_block(4)
    single = free_ports(6)
    pairs = loopback_pairs(["bank", "media"])

    # Assert
    paired = [int(a.rpartition(":")[2]) for p in pairs.values() for a in (p.label, p.feature)]
    picked = [*range(block, block + 4), *single, *paired]
    assert all(port < outgoing_ports().start for port in picked), picked
    assert len(set(single)) == 6 and len(set(paired)) == 4
    assert all(_listenable(port) for port in picked)


def test_ports_do_not_follow_randoms_seed_so_processes_that_trained_alike_choose_apart():
    # Training seeds `random` (keras.utils.set_random_seed); two test workers that trained with
    # the same seed chose the same ports and listened on each other's
    import random

    chosen = set()
    for _ in range(5):
        random.seed(7)
        chosen.add(free_port_block(3))
    assert len(chosen) > 1
