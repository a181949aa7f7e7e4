"""Training throughput: the split MMoE against the same model trained centrally.

Prepares census features once into `--workdir` (validate, PSI, features; reused on later runs),
then trains split (sequential, as the config has it, and pipelined: the feature parties one batch
ahead), with a process per party and on threads of one process, graph-mode and XLA-compiled, and
centrally, graph-mode and XLA-compiled, with the config's batch size and plan. Each training runs
in a fresh process, so each gets the op-thread settings its mode asks for (`set_op_threads`).
Prints rows/s, CPU seconds per 1,000 rows, start-up, epochs and test AUC per task, each split
mode's rows/s against the fastest central training and against central training compiled the
same way, each split mode's CPU per row against both central trainings, and where a batch's time
goes.

The CPU ratio is the CPU seconds every party's process spent on the epochs (all their threads,
summed over the processes) per row fitted, over what central training's one process spent per
row on the same epochs: the price of splitting the model in work, not in waiting. Rows/s on one
host depend on its cores (parties in processes of their own share them), and so do the rows/s
ratios; the CPU seconds a row costs do not, so the ratio holds on any machine.

    python benchmarks/train.py --epochs 1 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MODES = {  # name: the training settings it overrides; central* train in one place
    "split": {"parties_in": "processes"},
    "split_threads": {"parties_in": "threads"},
    "split_threads_xla": {"parties_in": "threads", "xla": True},
    "split_ahead": {"parties_in": "processes", "embed_ahead": 1, "xla": True},
    "split_ahead_threads": {"parties_in": "threads", "embed_ahead": 1, "xla": True},
    "split_flight": {"parties_in": "flight"},
    "split_ahead_flight": {"parties_in": "flight", "embed_ahead": 1, "xla": True},
    "split_ahead_flight_f16": {"parties_in": "flight", "embed_ahead": 1, "xla": True,
                               "wire_dtype": "float16"},
    "split_ahead_flight_i8": {"parties_in": "flight", "embed_ahead": 1, "xla": True,
                              "wire_dtype": "int8"},
    "split_ahead2_flight": {"parties_in": "flight", "embed_ahead": 2, "xla": True},
    "split_ahead2_flight_f16": {"parties_in": "flight", "embed_ahead": 2, "xla": True,
                                "wire_dtype": "float16"},
    "split_ahead_flight_cores": {"parties_in": "flight", "embed_ahead": 1, "xla": True,
                                 "own_cores": True},
    "split_ahead_flight_f16_cores": {"parties_in": "flight", "embed_ahead": 1, "xla": True,
                                     "wire_dtype": "float16", "own_cores": True},
    "split_ahead_flight_b2": {"parties_in": "flight", "embed_ahead": 1, "xla": True,
                              "batches_per_message": 2},
    "split_ahead_flight_b4": {"parties_in": "flight", "embed_ahead": 1, "xla": True,
                              "batches_per_message": 4},
    "split_ahead_flight_b4_cores": {"parties_in": "flight", "embed_ahead": 1, "xla": True,
                                    "batches_per_message": 4, "own_cores": True},
    "split_ahead_cores": {"parties_in": "processes", "embed_ahead": 1, "xla": True,
                          "own_cores": True},
    "central": {},
    "central_xla": {"xla": True},
}
CENTRAL = ("central", "central_xla")


def cpu_model() -> str:
    """The CPU's model name, as /proc/cpuinfo gives it (figures depend on it)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def in_fresh_process(function, *args):
    """`function(*args)` in a new Python process.

    TensorFlow fixes its thread settings when it starts, and each mode chooses its own.
    """
    with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
        return pool.submit(function, *args).result()


