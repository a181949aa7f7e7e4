"""RR22 PSI through spu (`[psi] protocol = "rr22"`): ECDH's outcome, a named peer, no ID sent.

Each pair runs in worker processes over spu's brpc link on 127.0.0.1, as between organisations.
"""

from __future__ import annotations

import socket
import threading
import time
import tomllib
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import tomli_w

from splitrec_core.certs import make_trial_credentials
from splitrec_core.channel import LocalHub, PeerError
from splitrec_core.config import PsiConfig
from splitrec_core.errors import InputError
from splitrec_core.extras import spu_missing
from splitrec_core.psi import PsiFiles, align_local, feature_side, label_side
from splitrec_core.psi.rr22 import Rr22
from splitrec_core.psi.rr22_links import PairLink, Rr22Link, loopback_pairs
from tests.integration import test_apart as apart

federation = apart.federation  # the synthetic trial federation of the parties-apart tests

pytestmark = pytest.mark.skipif(
    spu_missing(), reason="spu is not installed (the rr22 extra: pip install 'splitrec[rr22]', "
                          "which installs only on CPython 3.11, x86-64 Linux)")

RR22 = PsiConfig(protocol="rr22", rr22_reveal_pairwise=True, rr22_timeout_s=20, chunk_size=7)
ECDH = PsiConfig(chunk_size=7)


def _prepare(folder: Path, sets: dict[str, list[str]]) -> tuple[dict[str, PsiFiles], Path]:
    """Each party's IDs file, where its aligned rows and unmatched IDs go; the label's split.

    The label party is the first of `sets`.
    """
    files = {}
    folder.mkdir(parents=True, exist_ok=True)
    for name, ids in sets.items():
        path = folder / f"{name}.ids.parquet"
        pq.write_table(pa.table({"id": pa.array(ids, pa.string())}), path)
        files[name] = PsiFiles(path, folder / name / "aligned.parquet",
                               folder / name / "unmatched.parquet")
    split = folder / "split.parquet"
    label_ids = next(iter(sets.values()))
    pq.write_table(pa.table({"split": ["test" if i % 3 == 0 else "train"
                                       for i in range(len(label_ids))]}), split)
    return files, split


def _aligned(files: dict[str, PsiFiles], sets: dict[str, list[str]]) -> dict[str, list]:
    """Per party: (ID, is_train) at each common position, read from its own aligned file."""
    out = {}
    for name, f in files.items():
        table = pq.read_table(f.aligned)
        out[name] = [(sets[name][row], flag) for row, flag in
                     zip(table.column("row").to_pylist(), table.column("is_train").to_pylist())]
    return out


@pytest.mark.parametrize("sets", [
    {"a": [f"user-{i}" for i in range(60)], "b": [f"user-{i}" for i in range(30, 90)]},
    {"a": ["zoë", "a,c", "Zoë", "李雷", "😀", 'say "hi", ok', "a,b", "x", "line\nbreak", "a"],
     "b": ["a,b", "李雷", "line\nbreak", "zoë", "y", "😀", 'say "hi", ok', "a,c", "a"]},
    {"a": [str(i) for i in range(80)], "b": [str(i) for i in range(20, 120)],
     "c": [str(i) for i in range(0, 160, 2)]},
], ids=["two-parties", "unicode-quotes-commas", "three-parties"])
def test_rr22_finds_ecdhs_intersection_and_every_party_holds_it_in_one_random_order(
        tmp_path: Path, sets: dict[str, list[str]]):
    # Prepare: the same parties aligned once with each protocol
    results = {}
    for psi in (ECDH, RR22):
        files, split = _prepare(tmp_path / psi.protocol, sets)

        # Execute
        alignment = align_local(files, psi, label_party="a", split_file=split)
        results[psi.protocol] = alignment, _aligned(files, sets)

    # Assert: the same people, each position the same person (and flag) at every party, the
    # label party's split flag, an order that is not spu's (sorted by ID), the same unmatched
    (ecdh, ecdh_rows), (rr22, rr22_rows) = results["ecdh"], results["rr22"]
    for name in sets:
        assert pq.read_table(tmp_path / "rr22" / name / "unmatched.parquet").equals(
            pq.read_table(tmp_path / "ecdh" / name / "unmatched.parquet"))
    assert rr22.intersection == ecdh.intersection
    assert sorted(rr22_rows["a"]) == sorted(ecdh_rows["a"])
    for name in sets:
        assert rr22_rows[name] == rr22_rows["a"], f"{name} is not in the common order"
    labels = sets["a"]
    assert all(flag == (labels.index(i) % 3 != 0) for i, flag in rr22_rows["a"])
    ids = [i for i, _ in rr22_rows["a"]]
    if len(ids) > 10:
        assert ids != sorted(ids)
    assert rr22.channel["psi_positions"]["messages"] == len(sets) - 1
    assert rr22.channel["psi_rr22"]["bytes"] > 0
    assert "psi_blinded" not in rr22.channel


