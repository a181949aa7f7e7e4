"""A party's side of PSI when the parties run apart."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq

from splitrec_core.apart.sessions import party_traffic, session
from splitrec_core.channel.flight.addresses import split_address
from splitrec_core.errors import InputError
from splitrec_core.federation import PartyView
from splitrec_core.psi import (
    Alignment,
    EmptyIntersection,
    PsiFiles,
    feature_side,
    label_side,
    psi_protocol,
)
from splitrec_core.psi.rr22_links import Rr22Link, federation_pairs
from splitrec_core.validate import ValidatedParty
from splitrec_core.workspace import Workspace


def rr22_link(view: PartyView) -> Rr22Link:
    """The RR22 pairs at the federation's hosts, with the party's TLS files unless insecure.

    The party's own end listens on the host its Flight endpoint listens on.
    """
    cfg, federation = view.config, view.federation
    hosts = {p.name: split_address(p.address)[0] for p in federation.parties}
    pairs = federation_pairs(cfg.label_party, cfg.followers, hosts, cfg.psi.rr22_port)
    return Rr22Link(pairs, cfg.psi.rr22_timeout_s,
                    None if federation.insecure else view.credentials(),
                    listen_host=split_address(view.listen)[0])


def align_apart(view: PartyView, run_id: str, validated: ValidatedParty, workdir: Workspace,
                ) -> Alignment:
    """This party's side of PSI; the label party also sends the train/test flag."""
    cfg, me = view.config, view.me
    files = PsiFiles.in_run(workdir, me, validated.ids, cfg.psi)
    protocol = psi_protocol(cfg.psi, cfg.party(me).engine, lambda: rr22_link(view))
    with session(view, run_id, "psi") as channel:
        try:
            if me == cfg.label_party:
                assert validated.split is not None  # the label party's validation writes it
                label_side(channel, files, protocol, followers=cfg.followers,
                           split_file=validated.split)
            else:
                feature_side(channel, files, protocol, leader=cfg.label_party)
        except EmptyIntersection:  # bad input: no retry can fix it
            raise InputError(view.data_file, cfg.party(me).id_column,
                             f"empty intersection: no ID is held by all of "
                             f"{view.federation.order}") from None
        traffic = party_traffic(channel)
    is_train = pq.read_table(files.aligned, columns=["is_train"]).column(0).to_numpy()
    train = int(np.sum(is_train))
    return Alignment({me: files.aligned}, len(is_train), train, len(is_train) - train, traffic,
                     cfg.psi.protocol)