def prepare(cfg, workdir: Path) -> dict:  # party -> PartyFeatures
    """The config's parties → validated → aligned → features, skipped where the files exist.

    Its data is made if missing: census fetched, or the events federation drawn.
    """
    from splitrec_core.datasets.census import prepare_census
    from splitrec_core.datasets.events import write_events
    from splitrec_core.features import PartyFeatures, build_features
    from splitrec_core.psi import PsiFiles, align_local
    from splitrec_core.validate import validate_party
    from splitrec_core.workspace import Workspace

    space = Workspace(workdir)
    names = [p.name for p in cfg.parties]
    files = {n: PartyFeatures(*(space.features(n) / f for f in
                                ("train.parquet", "test.parquet", "transform.json")))
             for n in names}
    if all(p.exists() for f in files.values() for p in f.paths):
        return files
    if not all(cfg.party_file(p, workdir).exists() for p in cfg.parties):
        make_data = write_events if cfg.label.events else prepare_census
        make_data(workdir / "data")
    validated = {p.name: validate_party(p, cfg.party_file(p, workdir), space.validated(p.name),
                                        cfg.tasks if p.name == cfg.label_party else None,
                                        cfg.psi.normalize)
                 for p in cfg.parties}
    alignment = align_local({n: PsiFiles(v.ids, space.aligned(n)) for n, v in validated.items()},
                            cfg.psi, label_party=cfg.label_party,
                            split_file=validated[cfg.label_party].split)
    return {party.name: build_features(party, validated[party.name].table,
                                       alignment.files[party.name], space.features(party.name),
                                       events=validated[party.name].events)
            for party in cfg.parties}


def per_batch_ms(cfg, features: dict, xla: bool, side_by_side: bool = False,
                 repeat: int = 200) -> dict[str, float]:
    """Milliseconds per batch of each step timed alone, on the op threads training gives it.

    The op threads are those of this compile mode (`set_op_threads`; `side_by_side`: as
    pipelined training, one thread per op). The steps are the label party's gradients and its Adam
    step (with XLA also both in one call, as pipelined training takes them), each feature party's
    bottom step (backward, then the next forward) and the central step; graph mode also times one
    embedding's trip through the local channel.
    """
    import numpy as np

    from splitrec_core.channel import Kind, LocalHub, array_table, table_array
    from splitrec_core.training.central import CentralRun
    from splitrec_core.training.models import task_weighting
    from splitrec_core.training.steps import (
        BottomTrainer,
        CentralTrainer,
        LabelTrainer,
        StepSettings,
        set_op_threads,
    )

    def ms(call) -> float:
        call()
        start = time.perf_counter()
        for _ in range(repeat):
            call()
        return 1000 * (time.perf_counter() - start) / repeat

    set_op_threads(xla, side_by_side)
    run, pooled = CentralRun.load(cfg, features), CentralRun.load(cfg, features)
    rows = run.plan.fit[: cfg.training.batch_size]
    x = {p: (run.train[p].cats[rows], run.train[p].nums[rows]) for p in run.bottoms}
    labels = np.stack([run.train[cfg.label_party].labels[t.name][rows] for t in cfg.tasks], 1)
    labels = labels.astype(np.float32)
    label, *followers = run.bottoms
    compiled = (", XLA, 1 thread" if side_by_side else ", XLA") if xla else ""
    steps = StepSettings(1e-3, xla=xla)
    bottoms = {p: BottomTrainer(run.bottoms[p], steps) for p in followers}
    labeller = LabelTrainer(run.bottoms[label], run.top, task_weighting(cfg), steps)
    central = CentralTrainer(pooled.bottoms, pooled.top, task_weighting(cfg), 1e-3, xla)
    for trainer in (labeller, *bottoms.values(), central):
        trainer.trace([len(rows)])
    hs = [bottoms[p].forward(*x[p]) for p in followers]
    own_grads = labeller.gradients(*x[label], hs, labels)[2]
    costs = {f"{label} gradients (own bottom + top){compiled}": ms(
        lambda: labeller.gradients(*x[label], hs, labels))}
    costs[f"{label} step (Adam){compiled}"] = ms(lambda: labeller.apply(own_grads))
    if xla:  # pipelined training takes both in one call
        costs[f"{label} gradients + Adam, one call{compiled}"] = ms(
            lambda: labeller.gradients_and_apply(*x[label], hs, labels))
    for (party, trainer), h in zip(bottoms.items(), hs, strict=True):
        costs[f"{party} bottom step{compiled}"] = ms(
            lambda t=trainer, p=party, g=h: t.backward_then_forward(*x[p], g, *x[p]))
    central_x = [m for p in run.bottoms for m in x[p]]
    costs[f"central step{compiled}"] = ms(lambda: central.step(central_x, labels))
    if not xla:
        hub, h = LocalHub(), hs[0].numpy()
        a, b = hub.channel("a"), hub.channel("b")
        costs["channel hand-off"] = ms(lambda: (a.send(Kind.EMBEDDING, "b", array_table(h)),
                                                table_array(b.recv(Kind.EMBEDDING, "a"))))
    return costs


