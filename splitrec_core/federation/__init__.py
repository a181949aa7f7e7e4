"""Parties apart: the federation file every party holds a copy of, and each party's private file.

The federation file says who takes part (names, roles, addresses, the SHA-256 of each party's
token), what is predicted, the top, the cut width, the training plan and seed, PSI and privacy
settings, the schedule and the network timeouts. A party's private file says what only it knows:
its data file, ID column, columns and their kinds, its bottom network, its credentials. The
parties compare `federation_hash` (of the parsed settings, so comments and layout do not count)
when they connect; a mismatch stops every party.

`files` holds the two files' schemas; `view` joins them into the `Config` the core library runs
on, in which the other parties are names only (no party learns another's columns or paths);
`trial` writes the trial federation `splitrec party trial` makes.
"""

from splitrec_core.federation.files import (
    CredentialFiles,
    Federation,
    Member,
    PrivateParty,
    TimeoutConfig,
    shared_settings,
)
from splitrec_core.federation.trial import write_trial_federation
from splitrec_core.federation.view import PartyFiles, PartyView, load_party

__all__ = ["CredentialFiles", "Federation", "Member", "PartyFiles", "PartyView", "PrivateParty",
           "TimeoutConfig", "load_party", "shared_settings", "write_trial_federation"]
