"""Scale benchmark: the whole pipeline with every party on a Dask cluster of its own.

It runs at 1M, 3M and 10M people per party, with the parties apart (a process each, its own
Prefect, Flight with mutual TLS on 127.0.0.1) so each party's memory is its own.

For each size it draws the synthetic federation as Parquet (`splitrec data synthetic --parquet`,
a row group per million people), splits `data/synthetic-dask.toml` into a trial federation of
two parties (advertiser and bank; `--three-at` sizes add media), runs `splitrec party run` per
party, samples every party's process tree (its process, its LocalCluster, its Prefect server)
for resident memory every half second, and reads each stage's time from the party's own Prefect
database. It prints, per party and stage, seconds and people per second, and each party's peak
RSS. 10M x 10M is about 40M X25519 calls: run it in the background.

`--census` instead runs the census pipeline (`splitrec run`, parties in one process) twice, on
the local engine and with every party on a Dask LocalCluster, with the same pinned shuffles
(PSI's private shuffles are otherwise drawn afresh each run), and compares what they wrote.

    python benchmarks/scale.py                                   # 1M (3 parties), 1M, 3M, 10M
    python benchmarks/scale.py --rows 1000000 --json runs/scale.json
    python benchmarks/scale.py --census
    python benchmarks/scale.py --medians runs/scale-1.json runs/scale-2.json runs/scale-3.json
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from statistics import median

import psutil
import tomli_w

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# the repository's own packages, found through the path set just above
from deployments.distributed import print_failure, start_parties  # noqa: E402
from splitrec_core.channel.flight.addresses import free_port_block  # noqa: E402
from splitrec_core.config import load_config  # noqa: E402
from splitrec_core.datasets.synthetic import write_parties  # noqa: E402
from splitrec_core.privacy.entropy import PIN_VARIABLE  # noqa: E402

#: Prefect task-run names (before the first "-") -> the stage they belong to
STAGES = {"validate": "validate", "psi_align": "psi", "features": "features",
          "train_split_mmoe": "train"}


def config_copy(source: Path, out: Path, name: str, parties: int | None = None,
                engine: dict[str, object] | None = None, psi: dict[str, object] | None = None,
                ) -> Path:
    """`source` (a one-process config) with its first `parties` parties, written to `out`.

    Each party runs on `engine`, if given; `psi` settings replace the source's.
    """
    settings = load_config(source).model_dump(mode="json", exclude_none=True)
    settings["parties"] = settings["parties"][:parties]
    settings["psi"] |= psi or {}
    for party in settings["parties"] if engine else []:
        party["engine"] = engine
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(tomli_w.dumps(settings | {"name": name}))
    return out


def tree_rss(process: psutil.Process) -> dict[str, int]:
    """Resident bytes now of a party's process and of its descendants, summed by role.

    The roles are the party itself, its Dask workers, its Prefect server, anything else; the
    sum is empty once the party has gone.
    """
    rss: dict[str, int] = {}
    try:
        members = [process, *process.children(recursive=True)]
    except psutil.NoSuchProcess:
        return rss
    for member in members:
        try:
            role = _role(member, process)
            rss[role] = rss.get(role, 0) + member.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return rss


def _role(member: psutil.Process, party: psutil.Process) -> str:
    if member.pid == party.pid:
        return "party"
    command = " ".join(member.cmdline())
    if "spawn_main" in command:  # Dask's nanny starts each worker through multiprocessing
        return "dask worker"
    return "prefect server" if "prefect" in command or "uvicorn" in command else "other"


def stage_windows(prefect_db: Path) -> list[tuple[str, float, float]]:
    """(stage, start, end) of every task run of a stage, as Unix times.

    They are read from a party's own Prefect database.
    """
    with sqlite3.connect(prefect_db) as db:
        runs = db.execute("SELECT name, start_time, end_time FROM task_run "
                          "WHERE start_time IS NOT NULL AND end_time IS NOT NULL").fetchall()
    return [(STAGES[name.split("-")[0]], datetime.fromisoformat(start).timestamp(),
             datetime.fromisoformat(end).timestamp())
            for name, start, end in runs if name.split("-")[0] in STAGES]


def by_stage(windows: list[tuple[str, float, float]], samples: list[tuple[float, dict[str, int]]],
             ) -> tuple[dict[str, float], dict[str, int]]:
    """Seconds per stage, and the party's peak RSS (MiB) sampled within each stage."""
    seconds: dict[str, float] = {}
    peaks: dict[str, int] = {}
    for stage, start, end in windows:
        seconds[stage] = seconds.get(stage, 0.0) + end - start
        inside = [sum(rss.values()) for at, rss in samples if start <= at <= end]
        peaks[stage] = max([peaks.get(stage, 0), *(round(r / 2**20) for r in inside)])
    return seconds, peaks


