"""Batch scoring on census: the test rows scored with the registered version, each party at home.

Prints, apart: checking the new rows, PSI on their IDs, and scoring after alignment (each party's
transform and bottom, the embeddings crossing a local channel, the label party's top), as the
median of `--repeat` runs; and the largest difference from the training pipeline's own test
predictions. Run the census pipeline first (`make demo`): it registers the version scored here.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    """Run the benchmark as the command line asks."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=REPO / "data" / "census.toml")
    parser.add_argument("--workdir", type=Path, default=REPO / "runs" / "census")
    parser.add_argument("--model", default="current", help="current, candidate or a version ID")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.path[:0] = [str(REPO), str(REPO / "benchmarks")]

    import pyarrow.parquet as pq
    from train import cpu_model

    from splitrec_core.config import load_config
    from splitrec_core.psi import PsiFiles, align_local
    from splitrec_core.registry import SharedModel
    from splitrec_core.scoring import (
        score_local,
        trained_predictions,
        unlabelled_test_rows,
        validate_new_rows,
    )
    from splitrec_core.workspace import Workspace

    cfg = load_config(args.config)
    label = cfg.label_party
    folders = SharedModel.of(cfg, args.workdir).parts(args.model)
    version = folders[label].name
    space = Workspace(args.workdir / "bench-score")
    inputs = unlabelled_test_rows(cfg, args.workdir, space.root / "inputs")

    started = time.perf_counter()
    validated = {p: validate_new_rows(p, folders[p], inputs[p], space.scoring(p) / "validated",
                                      cfg.psi.normalize) for p in folders}
    checked = time.perf_counter()
    files = {p: PsiFiles(v.ids, space.scoring(p) / "aligned.parquet") for p, v in validated.items()}
    alignment = align_local(files, cfg.psi, label_party=label, split_file=None)
    aligned = time.perf_counter()
    runs = [score_local(folders, validated, alignment.files, label,
                        space.scores(label) / f"{version}.parquet") for _ in range(args.repeat)]

    rows = runs[0].rows
    scored = pq.read_table(runs[0].predictions).to_pandas()
    id_column = next(p.id_column for p in cfg.parties if p.name == label)
    scored = scored.set_index(id_column)
    expected = trained_predictions(args.workdir, label, id_column)
    difference = (scored.loc[expected.index] - expected).abs().to_numpy().max()
    rates = [run.rows / run.seconds for run in runs]
    print(f"Scoring census with version {version}: {cpu_model()}, {os.cpu_count()} cores, "
          f"{time.strftime('%Y-%m-%d %H:%M')}")
    print(f"{'step':<60} {'seconds':>8} {'rows/s':>10}")
    sizes = {p: v.rows for p, v in validated.items()}
    print(f"{'check new rows (' + ', '.join(f'{p} {n:,}' for p, n in sizes.items()) + ')':<60} "
          f"{checked - started:>8.2f}")
    print(f"{'PSI on the new IDs (' + f'{alignment.intersection:,} shared)':<60} "
          f"{aligned - checked:>8.2f}")
    for i, run in enumerate(runs, 1):
        print(f"{f'scoring after alignment, run {i}':<60} {run.seconds:>8.2f} "
              f"{rows / run.seconds:>10,.0f}")
    print(f"{'scoring after alignment, median':<60} {'':>8} {statistics.median(rates):>10,.0f}")
    print(f"rows scored {rows:,}; max |scored - pipeline's test prediction| {difference:.2e}; "
          f"bytes crossing per scoring run {sum(v['bytes'] for v in runs[0].channel.values()):,}")


if __name__ == "__main__":
    main()
