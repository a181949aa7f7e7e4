"""Census across a network: PSI and split training over Flight, through a link emulator.

For each link profile: census PSI, then census split training for each training setting given,
with every party in a process of its own talking Arrow Flight with mutual TLS on 127.0.0.1, and
the feature parties reaching the label party through a relay (benchmarks/link.py) with the
profile's one-way delay and bandwidth; `loopback` is no relay at all. Census features are
prepared once into `--workdir` as benchmarks/train.py prepares them (reused on later runs); PSI
here aligns the same validated IDs again, over the link.

First, every run trains the model centrally (graph mode, one process): its best validation AUC
per task − 0.001 is the target. Prints per profile its PSI seconds (the label party's, from its
channel being open to its rows aligned) and bytes, and per profile and setting the time to
target (wall and CPU seconds of every party until every task's validation AUC first reached the
target, each over central training's own), the training seconds (the epochs, validation
included, tracing not), epochs run, bytes per epoch, rows/s and test AUC per task, each beside
loopback's when loopback was run too, and the relay's own CPU seconds (it shares the machine's
cores with the parties). `--runs N` prints medians of N runs.

    python benchmarks/network.py --profiles loopback wan --epochs 2
    python benchmarks/network.py --wire float32 float16 --embed-ahead 0 1 \
        --batches-per-message 1 4 --json out.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SETTINGS = {"wire": "wire_dtype", "embed_ahead": "embed_ahead",  # option: training setting
            "batches_per_message": "batches_per_message", "local_updates": "local_updates"}
# The settings docs/reference.md recommends per link (wire, embed_ahead, batches_per_message,
# local_updates), by time to accuracy in this benchmark's runs (benchmarks/RESULTS.md): nothing
# embedded ahead (staler bottoms never reached the target), and local updates over `wan` (on
# shorter links a party never waits long enough to take a local step).
RECOMMENDED = {"lan": ("int8", 0, 2, False), "metro": ("int8", 0, 2, False),
               "wan": ("int8", 0, 2, True)}
TARGET_MARGIN = 0.001  # trained: every task's validation AUC within this of central's best


@dataclass(frozen=True)
class Timed:
    """A party job that also returns its seconds and what its channel sent (picklable)."""

    job: Callable

    def __call__(self, channel) -> tuple[float, Any, dict]:
        """Run the job on `channel`: (seconds, its outcome, what the channel sent)."""
        start = time.perf_counter()
        outcome = self.job(channel)
        return time.perf_counter() - start, outcome, channel.sent().as_dict()


def run_across(profile: str, jobs: dict[str, Callable], label: str, session: str,
               cores: dict | None = None) -> tuple[dict[str, Any], float | None]:
    """Run `jobs` (label party first) in a process each over Flight with mutual TLS.

    The other parties reach `label` across `profile`'s link (through a relay; on loopback
    directly). Returns the outcomes and the relay's CPU seconds (None on loopback).
    """
    from link import LOOPBACK, PROFILES, Relay

    from splitrec_core.channel.flight.loopback import loopback_seats
    from splitrec_core.channel.processes import run_in_processes

    with tempfile.TemporaryDirectory(prefix="splitrec-credentials-") as folder:
        seats = loopback_seats(list(jobs), Path(folder), session)
        if profile == LOOPBACK:
            return run_in_processes(jobs, seats, cores), None
        with Relay(seats[label].addresses[label], PROFILES[profile]) as relay:
            dialing = {p: seat if p == label else replace(seat, dial={label: relay.address})
                       for p, seat in seats.items()}
            outcomes = run_in_processes(jobs, dialing, cores)
            return outcomes, relay.stop().cpu_s


def psi_across(cfg, workdir: Path, profile: str) -> dict:
    """Census PSI on the validated IDs in `workdir`, across `profile`'s link."""
    from splitrec_core.psi import PsiFiles, feature_side, label_side
    from splitrec_core.psi.ecdh import Ecdh
    from splitrec_core.workspace import Workspace

    space, out, label = Workspace(workdir), workdir / "network" / profile / "psi", cfg.label_party
    files = {p: PsiFiles(space.validated(p) / "ids.parquet", out / p / "aligned.parquet")
             for p in cfg.order}
    jobs = {label: Timed(partial(label_side, files=files[label],
                                 protocol=Ecdh(cfg.psi, cfg.party(label).engine),
                                 followers=cfg.followers,
                                 split_file=space.validated(label) / "split.parquet"))}
    for party in cfg.followers:
        jobs[party] = Timed(partial(feature_side, files=files[party],
                                    protocol=Ecdh(cfg.psi, cfg.party(party).engine),
                                    leader=label))
    outcomes, relay_cpu_s = run_across(profile, jobs, label, "psi")
    sent = sum(counts["bytes"] for _, _, traffic in outcomes.values()
               for counts in traffic.values())
    return {"seconds": round(outcomes[label][0], 2), "mb": round(sent / 1e6, 1),
            "relay_cpu_s": relay_cpu_s}


