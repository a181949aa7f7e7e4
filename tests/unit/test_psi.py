"""ECDH PSI over X25519: exact intersections, one common order, nothing but points on the wire."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from nacl.bindings import crypto_scalarmult
from nacl.utils import random as random_bytes

from splitrec_core.channel import Kind, LocalHub
from splitrec_core.config import PsiConfig
from splitrec_core.errors import InputError
from splitrec_core.psi import PsiFiles, align_local
from splitrec_core.psi.points import Blinder, comparison_bytes, hash_to_points, match


def _write_ids(folder: Path, name: str, ids: list[str]) -> Path:
    path = folder / f"{name}.ids.parquet"
    pq.write_table(pa.table({"id": pa.array(ids, pa.string())}), path)
    return path


def _align(tmp_path: Path, sets: dict[str, list[str]], hub: LocalHub | None = None,
           split_of=lambda i: "test" if i % 3 == 0 else "train"):
    """Align `sets` (first = label party); return each party's IDs in the common order."""
    label = next(iter(sets))
    ids = {name: _write_ids(tmp_path, name, values) for name, values in sets.items()}
    split = tmp_path / "split.parquet"
    pq.write_table(pa.table({"split": [split_of(i) for i in range(len(sets[label]))]}), split)
    out = {name: tmp_path / name / "aligned.parquet" for name in sets}
    files = {name: PsiFiles(ids[name], out[name]) for name in sets}
    result = align_local(files, PsiConfig(domain="test-run", chunk_size=7), label_party=label,
                         split_file=split, hub=hub)
    ordered = {}
    for name, values in sets.items():
        rows = pq.read_table(out[name]).column("row").to_numpy()
        ordered[name] = [values[r] for r in rows]
    return result, ordered


def test_blinding_commutes(monkeypatch: pytest.MonkeyPatch):
    # Prepare
    import splitrec_core.psi.points as psi

    points = hash_to_points(["alice", "bob"], "d")
    a, b = random_bytes(32), random_bytes(32)
    scalars = iter([a, b])
    monkeypatch.setattr(psi, "random_bytes", lambda size: next(scalars))

    # Execute
    with Blinder() as alice, Blinder() as bob:
        ab, ba = bob.blind(alice.blind(points)), alice.blind(bob.blind(points))
        first = alice.blind(points)[0].tobytes()
        streamed, whole = alice.blind_ids([["alice"], ["bob"]], "d", total=2), alice.blind(points)
        with pytest.raises(ValueError, match="hold 1 IDs, not the 2 announced"):
            alice.blind_ids([["alice"]], "d", total=2)

    # Assert
    np.testing.assert_array_equal(ab, ba)
    np.testing.assert_array_equal(streamed, whole)
    assert first == crypto_scalarmult(a, points[0].tobytes())
    assert hash_to_points(["alice"], "d").tobytes() != hash_to_points(["alice"], "e").tobytes()


def test_comparison_width_keeps_collisions_below_2_to_the_minus_40():
    assert comparison_bytes(10, 10) == 8
    assert comparison_bytes(1_000_000, 1_000_000) == 10
    for n in (10, 1000, 10**6, 10**8):
        assert n * n / 2.0 ** (8 * comparison_bytes(n, n)) <= 2.0**-40


def test_match_joins_rows_exactly():
    # Prepare: rows as bytes, including two rows whose first 8 bytes are equal
    theirs = np.zeros((4, 10), np.uint8)
    theirs[:, 9] = [1, 2, 3, 4]
    ours = theirs[[3, 0]].copy()
    ours = np.vstack([ours, np.full((1, 10), 9, np.uint8)])

    # Execute / Assert: the prefix collision falls back to a full-width join
    assert match(ours, theirs).tolist() == [3, 0, -1]
    rng = np.random.default_rng(0)
    wide = rng.integers(0, 256, (1000, 10), dtype=np.uint8)
    picks = rng.permutation(1000)[:300]
    near = wide[picks[:5]].copy()
    near[:, 9] ^= 1  # the same first 8 bytes as a row of theirs, not the same row
    probe = np.vstack([wide[picks], rng.integers(0, 256, (50, 10), dtype=np.uint8), near])
    assert match(probe, wide).tolist() == [*picks.tolist(), *[-1] * 55]
    assert match(probe[:0], wide).tolist() == []


@pytest.mark.parametrize(
    "sets",
    [
        {"a": ["1", "2", "3", "4"], "b": ["3", "4", "5"]},
        {"a": [f"u{i}" for i in range(50)], "b": [f"u{i}" for i in range(50)][::-1]},
        {"a": ["zoë", "Zoë", "李雷", "😀", "x"], "b": ["李雷", "zoë", "y", "😀"]},
        {"a": [str(i) for i in range(40)], "b": [str(i) for i in range(10, 60)],
         "c": [str(i) for i in range(0, 80, 2)]},
    ],
    ids=["two-parties", "full-overlap", "unicode", "three-parties"],
)
def test_intersection_is_exact_and_in_one_order(tmp_path: Path, sets: dict[str, list[str]]):
    # Execute
    result, ordered = _align(tmp_path, sets)

    # Assert
    expected = set.intersection(*(set(v) for v in sets.values()))
    label = next(iter(sets))
    assert set(ordered[label]) == expected
    assert result.intersection == len(expected)
    for name in sets:
        assert ordered[name] == ordered[label], f"{name} is not in the common order"


