"""A party's part of scoring new rows when the parties run apart."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow.parquet as pq

from splitrec_core.apart.messages import ScoreWith, receive, send
from splitrec_core.apart.psi import rr22_link
from splitrec_core.apart.registry_protocol import own_registry
from splitrec_core.apart.sessions import party_traffic, session
from splitrec_core.errors import InputError
from splitrec_core.federation import PartyView
from splitrec_core.psi import (
    EmptyIntersection,
    PsiFiles,
    feature_side,
    label_side,
    psi_protocol,
)
from splitrec_core.workspace import Workspace

if TYPE_CHECKING:
    from splitrec_core.scoring import Scored


def score_apart(view: PartyView, run_id: str, model: str, rows: Path, workdir: Workspace,
                ) -> Scored | None:
    """This party's part of scoring new `rows` in run `run_id`.

    The label party names the version (`model`: an alias of its registry, or a version ID),
    every party checks its rows against its part of that version, PSI aligns the new IDs, each
    party embeds at home, and the label party's top writes the predictions, at the label party
    only (returned there).
    """
    from splitrec_core.scoring import Scored, feature_scoring, label_scoring, validate_new_rows

    cfg, me, label = view.config, view.me, view.federation.label_party
    followers = cfg.followers
    registry = own_registry(view, workdir)
    folder, aligned = workdir.scoring(me), workdir.scoring(me) / "aligned.parquet"
    with session(view, run_id, "score") as channel:
        if me == label:
            version = registry.resolve(model)
            for party in followers:
                send(channel, party, ScoreWith(version))
        else:
            version = receive(channel, label, ScoreWith).version
        part = registry.folder(registry.resolve(version))
        validated = validate_new_rows(me, part, rows, folder / "validated", cfg.psi.normalize,
                                      cfg.party(me).engine)
        protocol = psi_protocol(cfg.psi, cfg.party(me).engine, lambda: rr22_link(view))
        try:
            if me == label:
                label_side(channel, PsiFiles(validated.ids, aligned), protocol,
                           followers=followers, split_file=None)
            else:
                feature_side(channel, PsiFiles(validated.ids, aligned), protocol, leader=label,
                             split=False)
        except EmptyIntersection:
            raise InputError(rows, cfg.party(me).id_column, "empty intersection: no new ID is "
                             f"held by all of {view.federation.order}") from None
        if me != label:
            feature_scoring(channel, part, validated.table, aligned, label)
            return None
        started = time.perf_counter()
        out = label_scoring(channel, part, validated, aligned,
                            workdir.scores_file(me, version, run_id))
        seconds = time.perf_counter() - started
        return Scored(out, pq.read_metadata(out).num_rows, seconds, party_traffic(channel))