def train_across(cfg, features: dict, out: Path, profile: str, target: dict[str, float]) -> dict:
    """Census split training on `features` across `profile`'s link.

    Its figures, test AUC and time to `target` (validation AUC per task).
    """
    from splitrec_core.channel import ChannelStats
    from splitrec_core.channel.processes import own_cores
    from splitrec_core.evaluate import evaluate
    from splitrec_core.training.local import label_result
    from splitrec_core.training.models import party_order
    from splitrec_core.training.party import PartyJob

    shutil.rmtree(out, ignore_errors=True)  # no checkpoints of an earlier run to resume from
    order, label = party_order(cfg, features), cfg.label_party
    jobs = {p: PartyJob(p, cfg, features[p], out / p) for p in order}
    started = time.time()
    outcomes, relay_cpu_s = run_across(profile, jobs, label, "train",
                                       own_cores(order) if cfg.training.own_cores else None)
    traffic = ChannelStats.merge(*(o.sent for o in outcomes.values()))
    result = label_result(cfg, features[label].test, outcomes, started, traffic, out / label)
    metrics = evaluate(result.predictions, features[label].test, cfg.task_names)
    sent = sum(counts["bytes"] for counts in result.channel.values())
    return {"seconds": round(result.train_s, 1), "startup_s": round(result.startup_s, 1),
            "epochs_run": result.epochs_run, "rows_per_s": round(result.rows_per_s),
            "mb_per_epoch": round(sent / result.epochs_run / 1e6, 1),
            "auc": {t: round(m["auc"], 4) for t, m in metrics.items()},
            "gauc": {t: round(m["gauc"], 4) for t, m in metrics.items() if "gauc" in m},
            "relay_cpu_s": relay_cpu_s, "to_target": to_accuracy(result, target)}


def train_central_reference(cfg, features: dict, out: Path) -> dict:
    """Central training (graph mode, one process): its figures and the target it sets.

    The target per task is its best validation AUC − `TARGET_MARGIN`: what a split training
    must reach on the same validation rows to count as trained.
    """
    from splitrec_core.evaluate import evaluate
    from splitrec_core.training.central import train_central

    shutil.rmtree(out, ignore_errors=True)
    central = cfg.model_copy(update={"training": cfg.training.model_copy(update={"xla": False})})
    result = train_central(central, features, out)
    best = json.loads(result.history.read_text())["val_auc"]
    target = {task: max(aucs) - TARGET_MARGIN for task, aucs in best.items()}
    metrics = evaluate(result.predictions, features[cfg.label_party].test, cfg.task_names)
    return {"seconds": round(result.train_s, 1), "epochs_run": result.epochs_run,
            "rows_per_s": round(result.rows_per_s),
            "auc": {t: round(m["auc"], 4) for t, m in metrics.items()},
            "gauc": {t: round(m["gauc"], 4) for t, m in metrics.items() if "gauc" in m},
            "target": {t: round(v, 4) for t, v in target.items()},
            "to_target": to_accuracy(result, target)}


def to_accuracy(result, target: dict[str, float]) -> dict[str, float | int | None]:
    """Wall and CPU seconds (every party) until the validation AUC of every task reached `target`.

    Wall seconds sum the epochs' (validation included) up to the first epoch at the target. CPU
    seconds are the run's CPU per second of training times those seconds: the run measures CPU
    over all its epochs, and every epoch does the same work. None if it never got there.
    """
    history = json.loads(result.history.read_text())
    aucs, seconds = history["val_auc"], history["seconds"]
    for epoch in range(len(seconds)):
        if all(aucs[task][epoch] >= level for task, level in target.items()):
            wall = sum(seconds[: epoch + 1])
            cpu_per_s = result.cpu_s_per_1k_rows * result.rows_per_s / 1000
            return {"epoch": epoch + 1, "wall_s": round(wall, 1),
                    "cpu_s": round(cpu_per_s * wall, 1)}
    return {"epoch": None, "wall_s": None, "cpu_s": None}


def with_training(cfg, changes: dict[str, Any]):
    """`cfg` with `changes` to its training settings, checked as the config checks them."""
    training = type(cfg.training).model_validate(cfg.training.model_dump() | changes)
    return cfg.model_copy(update={"training": training})


