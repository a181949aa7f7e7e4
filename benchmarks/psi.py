"""PSI benchmark: splitrec's X25519 PSI against openmined-psi and the libsodium floor.

Each measurement runs in a fresh process so its peak memory is its own. Every leader holds n IDs;
every follower holds n IDs of which half are the leader's (the same half for all followers), so
the intersection is n/2. splitrec's runs also check that every party holds exactly those IDs,
in one common order (so ECDH and RR22 are checked against the same truth).

    python benchmarks/psi.py                                  # 100k and 1M, 2 and 3 parties
    python benchmarks/psi.py --n 100000 --parties 2 --json out.json

Implementations:
  splitrec       align_local: all parties in this process over the counted local channel,
                 IDs streamed from Parquet, blinding on all cores
  splitrec-rr22  the same with `[psi] protocol = "rr22"`: SecretFlow's RR22 through spu (the rr22
                 extra), a pair per follower, each side in a worker process over spu's brpc link
                 on 127.0.0.1; peak MiB is the largest process's (this one or a worker), MB sent
                 is counted at the workers' sockets
  splitrec-dask  splitrec with every party's engine = "dask": each blinds on a LocalCluster of
                 its own (cores / parties single-threaded workers), started within the timing
  splitrec-flight  a process per party over Arrow Flight with mutual TLS on 127.0.0.1, as
                 parties apart talk; peak MiB is the largest party's (each party's is in the
                 JSON). `--inbox-mb` bounds what a party holds of a peer's unread messages
                 (`[channel] inbox_mb`; a huge value is no bound):

    python benchmarks/psi.py --impl splitrec-flight --n 1000000 --parties 2 --inbox-mb 16
  openmined-psi  the OpenMined library (P-256, single-threaded): the leader as client, each
                 follower as server, intersections of the pairwise results for 3+ parties
  floor          the bare libsodium work the protocol needs: SHA-256 of every ID and
                 n * (1 + 3 * (parties - 1)) X25519 calls, spread over all cores
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

IMPLS = ("splitrec", "splitrec-rr22", "splitrec-dask", "splitrec-flight", "openmined-psi", "floor")


def party_ids(n: int, parties: int) -> list[list[str]]:
    """The leader's n IDs, then each follower's: the leader's first half plus n/2 of its own."""
    leader = [f"user-{i:010d}" for i in range(n)]
    followers = [leader[: n // 2] + [f"user-{p}-{i:010d}" for i in range(n - n // 2)]
                 for p in range(1, parties)]
    return [leader, *followers]


def party_names(parties: int) -> list[str]:
    """The leader, then the followers."""
    return ["leader", *(f"follower{i}" for i in range(1, parties))]


def write_inputs(folder: Path, sets: list[list[str]]) -> tuple[dict, Path]:
    """Each party's IDs as Parquet in `folder`, the leader's split; their `PsiFiles` by party."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from splitrec_core.psi import PsiFiles

    files = {}
    for name, values in zip(party_names(len(sets)), sets, strict=True):
        pq.write_table(pa.table({"id": values}), folder / f"{name}.parquet")
        files[name] = PsiFiles(folder / f"{name}.parquet", folder / name / "aligned.parquet")
    split = folder / "split.parquet"
    flags = ["train" if i % 2 else "test" for i in range(len(sets[0]))]
    pq.write_table(pa.table({"split": flags}), split)
    return files, split


def check_alignment(files: dict, n: int) -> None:
    """Stop unless every party holds exactly the shared IDs, in one common order.

    The shared IDs are the leader's first n/2, which are also every follower's first n/2 rows,
    so a party's rows sorted by position must be the same list at every party and hold 0..n/2-1.
    """
    import numpy as np
    import pyarrow.parquet as pq

    orders = {}
    for name, party in files.items():
        aligned = pq.read_table(party.aligned, columns=["row", "position"]).to_pandas()
        orders[name] = aligned.sort_values("position")["row"].to_numpy()
    leader = orders["leader"]
    if not np.array_equal(np.sort(leader), np.arange(n // 2)):
        raise SystemExit("leader: the aligned rows are not the shared IDs")
    for name, rows in orders.items():
        if not np.array_equal(rows, leader):
            raise SystemExit(f"{name}: its rows are not in the leader's order")


def run_splitrec(sets: list[list[str]], on_dask: bool = False, protocol: str = "ecdh") -> dict:
    """Align `sets` (the leader's first) with splitrec's PSI; its seconds, intersection, bytes."""
    from splitrec_core.config import EngineConfig, PsiConfig
    from splitrec_core.psi import align_local

    names, n = party_names(len(sets)), len(sets[0])
    workers = max(1, (os.cpu_count() or 1) // len(names))
    engines = ({name: EngineConfig(kind="dask", workers=workers) for name in names} if on_dask
               else None)
    with tempfile.TemporaryDirectory() as tmp:
        files, split = write_inputs(Path(tmp), sets)
        del sets
        start = time.perf_counter()
        psi = PsiConfig(domain="benchmark", protocol=protocol, rr22_reveal_pairwise=True)
        result = align_local(files, psi, label_party="leader", split_file=split, engines=engines)
        seconds = time.perf_counter() - start
        check_alignment(files, n)
    return {"seconds": seconds, "intersection": result.intersection,
            "bytes": sum(v["bytes"] for v in result.channel.values()),
            "bytes_by_kind": {k: v["bytes"] for k, v in result.channel.items()}}


def process_peak_mib() -> float:
    """This process's peak RSS since it started its program (Linux `VmHWM`).

    Not `ru_maxrss`: Linux carries that across `exec`, so a spawned party would report at least
    the RSS of the process that started it.
    """
    status = Path("/proc/self/status").read_text()
    return int(status.split("VmHWM:")[1].split()[0]) / 1024


class Measured:
    """A party's job that also returns its seconds, its channel's bytes and its peak RSS."""

    def __init__(self, job) -> None:
        self.job = job

    def __call__(self, channel) -> dict:
        """Run the job in this (the party's own) process on `channel`."""
        start = time.perf_counter()
        self.job(channel)
        return {"seconds": time.perf_counter() - start, "sent": channel.sent().as_dict(),
                "peak_mib": process_peak_mib()}


def run_flight(sets: list[list[str]], inbox_mb: int) -> dict:
    """Align `sets` with a process per party over Flight with mutual TLS on loopback."""
    import pyarrow.parquet as pq

    from splitrec_core.channel import Limits
    from splitrec_core.channel.contract import MB
    from splitrec_core.channel.flight.loopback import loopback_seats
    from splitrec_core.channel.processes import run_in_processes
    from splitrec_core.config import PsiConfig
    from splitrec_core.psi import feature_side, label_side
    from splitrec_core.psi.ecdh import Ecdh

    names, psi, n = party_names(len(sets)), PsiConfig(domain="benchmark"), len(sets[0])
    with tempfile.TemporaryDirectory() as tmp:
        files, split = write_inputs(Path(tmp), sets)
        del sets
        jobs = {"leader": Measured(partial(label_side, files=files["leader"],
                                           protocol=Ecdh(psi), followers=names[1:],
                                           split_file=split))}
        for name in names[1:]:
            jobs[name] = Measured(partial(feature_side, files=files[name], protocol=Ecdh(psi),
                                          leader="leader"))
        seats = loopback_seats(names, Path(tmp) / "credentials", "psi",
                               limits=Limits(inbox_bytes=inbox_mb * MB))
        outcomes = run_in_processes(jobs, seats)
        check_alignment(files, n)
        shared = pq.read_metadata(files["leader"].aligned).num_rows
    sent = {kind: sum(o["sent"].get(kind, {"bytes": 0})["bytes"] for o in outcomes.values())
            for kind in sorted({k for o in outcomes.values() for k in o["sent"]})}
    return {"seconds": max(o["seconds"] for o in outcomes.values()), "intersection": shared,
            "bytes": sum(sent.values()), "bytes_by_kind": sent, "inbox_mb": inbox_mb,
            "peak_mib_by_party": {p: round(o["peak_mib"], 1) for p, o in outcomes.items()}}


def run_openmined(sets: list[list[str]]) -> dict:
    """Intersect `sets` with openmined-psi, pair by pair; its seconds, intersection, bytes."""
    import private_set_intersection.python as psi

    leader, followers = sets[0], sets[1:]
    start = time.perf_counter()
    shared: set[int] | None = None
    nbytes = 0
    for follower in followers:
        client = psi.client.CreateWithNewKey(True)
        server = psi.server.CreateWithNewKey(True)
        setup = server.CreateSetupMessage(1e-9, len(leader), follower, psi.DataStructure.RAW)
        request = client.CreateRequest(leader)
        response = server.ProcessRequest(request)
        found = set(client.GetIntersection(setup, response))
        nbytes += sum(len(m.SerializeToString()) for m in (setup, request, response))
        shared = found if shared is None else shared & found
    return {"seconds": time.perf_counter() - start, "intersection": len(shared or ()),
            "bytes": nbytes}


def run_floor(sets: list[list[str]]) -> dict:
    """Time the bare libsodium work PSI on `sets` needs."""
    from nacl.bindings import crypto_scalarmult
    from nacl.utils import random as random_bytes

    n, parties = len(sets[0]), len(sets)
    calls = n * (1 + 3 * (parties - 1))
    scalar = random_bytes(32)
    start = time.perf_counter()
    points = [hashlib.sha256(i.encode()).digest() for s in sets for i in s]
    work = (points * (calls // len(points) + 1))[:calls]
    blocks = [work[i : i + 4096] for i in range(0, calls, 4096)]
    with ThreadPoolExecutor(max_workers=os.cpu_count()) as pool:
        for _ in pool.map(lambda b: [crypto_scalarmult(scalar, p) for p in b], blocks):
            pass
    return {"seconds": time.perf_counter() - start, "intersection": n // 2, "bytes": 0}


RUNNERS = {"splitrec": run_splitrec, "splitrec-dask": partial(run_splitrec, on_dask=True),
           "splitrec-rr22": partial(run_splitrec, protocol="rr22"),
           "splitrec-flight": run_flight, "openmined-psi": run_openmined, "floor": run_floor}


def worker(impl: str, n: int, parties: int, inbox_mb: int) -> dict:
    """One measurement, in this process; prints nothing."""
    runner = partial(run_flight, inbox_mb=inbox_mb) if impl == "splitrec-flight" else RUNNERS[impl]
    result = runner(party_ids(n, parties))
    if result["intersection"] != n // 2:
        raise SystemExit(f"{impl}: intersection {result['intersection']} != {n // 2}")
    by_party = result.pop("peak_mib_by_party", {})
    peak_mib = max(by_party.values(), default=max(  # spu's workers are children
        resource.getrusage(who).ru_maxrss for who in (resource.RUSAGE_SELF,
                                                        resource.RUSAGE_CHILDREN)) / 1024)
    extra = {k: result[k] for k in ("bytes_by_kind", "inbox_mb") if k in result}
    return {"impl": impl, "n": n, "parties": parties, "seconds": round(result["seconds"], 3),
            "ids_per_s": round(n * parties / result["seconds"]), "bytes": result["bytes"],
            "peak_mib": round(peak_mib, 1), **extra,
            **({"peak_mib_by_party": by_party} if by_party else {})}


def measure(impl: str, n: int, parties: int, inbox_mb: int) -> dict | None:
    """Run `worker` in a fresh interpreter; None if the implementation is not installed."""
    proc = subprocess.run([sys.executable, __file__, "--worker", impl, "--n", str(n),
                           "--parties", str(parties), "--inbox-mb", str(inbox_mb)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        for module, extra in (("private_set_intersection", "bench"), ("spu", "rr22")):
            if f"No module named '{module}'" in proc.stderr or (
                    module == "spu" and "needs SecretFlow's spu" in proc.stderr):
                print(f"  {impl}: not installed (pip install -e '.[{extra}]')", file=sys.stderr)
                return None
        raise RuntimeError(f"{impl} n={n} parties={parties} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def print_table(rows: list[dict]) -> None:
    """Print the measurements, each against splitrec's ECDH, openmined-psi and the floor."""
    print(f"{'impl':<14} {'n':>9} {'parties':>7} {'seconds':>9} {'IDs/s':>9} {'MB sent':>9} "
          f"{'peak MiB':>9} {'vs splitrec':>11} {'vs openmined':>12} {'% of floor':>10}")
    for row in rows:
        same = {r["impl"]: r for r in rows if r["n"] == row["n"] and r["parties"] == row["parties"]}
        speedup, ecdh = ((f"{same[other]['seconds'] / row['seconds']:.2f}x" if other in same
                          else "-") for other in ("openmined-psi", "splitrec"))
        floor = (f"{100 * same['floor']['seconds'] / row['seconds']:.0f}%" if "floor" in same
                 else "-")
        print(f"{row['impl']:<14} {row['n']:>9} {row['parties']:>7} {row['seconds']:>9.2f} "
              f"{row['ids_per_s']:>9} {row['bytes'] / 1e6:>9.1f} {row['peak_mib']:>9.0f} "
              f"{ecdh:>11} {speedup:>12} {floor:>10}")
    for row in rows:
        if "bytes_by_kind" in row:
            kinds = ", ".join(f"{k} {v / 1e6:.1f} MB" for k, v in row["bytes_by_kind"].items())
            print(f"{row['impl']} n={row['n']} parties={row['parties']}: {kinds}")
        if "peak_mib_by_party" in row:
            peaks = ", ".join(f"{p} {v:.0f}" for p, v in row["peak_mib_by_party"].items())
            print(f"{row['impl']} n={row['n']} parties={row['parties']} inbox_mb="
                  f"{row['inbox_mb']}: peak MiB per party: {peaks}")


def main() -> None:
    """Run the benchmark as the command line asks."""
    from splitrec_core.config import ChannelConfig

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--parties", type=int, nargs="+", default=[2, 3])
    parser.add_argument("--impl", nargs="+", choices=IMPLS, default=list(IMPLS))
    parser.add_argument("--json", type=Path, help="also write the rows here")
    parser.add_argument("--inbox-mb", type=int, default=ChannelConfig().inbox_mb,
                        help="splitrec-flight: [channel] inbox_mb, what a party holds of a peer's "
                             "unread messages (default: the setting's default)")
    parser.add_argument("--worker", choices=IMPLS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.n[0], args.parties[0], args.inbox_mb)))
        return
    rows = []
    for n in args.n:
        for parties in args.parties:
            for impl in args.impl:
                print(f"running {impl} n={n} parties={parties} ...", file=sys.stderr, flush=True)
                if (row := measure(impl, n, parties, args.inbox_mb)) is not None:
                    rows.append(row)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from train import cpu_model

    print(f"PSI benchmark, {cpu_model()}, {os.cpu_count()} cores, {time.strftime('%Y-%m-%d')}")
    print_table(rows)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    main()
