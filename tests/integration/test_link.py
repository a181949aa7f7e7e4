"""The link emulator (benchmarks/link.py), and a run apart that survives its link being cut.

The relay must carry every byte in order both ways, cut both ends of every connection on
command, and never deliver sooner than the link's delay and bandwidth allow (its figures are
lower bounds: a loaded machine may always be slower). Parties apart reach the label party
through it, as across a network; a cut mid-training is survived: each party's training is
retried, the channel redialled, and all resume from the epoch every party checkpointed.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
import time
import tomllib
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import tomli_w

from benchmarks.link import PROFILES, Profile, Relay
from splitrec_core.channel import Channel, Kind, array_table, table_array
from splitrec_core.channel.flight.addresses import Timeouts, free_ports
from splitrec_core.channel.flight.loopback import loopback_seats
from splitrec_core.channel.processes import run_in_processes
from splitrec_core.evaluate import evaluate
from splitrec_core.federation import load_party
from tests.conftest import prepare_features
from tests.integration import test_apart as apart

federation = apart.federation  # the synthetic trial federation of the parties-apart tests


class Upstream:
    """A TCP server on 127.0.0.1 that takes one connection at a time, for the relay to reach."""

    def __init__(self, port: int = 0) -> None:
        self._server = socket.create_server(("127.0.0.1", port))
        self._server.settimeout(apart.HANG_GUARD_S)
        self.address = f"127.0.0.1:{self._server.getsockname()[1]}"
        self._probed = False

    def accept(self) -> socket.socket:
        """The next connection the relay carries (not its probe of whether we listen)."""
        if not self._probed:  # the relay's first connection, before it listens itself
            self._server.accept()[0].close()
            self._probed = True
        return self._server.accept()[0]


def dial(relay: Relay) -> socket.socket:
    """Connect to the relay, retrying while it is refused, as a party does.

    The relay opens its port once it finds the upstream listening.
    """
    host, port = relay.address.split(":")
    deadline = time.monotonic() + apart.HANG_GUARD_S
    while True:
        try:
            return socket.create_connection((host, int(port)), timeout=apart.HANG_GUARD_S)
        except ConnectionRefusedError:
            assert time.monotonic() < deadline, "the relay never opened"
            time.sleep(0.01)


def receive(sock: socket.socket, size: int) -> bytes:
    """Exactly `size` bytes from `sock` (fewer only if it ends first)."""
    got = bytearray()
    while len(got) < size and (chunk := sock.recv(min(1 << 16, size - len(got)))):
        got += chunk
    return bytes(got)


def in_background(call, *args) -> threading.Thread:
    thread = threading.Thread(target=call, args=args, daemon=True)
    thread.start()
    return thread


@pytest.mark.timeout(apart.HANG_GUARD_S)
def test_the_relay_carries_every_byte_in_order_both_ways():
    # Prepare: 3 MB each way, different bytes, sent at once
    up, down = os.urandom(3_000_000), os.urandom(3_000_000)
    upstream = Upstream()

    # Execute
    with Relay(upstream.address, PROFILES["metro"]) as relay:
        near = dial(relay)
        far = upstream.accept()
        sending = [in_background(near.sendall, up), in_background(far.sendall, down)]
        arrived_up, arrived_down = receive(far, len(up)), receive(near, len(down))
        for thread in sending:
            thread.join()
        near.close()
        ended = far.recv(1)  # the end of the stream crosses too
        usage = relay.stop()

    # Assert
    assert arrived_up == up and arrived_down == down
    assert ended == b""
    assert (usage.bytes_up, usage.bytes_down) == (len(up), len(down))


@pytest.mark.timeout(apart.HANG_GUARD_S)
def test_a_cut_resets_both_ends_and_later_connections_pass():
    # Prepare: a connection through the relay that has carried a message each way
    upstream = Upstream()
    with Relay(upstream.address, PROFILES["lan"]) as relay:
        near = dial(relay)
        far = upstream.accept()
        near.sendall(b"ping")
        assert receive(far, 4) == b"ping"
        far.sendall(b"pong")
        assert receive(near, 4) == b"pong"

        # Execute
        cut = relay.cut()

        # Assert: both ends see the stream reset; a new connection passes again
        assert cut == 1
        for end in (near, far):
            with pytest.raises(ConnectionResetError):
                end.recv(1)
        again = dial(relay)
        again_far = upstream.accept()
        again.sendall(b"again")
        assert receive(again_far, 5) == b"again"


@pytest.mark.timeout(apart.HANG_GUARD_S)
def test_a_party_that_dials_before_the_upstream_listens_is_refused_then_passes():
    # Prepare: a relay in front of a port nobody listens on yet
    port = free_ports(1)[0]
    with Relay(f"127.0.0.1:{port}", PROFILES["lan"]) as relay:
        # Execute: dial before and after the upstream listens
        host, relay_port = relay.address.split(":")
        time.sleep(0.5)  # (the relay has tried the upstream several times by now)
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((host, int(relay_port)))
        upstream = Upstream(port)
        near = dial(relay)
        near.sendall(b"hello")

        # Assert: refused as by the upstream's host (a party retries), then carried
        assert receive(upstream.accept(), 5) == b"hello"


@pytest.mark.timeout(apart.HANG_GUARD_S)
@pytest.mark.parametrize("size", [1, 1_000_000])
def test_nothing_arrives_sooner_than_the_delay_plus_its_size_over_the_bandwidth(size):
    # Prepare: 40 ms and 40 Mbit/s (5 MB/s): a megabyte takes at least 0.04 + 0.2 s
    profile = Profile(one_way_s=0.04, bits_per_s=40e6)
    payload = os.urandom(size)
    upstream = Upstream()

    with Relay(upstream.address, profile) as relay:
        near = dial(relay)
        far = upstream.accept()

        # Execute
        start = time.monotonic()
        sending = in_background(near.sendall, payload)
        arrived = receive(far, size)
        took = time.monotonic() - start
        sending.join()

    # Assert: a lower bound only (never an upper one: the machine may be slow)
    assert arrived == payload
    assert took >= profile.one_way_s + size / (profile.bits_per_s / 8)


def ended_early(running: dict[str, subprocess.Popen]) -> str:
    """Every party's exit status and the end of its log, once one has ended before its time."""
    for process in running.values():
        if process.poll() is None:
            process.kill()
    return "\n".join(f"--- {party} (exit {process.wait()}):\n{process.communicate()[1][-2000:]}"
                     for party, process in running.items())


