"""Property tests: on random sets, PSI finds exactly the common IDs, in one order for everyone."""

from __future__ import annotations

from functools import partial

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from splitrec_core.channel import LocalHub
from splitrec_core.psi.ecdh import run_follower, run_leader
from splitrec_core.psi.positions import EmptyIntersection

ids = st.text(min_size=1, max_size=12).filter(lambda s: s.strip() != "")
universe = st.lists(ids, min_size=1, max_size=60, unique=True)


@st.composite
def party_sets(draw: st.DrawFn, parties: int) -> list[list[str]]:
    """`parties` subsets of one universe that all hold a shared core (possibly empty)."""
    pool = draw(universe)
    core = draw(st.lists(st.sampled_from(pool), unique=True))
    sets = []
    for _ in range(parties):
        extra = draw(st.lists(st.sampled_from(pool), unique=True))
        members = list(dict.fromkeys(core + extra))
        sets.append(draw(st.permutations(members)))
    return sets


def _aligned_ids(sets: list[list[str]]) -> dict[str, list[str]]:
    """Run the protocol with p0 leading; each party's IDs in the order it was given."""
    names = [f"p{i}" for i in range(len(sets))]
    hub = LocalHub()
    jobs = {"p0": partial(run_leader, hub.channel("p0"), chunks(sets[0]), names[1:], "prop", 5,
                          len(sets[0]))}
    for name, values in zip(names[1:], sets[1:], strict=True):
        jobs[name] = partial(run_follower, hub.channel(name), chunks(values), "p0", "prop", 5,
                             len(values))
    try:
        rows = hub.run(jobs)
    except EmptyIntersection:
        return {}
    return {name: [values[r] for r in rows[name]] for name, values in zip(names, sets, strict=True)}


def chunks(values: list[str], size: int = 7) -> list[list[str]]:
    """IDs in chunks, as they stream from Parquet."""
    return [values[i : i + size] for i in range(0, len(values), size)]


def _check(sets: list[list[str]]) -> None:
    aligned = _aligned_ids(sets)
    expected = set.intersection(*(set(s) for s in sets))
    assert bool(aligned) == bool(expected)  # an empty intersection is an error at every party
    if not expected:
        return
    assert set(aligned["p0"]) == expected
    assert len(aligned["p0"]) == len(expected)
    for name, order in aligned.items():
        assert order == aligned["p0"], f"{name} disagrees on the common order"


SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(party_sets(2))
def test_two_parties(sets: list[list[str]]):
    _check(sets)


@SETTINGS
@given(party_sets(3))
def test_three_parties(sets: list[list[str]]):
    _check(sets)


@SETTINGS
@given(party_sets(5))
def test_five_parties(sets: list[list[str]]):
    _check(sets)
