"""The one face both PSI protocols show the alignment driver, and the choice between them."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import numpy as np

from splitrec_core.channel import Channel
from splitrec_core.config import EngineConfig, PsiConfig
from splitrec_core.psi.ecdh import Ecdh
from splitrec_core.psi.rr22 import Rr22
from splitrec_core.psi.rr22_links import Rr22Link


class PsiProtocol(Protocol):
    """A way for parties to find the IDs all of them hold: the label party leads.

    Each side returns the party's own rows (of its validated IDs) of the people every party
    holds, in one common order; the leader has told each follower its positions in it.
    Temporary files go in the party's own `folder`.
    """

    @property
    def name(self) -> str:
        """The protocol's name, as `[psi] protocol` gives it."""

    def leader_rows(self, channel: Channel, ids: Path, followers: list[str],
                    folder: Path) -> np.ndarray:
        """The label party's side."""

    def follower_rows(self, channel: Channel, ids: Path, leader: str,
                      folder: Path) -> np.ndarray:
        """A feature party's side."""


def psi_protocol(settings: PsiConfig, engine: EngineConfig,
                 rr22_link: Callable[[], Rr22Link]) -> PsiProtocol:
    """The protocol `settings.protocol` names, as one party runs it.

    ECDH blinds on the party's `engine`; RR22 runs its pairs over the link `rr22_link` makes
    (asked for only then).
    """
    if settings.protocol == "rr22":
        return Rr22(settings, rr22_link())
    return Ecdh(settings, engine)