def test_each_party_can_keep_its_own_unmatched_ids(tmp_path: Path):
    # Prepare
    sets = {"a": ["1", "2", "3", "4"], "b": ["3", "4", "5"], "c": ["0", "3", "4", "9"]}
    ids = {name: _write_ids(tmp_path, name, values) for name, values in sets.items()}
    split = tmp_path / "split.parquet"
    pq.write_table(pa.table({"split": ["train", "test", "train", "test"]}), split)
    unmatched = {name: tmp_path / name / "unmatched.parquet" for name in sets}
    files = {n: PsiFiles(ids[n], tmp_path / n / "aligned.parquet", unmatched[n]) for n in sets}

    # Execute
    align_local(files, PsiConfig(domain="d"), label_party="a", split_file=split)

    # Assert
    read = {n: pq.read_table(p).column("id").to_pylist() for n, p in unmatched.items()}
    assert read == {"a": ["1", "2"], "b": ["5"], "c": ["0", "9"]}


def test_empty_intersection_fails_every_party_clearly(tmp_path: Path):
    with pytest.raises(InputError, match="empty intersection: no ID is held by all of"):
        _align(tmp_path, {"a": ["1", "2"], "b": ["3"], "c": ["1"]})
    assert not (tmp_path / "a" / "aligned.parquet").exists()


def test_split_flag_follows_the_label_party_to_every_party(tmp_path: Path):
    # Prepare: the label party marks its IDs with an even number as test rows
    sets = {"a": [str(i) for i in range(30)], "b": [str(i) for i in range(10, 40)]}

    # Execute
    _align(tmp_path, sets, split_of=lambda i: "test" if i % 2 == 0 else "train")

    # Assert
    for name, values in sets.items():
        aligned = pq.read_table(tmp_path / name / "aligned.parquet").to_pandas()
        for row, is_train in zip(aligned["row"], aligned["is_train"]):
            assert is_train == (int(values[row]) % 2 == 1)


def test_no_training_rows_in_the_intersection_is_an_error(tmp_path: Path):
    with pytest.raises(InputError, match="no training rows among the 2 shared IDs"):
        _align(tmp_path, {"a": ["1", "2", "3"], "b": ["1", "2"]},
               split_of=lambda i: "test" if i < 2 else "train")
    assert not (tmp_path / "b" / "aligned.parquet").exists()


def test_only_points_cross_and_are_counted(tmp_path: Path):
    # Prepare
    hub = LocalHub(record=True)
    sets = {"a": [f"secret-id-{i}" for i in range(30)],
            "b": [f"secret-id-{i}" for i in range(20, 45)]}

    # Execute
    result, _ = _align(tmp_path, sets, hub)

    # Assert: message counts per kind (chunks of 7 plus an end marker), and no raw ID anywhere
    messages = result.channel
    assert messages["psi_blinded"]["messages"] == (5 + 1) + (4 + 1)
    assert messages["psi_double_blinded"]["messages"] == 5 + 1
    assert messages["psi_positions"]["messages"] == 1
    assert messages["split_mask"]["messages"] == 1
    assert messages["psi_blinded"]["bytes"] > 32 * (30 + 25)
    payload = b"".join(p for *_, p in hub.recorded)
    assert not any(i.encode() in payload for i in sets["a"] + sets["b"])
    assert {k for k, *_ in hub.recorded} <= set(Kind)


def test_blinded_lists_are_shuffled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    # Prepare: pin the scalar so the test can compute what an unshuffled list would be
    import splitrec_core.psi.points as psi

    scalar = b"\x01" * 32
    monkeypatch.setattr(psi, "random_bytes", lambda size: scalar)
    hub = LocalHub(record=True)
    ids = [f"id-{i:03d}" for i in range(200)]

    # Execute
    _align(tmp_path, {"a": ids, "b": ids[::-1]}, hub)

    # Assert: each party sent exactly its blinded IDs, but not in its own row order
    for name, own in (("a", ids), ("b", ids[::-1])):
        chunks = [pa.ipc.open_stream(p).read_all() for k, frm, _, p in hub.recorded
                  if k == Kind.PSI_BLINDED and frm == name]
        points = [bytes(v) for c in chunks for v in c.column("value").to_pylist()]
        in_row_order = [bytes(r) for r in psi._blind_block(hash_to_points(own, "test-run"), scalar)]
        assert sorted(points) == sorted(in_row_order)
        assert points != in_row_order