def train_mode(cfg, features: dict, workdir: Path, mode: str) -> dict:
    """Train in `mode` (see `MODES`) and score the test rows."""
    from splitrec_core.evaluate import evaluate
    from splitrec_core.training.central import train_central
    from splitrec_core.training.local import train_split_local
    from splitrec_core.workspace import Workspace

    start, space = time.perf_counter(), Workspace(workdir)
    cfg = cfg.model_copy(update={"training": cfg.training.model_copy(update=MODES[mode])})
    if mode in CENTRAL:
        out = train_central(cfg, features, space.central)
    else:
        out = train_split_local(cfg, features, {p: space.trained(p) for p in features})
    metrics = evaluate(out.predictions, features[cfg.label_party].test, cfg.task_names)
    sent = sum(counts["bytes"] for counts in out.channel.values())
    return {"rows_per_s": round(out.rows_per_s),
            "cpu_s_per_1k_rows": round(out.cpu_s_per_1k_rows, 6),
            "startup_s": round(out.startup_s, 1),
            "epochs_run": out.epochs_run, "best_epoch": out.best_epoch,
            "mb_per_epoch": round(sent / out.epochs_run / 1e6, 1),
            "seconds": round(time.perf_counter() - start, 1),
            "auc": {t: round(m["auc"], 4) for t, m in metrics.items()}}


def print_costs(cfg, costs: dict[str, float], results: dict[str, dict]) -> None:
    """Print where a batch's time goes.

    That is each step timed alone, each mode as measured in training, and the critical paths
    the steps add up to.
    """
    label, batch = cfg.label_party, cfg.training.batch_size
    slowest = max((c, p) for p, c in ((p.name, costs[f"{p.name} bottom step"])
                                      for p in cfg.feature_parties))
    gradients = costs[f"{label} gradients (own bottom + top)"]
    critical = gradients + slowest[0] + 2 * costs["channel hand-off"]
    print(f"\nWhere a batch's time goes (ms per batch of {batch}; steps timed alone, op threads "
          "as in training):")
    for name, value in costs.items():
        print(f"  {name:<54} {value:6.2f}")
    for mode in results:
        per_batch = 1000 * batch / results[mode]["rows_per_s"]
        print(f"  {mode + ', measured in training':<54} {per_batch:6.2f}")
    print(f"  sequential critical path: {label} gradients + {slowest[1]} bottom step + 2 "
          f"hand-offs = {critical:.2f} ({label}'s Adam step runs beside the feature parties' "
          "bottom steps)")
    pipelined = costs[f"{label} gradients + Adam, one call, XLA, 1 thread"]
    print(f"  pipelined critical path: {label} gradients + Adam, one call, XLA, 1 thread = "
          f"{pipelined:.2f} (the feature parties' steps, "
          f"{sum(costs[f'{p.name} bottom step, XLA, 1 thread'] for p in cfg.feature_parties):.2f} "
          "together, run beside them)")


