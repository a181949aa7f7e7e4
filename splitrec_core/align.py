"""Row alignment: PSI, then the label party's train/test flag for every common position.

Each party ends with `aligned.parquet` in its own workspace: `row` (its local row), `position` (the
common order) and `is_train`. The split flag comes from the label party over the channel, so a
feature party can fit its transforms on training rows only without seeing anything else.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from splitrec_core.channel import Channel, Kind, LocalHub, array_table, table_array
from splitrec_core.config import EngineConfig
from splitrec_core.engine import LOCAL, party_executor
from splitrec_core.errors import InputError
from splitrec_core.io import write_parquet
from splitrec_core.psi import EmptyIntersection, run_follower, run_leader
from splitrec_core.validate import ID


@dataclass(frozen=True)
class Alignment:
    """The outcome of aligning all parties: per-party files, sizes and channel traffic."""

    files: dict[str, Path]
    intersection: int
    train_rows: int
    test_rows: int
    channel: dict[str, dict[str, int]]


def _id_chunks(path: Path, chunk: int) -> Iterator[list[str]]:
    """Stream a party's IDs from Parquet, `chunk` at a time."""
    for batch in pq.ParquetFile(path).iter_batches(batch_size=chunk, columns=[ID]):
        yield batch.column(0).to_pylist()


def _count(path: Path) -> int:
    """How many IDs a party's Parquet file holds (from its footer)."""
    return pq.ParquetFile(path).metadata.num_rows


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


def label_side(
    channel: Channel, ids_file: Path, split_file: Path | None, followers: list[str], out: Path,
    domain: str, chunk_size: int, unmatched: Path | None = None,
    engine: EngineConfig = LOCAL,
) -> Path:
    """The label party leads PSI (blinding on its `engine`), then sends every follower the train
    flag per common position (with no `split_file`, for scoring: no flag, no row is a training
    row)."""
    with party_executor(engine) as executor:
        rows = run_leader(channel, _id_chunks(ids_file, chunk_size), followers, domain,
                          chunk_size, _count(ids_file), executor)
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
    if unmatched:
        _write_unmatched(ids_file, rows, unmatched)
    return _write_aligned(rows, is_train, out)


def feature_side(
    channel: Channel, ids_file: Path, leader: str, out: Path, domain: str, chunk_size: int,
    unmatched: Path | None = None, split: bool = True, engine: EngineConfig = LOCAL,
) -> Path:
    """A feature party follows PSI (blinding on its `engine`) and receives the train flag per
    common position (with `split` false, for scoring: no flag)."""
    with party_executor(engine) as executor:
        rows = run_follower(channel, _id_chunks(ids_file, chunk_size), leader, domain,
                            chunk_size, _count(ids_file), executor)
    is_train = (table_array(channel.recv(Kind.SPLIT_MASK, leader)).astype(bool) if split
                else np.zeros(len(rows), bool))
    if unmatched:
        _write_unmatched(ids_file, rows, unmatched)
    return _write_aligned(rows, is_train, out)


def align_local(
    ids_files: dict[str, Path], split_file: Path | None, label_party: str,
    out_files: dict[str, Path], domain: str, chunk_size: int = 50_000,
    hub: LocalHub | None = None, unmatched_files: dict[str, Path] | None = None,
    engines: dict[str, EngineConfig] | None = None,
) -> Alignment:
    """Align all parties in this process, each on its own thread, over a `LocalHub`.

    With `unmatched_files`, each party also writes its own IDs outside the intersection there.
    Without a `split_file` (scoring new rows) no train flag is shared. `engines[party]` says
    where the party blinds (default: its threads).
    """
    unmatched, engines = unmatched_files or {}, engines or {}
    hub = hub or LocalHub()
    followers = [p for p in ids_files if p != label_party]
    jobs: dict[str, Callable[[], Path]] = {
        label_party: partial(label_side, hub.channel(label_party), ids_files[label_party],
                             split_file, followers, out_files[label_party], domain, chunk_size,
                             unmatched.get(label_party), engines.get(label_party, LOCAL)),
    }
    for p in followers:
        jobs[p] = partial(feature_side, hub.channel(p), ids_files[p], label_party, out_files[p],
                          domain, chunk_size, unmatched.get(p), split_file is not None,
                          engines.get(p, LOCAL))
    try:
        hub.run(jobs)
    except EmptyIntersection:
        raise InputError(
            ", ".join(str(f) for f in ids_files.values()), ID,
            f"empty intersection: no ID is held by all of {list(ids_files)}",
        ) from None
    aligned = pq.read_table(out_files[label_party])
    train = int(np.sum(aligned.column("is_train").to_numpy()))
    return Alignment(
        files=dict(out_files), intersection=aligned.num_rows, train_rows=train,
        test_rows=aligned.num_rows - train, channel=hub.stats().as_dict(),
    )