def run_size(rows: int, parties: int, out: Path, protocol: str = "ecdh") -> dict[str, object]:
    """Draw, split and run one federation with PSI `protocol`; its measurements."""
    folder = out / f"{rows}-{parties}p"
    write_parties(folder / "data", rows, seed=0, suffix=".parquet")
    config = config_copy(REPO / "data" / "synthetic-dask.toml", folder / "config.toml",
                         f"scale-{parties}", parties,
                         psi={"protocol": protocol, "rr22_reveal_pairwise": parties > 2})
    splitrec = Path(sys.executable).with_name("splitrec")
    subprocess.run([splitrec, "party", "trial", config, "--data-workdir", folder, "--out",
                    folder / "parties", "--base-port", str(free_port_block(parties))],
                   check=True, capture_output=True)
    folders = sorted(p for p in (folder / "parties").iterdir() if (p / "party.toml").exists())
    started = time.monotonic()
    launched = start_parties(folders, f"scale-{rows}")
    watched = {name: psutil.Process(process.pid) for name, (process, _) in launched.items()}
    samples: dict[str, list[tuple[float, dict[str, int]]]] = {name: [] for name in launched}
    while any(process.poll() is None for process, _ in launched.values()):
        for name, process in watched.items():
            samples[name].append((time.time(), tree_rss(process)))
        time.sleep(0.5)
    wall = time.monotonic() - started
    for name, (process, party_folder) in launched.items():
        if process.returncode != 0:
            print_failure(name, process, party_folder)
            raise SystemExit(f"{name} failed at {rows:,} rows")
    people = {p.name: len_rows(p / "data") for p in folders}
    stages = {p.name: by_stage(stage_windows(p / ".prefect-home" / "prefect.db"), samples[p.name])
              for p in folders}
    report = json.loads((folder / "parties" / "advertiser" / "run" / "report" /
                         "metrics.json").read_text())
    return {
        "rows": rows, "parties": parties, "psi_protocol": protocol, "wall_seconds": round(wall, 1),
        "peak_rss_mib": {name: round(max(sum(r.values()) for _, r in samples[name]) / 2**20)
                         for name in samples},
        "peak_rss_mib_of": {name: _peak_by_role(samples[name]) for name in samples},
        "peak_rss_mib_in": {name: peaks for name, (_, peaks) in stages.items()},
        "people": people,
        "seconds": {name: seconds for name, (seconds, _) in stages.items()},
        "intersection": report["psi"]["intersection"],
        "test_auc": {task: metrics["auc"] for task, metrics in report["tasks"].items()},
    }


def _peak_by_role(samples: list[tuple[float, dict[str, int]]]) -> dict[str, int]:
    """What each role of a party's process tree held at the tree's peak (MiB)."""
    _, at_peak = max(samples, key=lambda sample: sum(sample[1].values()))
    return {role: round(rss / 2**20) for role, rss in sorted(at_peak.items())}


def len_rows(data: Path) -> int:
    """People in a party's one data file."""
    import pyarrow.parquet as pq

    [path] = data.iterdir()
    return pq.ParquetFile(path).metadata.num_rows


