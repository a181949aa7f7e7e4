"""One party's network stages when the parties run apart: PSI, split training and scoring, each a
session of its own on the party's Flight endpoint, with the peers the federation file names; and
how a run starts: the label party invites the feature parties that serve. (The registry's
sessions are in `apart_models`.)"""

from __future__ import annotations

import atexit
import json
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from splitrec_core.align import Alignment, PsiFiles, feature_side, label_side
from splitrec_core.channel import ChannelStats, Kind
from splitrec_core.channel.flight.channel import FlightChannel
from splitrec_core.channel.flight.endpoint import FlightEndpoint
from splitrec_core.errors import InputError
from splitrec_core.features import PartyFeatures
from splitrec_core.federation import PartyView
from splitrec_core.psi import EmptyIntersection
from splitrec_core.registry import Registry
from splitrec_core.results import TrainResult
from splitrec_core.validate import ValidatedParty
from splitrec_core.workspace import Workspace

if TYPE_CHECKING:
    from splitrec_core.scoring import Scored

_ENDPOINTS: dict[tuple[str, str], FlightEndpoint] = {}


def own_registry(view: PartyView, workdir: Workspace) -> Registry:
    """This party's registry of the federation's model."""
    return Registry(view.me, workdir.registry(view.me, view.federation.name))


def endpoint(view: PartyView) -> FlightEndpoint:
    """This party's Flight endpoint, started on first use and kept up for the process's life."""
    key = (view.federation.hash(), view.me)
    if key not in _ENDPOINTS:
        _ENDPOINTS[key] = FlightEndpoint(view.me, view.listen, view.security(), view.peers,
                                         view.token_hashes, view.federation.hash(), view.timeouts())
        atexit.register(_ENDPOINTS[key].close)
    return _ENDPOINTS[key]


def session(view: PartyView, run_id: str, stage: str) -> FlightChannel:
    """Open `stage` of run `run_id`: with the label party, or at the label party with every
    feature party (nothing passes between feature parties, so they never connect)."""
    return endpoint(view).channel(f"{run_id}/{stage}", view.federation.order,
                                  hub=view.federation.label_party)


def align_apart(view: PartyView, run_id: str, validated: ValidatedParty, workdir: Workspace,
                ) -> Alignment:
    """This party's side of PSI; the label party also sends the train/test flag."""
    cfg, me = view.config, view.me
    files = PsiFiles.in_run(workdir, me, validated.ids, cfg.psi)
    out = files.aligned
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
        traffic = _traffic(channel)
    is_train = pq.read_table(out, columns=["is_train"]).column(0).to_numpy()
    train = int(np.sum(is_train))
    return Alignment({me: out}, len(is_train), train, len(is_train) - train, traffic)


def _traffic(channel: FlightChannel) -> dict[str, dict[str, int]]:
    """What crossed this party's channel, sent and received: at the label party, through which
    every message of a run passes, the whole run's traffic."""
    return ChannelStats.merge(channel.sent().as_dict(), channel.received().as_dict())


def train_apart(view: PartyView, run_id: str, features: PartyFeatures, workdir: Workspace,
                ) -> tuple[dict[str, Path], TrainResult | None]:
    """This party's part of split training (resumed from the epoch all parties checkpointed):
    its models ("bottom", and "top" at the label party) and, at the label party, the run's
    result (test predictions, history, traffic, leakage)."""
    from splitrec_core.training.local import label_result
    from splitrec_core.training.party import PartyJob

    started = time.time()
    with session(view, run_id, "train") as channel:
        outcome = PartyJob(view.me, view.config, features, workdir.trained(view.me))(channel)
        traffic = _traffic(channel)
    if outcome.label is None:
        return outcome.models, None
    return outcome.models, label_result(view.config, features.test, {view.me: outcome}, started,
                                        traffic, workdir.trained(view.me))


