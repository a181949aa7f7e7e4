"""RR22 PSI through SecretFlow's `spu` library: pairwise, the label party receiving.

`[psi] protocol = "rr22"` replaces the ECDH exchange of `psi` with RR22 (Raghuraman and Rindal,
CCS 2022: oblivious PRF from VOLE and an OKVS), as spu implements it; splitrec writes no OT or
RR22 code of its own. spu runs two parties at a time, so the label party runs one pair with each
feature party (a process each: `rr22_worker`), always as the receiver. spu returns, to both
parties of a pair, their own rows of the pair's intersection; each side sorts them by key, so
row i is the same person at both. The label party keeps the people every pair found, puts them
in a fresh random order, and tells each feature party which of its pair rows those are, in that
order: the same `psi_positions` message, checked the same way, as under ECDH. What follows (the
split flag, the aligned files) is the same for both protocols.

What each party learns that it does not under ECDH: a feature party learns which of its IDs it
shares with the label party (its pair's intersection), not only which all parties share. With
two parties these are the same set. With three or more the federation file must accept it
(`rr22_reveal_pairwise = true`). The label party learns each pair's intersection under both
protocols (its ECDH leader matches each follower on its own). Under both, each side of a pair
learns how many IDs the other holds.

spu's key is the ID's UTF-8 bytes in hex: spu orders its files with the shell's `sort` on
comma-separated fields, which an ID holding a comma, a quote or a line break would derail; hex
has none and sorts as the bytes do. The keys go into spu's input file in the party's own run
folder (removed afterwards) and never cross: spu hashes them into the protocol. The label party
names each pair's session with fresh random bytes sent over the authenticated channel, so a
process holding some other certificate of the federation's CA cannot join it. spu's traffic does
not pass through the channel; each party's worker reads what its sockets sent and received from
the kernel, and the channel counts it as `psi_rr22` beside its own messages.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from functools import reduce
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from splitrec_core.certs import PartyCredentials
from splitrec_core.channel import Channel, Kind, PeerError, array_table
from splitrec_core.channel.expect import Due, receive_array
from splitrec_core.channel.flight.addresses import free_ports
from splitrec_core.columns import ID
from splitrec_core.psi import EmptyIntersection, receive_positions, shuffled_order

_log = logging.getLogger(__name__)

KEY, ROW = "key", "row"
SESSION_BYTES = 16
_HANDSHAKE_FAILED = "Fail to SSL_do_handshake"  # what brpc logs when TLS refuses a peer


@dataclass(frozen=True)
class PairLink:
    """Where the two ends of one label–feature pair listen, as host:port."""

    label: str
    feature: str


@dataclass(frozen=True)
class Rr22Link:
    """One party's view of the RR22 links: its pairs, how long to wait, its TLS files.

    `pairs` maps each feature party to its pair's addresses. Without `credentials` the link is
    plaintext (parties in one process, or a federation marked insecure). `listen_host`, if set,
    is where this party's end listens instead of its address's host (where its Flight endpoint
    listens: `PartyView.listen`).
    """

    pairs: Mapping[str, PairLink]
    timeout_s: float
    credentials: PartyCredentials | None = None
    listen_host: str | None = None


def federation_pairs(label: str, followers: list[str], hosts: Mapping[str, str],
                     base_port: int) -> dict[str, PairLink]:
    """Pair i (feature parties in federation order) listens on ports `base_port` + 2i and + 2i + 1.

    The first at the label party's host, the second at the feature party's.
    """
    return {f: PairLink(f"{hosts[label]}:{base_port + 2 * i}",
                        f"{hosts[f]}:{base_port + 2 * i + 1}")
            for i, f in enumerate(followers)}


def loopback_pairs(followers: list[str]) -> dict[str, PairLink]:
    """Pairs on 127.0.0.1 at ports free now, for parties that run in one process.

    The ports are outside those the OS gives outgoing connections (`free_port_block`): spu
    dials its peer's port until it listens, and on loopback could otherwise connect to itself.
    """
    ports = iter(free_ports(2 * len(followers)))
    return {f: PairLink(f"127.0.0.1:{next(ports)}", f"127.0.0.1:{next(ports)}")
            for f in followers}


@contextmanager
def scratch_folder(parent: Path) -> Iterator[Path]:
    """A folder in the party's own `parent` for spu's files, removed with the keys they hold.

    Folders a killed run of the party left there are removed first.
    """
    parent.mkdir(parents=True, exist_ok=True)
    for stale in parent.glob(".rr22-*"):
        shutil.rmtree(stale, ignore_errors=True)
    with tempfile.TemporaryDirectory(prefix=".rr22-", dir=parent) as folder:
        yield Path(folder)


def hex_keys(ids: pa.Array) -> pa.Array:
    """Each ID's UTF-8 bytes in hex (same order as the bytes), without a loop per ID."""
    ids = ids.cast(pa.string())
    offsets = np.frombuffer(ids.buffers()[1], np.int32)[ids.offset:ids.offset + len(ids) + 1]
    data = ids.buffers()[2]
    raw = data.to_pybytes()[offsets[0]:offsets[-1]] if data is not None else b""
    return pa.StringArray.from_buffers(len(ids), pa.py_buffer((offsets - offsets[0]) * 2),
                                       pa.py_buffer(raw.hex().encode()))


