"""MMoE against PLE: test AUC per task of split training, over several seeds, per dataset.

Each config's parties are validated, aligned and engineered once (`benchmarks/train.py`'s
`prepare`: census fetched, or the events federation drawn, if its files are missing); then
split training runs for each top (`[model] kind`) and seed (`[training] seed`: initial
weights, batch order, validation rows), parties on threads. Prints each run and, per top, the
median over seeds (GAUC too when the label party holds events).

    python benchmarks/models.py --configs data/census.toml data/events.toml --seeds 7 8 9
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def cpu_model() -> str:
    """The CPU's model name, as /proc/cpuinfo gives it."""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def main() -> None:
    """Run the benchmark as the command line asks."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", type=Path, nargs="+",
                        default=[REPO / "data" / "census.toml", REPO / "data" / "events.toml"])
    parser.add_argument("--kinds", nargs="+", default=["mmoe", "ple"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[7, 8, 9])
    parser.add_argument("--workdir", type=Path, default=REPO / "runs" / "bench-models",
                        help="each config's data and features go in a folder of its name here")
    parser.add_argument("--json", type=Path, help="also write the runs here")
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.path[:0] = [str(REPO), str(REPO / "benchmarks")]

    from train import prepare

    from splitrec_core.config import load_config
    from splitrec_core.evaluate import evaluate
    from splitrec_core.training.local import train_split_local
    from splitrec_core.workspace import Workspace

    runs = []
    for path in args.configs:
        base = load_config(path)
        workdir = args.workdir / base.name
        features = prepare(base, workdir)
        for kind in args.kinds:
            for seed in args.seeds:
                cfg = base.model_copy(update={
                    "model": base.model.model_copy(update={"kind": kind}),
                    "training": base.training.model_copy(update={"seed": seed})})
                started = time.perf_counter()
                result = train_split_local(cfg, features, {p: Workspace(workdir).trained(p)
                                                           for p in features})
                metrics = evaluate(result.predictions, features[cfg.label_party].test,
                                   cfg.task_names)
                runs.append({"config": base.name, "kind": kind, "seed": seed,
                             "epochs_run": result.epochs_run,
                             "seconds": round(time.perf_counter() - started, 1),
                             "auc": {t: m["auc"] for t, m in metrics.items()},
                             "gauc": {t: m.get("gauc") for t, m in metrics.items()}})
                print(f"  {runs[-1]}", file=sys.stderr, flush=True)

    print(f"MMoE against PLE, split training on threads; {cpu_model()}, {os.cpu_count()} "
          f"cores, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print("| config | top | seeds | test AUC per task, median (each seed) | GAUC median |")
    print("|---|---|---|---|---|")
    for name in dict.fromkeys(r["config"] for r in runs):
        for kind in args.kinds:
            mine = [r for r in runs if r["config"] == name and r["kind"] == kind]
            tasks = list(mine[0]["auc"])
            each = {t: ", ".join(f"{r['auc'][t]:.4f}" for r in mine) for t in tasks}
            aucs = "; ".join(f"{t} {statistics.median(r['auc'][t] for r in mine):.4f} ({each[t]})"
                             for t in tasks)
            gaucs = "; ".join(f"{t} {statistics.median(r['gauc'][t] for r in mine):.4f}"
                              for t in tasks if mine[0]["gauc"][t] is not None) or "n/a"
            print(f"| {name} | {kind} | {len(mine)} | {aucs} | {gaucs} |")
    if args.json:
        args.json.write_text(json.dumps(runs, indent=1))


if __name__ == "__main__":
    main()
