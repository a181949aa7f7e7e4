"""A synthetic recommendation federation with known ground truth: a shop's events, two partners.

The shop (the label party) holds impressions: a row per item shown to a person, with the item's
own columns (item, category, price, hour) and two labels, click and conversion. A media partner
holds a row per person describing its tastes; a bank holds a row per person describing its
means. Neither partner sees an item, and the shop sees neither trait:

- each person has latent tastes `t` (3 numbers) and means `w`; each item a latent profile `v`
  (3 numbers), a category (the largest part of `v`), a popularity and a price; the catalogue
  has an item per 500 events (50 to 2,000 items), so each item is seen often enough to learn;
- P(click) = sigmoid(2 t·v + popularity - 2.5 + 0.3 (evening));
- P(conversion | click) = sigmoid(1.5 w - 0.8 log(price / 20) + 0.5 t·v - 0.5), a conversion
  is a click that converted: the tasks are correlated, and conversion is rare;
- the media partner's columns are noisy views of `t` (two affinities, a segment, visits), the
  bank's of `w` (balance, product tier, age).

So clicks need the media partner's columns and the shop's, conversions the bank's too. Events
per person vary (a geometric number, `events / users` on average). Each party keeps its own
random 95% of the people (the shop: of its people's events), in its own row order; the split is
by person. People are drawn a block at a time (a row group of each file), so ten million events
take the memory of one block.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from splitrec_core.io import atomic_path

TASKS = ("click", "conversion")
EVENTS_PER_ITEM = 500  # the catalogue grows with the traffic, from 50 items to 2,000
CATEGORIES = ("books", "games", "garden")  # an item's category: the largest part of its profile
PARTY_COLUMNS = {
    "shop": ["user_id", "split", "item", "category", "price", "hour", *TASKS],
    "media": ["user_id", "affinity_a", "affinity_b", "segment", "visits"],
    "bank": ["user_id", "balance", "tier", "age"],
}


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _items(seed: int, count: int) -> pd.DataFrame:
    """The catalogue: each item's latent profile, category, popularity and price."""
    rng = np.random.default_rng([seed, 0x17E5])
    profile = rng.normal(size=(count, 3)) / np.sqrt(3)
    return pd.DataFrame({
        "item": [f"i{j:05d}" for j in range(count)],
        "category": np.array(CATEGORIES)[np.argmax(profile, axis=1)],
        "popularity": rng.normal(scale=0.5, size=count),
        "price": np.round(np.exp(rng.normal(3.0, 0.8, size=count)), 2),
        **{f"v{k}": profile[:, k] for k in range(3)},
    })


def _block(users: int, first: int, mean_events: float, items: pd.DataFrame, seed: int,
           block: int) -> dict[str, pd.DataFrame]:
    """Block `block`'s people (numbered from `first`) as each party holds them."""
    rng = np.random.default_rng([seed, block])
    tastes, means = rng.normal(size=(users, 3)), rng.normal(size=users)
    ids = np.array([hashlib.sha256(f"events:{seed}:{i}".encode()).hexdigest()[:12]
                    for i in range(first, first + users)])
    split = np.where(rng.random(users) < 0.2, "test", "train")

    counts = rng.geometric(1 / mean_events, size=users)
    person = np.repeat(np.arange(users), counts)
    shown = rng.integers(0, len(items), size=len(person))
    profile = items[["v0", "v1", "v2"]].to_numpy()[shown]
    match = np.sum(tastes[person] * profile, axis=1)
    hour = rng.integers(0, 24, size=len(person))
    price = items["price"].to_numpy()[shown]
    clicked = rng.random(len(person)) < _sigmoid(
        2 * match + items["popularity"].to_numpy()[shown] - 2.5 + 0.3 * (hour >= 18))
    converts = _sigmoid(1.5 * means[person] - 0.8 * np.log(price / 20) + 0.5 * match - 0.5)
    shop = pd.DataFrame({
        "user_id": ids[person], "split": split[person], "item": items["item"].to_numpy()[shown],
        "category": items["category"].to_numpy()[shown], "price": price, "hour": hour,
        "click": clicked.astype(np.int8),
        "conversion": (clicked & (rng.random(len(person)) < converts)).astype(np.int8),
    })
    media = pd.DataFrame({
        "user_id": ids,
        "affinity_a": np.round(tastes[:, 0] + 0.3 * rng.normal(size=users), 3),
        "affinity_b": np.round(tastes[:, 1] + 0.3 * rng.normal(size=users), 3),
        "segment": np.array(CATEGORIES)[np.argmax(tastes + 0.5 * rng.normal(size=(users, 3)),
                                                  axis=1)],
        "visits": np.round(np.exp(0.5 * tastes[:, 2] + 0.3 * rng.normal(size=users)) * 5),
    })
    bank = pd.DataFrame({
        "user_id": ids,
        "balance": np.round(np.exp(1.2 * means + 0.4 * rng.normal(size=users)) * 1000, 2),
        "tier": np.where(means + 0.5 * rng.normal(size=users) > 0.5, "gold", "basic"),
        "age": np.round(40 + 8 * means + 10 * rng.normal(size=users)).clip(18, 90),
    })
    return {"shop": shop, "media": media, "bank": bank}


def _kept(frames: dict[str, pd.DataFrame], keep: float, rng: np.random.Generator,
          ) -> Iterator[tuple[str, pd.DataFrame]]:
    """Each party's own random `keep` share of the people, in its own row order."""
    for party, frame in frames.items():
        people = frame["user_id"].unique()
        chosen = people[rng.random(len(people)) < keep]
        rows = frame[frame["user_id"].isin(chosen)]
        yield party, rows.iloc[rng.permutation(len(rows))]


def write_events(out_dir: Path, events: int = 1_000_000, users: int = 100_000, seed: int = 0,
                 keep: float = 0.95, block_users: int = 200_000) -> dict[str, Path]:
    """Draw `users` people with about `events` events in all and write each party's Parquet.

    People are drawn `block_users` at a time, a row group of every file each.
    """
    if users <= 0 or events < users:
        raise ValueError(f"need at least one person and one event each: users={users}, "
                         f"events={events}")
    items = _items(seed, int(np.clip(events // EVENTS_PER_ITEM, 50, 2_000)))
    paths = {party: out_dir / f"{party}.parquet" for party in PARTY_COLUMNS}
    with ExitStack() as files:
        writers: dict[str, pq.ParquetWriter] = {}
        for block, first in enumerate(range(0, users, block_users)):
            size = min(block_users, users - first)
            frames = _block(size, first, events / users, items, seed, block)
            for party, rows in _kept(frames, keep, np.random.default_rng([seed, block, 0x6B])):
                table = pa.Table.from_pandas(rows[PARTY_COLUMNS[party]], preserve_index=False)
                if party not in writers:
                    tmp = files.enter_context(atomic_path(paths[party]))
                    writers[party] = files.enter_context(pq.ParquetWriter(tmp, table.schema))
                writers[party].write_table(table)
    return paths
