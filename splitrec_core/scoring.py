"""Batch scoring of new rows with a registered version, each party at home.

Each party checks its new rows against the columns its registered part takes; PSI aligns the
new rows' IDs as in training (no train/test flag: every shared row is scored); each party applies
its own registered transform and bottom to its own rows; only the embeddings cross the channel;
the label party's top writes per-task probabilities beside its own IDs, at the label party only.
Unseen categories and missing values are handled as in training. No labels are needed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from splitrec_core.channel import Channel, Kind, LocalHub, array_table
from splitrec_core.channel.expect import Due, receive_array
from splitrec_core.columns import ID
from splitrec_core.config import Config, EngineConfig, PartyConfig
from splitrec_core.engine import LOCAL
from splitrec_core.errors import InputError
from splitrec_core.events import People, event_alignment
from splitrec_core.export import ExportedParty
from splitrec_core.io import atomic_path, write_parquet
from splitrec_core.validate import ValidatedParty, validate_party
from splitrec_core.workspace import Workspace

CHUNK_ROWS = 65_536  # rows embedded and sent per message


@dataclass(frozen=True)
class Scored:
    """What a scoring run wrote and measured (at the label party)."""

    predictions: Path
    rows: int
    seconds: float  # embedding, channel and top, after alignment
    channel: dict[str, dict[str, int]]


def validate_new_rows(party: str, version_folder: Path, path: Path, out_dir: Path,
                      normalize: Sequence[str], engine: EngineConfig = LOCAL) -> ValidatedParty:
    """Check `party`'s new rows (on its `engine`) against the columns its registered part takes.

    Those columns are in its manifest. An error names the party, the version, the file and the
    column.
    """
    manifest = ExportedParty.manifest_of(version_folder)
    spec = PartyConfig(name=party, file=str(path), id_column=manifest["id_column"],
                       categorical=manifest["inputs"]["categorical"],
                       numeric=manifest["inputs"]["numeric"], events=manifest.get("events", False))
    try:
        return validate_party(spec, path, out_dir, normalize=normalize, engine=engine)
    except InputError as error:
        raise InputError(error.file, error.column,
                         f"party '{party}', model version {version_folder.name}: "
                         f"{error.problem}") from None


def _embeddings(export: ExportedParty, validated: Path, aligned: Path) -> Iterator[np.ndarray]:
    """The party's embeddings of its aligned rows, `CHUNK_ROWS` at a time, in the common order."""
    table = pq.read_table(validated).to_pandas()
    rows = pq.read_table(aligned, columns=["row"]).column(0).to_numpy()
    for start in range(0, len(rows), CHUNK_ROWS):
        yield export.embed(table.iloc[rows[start:start + CHUNK_ROWS]])


def feature_scoring(channel: Channel, version_folder: Path, validated: Path, aligned: Path,
                    label: str) -> None:
    """A feature party: embed its own aligned rows at home and send the embeddings."""
    for h in _embeddings(ExportedParty.load(version_folder), validated, aligned):
        channel.send(Kind.EVAL_EMBEDDING, label, array_table(h))


def label_scoring(channel: Channel, version_folder: Path, validated: ValidatedParty,
                  aligned: Path, out: Path) -> Path:
    """The label party: embed its own rows, take the others' embeddings, apply the top, write.

    It writes `out` = its own IDs and one probability column per task. Each embedding received
    must hold the chunk's people at the cut width, all finite. A label party that holds events
    scores each event of the aligned people: its own columns per event, the others' embedding
    of the event's person; `out` then also says each event's `row` in its file.
    """
    export = ExportedParty.load(version_folder)
    top = export.manifest["top"]
    parties, tasks = top["parties"], top["tasks"]
    widths = dict(zip(parties, export.top_widths(), strict=True))
    rows = pq.read_table(aligned, columns=["row"]).column(0).to_numpy()  # people, by position
    events = (None if validated.events is None
              else _events_by_person(validated.events, pq.read_table(aligned)))
    table = _own_rows(validated.table, validated.rows)
    probabilities, scored, whose = [], [], []
    for start in range(0, len(rows), CHUNK_ROWS):
        people = np.arange(start, min(start + CHUNK_ROWS, len(rows)))
        mine, person = rows[people], np.arange(len(people))  # our rows; each one's person
        if events is not None:
            event_rows, person = events[1].rows(people)
            mine = events[0][event_rows]
        own = export.embed(table.iloc[mine])
        hs = {p: own if p == channel.me else receive_array(
                  channel, Kind.EVAL_EMBEDDING, p,
                  Due(np.float32, widths[p], rows=len(people), finite=True))[person]
              for p in parties}
        probabilities.append(export.predict([hs[p] for p in parties]))
        scored.append(mine)
        whose.append(rows[people][person])
    stacked = np.concatenate(probabilities) if probabilities else np.zeros((0, len(tasks)))
    ids = pq.read_table(validated.ids).column(ID).take(pa.array(np.concatenate([rows[:0], *whose])))
    columns = {export.manifest["id_column"]: ids}
    columns |= {"row": np.concatenate([rows[:0], *scored])} if events is not None else {}
    columns |= {f"p:{t}": stacked[:, j] for j, t in enumerate(tasks)}
    return write_parquet(pa.table(columns), out)


