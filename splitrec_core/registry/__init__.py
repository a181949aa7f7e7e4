"""The model registry: versions kept by each party for its own part, and which one is in use.

`versions` keeps the versions and their aliases and moves every party's together; `promotion` is
the rule a new version must pass to replace the champion; `provenance` the digests a version
records of its settings, inputs and code.
"""

from splitrec_core.registry.versions import (
    ALIASES,
    Aliases,
    Registry,
    SharedModel,
    promote_if_no_worse,
    register_run,
    version_manifest,
)

__all__ = ["ALIASES", "Aliases", "Registry", "SharedModel", "promote_if_no_worse",
           "register_run", "version_manifest"]
