"""Crash-safe writes: everything goes to a temporary sibling first and is renamed into place."""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq


@contextmanager
def atomic_path(final: Path) -> Iterator[Path]:
    """Yield a temporary path beside `final`; on success rename it over `final`, else remove it.

    A crash therefore leaves either the old file (or folder) or the new one, never half of one.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent)) / final.name
    try:
        yield tmp
        if final.is_dir() and tmp.is_dir():
            old = final.with_name(f".{final.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp.parent, ignore_errors=True)


@contextmanager
def undone_on_failure(folder: Path) -> Iterator[Path]:
    """Yield `folder`; if it did not exist and the block fails, remove it again.

    That way a step that fails on its first run leaves no folder behind (one that existed is left
    as it was).
    """
    folder = Path(folder)
    fresh = not folder.exists()
    try:
        yield folder
    except BaseException:
        if fresh:
            shutil.rmtree(folder, ignore_errors=True)
        raise


def write_parquet(table: pa.Table, path: Path, row_group_size: int | None = None) -> Path:
    """Write `table` to `path` atomically and return the path.

    The row groups hold at most `row_group_size` rows, if given.
    """
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, row_group_size=row_group_size)
    return Path(path)


def write_bytes(data: bytes, path: Path, private: bool = False) -> Path:
    """Write `data` to `path` atomically and return the path.

    The file is readable by its owner only if `private`.
    """
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
        if private:
            tmp.chmod(0o600)
    return Path(path)


def write_json(obj: Any, path: Path) -> Path:
    """Write `obj` as indented JSON to `path` atomically and return the path.

    The file is strict JSON, which has no NaN or infinity: a non-finite float is written as null
    (browsers and `jq` reject `NaN`), so whoever produces one must say why it is missing.
    """
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(_finite(obj), indent=2, allow_nan=False) + "\n", encoding="utf-8")
    return Path(path)


def _finite(value: Any) -> Any:
    """`value` with every non-finite float inside it replaced by None."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value


def read_json(path: Path) -> Any:
    """Read a JSON file written by `write_json`."""
    return json.loads(Path(path).read_text(encoding="utf-8"))