def write_key_csv(ids: Path, out: Path, chunk: int) -> Path:
    """Spu's input: each ID's key and row number, written a Parquet batch at a time."""
    schema = pa.schema([(KEY, pa.string()), (ROW, pa.int64())])
    start = 0
    with pacsv.CSVWriter(out, schema) as writer:
        for batch in pq.ParquetFile(ids).iter_batches(batch_size=chunk, columns=[ID]):
            rows = pa.array(np.arange(start, start + batch.num_rows, dtype=np.int64))
            writer.write_batch(pa.record_batch([hex_keys(batch.column(0)), rows], schema=schema))
            start += batch.num_rows
    return out


def read_pair_rows(output: Path) -> np.ndarray:
    """The party's own rows of a pair's intersection, in the order of their keys.

    spu writes them so; they are sorted here if not, since the other side of the pair must
    read the same person at each position.
    """
    table = pacsv.read_csv(output, convert_options=pacsv.ConvertOptions(
        include_columns=[KEY, ROW], column_types={KEY: pa.string(), ROW: pa.int64()}))
    keys = table.column(KEY)
    if len(keys) > 1 and not pc.all(pc.less(keys[:-1], keys[1:])).as_py():
        table = table.take(pc.sort_indices(table, [(KEY, "ascending")]))
    return table.column(ROW).to_numpy()


@dataclass(frozen=True)
class PairResult:
    """One pair's outcome at one party: its rows of the intersection, and its socket bytes."""

    rows: np.ndarray
    sent_bytes: int
    received_bytes: int


def run_pair(me: str, peer: str, session: bytes, link: Rr22Link, keys_csv: Path,
             scratch: Path) -> PairResult:
    """Run one pair's RR22 in a worker process; this party's rows of the pair's intersection.

    spu's files (and its temporary ones) go in a folder of `scratch`, the party's own, one per
    pair. A peer that does not connect within the link's timeout, refuses our certificate or
    goes silent is named in a `PeerError`; a failure of our own side is a `RuntimeError`.
    """
    label_side = me not in link.pairs
    feature = peer if label_side else me
    pair = link.pairs[feature]
    addresses = [pair.label, pair.feature]  # by rank: the label party receives, rank 0
    rank = 0 if label_side else 1
    theirs = addresses[1 - rank]
    if link.listen_host is not None:
        addresses[rank] = f"{link.listen_host}:{addresses[rank].rpartition(':')[2]}"
    folder = Path(tempfile.mkdtemp(prefix=f"{feature}-", dir=scratch))
    # spu writes `<input>.temp.csv` beside its input: the label party's pairs, which run at the
    # same time, each need an input path of their own
    pair_keys = folder / keys_csv.name
    os.link(keys_csv, pair_keys)
    spec: dict[str, Any] = {
        "session": f"splitrec-{session.hex()}",
        "parties": [["label", addresses[0]], [feature, addresses[1]]],
        "rank": rank, "input": str(pair_keys), "key": KEY,
        "output": str(folder / "out.csv"), "result": str(folder / "result.json"),
        "connected": str(folder / "connected"), "timeout_s": link.timeout_s,
    }
    if link.credentials is not None:
        c = link.credentials
        spec["tls"] = {"cert": str(c.cert), "key": str(c.key), "ca": str(c.ca)}
    (folder / "spec.json").write_text(json.dumps(spec))
    log = folder / "worker.log"
    with open(log, "wb") as out:
        worker = subprocess.Popen(
            [sys.executable, "-m", "splitrec_core.rr22_worker", str(folder / "spec.json")],
            stdout=out, stderr=subprocess.STDOUT, env=os.environ | {"TMPDIR": str(folder)})
        try:
            _wait(worker, Path(spec["connected"]), log, link.timeout_s)
        finally:
            if worker.poll() is None:  # we were interrupted: the worker must not outlive us
                worker.kill()
                worker.wait()
    if not Path(spec["result"]).exists():  # written once spu is done, before the link closes
        _raise_failure(peer, theirs, link.timeout_s, Path(spec["connected"]).exists(),
                       worker.returncode == -signal.SIGKILL, log.read_text(errors="replace"))
    result = json.loads((folder / "result.json").read_text())
    return PairResult(read_pair_rows(folder / "out.csv"), result["sent_bytes"],
                      result["received_bytes"])


