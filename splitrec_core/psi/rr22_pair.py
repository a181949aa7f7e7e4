"""One RR22 pair at one party: spu's input and output files, and the worker that runs it.

spu's key is the ID's UTF-8 bytes in hex: spu orders its files with the shell's `sort` on
comma-separated fields, which an ID holding a comma, a quote or a line break would derail; hex
has none and sorts as the bytes do. The keys go into spu's input file in the party's own run
folder (removed afterwards) and never cross: spu hashes them into the protocol. spu's traffic
does not pass through the channel; each party's worker reads what its sockets sent and received
from the kernel.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from splitrec_core.channel import PeerError
from splitrec_core.columns import ID
from splitrec_core.psi.rr22_links import Rr22Link

KEY, ROW = "key", "row"
_HANDSHAKE_FAILED = "Fail to SSL_do_handshake"  # what brpc logs when TLS refuses a peer


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
            [sys.executable, "-m", "splitrec_core.psi.rr22_worker", str(folder / "spec.json")],
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
