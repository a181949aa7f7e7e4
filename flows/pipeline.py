"""The training pipeline as one Prefect flow.

Its steps: validate → align → features → train → evaluate → export → register (and promote) →
report.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow

from splitrec_core.config import Config, load_config, with_changes
from splitrec_core.features import PartyFeatures
from splitrec_core.psi import Alignment
from tasks.align import align_ids
from tasks.evaluate import evaluate_run
from tasks.export import export_model
from tasks.features import build_party_features
from tasks.notify import report_failure
from tasks.registry import promote_if_better, register_version
from tasks.report import draw_plots, publish_report
from tasks.train import train_centralized, train_label_only, train_split
from tasks.validate import validate_input


def prepare_parties(cfg: Config, root: Path) -> tuple[Alignment, dict[str, PartyFeatures]]:
    """Steps 1-3, shared by every flow: validate, align, engineer.

    Returns the alignment and every party's features.
    """
    label = cfg.label_party

    # 1. Every party checks its own input, concurrently
    checks = {p.name: validate_input.submit(cfg, p.name, cfg.party_file(p, root), root)
              for p in cfg.parties}
    validated = {name: future.result() for name, future in checks.items()}

    # 2. All parties align their IDs with PSI; the label party shares the train/test flag
    alignment = align_ids(cfg, {n: v.ids for n, v in validated.items()}, validated[label].split,
                          root)

    # 3. Every party fits its features on its own training rows, concurrently
    builds = {n: build_party_features.submit(cfg, n, v.table, alignment.files[n], root, v.events)
              for n, v in validated.items()}
    return alignment, {name: future.result() for name, future in builds.items()}


@flow(name="train_pipeline", log_prints=True, on_failure=[report_failure])
def train_pipeline(config_path: str = "data/census.toml", workdir: str = "runs/census",
                   centralized: bool = False, epochs: int | None = None,
                   gradient_noise: float | None = None,
                   promotion_margin: float | None = None) -> str:
    """Align, engineer, train, evaluate, export and register; return `report/metrics.json`'s path.

    `epochs`, `gradient_noise` and `promotion_margin`, when given, replace the config's
    (`training.epochs`, `privacy.gradient_noise`, `registry.promotion_margin`): a deployment's run
    can change them in the UI.
    """
    cfg = with_changes(load_config(Path(config_path)),
                       {"training.epochs": epochs, "privacy.gradient_noise": gradient_noise,
                        "registry.promotion_margin": promotion_margin}, "flow parameters")
    root, label = Path(workdir).resolve(), cfg.label_party

    # 1-3. Validate, align, engineer features
    alignment, features = prepare_parties(cfg, root)

    # 4. Split training; the label party alone (for the lift); on request all columns pooled
    training = train_split(cfg, features, root)
    label_only = train_label_only(cfg, features[label], root)
    central = train_centralized(cfg, features, root) if centralized else None

    # 5. Evaluate every task on the test rows
    report = evaluate_run(cfg, features[label], alignment, training, label_only, root,
                          central)

    # 6. Every party exports its own part, concurrently
    exports = {n: export_model.submit(cfg, n, training.models[n], features[n].transform, root,
                                      training.models["top"] if n == label else None)
               for n in features}
    exported = {name: future.result() for name, future in exports.items()}

    # 7. Every party registers its part as one version; it becomes current if no worse
    version = register_version(cfg, training, exported, report, root)
    metrics = promote_if_better(cfg, version, report, root)

    # 8. The report for people: report.md beside metrics.json, tables and plots in the UI
    publish_report(cfg, metrics, draw_plots(cfg, training))
    return str(metrics)
