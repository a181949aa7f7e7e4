"""`splitrec sweep`: the split MMoE over a grid of expert counts, expert sizes and task weights."""

from __future__ import annotations

from pathlib import Path

from prefect import flow

from flows.pipeline import prepare_parties
from splitrec_core.config import load_config
from tasks.sweep import evaluate_variant, write_sweep
from tasks.train import train_split


@flow(name="sweep", log_prints=True)
def sweep(config_path: str = "data/census.toml", workdir: str = "runs/census") -> str:
    """Train every grid point of the config's `[sweep]` on the same features; return the table."""
    cfg = load_config(Path(config_path))
    grid, root = cfg.variants(config_path), Path(workdir).resolve()

    # 1-3. Validate, align, engineer features (cache hits after a pipeline run)
    _, features = prepare_parties(cfg, root)

    # 4. Train and score each grid point in a folder of its own
    rows = []
    for i, (point, variant) in enumerate(grid):
        trained = train_split(variant, features, root / "sweep" / f"{i:02d}")
        auc = evaluate_variant(cfg, trained.predictions, features[cfg.label_party].test)
        rows.append(point | {"auc": auc})

    # 5. One comparison table
    return str(write_sweep(cfg, rows, root))
