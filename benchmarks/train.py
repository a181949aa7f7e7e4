"""Training throughput: the split MMoE against the same model trained centrally.

Prepares census features once into `--workdir` (validate, PSI, features; reused on later runs),
then trains split (sequential, as the config has it, and pipelined: the feature parties one batch
ahead with XLA-compiled steps), each with a process per party and on threads of one process, and
centrally, with the config's batch size and plan; prints rows/s, start-up, epochs and test AUC per
task, and where a batch's time goes.

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
MODES = {  # name: the training settings it overrides (central: trained in one place)
    "split": {"parties_in": "processes"},
    "split_threads": {"parties_in": "threads"},
    "split_ahead": {"parties_in": "processes", "embed_ahead": 1, "xla": True},
    "split_ahead_threads": {"parties_in": "threads", "embed_ahead": 1, "xla": True},
    "central": None,
}


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


def per_batch_ms(cfg, features: dict[str, dict[str, Path]], repeat: int = 200) -> dict[str, float]:
    """Milliseconds per batch of each step timed alone, one thread per op: the central step, the
    label party's gradients and its Adam step, each feature party's bottom step (backward, then
    the next forward), these party steps again compiled by XLA, and one embedding's trip through
    the local channel."""
    import keras
    import numpy as np
    import tensorflow as tf

    from splitrec_core.channel import Kind, LocalHub, array_table, table_array
    from splitrec_core.model import composed_model, task_losses
    from splitrec_core.train import _Run, task_weighting
    from splitrec_core.trainers import BottomTrainer, LabelTrainer, one_thread_per_op

    def ms(call) -> float:
        call()
        start = time.perf_counter()
        for _ in range(repeat):
            call()
        return 1000 * (time.perf_counter() - start) / repeat

    one_thread_per_op()
    run = _Run.load(cfg, features)
    rows = run.plan.fit[: cfg.training.batch_size]
    x = {p: (run.train[p].cats[rows], run.train[p].nums[rows]) for p in run.bottoms}
    labels = np.stack([run.train[cfg.label_party].labels[t.name][rows] for t in cfg.tasks], 1)
    labels = labels.astype(np.float32)
    label, *followers = run.bottoms
    costs = {}
    for xla, compiled in ((False, ""), (True, ", XLA")):
        bottoms = {p: BottomTrainer(run.bottoms[p], 1e-3, xla=xla) for p in followers}
        labeller = LabelTrainer(run.bottoms[label], run.top, task_weighting(cfg), 1e-3, xla=xla)
        for trainer in (labeller, *bottoms.values()):
            trainer.trace([len(rows)])
        hs = [bottoms[p].forward(*x[p]) for p in followers]
        own_grads = labeller.gradients(*x[label], hs, labels)[2]
        costs[f"{label} gradients (own bottom + top){compiled}"] = ms(
            lambda: labeller.gradients(*x[label], hs, labels))
        costs[f"{label} step (Adam){compiled}"] = ms(lambda: labeller.apply(own_grads))
        for (party, trainer), h in zip(bottoms.items(), hs, strict=True):
            costs[f"{party} bottom step{compiled}"] = ms(
                lambda t=trainer, p=party, g=h: t.backward_then_forward(*x[p], g, *x[p]))
    hub, h = LocalHub(), hs[0].numpy()
    a, b = hub.channel("a"), hub.channel("b")
    costs["channel hand-off"] = ms(lambda: (a.send(Kind.EMBEDDING, "b", array_table(h)),
                                            table_array(b.recv(Kind.EMBEDDING, "a"))))

    pooled = _Run.load(cfg, features)
    model = composed_model(pooled.bottoms, pooled.top)
    optimizer = keras.optimizers.Adam(1e-3)
    weighting = task_weighting(cfg)
    central_x = [m for p in run.bottoms for m in x[p]]

    @tf.function
    def central_step(inputs, y):
        with tf.GradientTape() as tape:
            loss = weighting(task_losses(y, model(inputs, training=True)))
        optimizer.apply(tape.gradient(loss, model.trainable_variables), model.trainable_variables)

    costs["central step"] = ms(lambda: central_step(central_x, labels))
    return costs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=REPO / "data" / "census.toml")
    parser.add_argument("--workdir", type=Path, default=REPO / "runs" / "bench-train")
    parser.add_argument("--epochs", type=int, help="at most this many epochs (default: the config's)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES),
                        help="which trainings to run (central is always run: it is the yardstick)")
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
    for mode in [m for m in MODES if m in args.modes or m == "central"]:
        start = time.perf_counter()
        if MODES[mode] is not None:
            placed = cfg.model_copy(update={"training": cfg.training.model_copy(update=MODES[mode])})
            out = train_split_local(placed, features, {p: space.trained(p) for p in features})
        else:
            out = train_central(cfg, features, space.central)
        metrics = evaluate(out.predictions, label_test, tasks)
        results[mode] = {"rows_per_s": round(out.rows_per_s), "startup_s": round(out.startup_s, 1),
                         "epochs_run": out.epochs_run, "best_epoch": out.best_epoch,
                         "seconds": round(time.perf_counter() - start, 1),
                         "auc": {t: round(m["auc"], 4) for t, m in metrics.items()}}
    print(f"Training on {cfg.name}: at most {cfg.training.epochs} epochs, batch "
          f"{cfg.training.batch_size}, {os.cpu_count()} cores, {time.strftime('%Y-%m-%d')}")
    print(f"{'mode':<19} {'rows/s':>8} {'startup s':>9} {'epochs':>6} {'kept':>4} {'seconds':>8} "
          + " ".join(f"{t + ' AUC':>18}" for t in tasks))
    for mode, row in results.items():
        print(f"{mode:<19} {row['rows_per_s']:>8} {row['startup_s']:>9} {row['epochs_run']:>6} "
              f"{row['best_epoch']:>4} {row['seconds']:>8} "
              + " ".join(f"{row['auc'][t]:>18}" for t in tasks))
    split_modes = [m for m in results if m.startswith("split")]
    for mode in split_modes:
        ratio = results[mode]["rows_per_s"] / results["central"]["rows_per_s"]
        print(f"{mode} / central rows/s: {ratio:.2f}x")
    print("split: a process per party; _threads: all parties on threads of one process; "
          "_ahead: feature parties one batch ahead (embed_ahead = 1), steps compiled by XLA")

    costs = per_batch_ms(cfg, features)
    label, batch = cfg.label_party, cfg.training.batch_size
    slowest = max((c, p) for p, c in ((p.name, costs[f"{p.name} bottom step"]) for p in cfg.feature_parties))
    gradients = costs[f"{label} gradients (own bottom + top)"]
    critical = gradients + slowest[0] + 2 * costs["channel hand-off"]
    print(f"\nWhere a batch's time goes (ms per batch of {batch}; steps timed alone, one thread per op):")
    for name, value in costs.items():
        print(f"  {name:<46} {value:6.2f}")
    for mode in split_modes:
        print(f"  {mode + ', measured in training':<46} {1000 * batch / results[mode]['rows_per_s']:6.2f}")
    print(f"  {'central, measured in training':<46} {1000 * batch / results['central']['rows_per_s']:6.2f}")
    print(f"  sequential critical path: {label} gradients + {slowest[1]} bottom step + 2 hand-offs = "
          f"{critical:.2f} ({label}'s Adam step runs beside the feature parties' bottom steps)")
    pipelined = costs[f"{label} gradients (own bottom + top), XLA"] + costs[f"{label} step (Adam), XLA"]
    print(f"  pipelined critical path: {label} gradients + Adam step, XLA = {pipelined:.2f} (the feature "
          f"parties' steps, {sum(costs[f'{p.name} bottom step, XLA'] for p in cfg.feature_parties):.2f} "
          "together, run beside them)")
    results["per_batch_ms"] = {k: round(v, 3) for k, v in costs.items()}
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
