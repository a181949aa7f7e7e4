"""A party's part of split training when the parties run apart."""

from __future__ import annotations

import time
from pathlib import Path

from splitrec_core.apart.sessions import party_traffic, session
from splitrec_core.features import PartyFeatures
from splitrec_core.federation import PartyView
from splitrec_core.results import TrainResult
from splitrec_core.workspace import Workspace


def train_apart(view: PartyView, run_id: str, features: PartyFeatures, workdir: Workspace,
                ) -> tuple[dict[str, Path], TrainResult | None]:
    """This party's part of split training (resumed from the epoch all parties checkpointed).

    Returns its models ("bottom", and "top" at the label party) and, at the label party, the
    run's result (test predictions, history, traffic, leakage).
    """
    from splitrec_core.training.local import label_result
    from splitrec_core.training.party import PartyJob

    started = time.time()
    with session(view, run_id, "train") as channel:
        outcome = PartyJob(view.me, view.config, features, workdir.trained(view.me))(channel)
        traffic = party_traffic(channel)
    if outcome.label is None:
        return outcome.models, None
    return outcome.models, label_result(view.config, features.test, {view.me: outcome}, started,
                                        traffic, workdir.trained(view.me))
