"""RR22 PSI through SecretFlow's `spu` library: pairwise, the label party receiving.

`[psi] protocol = "rr22"` replaces the ECDH exchange of `psi` with RR22 (Raghuraman and Rindal,
CCS 2022: oblivious PRF from VOLE and an OKVS), as spu implements it; splitrec writes no OT or
RR22 code of its own. spu runs two parties at a time, so the label party runs one pair with each
feature party (a process each: `rr22_worker`), always as the receiver. spu returns, to both
parties of a pair, their own rows of the pair's intersection sorted by ID, so row i is the same
person at both. The label party keeps the people every pair found, puts them in a fresh random
order, and tells each feature party which of its pair rows those are, in that order: the same
`psi_positions` message, checked the same way, as under ECDH. What follows (the split flag, the
aligned files) is the same for both protocols.

What each party learns that it does not under ECDH: a feature party learns which of its IDs it
shares with the label party (its pair's intersection), not only which all parties share. With
two parties these are the same set. With three or more the federation file must accept it
(`rr22_reveal_pairwise = true`). The label party learns each pair's intersection under both
protocols (its ECDH leader matches each follower on its own). Under both, each side of a pair
learns how many IDs the other holds.

Raw IDs go into spu's input file in the party's own run folder (removed afterwards) and never
cross: spu hashes them into the protocol. spu's traffic does not pass through the channel; each
party's worker reads what its sockets sent and received from the kernel, and the channel counts
it as `psi_rr22` beside its own messages.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import reduce
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from splitrec_core.certs import PartyCredentials
from splitrec_core.channel import Channel, Kind, PeerError, array_table
from splitrec_core.psi import EmptyIntersection, receive_positions, shuffled_order
from splitrec_core.validate import ID

_log = logging.getLogger(__name__)

INSTALL_HINT = ("protocol 'rr22' needs SecretFlow's spu library, which is not installed here: "
                "pip install 'splitrec[rr22]' (Python 3.11 on x86-64 Linux; it pins numpy < 2)")
ROW = "row"
_HANDSHAKE_FAILED = "Fail to SSL_do_handshake"  # what brpc logs when TLS refuses a peer


def spu_missing() -> bool:
    """Whether spu cannot be imported here (then `rr22` cannot run)."""
    return importlib.util.find_spec("spu") is None


@dataclass(frozen=True)
class PairLink:
    """Where the two ends of one label–feature pair listen, as host:port."""

    label: str
    feature: str


@dataclass(frozen=True)
class Rr22Link:
    """One party's view of the RR22 links: its pairs, how long to wait, its TLS files.

    `pairs` maps each feature party to its pair's addresses. Without `credentials` the link is
    plaintext (parties in one process, or a federation marked insecure).
    """

    pairs: Mapping[str, PairLink]
    timeout_s: float
    credentials: PartyCredentials | None = None


def federation_pairs(label: str, followers: list[str], hosts: Mapping[str, str],
                     base_port: int) -> dict[str, PairLink]:
    """Pair i (feature parties in federation order) listens on ports `base_port` + 2i and + 2i + 1.

    The first at the label party's host, the second at the feature party's.
    """
    return {f: PairLink(f"{hosts[label]}:{base_port + 2 * i}",
                        f"{hosts[f]}:{base_port + 2 * i + 1}")
            for i, f in enumerate(followers)}


def loopback_pairs(followers: list[str]) -> dict[str, PairLink]:
    """Pairs on 127.0.0.1 at ports free now, for parties that run in one process."""
    def free_port() -> int:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            return int(probe.getsockname()[1])
    return {f: PairLink(f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}")
            for f in followers}


def write_id_csv(ids: Path, out: Path, chunk: int) -> Path:
    """The party's IDs and row numbers as spu's input CSV, written a Parquet batch at a time."""
    schema = pa.schema([(ID, pa.string()), (ROW, pa.int64())])
    start = 0
    with pacsv.CSVWriter(out, schema) as writer:
        for batch in pq.ParquetFile(ids).iter_batches(batch_size=chunk, columns=[ID]):
            rows = pa.array(np.arange(start, start + batch.num_rows, dtype=np.int64))
            writer.write_batch(pa.record_batch([batch.column(0).cast(pa.string()), rows],
                                               schema=schema))
            start += batch.num_rows
    return out


def _read_rows(output: Path) -> np.ndarray:
    """The party's own rows of a pair's intersection, in spu's order (sorted by ID)."""
    table = pacsv.read_csv(output, convert_options=pacsv.ConvertOptions(
        include_columns=[ROW], column_types={ROW: pa.int64()}))
    return table.column(ROW).to_numpy()