def _own_rows(validated: Path, rows: int) -> pd.DataFrame:
    """The label party's typed rows (`rows` of them: an empty frame if it has no columns)."""
    table = pq.read_table(validated).to_pandas()
    if table.columns.empty:  # a label party without features: Parquet kept no row count
        return pd.DataFrame(index=pd.RangeIndex(rows))
    return table


def _events_by_person(events: Path, aligned: pa.Table) -> tuple[np.ndarray, People]:
    """The rows of the aligned people's events, person by person in common order, grouped."""
    alignment, _ = event_alignment(aligned, events)
    order = np.argsort(alignment.column("position").to_numpy(), kind="stable")
    rows = alignment.column("row").to_numpy()[order]
    return rows, People.of_positions(alignment.column("position").to_numpy()[order])


def score_local(version_folders: dict[str, Path], validated: dict[str, ValidatedParty],
                aligned: dict[str, Path], label: str, out: Path,
                hub: LocalHub | None = None) -> Scored:
    """Score every aligned row, each party on its own thread over a `LocalHub`.

    `out` is the label party's predictions file.
    """
    hub = hub or LocalHub()
    jobs: dict[str, Callable[[], object]] = {
        p: partial(feature_scoring, hub.channel(p), version_folders[p], validated[p].table,
                   aligned[p], label) for p in version_folders if p != label}
    jobs[label] = partial(label_scoring, hub.channel(label), version_folders[label],
                          validated[label], aligned[label], out)
    started = time.perf_counter()
    hub.run(jobs)
    seconds = time.perf_counter() - started
    return Scored(out, pq.read_metadata(out).num_rows, seconds, hub.stats().as_dict())


def unlabelled_test_rows(cfg: Config, workdir: Path, out: Path) -> dict[str, Path]:
    """New rows that score the training run's test people again.

    They are the label party's test rows without its split and label columns, and every feature
    party's file as it is (PSI finds the people all hold). Files of the inputs' own format in
    `out`, by party.
    """
    files = {}
    for party in cfg.parties:
        source = cfg.party_file(party, workdir)
        csv = source.suffix.lower() == ".csv"
        frame = (pd.read_csv(source, dtype=str, keep_default_na=False, na_values=[""]) if csv
                 else pd.read_parquet(source))
        if party.name == cfg.label_party:
            frame = frame[frame[party.split_column] == "test"]
            frame = frame.drop(columns=[party.split_column, *(t.column for t in cfg.tasks)])
        files[party.name] = out / source.name
        with atomic_path(files[party.name]) as tmp:
            if csv:
                frame.to_csv(tmp, index=False)
            else:
                frame.to_parquet(tmp, index=False)
    return files


def trained_predictions(workdir: Path, label: str, id_column: str) -> pd.DataFrame:
    """The training pipeline's test predictions in `workdir`, indexed by the label party's IDs.

    They are what scoring the same rows with the registered version must reproduce.
    """
    space = Workspace(workdir)
    predicted = pq.read_table(space.trained(label) / "predictions.parquet").to_pandas()
    rows = pq.read_table(space.aligned(label)).to_pandas().set_index("position")["row"]
    ids = pq.read_table(space.validated(label) / "ids.parquet").column(ID).to_numpy(
        zero_copy_only=False)
    predicted[id_column] = ids[rows.loc[predicted["position"]].to_numpy()]
    return predicted.drop(columns="position").set_index(id_column)
