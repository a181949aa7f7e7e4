"""The PSI secret scalars are fresh per party and run."""

from __future__ import annotations

import pytest


def test_scalars_are_fresh_per_party_and_run(monkeypatch: pytest.MonkeyPatch):
    import splitrec_core.psi.points as psi

    drawn: list[bytes] = []
    real = psi.random_bytes
    monkeypatch.setattr(psi, "random_bytes", lambda size: drawn.append(real(size)) or drawn[-1])
    for _ in range(2):
        with psi.Blinder(), psi.Blinder():
            pass
    assert len(drawn) == 4 and len(set(drawn)) == 4