def run_pair(channel: Channel, peer: str, link: Rr22Link, ids_csv: Path,
             scratch: Path) -> np.ndarray:
    """Run one pair's RR22 in a worker process; return this party's rows of the pair's intersection.

    spu's files (and its temporary ones) go in a folder of `scratch`, the party's own. The
    pair's traffic is counted on `channel` as `psi_rr22`. A peer that does not connect or
    answer within the link's timeout is named in the `PeerError`.
    """
    label_side = channel.me not in link.pairs
    feature = peer if label_side else channel.me
    pair = link.pairs[feature]
    folder = Path(tempfile.mkdtemp(prefix=f"{feature}-", dir=scratch))
    spec: dict[str, Any] = {
        "session": f"splitrec-psi-{feature}",
        "parties": [["label", pair.label], [feature, pair.feature]],
        "rank": 0 if label_side else 1,
        "input": str(ids_csv), "key": ID, "output": str(folder / "out.csv"),
        "result": str(folder / "result.json"), "connected": str(folder / "connected"),
        "timeout_s": link.timeout_s,
    }
    if link.credentials is not None:
        c = link.credentials
        spec["tls"] = {"cert": str(c.cert), "key": str(c.key), "ca": str(c.ca)}
    (folder / "spec.json").write_text(json.dumps(spec))
    peer_address = pair.feature if label_side else pair.label
    with open(folder / "worker.log", "wb") as log:
        worker = subprocess.Popen(
            [sys.executable, "-m", "splitrec_core.rr22_worker", str(folder / "spec.json")],
            stdout=log, stderr=subprocess.STDOUT, env=os.environ | {"TMPDIR": str(folder)})
        connected = _wait(worker, Path(spec["connected"]), folder / "worker.log",
                          link.timeout_s)
    if worker.returncode != 0:
        log_text = (folder / "worker.log").read_text(errors="replace")
        raise PeerError(_failure(peer, peer_address, link.timeout_s, connected, log_text))
    result = json.loads((folder / "result.json").read_text())
    channel.count_beside(Kind.PSI_RR22, result["sent_bytes"], result["received_bytes"])
    return _read_rows(folder / "out.csv")


def _wait(worker: subprocess.Popen[bytes], connected: Path, log: Path, timeout_s: float) -> bool:
    """Wait for the worker; end it if its peer has not connected within `timeout_s`.

    A TLS handshake refused while connecting ends it at once: retrying cannot mend a
    certificate. Returns whether the peer connected. Once it has, spu's own receive timeout
    (the same `timeout_s`) ends a pair whose peer goes silent.
    """
    deadline = time.monotonic() + timeout_s
    while worker.poll() is None:
        if not connected.exists() and (time.monotonic() > deadline
                                       or _HANDSHAKE_FAILED in log.read_text(errors="replace")):
            worker.kill()
            worker.wait()
            return False
        time.sleep(0.05)
    return True


def _failure(peer: str, address: str, timeout_s: float, connected: bool, log: str) -> str:
    """One line for a pair that failed, naming the peer: silent, refused by TLS, or spu's error."""
    handshakes = [line.split(_HANDSHAKE_FAILED)[-1].strip(" :")
                  for line in log.splitlines() if _HANDSHAKE_FAILED in line]
    if handshakes:
        return (f"RR22 PSI: the TLS handshake with {peer} at {address} failed ({handshakes[-1]}): "
                f"do both hold certificates of the federation's CA?")
    if not connected:
        return f"RR22 PSI: {peer} did not connect at {address} within {timeout_s:g} s"
    lines = log.splitlines()
    cause = next((nxt.strip() for line, nxt in zip(lines, lines[1:]) if line.endswith("what: ")),
                 lines[-1].strip() if lines else "no output")
    if "timeout" in log.lower():
        return f"RR22 PSI: {peer} went silent: no answer within {timeout_s:g} s ({cause[-200:]})"
    return f"RR22 PSI with {peer} failed: {cause[-300:]}"


def positions_in(pair_rows: np.ndarray, shared: np.ndarray) -> np.ndarray:
    """For each of `shared` (rows every pair found), its index in one pair's `pair_rows`."""
    order = np.argsort(pair_rows, kind="stable")
    return order[np.searchsorted(pair_rows[order], shared)]


def run_leader(channel: Channel, ids: Path, followers: list[str], link: Rr22Link, chunk: int,
               scratch: Path) -> np.ndarray:
    """The label party's side: a pair with each feature party; its rows in the common order.

    `scratch` is a folder of its own for spu's files (they hold its raw IDs: the caller removes
    it).
    """
    ids_csv = write_id_csv(ids, scratch / "ids.csv", chunk)
    with ThreadPoolExecutor(max_workers=len(followers)) as pool:
        found = dict(zip(followers, pool.map(
            lambda f: run_pair(channel, f, link, ids_csv, scratch), followers), strict=True))
    shared = reduce(np.intersect1d, found.values())
    shared = shared[shuffled_order(len(shared), "psi-common-order", channel.me)]
    for follower in followers:
        channel.send(Kind.PSI_POSITIONS, follower,
                     array_table(positions_in(found[follower], shared)))
    _log.info("PSI (rr22): %s", ", ".join(f"{len(rows):,} shared with {f}"
                                          for f, rows in found.items()))
    if len(shared) == 0:
        raise EmptyIntersection(f"no ID is held by all of {[channel.me, *followers]}")
    return shared


def run_follower(channel: Channel, ids: Path, leader: str, link: Rr22Link, chunk: int,
                 scratch: Path) -> np.ndarray:
    """A feature party's side: its pair with the label party; its rows in the common order.

    `scratch` is as for `run_leader`.
    """
    ids_csv = write_id_csv(ids, scratch / "ids.csv", chunk)
    pair_rows = run_pair(channel, leader, link, ids_csv, scratch)
    positions = receive_positions(channel, leader, len(pair_rows))
    if len(positions) == 0:
        raise EmptyIntersection(f"no ID is held by {channel.me} and all other parties")
    return pair_rows[positions]
