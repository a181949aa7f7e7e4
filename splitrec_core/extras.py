"""Which optional extras this interpreter has, so a setting that needs a missing one is refused.

A leaf module: the config checks it while loading, the protocols when they run.
"""

from __future__ import annotations

import importlib.util

RR22_INSTALL_HINT = ("protocol 'rr22' needs SecretFlow's spu library, which is not installed "
                     "here: pip install 'splitrec[rr22]' (Python 3.11 on x86-64 Linux; it pins "
                     "numpy < 2)")


def spu_missing() -> bool:
    """Whether spu cannot be imported here (then `rr22` cannot run)."""
    return importlib.util.find_spec("spu") is None