def print_table(results: dict[str, dict], tasks: list[str]) -> None:
    """Print a line per mode: speed, CPU per row, start-up, epochs, traffic and test AUC."""
    print(f"{'mode':<23} {'rows/s':>8} {'CPU s/1k rows':>13} {'startup s':>9} {'epochs':>6} "
          f"{'kept':>4} {'seconds':>8} {'MB/epoch':>8} "
          + " ".join(f"{t + ' AUC':>18}" for t in tasks))
    for mode, row in results.items():
        print(f"{mode:<23} {row['rows_per_s']:>8} {row['cpu_s_per_1k_rows']:>13.4f} "
              f"{row['startup_s']:>9} {row['epochs_run']:>6} {row['best_epoch']:>4} "
              f"{row['seconds']:>8} {row['mb_per_epoch']:>8} "
              + " ".join(f"{row['auc'][t]:>18}" for t in tasks))


def print_ratios(results: dict[str, dict]) -> None:
    """Print each split mode's rows/s and CPU per row against central training's.

    The CPU ratios (against both central trainings) also go into the mode's results, as
    `cpu_ratio`.
    """
    fastest = max(CENTRAL, key=lambda m: results[m]["rows_per_s"])
    for mode in (m for m in results if m not in CENTRAL):
        same = "central_xla" if MODES[mode].get("xla") else "central"
        rate, cpu = results[mode]["rows_per_s"], results[mode]["cpu_s_per_1k_rows"]
        ratios = {c: round(cpu / results[c]["cpu_s_per_1k_rows"], 3) for c in CENTRAL}
        results[mode]["cpu_ratio"] = ratios
        print(f"{mode} rows/s: {rate / results[fastest]['rows_per_s']:.2f}x the fastest central "
              f"({fastest}), {rate / results[same]['rows_per_s']:.2f}x {same}; CPU per row: "
              + ", ".join(f"{r:.2f}x {c}" for c, r in ratios.items()))


def main() -> None:
    """Run the benchmark as the command line asks."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=REPO / "data" / "census.toml")
    parser.add_argument("--workdir", type=Path, default=REPO / "runs" / "bench-train")
    parser.add_argument("--epochs", type=int,
                        help="at most this many epochs (default: the config's)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES),
                        help="which trainings to run (both central ones always run: they are "
                             "the yardsticks)")
    args = parser.parse_args()

    from splitrec_core.config import load_config

    cfg = load_config(args.config)
    if args.epochs:
        training = cfg.training.model_copy(update={"epochs": args.epochs})
        cfg = cfg.model_copy(update={"training": training})
    features = prepare(cfg, args.workdir)
    tasks = cfg.task_names
    results = {mode: in_fresh_process(train_mode, cfg, features, args.workdir, mode)
               for mode in MODES if mode in args.modes or mode in CENTRAL}
    print(f"Training on {cfg.name}: at most {cfg.training.epochs} epochs, batch "
          f"{cfg.training.batch_size}, {cpu_model()}, {os.cpu_count()} cores, "
          f"{time.strftime('%Y-%m-%d')}")
    print_table(results, tasks)
    print_ratios(results)
    print("split: a process per party (pipes); _threads: all parties on threads of one process; "
          "_flight: a process per party over Arrow Flight with mutual TLS on 127.0.0.1; _xla: "
          "steps compiled by XLA; _ahead(2): feature parties one (two) batches ahead "
          "(embed_ahead), XLA, one thread per op; _f16: float16 on the wire; _i8: int8 with a "
          "float32 scale per row on the wire; _b2, _b4: batches "
          "per message; _cores: the label party on its own core (own_cores); CPU s/1k rows: "
          "CPU seconds of all the run's processes per 1,000 rows fitted; MB/epoch: all "
          "messages of all kinds")

    costs = {k: v for xla, side_by_side in ((False, False), (True, False), (True, True))
             for k, v in in_fresh_process(per_batch_ms, cfg, features, xla, side_by_side).items()}
    print_costs(cfg, costs, results)
    results["per_batch_ms"] = {k: round(v, 3) for k, v in costs.items()}
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.path.insert(0, str(REPO))
    main()