def test_no_id_held_by_every_party_is_an_empty_intersection_at_every_party(tmp_path: Path):
    # Prepare
    sets = {"a": ["1", "2", "3"], "b": ["2", "3", "4"], "c": ["1", "4"]}
    files, split = _prepare(tmp_path, sets)

    # Execute / Assert
    with pytest.raises(InputError, match="empty intersection: no ID is held by all of"):
        align_local(files, RR22, label_party="a", split_file=split)
    assert not any(f.aligned.exists() for f in files.values())


def test_a_feature_party_that_never_comes_is_named_after_the_timeout(tmp_path: Path):
    # Prepare: the label party alone, its one feature party never started
    files, split = _prepare(tmp_path, {"a": ["1", "2", "3"], "b": ["2", "3"]})
    link = Rr22Link(loopback_pairs(["b"]), timeout_s=2)

    # Execute
    with pytest.raises(PeerError, match=r"RR22 PSI: b did not connect at 127\.0\.0\.1:\d+ "
                                        r"within 2 s"):
        label_side(LocalHub().channel("a"), files["a"], Rr22(RR22, link), followers=["b"],
                   split_file=split)

    # Assert: named with its address and the timeout, nothing written
    assert not files["a"].aligned.exists()
    assert list(files["a"].aligned.parent.iterdir()) == []  # spu's files are gone too


