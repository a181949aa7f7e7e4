"""Privacy trade-off: Gaussian noise on returned gradients → test AUC and label leakage per task.

Trains the split MMoE on census (features prepared once, as in `benchmarks/train.py`) at each
noise level and prints, per task, the test AUC and the leakage audit (norm and cosine attack AUC
of a feature party on the gradients of the last epoch run; 0.5 = nothing leaks). With events at
the label party (`--config data/events.toml`) also the activity attack (gradient norm as a guess
of more events than the median person).

    python benchmarks/privacy.py --noise 0 1e-4 1e-3 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    """Run the benchmark as the command line asks."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=REPO / "data" / "census.toml")
    parser.add_argument("--workdir", type=Path, default=REPO / "runs" / "bench-train")
    parser.add_argument("--noise", type=float, nargs="+",
                        default=[0.0, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2])
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.path[:0] = [str(REPO), str(REPO / "benchmarks")]

    from train import prepare

    from splitrec_core.config import load_config
    from splitrec_core.evaluate import evaluate
    from splitrec_core.training.local import train_split_local
    from splitrec_core.workspace import Workspace

    base = load_config(args.config)
    features = prepare(base, args.workdir)
    space = Workspace(args.workdir)
    tasks = base.task_names
    rows = []
    for noise in args.noise:
        cfg = base.model_copy(update={"privacy": base.privacy.model_copy(
            update={"gradient_noise": noise})})
        result = train_split_local(cfg, features, {p: space.trained(p) for p in features})
        metrics = evaluate(result.predictions, features[cfg.label_party].test, tasks)
        rows.append({"gradient_noise": noise, "epochs_run": result.epochs_run,
                     "best_epoch": result.best_epoch,
                     "auc": {t: round(m["auc"], 4) for t, m in metrics.items()},
                     "leakage": result.leakage, "activity_auc": result.activity_auc})
        print(f"  noise {noise:g}: {rows[-1]}", file=sys.stderr, flush=True)

    print(f"Privacy trade-off on {base.name}: at most {base.training.epochs} epochs (early "
          f"stopping), gradient noise std on dL/dh returned to feature parties; "
          f"{os.cpu_count()} cores, {time.strftime('%Y-%m-%d')}")
    header = " ".join(f"{t[:14] + ' ' + k:>22}" for t in tasks for k in ("AUC", "norm", "cosine"))
    events = rows[0]["activity_auc"] is not None
    print(f"{'noise':>8} {'epochs':>6} {header}" + (f" {'activity':>9}" if events else ""))
    for row in rows:
        cells = " ".join(
            f"{v:>22.4f}" for t in tasks for v in (row["auc"][t], row["leakage"][t]["norm_auc"],
                                                   row["leakage"][t]["cosine_auc"]))
        activity = f" {row['activity_auc']:>9.4f}" if events else ""
        print(f"{row['gradient_noise']:>8g} {row['epochs_run']:>6} {cells}{activity}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
