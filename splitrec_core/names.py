"""Names that become folder names: a run's ID and a model version's. A leaf module.

A run ID comes from the command line or a schedule, and, with parties apart, from the label party
in `start-run`; a version's name from the label party before scoring or a move of the aliases.
Each becomes a folder in a party's run folder (`registry/<version>`), so each must be a plain
name: no peer, and no typo, may choose where a party writes.
"""

from __future__ import annotations

import re

from splitrec_core.errors import InputError

_PLAIN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
PLAIN_NAME_RULE = "1 to 64 letters, digits, '.', '_' or '-', the first a letter or a digit"


def is_plain_name(name: object) -> bool:
    """Whether `name` is a plain name (see `plain_name`)."""
    return isinstance(name, str) and _PLAIN.fullmatch(name) is not None


def plain_name(name: object, what: str) -> str:
    """`name` if it is a plain name; else an error naming `what` it is and the rule.

    Without a '/' and not starting with '.', it names a folder inside the folder it is put in.
    """
    if not is_plain_name(name):
        raise InputError(what, None, f"{name!r} is not a plain name ({PLAIN_NAME_RULE})")
    assert isinstance(name, str)
    return name