def _run_pair(sides: dict[str, object]) -> dict[str, object]:
    """Run each party's side on a thread; its result or the exception it raised."""
    out: dict[str, object] = {}

    def run(name: str, side) -> None:
        try:
            out[name] = side()
        except Exception as error:  # noqa: BLE001 - the test looks at what each party raised
            out[name] = error
    threads = [threading.Thread(target=run, args=item) for item in sides.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def test_a_peer_without_a_certificate_of_the_federations_ca_is_refused_and_named(
        tmp_path: Path):
    # Prepare: mutual TLS, b's certificate from another CA
    files, split = _prepare(tmp_path, {"a": ["1", "2", "3"], "b": ["2", "3"]})
    ours = make_trial_credentials({"a": ["127.0.0.1"], "b": ["127.0.0.1"]}, tmp_path / "ca")
    stranger = make_trial_credentials({"b": ["127.0.0.1"]}, tmp_path / "other-ca")["b"]
    pairs, hub = loopback_pairs(["b"]), LocalHub()

    # Execute
    out = _run_pair({
        "a": lambda: label_side(hub.channel("a"), files["a"],
                                Rr22(RR22, Rr22Link(pairs, 20, ours["a"])), followers=["b"],
                                split_file=split),
        "b": lambda: feature_side(hub.channel("b"), files["b"],
                                  Rr22(RR22, Rr22Link(pairs, 20, stranger)), leader="a"),
    })

    # Assert: each side names the other
    assert isinstance(out["a"], PeerError) and isinstance(out["b"], PeerError)
    assert "RR22 PSI: the TLS handshake with b at" in str(out["a"])
    assert "RR22 PSI: the TLS handshake with a at" in str(out["b"])
    assert not files["a"].aligned.exists() and not files["b"].aligned.exists()


def test_parties_with_the_federations_certificates_align_over_tls(tmp_path: Path):
    # Prepare
    sets = {"a": [str(i) for i in range(40)], "b": [str(i) for i in range(10, 60)]}
    files, split = _prepare(tmp_path, sets)
    creds = make_trial_credentials({"a": ["127.0.0.1"], "b": ["127.0.0.1"]}, tmp_path / "ca")
    pairs, hub = loopback_pairs(["b"]), LocalHub()

    # Execute
    out = _run_pair({
        "a": lambda: label_side(hub.channel("a"), files["a"],
                                Rr22(RR22, Rr22Link(pairs, 20, creds["a"])), followers=["b"],
                                split_file=split),
        "b": lambda: feature_side(hub.channel("b"), files["b"],
                                  Rr22(RR22, Rr22Link(pairs, 20, creds["b"])), leader="a"),
    })

    # Assert
    assert out == {"a": files["a"].aligned, "b": files["b"].aligned}
    rows = _aligned(files, sets)
    assert sorted(i for i, _ in rows["a"]) == sorted(str(i) for i in range(10, 40))
    assert rows["b"] == rows["a"]


class CapturingRelay:
    """A TCP relay on 127.0.0.1 that forwards to `upstream` and keeps every byte it carries."""

    def __init__(self, upstream: str) -> None:
        host, port = upstream.rsplit(":", 1)
        self.upstream = (host, int(port))
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self.listener.getsockname()[1]}"
        self.carried = bytearray()
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                near, _ = self.listener.accept()
            except OSError:
                return
            far = self._dial()
            for source, sink in ((near, far), (far, near)):
                threading.Thread(target=self._carry, args=(source, sink), daemon=True).start()

    def _dial(self) -> socket.socket:
        deadline = time.monotonic() + 20
        while True:  # the upstream worker may not listen yet
            try:
                return socket.create_connection(self.upstream)
            except ConnectionRefusedError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def _carry(self, source: socket.socket, sink: socket.socket) -> None:
        while data := self._recv(source):
            with self._lock:
                self.carried += data
            sink.sendall(data)
        for s in (source, sink):
            try:
                s.shutdown(socket.SHUT_WR if s is sink else socket.SHUT_RD)
            except OSError:
                pass

    @staticmethod
    def _recv(source: socket.socket) -> bytes:
        try:
            return source.recv(1 << 16)
        except OSError:
            return b""

    def close(self) -> None:
        self.listener.close()


def test_no_raw_id_crosses_and_the_socket_count_is_what_crossed(tmp_path: Path):
    # Prepare: plaintext link; each party reaches the other only through a relay that keeps
    # every byte (the label party dials b's relay, b dials the label party's)
    sets = {"a": [f"secret-id-{i:05d}" for i in range(3000)],
            "b": [f"secret-id-{i:05d}" for i in range(1500, 4500)]}
    files, split = _prepare(tmp_path, sets)
    real = loopback_pairs(["b"])["b"]
    to_label, to_b = CapturingRelay(real.label), CapturingRelay(real.feature)
    hub = LocalHub(record=True)

    # Execute
    out = _run_pair({
        "a": lambda: label_side(
            hub.channel("a"), files["a"],
            Rr22(RR22, Rr22Link({"b": PairLink(real.label, to_b.address)}, 20)),
            followers=["b"], split_file=split),
        "b": lambda: feature_side(
            hub.channel("b"), files["b"],
            Rr22(RR22, Rr22Link({"b": PairLink(to_label.address, real.feature)}, 20)),
            leader="a"),
    })
    to_label.close()
    to_b.close()

    # Assert: aligned; no ID in spu's bytes or the channel's; the parties' socket counts are the
    # bytes the relays carried (TCP payload, both ways)
    assert out == {"a": files["a"].aligned, "b": files["b"].aligned}
    wire = bytes(to_label.carried + to_b.carried) + b"".join(p for *_, p in hub.recorded)
    leaked = [i for i in sets["a"] + sets["b"] if i.encode() in wire]
    assert leaked == []
    assert not any(f"{i:05d}".encode() in wire for i in range(1500, 1520))
    counted = hub.stats().as_dict()["psi_rr22"]["bytes"]
    carried = len(to_label.carried) + len(to_b.carried)
    assert carried > 100_000
    assert abs(counted - carried) <= 0.01 * carried, (counted, carried)