def print_table(results: list[dict[str, object]]) -> None:
    """Per run and party: seconds, people/s and peak RSS per stage, and the party's peak RSS."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    from train import cpu_model

    protocols = sorted({str(r.get("psi_protocol", "ecdh")) for r in results})
    print(f"scale benchmark, PSI {'/'.join(protocols)}, {cpu_model()}, {psutil.cpu_count()} "
          f"cores, {time.strftime('%Y-%m-%d')}")
    print("| people per party | parties | party | " + " | ".join(
        f"{s}: s (people/s) peak MiB" for s in dict.fromkeys(STAGES.values()))
        + " | peak RSS MiB | wall s |")
    print("|---" * (5 + len(set(STAGES.values()))) + "|")
    for result in results:
        for party, seconds in result["seconds"].items():
            people, peaks = result["people"][party], result["peak_rss_mib_in"][party]
            cells = [f"{seconds[s]:.1f} ({people / seconds[s]:,.0f}) {peaks[s]:,}"
                     if s in seconds else "-" for s in dict.fromkeys(STAGES.values())]
            print(f"| {result['rows']:,} | {result['parties']} | {party} | " + " | ".join(cells)
                  + f" | {result['peak_rss_mib'][party]:,} | {result['wall_seconds']} |")
    for r in results:
        print(f"{r['rows']:,} people, {r['parties']} parties: intersection {r['intersection']:,}, "
              f"test AUC {({t: round(a, 4) for t, a in r['test_auc'].items()})}; at each "
              f"party's peak, MiB: {r['peak_rss_mib_of']}")


def print_medians(runs: list[list[dict[str, object]]]) -> None:
    """Print medians over several runs of the benchmark (each a `--json` file).

    Per size and party, the median people/s per stage and every run's peak RSS; then, per party
    and stage, time per person at the largest two-party size over that at the smallest, per run
    and the median.
    """
    def stage_rate(result: dict, party: str, stage: str) -> float:
        return result["people"][party] / result["seconds"][party][stage]

    stages = list(dict.fromkeys(STAGES.values()))
    print(f"scale benchmark, medians of {len(runs)} runs")
    print("| people per party | parties | party | " + " | ".join(f"{s} people/s" for s in stages)
          + " | peak RSS MiB, each run |")
    print("|---" * (4 + len(stages)) + "|")
    sizes = [(r["rows"], r["parties"]) for r in runs[0]]
    for rows, parties in sizes:
        same = [next(r for r in run if (r["rows"], r["parties"]) == (rows, parties))
                for run in runs]
        for party in same[0]["seconds"]:
            rates = [f"{median(stage_rate(r, party, s) for r in same):,.0f}" for s in stages]
            peaks = ", ".join(f"{r['peak_rss_mib'][party]:,}" for r in same)
            print(f"| {rows:,} | {parties} | {party} | " + " | ".join(rates) + f" | {peaks} |")
    two = [{r["rows"]: r for r in run if r["parties"] == 2} for run in runs]
    small, large = min(two[0]), max(two[0])
    for party in two[0][small]["seconds"]:
        ratios = []
        for stage in stages:
            each = [stage_rate(run[small], party, stage) / stage_rate(run[large], party, stage)
                    for run in two]
            ratios.append(f"{stage} {median(each):.2f}x ({', '.join(f'{x:.2f}' for x in each)})")
        print(f"{party}: time per person at {large:,} / at {small:,}: " + "; ".join(ratios))


def census_engines(out: Path) -> None:
    """The census pipeline on the local engine and on Dask: PSI output and test AUC compared."""
    from splitrec_core.datasets.census import prepare_census

    splitrec, runs = Path(sys.executable).with_name("splitrec"), {}
    engines = {"local": None, "dask": {"kind": "dask", "workers": 1, "memory_limit": "2GiB"}}
    for kind, engine in engines.items():
        config = config_copy(REPO / "data" / "census.toml", out / f"census-{kind}.toml",
                             "census", engine=engine)
        prepare_census(out / kind / "data")
        started = time.monotonic()
        subprocess.run([splitrec, "run", config, "--workdir", out / kind], check=True,
                       capture_output=True, env=os.environ | {PIN_VARIABLE: "census-engines"})
        runs[kind] = (time.monotonic() - started, json.loads(
            (out / kind / "report" / "metrics.json").read_text()))
    import pyarrow.parquet as pq

    same = {}
    for party in sorted(p.name for p in (out / "local" / "parties").iterdir()):
        for written in ("aligned.parquet", "features/train.parquet", "features/test.parquet"):
            tables = [pq.read_table(out / kind / "parties" / party / written) for kind in engines]
            same[f"{party} {written}"] = tables[0].equals(tables[1])
    for written in ("validated/validated.parquet", "validated/ids.parquet"):
        tables = [pq.read_table(out / kind / "parties" / "bank" / written) for kind in engines]
        same[f"bank {written}"] = tables[0].equals(tables[1])
    print(f"census on the local engine and on Dask, {psutil.cpu_count()} cores, "
          f"{time.strftime('%Y-%m-%d %H:%M')}")
    for kind, (seconds, report) in runs.items():
        aucs = {t: round(m["auc"], 5) for t, m in report["tasks"].items()}
        print(f"  {kind}: {seconds:.0f} s, intersection {report['psi']['intersection']:,}, "
              f"test AUC {aucs}")
    print("  identical files:", same)


def main() -> None:
    """Run the benchmark as the command line asks."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 3_000_000, 10_000_000])
    parser.add_argument("--parties", type=int, default=2)
    parser.add_argument("--three-at", type=int, nargs="*", default=[1_000_000],
                        help="sizes also run with three parties")
    parser.add_argument("--out", type=Path, default=Path("runs/scale"))
    parser.add_argument("--json", type=Path)
    parser.add_argument("--psi-protocol", choices=["ecdh", "rr22"], default="ecdh",
                        help="[psi] protocol (rr22: the rr22 extra)")
    parser.add_argument("--census", action="store_true", help="the census engine check instead")
    parser.add_argument("--medians", type=Path, nargs="+", metavar="JSON",
                        help="instead of running: medians over the --json files of earlier runs")
    args = parser.parse_args()
    if args.census:
        census_engines(args.out / "census")
        return
    if args.medians:
        print_medians([json.loads(path.read_text()) for path in args.medians])
        return
    runs = ([(n, 3) for n in args.three_at if n in args.rows]
            + [(n, args.parties) for n in args.rows])
    results = []
    for rows, parties in runs:
        results.append(run_size(rows, parties, args.out, args.psi_protocol))
        print(json.dumps(results[-1]), flush=True)
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(results, indent=2))
    print_table(results)


if __name__ == "__main__":
    main()
