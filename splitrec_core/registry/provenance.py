"""What a result was made from: digests of settings, input files and the code.

With them, a registered model version says exactly which data and which splitrec produced it.
"""

from __future__ import annotations

import hashlib
import json
from functools import cache
from importlib.metadata import version
from pathlib import Path

import splitrec_core


def fingerprint(settings: dict[str, object], files: list[Path]) -> str:
    """A short digest of `settings` and the names and bytes of `files`."""
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    for path in sorted(files):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def file_sha256(path: Path) -> str:
    """SHA-256 of a file's bytes, read in blocks."""
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


@cache
def core_source_digest() -> str:
    """SHA-256 of every `splitrec_core` module's source (path and bytes)."""
    digest = hashlib.sha256()
    root = Path(splitrec_core.__file__).parent
    for path in sorted(root.rglob("*.py")):
        digest.update(path.relative_to(root).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def code_version() -> dict[str, str]:
    """The installed splitrec version and the digest of the core library's source."""
    return {"splitrec": version("splitrec"), "core_source": core_source_digest()[:16]}