def test_parties_apart_align_by_rr22_at_the_federations_hosts_as_by_ecdh(federation):
    # Prepare: the synthetic trial federation (three parties on 127.0.0.1, mutual TLS), each
    # party's copy of the federation file switched to rr22 on a block of free ports
    from concurrent.futures import ThreadPoolExecutor

    from splitrec_core.apart.psi import align_apart
    from splitrec_core.channel.flight.addresses import free_port_block
    from splitrec_core.federation import load_party
    from splitrec_core.validate import validate_party
    from splitrec_core.workspace import Workspace

    _, _, written = federation
    members = tomllib.loads(next(iter(written.values()))[0].read_text())["parties"]
    # this process keeps each federation's Flight endpoints up: the rr22 copy of the federation
    # gets Flight ports of its own, and RR22 pair ports apart from both
    taken = {int(m["address"].rpartition(":")[2]) for m in members}
    blocks = (port for port in iter(lambda: free_port_block(4), None)
              if not taken & set(range(port, port + 4)))
    flight = next(blocks)
    taken |= set(range(flight, flight + len(members)))
    rr22 = {"protocol": "rr22", "rr22_reveal_pairwise": True, "rr22_port": next(blocks)}

    def align(party: str, protocol: dict) -> list[str]:
        shared, private = written[party]
        settings = tomllib.loads(shared.read_text())
        settings["psi"] = settings.get("psi", {}) | protocol
        if protocol:
            for i, member in enumerate(settings["parties"]):
                member["address"] = f"127.0.0.1:{flight + i}"
        copy = shared.with_name(f"federation-{protocol.get('protocol', 'ecdh')}.toml")
        copy.write_text(tomli_w.dumps(settings))
        view = load_party(copy, private, party)
        space = Workspace(shared.parent / f"run-{protocol.get('protocol', 'ecdh')}")
        validated = validate_party(view.config.party(party), view.data_file,
                                   space.validated(party))
        alignment = align_apart(view, f"psi-{protocol.get('protocol', 'ecdh')}", validated, space)
        ids = pq.read_table(validated.ids).column("id").to_pylist()
        rows = pq.read_table(alignment.files[party]).column("row").to_pylist()
        return [ids[r] for r in rows], alignment

    # Execute
    results = {}
    for protocol in ({}, rr22):
        with ThreadPoolExecutor(len(written)) as pool:
            futures = {p: pool.submit(align, p, protocol) for p in written}
            results[protocol.get("protocol", "ecdh")] = {p: f.result(timeout=300)
                                                          for p, f in futures.items()}

    # Assert: the same people in one common order at every party; spu's bytes counted
    ecdh, by_rr22 = results["ecdh"], results["rr22"]
    label = next(iter(written))
    for party, (ids, alignment) in by_rr22.items():
        assert ids == by_rr22[label][0], f"{party} is not in the common order"
        assert alignment.protocol == "rr22" and alignment.channel["psi_rr22"]["bytes"] > 0
    assert sorted(by_rr22[label][0]) == sorted(ecdh[label][0])
    assert by_rr22[label][1].intersection == ecdh[label][1].intersection