def last_epoch(folder: Path, party: str) -> int:
    """The last epoch `party` has checkpointed (0: none yet)."""
    return max(apart.checkpoints(folder, party), default=0)


# Party jobs (top level, so a party process can unpickle them)

EMBEDDING = np.arange(4096, dtype=np.float32).reshape(128, 32)
GRADIENT = -EMBEDDING


def _label_party(channel: Channel) -> np.ndarray:
    channel.send(Kind.GRADIENT, "feature", array_table(GRADIENT))
    return table_array(channel.recv(Kind.EMBEDDING, "feature"))


def _feature_party(channel: Channel) -> np.ndarray:
    channel.send(Kind.EMBEDDING, "label", array_table(EMBEDDING))
    return table_array(channel.recv(Kind.GRADIENT, "label"))


@pytest.mark.timeout(apart.HANG_GUARD_S)
def test_a_trial_seat_reaches_a_peer_through_a_relay_in_front_of_it(tmp_path: Path):
    # Prepare: the label party listens where its seat says; the feature party dials the relay
    seats = loopback_seats(["label", "feature"], tmp_path / "credentials", "test",
                           Timeouts(connect_s=30, recv_s=30))
    with Relay(seats["label"].addresses["label"], PROFILES["wan"]) as relay:
        seats["feature"] = replace(seats["feature"], dial={"label": relay.address})

        # Execute: a process each, over Flight with mutual TLS
        outcomes = run_in_processes({"label": _label_party, "feature": _feature_party}, seats)
        usage = relay.stop()

    # Assert: the messages arrived whole, and every byte of them crossed the relay
    np.testing.assert_array_equal(outcomes["label"], EMBEDDING)
    np.testing.assert_array_equal(outcomes["feature"], GRADIENT)
    assert usage.bytes_up > EMBEDDING.nbytes and usage.bytes_down > GRADIENT.nbytes


