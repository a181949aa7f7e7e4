"""Row alignment: PSI (ECDH or RR22, `protocol`), then the label party's train/test flag.

Each party ends with `aligned.parquet` in its own workspace: `row` (its local row), `position` (the
common order) and `is_train`. The split flag comes from the label party over the channel, so a
feature party can fit its transforms on training rows only without seeing anything else.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache, partial
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from splitrec_core.channel import Channel, Kind, LocalHub, array_table
from splitrec_core.channel.expect import Due, receive_array
from splitrec_core.columns import ID
from splitrec_core.config import EngineConfig, PsiConfig
from splitrec_core.engine import LOCAL
from splitrec_core.errors import InputError
from splitrec_core.io import write_parquet
from splitrec_core.psi.positions import EmptyIntersection
from splitrec_core.psi.protocol import PsiProtocol, psi_protocol
from splitrec_core.psi.rr22_links import Rr22Link, loopback_pairs
from splitrec_core.workspace import Workspace


@dataclass(frozen=True)
class Alignment:
    """The outcome of aligning all parties: per-party files, sizes and channel traffic."""

    files: dict[str, Path]
    intersection: int
    train_rows: int
    test_rows: int
    channel: dict[str, dict[str, int]]
    protocol: str = "ecdh"  # `[psi] protocol`: which PSI ran


@dataclass(frozen=True)
class PsiFiles:
    """One party's files in PSI.

    Its validated IDs in, its aligned rows out, and where to keep its own IDs outside the
    intersection (None: nowhere). An error about its IDs names `source`, the party's own file,
    and `id_column`, its ID column there (by default the validated file and its column).
    """

    ids: Path
    aligned: Path
    unmatched: Path | None = None
    source: Path | None = None
    id_column: str = ID

    @classmethod
    def in_run(cls, space: Workspace, party: str, ids: Path, psi: PsiConfig,
               source: Path | None = None, id_column: str = ID) -> PsiFiles:
        """`party`'s files in the run folder `space`, its IDs from `source`'s `id_column`.

        Its unmatched IDs are kept there too if `psi.write_unmatched` says so.
        """
        unmatched = space.unmatched(party) if psi.write_unmatched else None
        return cls(ids, space.aligned(party), unmatched, source, id_column)


def _write_aligned(rows: np.ndarray, is_train: np.ndarray, path: Path) -> Path:
    table = pa.table({
        "row": rows.astype(np.int64),
        "position": np.arange(len(rows), dtype=np.int64),
        "is_train": is_train.astype(bool),
    })
    return write_parquet(table, path)


def _write_unmatched(ids_file: Path, shared_rows: np.ndarray, out: Path) -> Path:
    """Keep, for this party alone, its own IDs outside the intersection (it learns nothing new)."""
    ids = pq.read_table(ids_file, columns=[ID])
    outside = np.ones(ids.num_rows, bool)
    outside[shared_rows] = False
    return write_parquet(ids.filter(pa.array(outside)), out)


def label_side(channel: Channel, files: PsiFiles, protocol: PsiProtocol, *,
               followers: list[str], split_file: Path | None) -> Path:
    """The label party leads PSI, then sends every follower the train flag per common position.

    With no `split_file` (for scoring) no flag is sent and no row is a training row.
    """
    rows = protocol.leader_rows(channel, files.ids, followers, files.aligned.parent)
    is_train = np.zeros(len(rows), bool)
    if split_file is not None:
        split = pq.read_table(split_file).column("split").to_numpy(zero_copy_only=False)
        is_train = split[rows] == "train"
        for name, count in (("training", is_train.sum()), ("test", (~is_train).sum())):
            if count == 0:
                raise InputError(split_file, "split",
                                 f"no {name} rows among the {len(rows)} shared IDs")
        for follower in followers:
            channel.send(Kind.SPLIT_MASK, follower, array_table(is_train))
    if files.unmatched:
        _write_unmatched(files.ids, rows, files.unmatched)
    return _write_aligned(rows, is_train, files.aligned)


def feature_side(channel: Channel, files: PsiFiles, protocol: PsiProtocol, *, leader: str,
                 split: bool = True) -> Path:
    """A feature party follows PSI and receives the train flag per common position.

    With `split` false (for scoring) no flag comes.
    """
    rows = protocol.follower_rows(channel, files.ids, leader, files.aligned.parent)
    is_train = (receive_array(channel, Kind.SPLIT_MASK, leader, Due(np.bool_, rows=len(rows)))
                if split else np.zeros(len(rows), bool))
    if files.unmatched:
        _write_unmatched(files.ids, rows, files.unmatched)
    return _write_aligned(rows, is_train, files.aligned)


def align_local(
    files: dict[str, PsiFiles], psi: PsiConfig, *, label_party: str, split_file: Path | None,
    hub: LocalHub | None = None, engines: dict[str, EngineConfig] | None = None,
) -> Alignment:
    """Align all parties in this process, each on its own thread, over a `LocalHub`.

    Each party writes its own IDs outside the intersection where its `files` say (if anywhere).
    Without a `split_file` (scoring new rows) no train flag is shared. `engines[party]` says
    where the party blinds (default: its threads).
    """
    engines = engines or {}
    hub = hub or LocalHub()
    followers = [p for p in files if p != label_party]
    pairs = cache(lambda: Rr22Link(loopback_pairs(followers), psi.rr22_timeout_s))  # one for all
    protocols = {p: psi_protocol(psi, engines.get(p, LOCAL), pairs) for p in files}
    jobs: dict[str, Callable[[], Path]] = {
        label_party: partial(label_side, hub.channel(label_party), files[label_party],
                             protocols[label_party], followers=followers, split_file=split_file),
    }
    for p in followers:
        jobs[p] = partial(feature_side, hub.channel(p), files[p], protocols[p], leader=label_party,
                          split=split_file is not None)
    try:
        hub.run(jobs)
    except EmptyIntersection:
        columns = {f.id_column for f in files.values()}
        raise InputError(
            ", ".join(str(f.source or f.ids) for f in files.values()),
            columns.pop() if len(columns) == 1 else None,
            f"empty intersection: no ID is held by all of {list(files)}",
        ) from None
    aligned = pq.read_table(files[label_party].aligned)
    train = int(np.sum(aligned.column("is_train").to_numpy()))
    return Alignment(
        files={p: f.aligned for p, f in files.items()}, intersection=aligned.num_rows,
        train_rows=train, test_rows=aligned.num_rows - train, channel=hub.stats().as_dict(),
        protocol=psi.protocol,
    )
