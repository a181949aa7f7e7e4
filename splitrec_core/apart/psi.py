"""A party's side of PSI when the parties run apart."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq

from splitrec_core.align import Alignment, PsiFiles, feature_side, label_side
from splitrec_core.apart.sessions import party_traffic, session
from splitrec_core.errors import InputError
from splitrec_core.federation import PartyView
from splitrec_core.psi import EmptyIntersection
from splitrec_core.validate import ValidatedParty
from splitrec_core.workspace import Workspace


def align_apart(view: PartyView, run_id: str, validated: ValidatedParty, workdir: Workspace,
                ) -> Alignment:
    """This party's side of PSI; the label party also sends the train/test flag."""
    cfg, me = view.config, view.me
    files = PsiFiles.in_run(workdir, me, validated.ids, cfg.psi)
    with session(view, run_id, "psi") as channel:
        try:
            if me == cfg.label_party:
                assert validated.split is not None  # the label party's validation writes it
                label_side(channel, files, cfg.psi, followers=cfg.followers,
                           split_file=validated.split, engine=cfg.party(me).engine)
            else:
                feature_side(channel, files, cfg.psi, leader=cfg.label_party,
                             engine=cfg.party(me).engine)
        except EmptyIntersection:  # bad input: no retry can fix it
            raise InputError(view.data_file, cfg.party(me).id_column,
                             f"empty intersection: no ID is held by all of "
                             f"{view.federation.order}") from None
        traffic = party_traffic(channel)
    is_train = pq.read_table(files.aligned, columns=["is_train"]).column(0).to_numpy()
    train = int(np.sum(is_train))
    return Alignment({me: files.aligned}, len(is_train), train, len(is_train) - train, traffic)