def _wait(worker: subprocess.Popen[bytes], connected: Path, log: Path, timeout_s: float) -> None:
    """Wait for the worker; end it if its peer has not connected within `timeout_s`.

    A TLS handshake refused while connecting ends it at once: retrying cannot mend a
    certificate. Once the peer has connected, spu's own receive timeout (the same `timeout_s`)
    ends a pair whose peer goes silent.
    """
    deadline = time.monotonic() + timeout_s
    while worker.poll() is None:
        if not connected.exists() and (time.monotonic() > deadline
                                       or _HANDSHAKE_FAILED in log.read_text(errors="replace")):
            worker.kill()
            worker.wait()
            return
        time.sleep(0.05)


def _raise_failure(peer: str, address: str, timeout_s: float, connected: bool, ended: bool,
                   log: str) -> None:
    """Raise one line for a pair that failed, naming the peer where it is the cause.

    `ended`: this party ended the worker (its peer did not connect in time, or refused TLS).
    """
    handshakes = [line.split(_HANDSHAKE_FAILED)[-1].strip(" :")
                  for line in log.splitlines() if _HANDSHAKE_FAILED in line]
    lines = log.splitlines()
    cause = next((nxt.strip() for line, nxt in zip(lines, lines[1:]) if line.endswith("what: ")),
                 lines[-1].strip() if lines else "no output")[-300:]
    if handshakes:
        raise PeerError(f"RR22 PSI: the TLS handshake with {peer} at {address} failed "
                        f"({handshakes[-1]}): do both hold certificates of the federation's CA?")
    if ended:
        raise PeerError(f"RR22 PSI: {peer} did not connect at {address} within {timeout_s:g} s")
    if not connected:  # nothing of the peer's doing: spu could not start here
        raise RuntimeError(f"RR22 PSI: this party's spu worker failed before {peer} connected: "
                           f"{cause}")
    if "timeout" in log.lower():
        raise PeerError(f"RR22 PSI: {peer} went silent: no answer within {timeout_s:g} s "
                        f"({cause})")
    raise PeerError(f"RR22 PSI with {peer} failed: {cause}")


def positions_in(pair_rows: np.ndarray, shared: np.ndarray) -> np.ndarray:
    """For each of `shared` (rows every pair found), its index in one pair's `pair_rows`."""
    order = np.argsort(pair_rows, kind="stable")
    return order[np.searchsorted(pair_rows[order], shared)]


def run_leader(channel: Channel, ids: Path, followers: list[str], link: Rr22Link, chunk: int,
               scratch: Path) -> np.ndarray:
    """The label party's side: a pair with each feature party; its rows in the common order.

    It names each pair's session and sends the name to that party first. `scratch` is a folder
    of its own for spu's files (`scratch_folder`).
    """
    sessions = {f: secrets.token_bytes(SESSION_BYTES) for f in followers}
    for follower, session in sessions.items():
        channel.send(Kind.PSI_RR22_SESSION, follower,
                     array_table(np.frombuffer(session, np.uint8).reshape(1, -1)))
    keys_csv = write_key_csv(ids, scratch / "keys.csv", chunk)
    with ThreadPoolExecutor(max_workers=len(followers)) as pool:
        found = dict(zip(followers, pool.map(
            lambda f: run_pair(channel.me, f, sessions[f], link, keys_csv, scratch), followers),
            strict=True))
    for result in found.values():
        channel.count_beside(Kind.PSI_RR22, result.sent_bytes, result.received_bytes)
    shared = reduce(np.intersect1d, (r.rows for r in found.values()))
    shared = shared[shuffled_order(len(shared), "psi-common-order", channel.me)]
    for follower in followers:
        channel.send(Kind.PSI_POSITIONS, follower,
                     array_table(positions_in(found[follower].rows, shared)))
    _log.info("PSI (rr22): %s", ", ".join(f"{len(r.rows):,} shared with {f}"
                                          for f, r in found.items()))
    if len(shared) == 0:
        raise EmptyIntersection(f"no ID is held by all of {[channel.me, *followers]}")
    return shared


def run_follower(channel: Channel, ids: Path, leader: str, link: Rr22Link, chunk: int,
                 scratch: Path) -> np.ndarray:
    """A feature party's side: its pair with the label party; its rows in the common order.

    `scratch` is as for `run_leader`.
    """
    session = receive_array(channel, Kind.PSI_RR22_SESSION, leader,
                            Due(np.uint8, SESSION_BYTES, rows=1)).tobytes()
    keys_csv = write_key_csv(ids, scratch / "keys.csv", chunk)
    result = run_pair(channel.me, leader, session, link, keys_csv, scratch)
    channel.count_beside(Kind.PSI_RR22, result.sent_bytes, result.received_bytes)
    positions = receive_positions(channel, leader, len(result.rows))
    if len(positions) == 0:
        raise EmptyIntersection(f"no ID is held by {channel.me} and all other parties")
    return result.rows[positions]