def setting_name(wire: str, ahead: int, per_message: int, local: bool) -> str:
    """How the tables name a training setting."""
    return f"{wire} ahead {ahead} x{per_message}{' local' if local else ''}"


def settings_to_try(cfg, args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """Per profile, every training setting to run on it: profile → setting name → config.

    Without `--recommended`: every combination of the settings asked for (the config's where
    none is), on every profile. With it: each profile its recommended setting (`RECOMMENDED`),
    and loopback the config's and every profile's, so each has a loopback twin. Each is checked
    now, as the config checks it: any value the config accepts is accepted.
    """
    asked = {option: getattr(args, option) or [getattr(cfg.training, field)]
             for option, field in SETTINGS.items()}
    asked["local_updates"] = [value in (True, "on") for value in asked["local_updates"]]
    combinations = list(itertools.product(*asked.values()))
    per_profile = {p: combinations for p in args.profiles}
    if args.recommended:
        per_profile = {p: [RECOMMENDED[p]] if p in RECOMMENDED else
                       [tuple(getattr(cfg.training, f) for f in SETTINGS.values()),
                        *(RECOMMENDED[q] for q in args.profiles if q in RECOMMENDED)]
                       for p in args.profiles}
    same_in_all = dict(pair.split("=", 1) for pair in args.set)
    return {profile: {setting_name(*values): with_training(
                cfg, dict(zip(SETTINGS.values(), values, strict=True)) | same_in_all)
            for values in dict.fromkeys(tried)}
            for profile, tried in per_profile.items()}


def medians(runs: list[dict]) -> dict:
    """The median of every figure over `runs` (results of the same shape), key by key."""
    first = runs[0]
    if isinstance(first, dict):
        return {key: medians([run[key] for run in runs]) for key in first}
    if any(run is None for run in runs):  # a run that never reached the target
        return None
    if isinstance(first, (int, float)) and not isinstance(first, bool):
        return statistics.median(runs)
    return first


def print_results(results: dict, tasks: list[str]) -> None:
    """Print PSI per profile, then training per profile and setting, each beside loopback's.

    Time to target: wall and CPU seconds (every party) until every task's validation AUC reached
    central training's best − `TARGET_MARGIN`, and each over central training's own.
    """
    central = results["central"]
    profiles = {p: row for p, row in results.items() if p != "central"}
    base = profiles.get("loopback")
    print(f"{'profile':<9} {'PSI s':>7} {'x loopback':>10} {'PSI MB':>7} {'relay CPU s':>11}")
    for profile, row in profiles.items():
        if row["psi"] is None:  # (--no-psi)
            continue
        ratio = f"{row['psi']['seconds'] / base['psi']['seconds']:.2f}" if base else "-"
        print(f"{profile:<9} {row['psi']['seconds']:>7} {ratio:>10} {row['psi']['mb']:>7} "
              f"{row['psi']['relay_cpu_s'] or '-':>11}")
    print(f"\n{'profile':<9} {'setting':<24} {'to target s':>11} {'x central':>9} "
          f"{'CPU s':>6} {'x central':>9} {'train s':>7} {'x loopback':>10} {'epochs':>6} "
          f"{'MB/epoch':>8} {'rows/s':>7} {'relay CPU s':>11} "
          + " ".join(f"{t + ' AUC':>18}" for t in tasks))
    reference = central["to_target"]
    print(f"{'-':<9} {'central (graph mode)':<24} {_figure(reference['wall_s']):>11} "
          f"{'1.00':>9} {_figure(reference['cpu_s']):>6} {'1.00':>9} {central['seconds']:>7} "
          f"{'-':>10} {central['epochs_run']:>6} {'-':>8} {central['rows_per_s']:>7} {'-':>11} "
          + " ".join(f"{central['auc'][t]:>18}" for t in tasks))
    for profile, row in profiles.items():
        for setting, trained in row["training"].items():
            twin = base and base["training"].get(setting)
            ratio = f"{trained['seconds'] / twin['seconds']:.2f}" if twin else "-"
            reached = trained["to_target"]
            print(f"{profile:<9} {setting:<24} {_figure(reached['wall_s']):>11} "
                  f"{_ratio(reached['wall_s'], reference['wall_s']):>9} "
                  f"{_figure(reached['cpu_s']):>6} "
                  f"{_ratio(reached['cpu_s'], reference['cpu_s']):>9} {trained['seconds']:>7} "
                  f"{ratio:>10} {trained['epochs_run']:>6} {trained['mb_per_epoch']:>8} "
                  f"{trained['rows_per_s']:>7} {trained['relay_cpu_s'] or '-':>11} "
                  + " ".join(f"{trained['auc'][t]:>18}" for t in tasks))
    print("target, validation AUC: " + ", ".join(f"{t} {v}" for t, v in
                                                   central["target"].items()))


def _figure(value: float | None) -> str:
    return "never" if value is None else f"{value}"


def _ratio(value: float | None, reference: float | None) -> str:
    return "-" if value is None or not reference else f"{value / reference:.2f}"


def run_profiles(cfg, args: argparse.Namespace, settings: dict, features: dict) -> dict:
    """One run: central training (the target), then per profile its PSI and each setting's.

    Returns "central" and each profile → its figures.
    """
    from train import in_fresh_process

    central = in_fresh_process(train_central_reference, cfg, features,
                               args.workdir / "network" / "central")
    print(f"central: {central}", file=sys.stderr, flush=True)
    results: dict[str, dict] = {"central": central}
    for profile in args.profiles:
        psi = None if args.no_psi else psi_across(cfg, args.workdir, profile)
        results[profile] = {"psi": psi, "training": {}}
        print(f"{profile}: PSI {psi}", file=sys.stderr, flush=True)
        for name, setting in settings[profile].items():
            out = args.workdir / "network" / profile / name.replace(" ", "-")
            trained = train_across(setting, features, out, profile, central["target"])
            results[profile]["training"][name] = trained
            print(f"{profile}, {name}: {trained}", file=sys.stderr, flush=True)
    return results


def parse_args() -> argparse.Namespace:
    """The command line."""
    from link import LOOPBACK, PROFILES

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=REPO / "data" / "census.toml")
    parser.add_argument("--workdir", type=Path, default=REPO / "runs" / "bench-train",
                        help="census features (as benchmarks/train.py prepares them, shared with "
                             "it) and, under network/, what this benchmark writes")
    parser.add_argument("--profiles", nargs="+", choices=[LOOPBACK, *PROFILES],
                        default=[LOOPBACK, *PROFILES])
    parser.add_argument("--epochs", type=int, help="at most this many (default: the config's)")
    parser.add_argument("--wire", nargs="+", help="wire_dtype values (default: the config's)")
    parser.add_argument("--embed-ahead", nargs="+", type=int)
    parser.add_argument("--batches-per-message", nargs="+", type=int)
    parser.add_argument("--local-updates", nargs="+", choices=["off", "on"],
                        help="local_updates (default: the config's)")
    parser.add_argument("--recommended", action="store_true",
                        help="each profile its recommended setting (RECOMMENDED), loopback the "
                             "config's and all of them; instead of --wire and the others")
    parser.add_argument("--runs", type=int, default=1,
                        help="run everything this many times; the tables show medians")
    parser.add_argument("--set", nargs="+", default=[], metavar="SETTING=VALUE",
                        help="other training settings, the same in every training")
    parser.add_argument("--no-psi", action="store_true", help="train only (no PSI across links)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    return parser.parse_args()


def main() -> None:
    """Run the benchmark as the command line asks."""
    args = parse_args()
    from train import cpu_model, prepare

    from splitrec_core.config import load_config

    cfg = load_config(args.config)
    if args.epochs:
        cfg = with_training(cfg, {"epochs": args.epochs})
    settings = settings_to_try(cfg, args)
    features = prepare(cfg, args.workdir)
    machine = f"{cpu_model()}, {os.cpu_count()} cores, {time.strftime('%Y-%m-%d')}"
    runs: list[dict[str, dict]] = []
    for run in range(args.runs):
        runs.append(run_profiles(cfg, args, settings, features))
        if args.json:  # after every run: a long benchmark cut short keeps what it measured
            args.json.write_text(json.dumps({"machine": machine, "config": cfg.name,
                                             "runs": runs, "profiles": medians(runs)},
                                            indent=2) + "\n")
        print(f"run {run + 1} of {args.runs} done", file=sys.stderr, flush=True)
    results = medians(runs)
    print(f"Census across a network ({cfg.name}: at most {cfg.training.epochs} epochs, batch "
          f"{cfg.training.batch_size}{', ' if args.set else ''}{', '.join(args.set)}); {machine}; "
          f"medians of {args.runs} run(s)")
    print_results(results, cfg.task_names)
    print("A process per party, Arrow Flight with mutual TLS on 127.0.0.1; the feature parties "
          "reach the label party through a relay with the profile's delay and bandwidth "
          "(loopback: no relay). setting: wire dtype, batches embedded ahead, batches per "
          "message, local updates")


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.path[:0] = [str(REPO), str(REPO / "benchmarks")]
    main()