def invite(view: PartyView, run_id: str, job: str = "train") -> dict[str, str]:
    """The label party starts run `run_id` of `job` (train, score, models) at every feature
    party that is serving; their answers. A party that is not serving, does not serve `job` or
    cannot be reached within `connect_s` is an error naming it."""
    me = endpoint(view)
    return {p: me.start_run(p, run_id, job) for p in view.config.followers}


def accept_runs(view: PartyView, jobs: Mapping[str, Callable[[str], object]]) -> FlightEndpoint:
    """Serve: keep this party's endpoint up and, whenever the label party asks for a run of a
    job in `jobs` (train, score, models), run `jobs[job](run_id)` on a thread of its own (once
    per job and run ID). Only the label party may ask."""
    label, started, lock = view.federation.label_party, set(), threading.Lock()

    def on_start(caller: str, job: str, run_id: str) -> str:
        if caller != label:
            raise PermissionError(f"{caller} asked {view.me} to start a run: only the label "
                                  f"party {label} starts runs")
        if job not in jobs:
            why = " (its party.toml names no score_input)" if job == "score" else ""
            raise PermissionError(f"{view.me} does not serve {job} runs{why}")
        with lock:
            if (job, run_id) in started:
                return f"{view.me}: run {run_id} was started already"
            started.add((job, run_id))
        threading.Thread(target=jobs[job], args=(run_id,), name=f"splitrec-{job}-{run_id}",
                         daemon=True).start()
        return f"{view.me}: started run {run_id}"

    serving = endpoint(view)
    serving.on_start = on_start
    return serving


def send_json(channel: FlightChannel, peer: str, value: dict) -> None:
    """Send `peer` a small JSON message of the registry kind (versions, verdicts, aliases)."""
    channel.send(Kind.REGISTRY, peer, pa.table({"json": [json.dumps(value)]}))


def recv_json(channel: FlightChannel, peer: str) -> dict:
    """The next JSON message of the registry kind from `peer`."""
    return json.loads(channel.recv(Kind.REGISTRY, peer).column("json")[0].as_py())


def score_apart(view: PartyView, run_id: str, model: str, rows: Path, workdir: Workspace,
                ) -> Scored | None:
    """This party's part of scoring new `rows` in run `run_id`: the label party names the version
    (`model`: an alias of its registry, or a version ID), every party checks its rows against
    its part of that version, PSI aligns the new IDs, each party embeds at home, and the label
    party's top writes the predictions, at the label party only (returned there)."""
    from splitrec_core.scoring import Scored, feature_scoring, label_scoring, validate_new_rows

    cfg, me, label = view.config, view.me, view.federation.label_party
    followers = cfg.followers
    registry = own_registry(view, workdir)
    folder, aligned = workdir.scoring(me), workdir.scoring(me) / "aligned.parquet"
    with session(view, run_id, "score") as channel:
        if me == label:
            version = registry.resolve(model)
            for party in followers:
                send_json(channel, party, {"version": version})
        else:
            version = recv_json(channel, label)["version"]
        part = registry.folder(registry.resolve(version))
        validated = validate_new_rows(me, part, rows, folder / "validated", cfg.psi.normalize,
                                      cfg.party(me).engine)
        try:
            if me == label:
                label_side(channel, PsiFiles(validated.ids, aligned), cfg.psi,
                           followers=followers, split_file=None, engine=cfg.party(me).engine)
            else:
                feature_side(channel, PsiFiles(validated.ids, aligned), cfg.psi, leader=label,
                             split=False, engine=cfg.party(me).engine)
        except EmptyIntersection:
            raise InputError(rows, cfg.party(me).id_column, "empty intersection: no new ID is "
                             f"held by all of {view.federation.order}") from None
        if me != label:
            feature_scoring(channel, part, validated.table, aligned, label)
            return None
        started = time.perf_counter()
        out = label_scoring(channel, part, validated, aligned,
                            workdir.scores(me) / f"{version}.parquet")
        seconds = time.perf_counter() - started
        return Scored(out, pq.read_metadata(out).num_rows, seconds, _traffic(channel))
