"""Training throughput: the split MMoE (local channel) against the same model trained centrally.

Prepares census features once into `--workdir` (validate, PSI, features; reused on later runs),
then trains both ways with the config's batch size and prints rows/s and test AUC per task.

    python benchmarks/train.py --epochs 1 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def prepare(cfg, workdir: Path) -> dict[str, dict[str, Path]]:
    """Census parties → validated → aligned → features, skipped where the files already exist."""
    from splitrec_core.align import align_local
    from splitrec_core.datasets.census import prepare_census
    from splitrec_core.features import build_features
    from splitrec_core.validate import validate_party
    from splitrec_core.workspace import Workspace

    space = Workspace(workdir)
    names = [p.name for p in cfg.parties]
    files = {n: {k: space.features(n) / f for k, f in
                 (("train", "train.parquet"), ("test", "test.parquet"), ("transform", "transform.json"))}
             for n in names}
    if all(p.exists() for f in files.values() for p in f.values()):
        return files
    if not all(cfg.party_file(p, workdir).exists() for p in cfg.parties):
        prepare_census(workdir / "data")
    validated = {p.name: validate_party(p, cfg.party_file(p, workdir), space.validated(p.name),
                                        cfg.tasks if p.name == cfg.label_party else None,
                                        cfg.psi.normalize)
                 for p in cfg.parties}
    alignment = align_local({n: v.ids for n, v in validated.items()},
                            validated[cfg.label_party].split, cfg.label_party,
                            {n: space.aligned(n) for n in names}, cfg.psi.domain)
    for party in cfg.parties:
        build_features(party, validated[party.name].table, alignment.files[party.name],
                       space.features(party.name))
    return files


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=REPO / "data" / "census.toml")
    parser.add_argument("--workdir", type=Path, default=REPO / "runs" / "bench-train")
    parser.add_argument("--epochs", type=int, help="at most this many epochs (default: the config's)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.path.insert(0, str(REPO))

    from splitrec_core.config import load_config
    from splitrec_core.evaluate import evaluate
    from splitrec_core.train import train_central, train_split_local
    from splitrec_core.workspace import Workspace

    cfg = load_config(args.config)
    if args.epochs:
        cfg = cfg.model_copy(update={"training": cfg.training.model_copy(update={"epochs": args.epochs})})
    features = prepare(cfg, args.workdir)
    space = Workspace(args.workdir)
    tasks = [t.name for t in cfg.tasks]
    label_test = features[cfg.label_party]["test"]
    results = {}
    for mode in ("split", "central"):
        start = time.perf_counter()
        if mode == "split":
            out = train_split_local(cfg, features, {p: space.trained(p) for p in features})
        else:
            out = train_central(cfg, features, space.central)
        metrics = evaluate(out.predictions, label_test, tasks)
        results[mode] = {"rows_per_s": round(out.rows_per_s), "startup_s": round(out.startup_s, 1),
                         "epochs_run": out.epochs_run, "best_epoch": out.best_epoch,
                         "seconds": round(time.perf_counter() - start, 1),
                         "auc": {t: round(m["auc"], 4) for t, m in metrics.items()}}
    ratio = results["split"]["rows_per_s"] / results["central"]["rows_per_s"]
    print(f"Training on {cfg.name}: at most {cfg.training.epochs} epochs, batch "
          f"{cfg.training.batch_size}, {os.cpu_count()} cores, {time.strftime('%Y-%m-%d')}")
    print(f"{'mode':<8} {'rows/s':>8} {'startup s':>9} {'epochs':>6} {'kept':>4} {'seconds':>8} "
          + " ".join(f"{t + ' AUC':>18}" for t in tasks))
    for mode, row in results.items():
        print(f"{mode:<8} {row['rows_per_s']:>8} {row['startup_s']:>9} {row['epochs_run']:>6} "
              f"{row['best_epoch']:>4} {row['seconds']:>8} "
              + " ".join(f"{row['auc'][t]:>18}" for t in tasks))
    print(f"split / central rows/s: {ratio:.2f}x")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