def put_behind(written: dict[str, tuple[Path, Path]], party: str, relay_address: str,
               listen: str) -> None:
    """Put `party` behind a relay at `relay_address`; it listens at `listen`.

    As a party behind a relay or a NAT: its peers dial the address the federation file gives
    (the copies stay alike, so their hashes match), its private file says where it listens.
    """
    for shared, _ in written.values():
        settings = tomllib.loads(shared.read_text())
        for member in settings["parties"]:
            if member["name"] == party:
                member["address"] = relay_address
        shared.write_text(tomli_w.dumps(settings))
    private = written[party][1]
    private.write_text(tomli_w.dumps(tomllib.loads(private.read_text()) | {"listen": listen}))


@pytest.mark.timeout(apart.HANG_GUARD_S)
def test_a_link_cut_mid_training_is_survived_and_the_run_resumes_from_the_common_epoch(
        federation):
    # Prepare: the feature parties reach the label party through a relay on the wan profile
    from splitrec_core.training.local import train_split_local
    from splitrec_core.workspace import Workspace

    cfg, run, written = federation
    label = cfg.label_party
    folders = {p: shared.parent for p, (shared, _) in written.items()}
    features = prepare_features(cfg, run)
    unbroken = train_split_local(cfg, features, {p: Workspace(run).trained(p) for p in features})
    listen = load_party(*written[label], label).federation.member(label).address

    with Relay(listen, PROFILES["wan"]) as relay:
        put_behind(written, label, relay.address, listen)

        # Execute: a process per party; cut the link once every party has finished epoch 2
        running = {p: apart.start_party(folder, p, "cut-1") for p, folder in folders.items()}
        deadline = time.monotonic() + apart.HANG_GUARD_S
        while min(last_epoch(folder, p) for p, folder in folders.items()) < 2:
            assert running[label].poll() is None, ended_early(running)
            assert time.monotonic() < deadline, "the parties never finished epoch 2"
            time.sleep(0.01)
        cut = relay.cut()
        outputs = {p: process.communicate(timeout=apart.HANG_GUARD_S)
                   for p, process in running.items()}

    # Assert: both feature parties' streams were cut; every party lost its peer, retried once,
    # and the run completed from the common epoch, as good as an unbroken run
    assert cut == 2
    assert all(process.returncode == 0 for process in running.values()), outputs
    for party, (_, stderr) in outputs.items():
        retried = [line for line in stderr.splitlines() if "attempt 1 failed" in line]
        assert len(retried) == 1, stderr[-2000:]
        assert "attempt 2 failed" not in stderr
    resumed = json.loads(outputs[label][0].strip().splitlines()[-1])
    assert resumed["resumed_after_epoch"] >= 2
    assert resumed["epochs_run"] == unbroken.epochs_run
    label_test = folders[label] / "run" / "parties" / label / "features" / "test.parquet"
    broken_metrics = evaluate(Path(resumed["predictions"]), label_test, cfg.task_names)
    whole_metrics = evaluate(unbroken.predictions, features[label].test, cfg.task_names)
    for task in cfg.task_names:
        assert abs(broken_metrics[task]["auc"] - whole_metrics[task]["auc"]) < 0.005
    assert all(apart.checkpoints(folder, p) == [] for p, folder in folders.items())
