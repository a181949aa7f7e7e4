"""Cache keys from content, and cached results that still hold.

A key covers the bytes of the files a task reads, the core library's source, and the inputs (of
the config, only the sections the task reads). A cached result names the files the task wrote
(aligned rows, features, models); it is used only while those files are as the task left them.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prefect.cache_policies import INPUTS, TASK_SOURCE, CachePolicy
from prefect.context import TaskRunContext
from prefect.filesystems import LocalFileSystem
from prefect.results import ResultRecord, get_default_result_storage
from prefect.utilities.hashing import hash_objects

from splitrec_core.registry.provenance import core_source_digest

_BLOCK = 1 << 20


def _paths(value: Any) -> Iterator[Path]:
    """Every `Path` in `value`, also inside dicts, lists and dataclasses (a task's results)."""
    if isinstance(value, Path):
        yield value
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        for item in dataclasses.fields(value):
            yield from _paths(getattr(value, item.name))
    elif isinstance(value, dict):
        for key in sorted(value, key=str):
            yield from _paths(value[key])
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _paths(item)


def _hash_file(digest: Any, path: Path) -> None:
    digest.update(str(path).encode())
    if path.is_dir():
        for child in sorted(p for p in path.rglob("*") if p.is_file()):
            _hash_file(digest, child)
        return
    if not path.exists():
        digest.update(b"<missing>")
        return
    with path.open("rb") as handle:
        while block := handle.read(_BLOCK):
            digest.update(block)


@dataclass
class FileContent(CachePolicy):
    """Key on the bytes of every file named by a `Path` in the task's inputs.

    Paths inside dicts, lists and dataclasses count too; inputs listed in `skip` (e.g. the output
    folder) do not.
    """

    skip: tuple[str, ...] = field(default=("workdir",))

    def compute_key(self, task_ctx: TaskRunContext, inputs: dict[str, Any],
                    flow_parameters: dict[str, Any], **kwargs: Any) -> str | None:
        """Hash the named files' bytes in a stable order."""
        digest = hashlib.sha256()
        for name in sorted(inputs or {}):
            if name not in self.skip:
                for path in _paths(inputs[name]):
                    _hash_file(digest, path)
        return digest.hexdigest()


@dataclass
class CoreSource(CachePolicy):
    """Key on the source of `splitrec_core`, since each task is a thin wrapper over it."""

    def compute_key(self, task_ctx: TaskRunContext, inputs: dict[str, Any],
                    flow_parameters: dict[str, Any], **kwargs: Any) -> str | None:
        """The digest of every core module's source."""
        return core_source_digest()


@dataclass
class ConfigSections(CachePolicy):
    """Key on some top-level sections of the task's `cfg` input, not on all of it.

    A task that reads only the parties' columns or the PSI settings stays cached when the training
    settings or the config's name change (`census-fast.toml` reuses `census.toml`'s PSI run).
    """

    sections: tuple[str, ...] = ()

    def compute_key(self, task_ctx: TaskRunContext, inputs: dict[str, Any],
                    flow_parameters: dict[str, Any], **kwargs: Any) -> str | None:
        """Hash the named sections of the config."""
        settings = (inputs or {})["cfg"].model_dump(mode="json")
        return hash_objects({s: settings[s] for s in self.sections}, raise_on_failure=True)


def _files(value: Any) -> Iterator[Path]:
    """Every file a result names, those inside the folders it names included."""
    for path in _paths(value):
        yield from (p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]


def _untouched_since(result: Any, stored_ns: int) -> bool:
    """Whether every file `result` names exists and was last written before `stored_ns`."""
    try:
        return all(path.stat().st_mtime_ns <= stored_ns for path in _files(result))
    except FileNotFoundError:
        return False


@dataclass
class OutputsUntouched(CachePolicy):
    """`keyed_by`'s key, whose cached result is dropped if a file it names was since rewritten.

    Another run in the same workdir (another config, or this one with other settings) may have
    rewritten the files a cached result names: handing them back would be handing back that run's
    work. Every file is written to a temporary name and renamed, so a file newer than the result
    record was written by someone else since; the record is then deleted, and the task runs again
    under the same key. (Results in storage other than a local folder are not checked.)
    """

    keyed_by: CachePolicy = field(kw_only=True)

    def compute_key(self, task_ctx: TaskRunContext, inputs: dict[str, Any],
                    flow_parameters: dict[str, Any], **kwargs: Any) -> str | None:
        """`keyed_by`'s key, after dropping its cached result if that no longer holds."""
        key = self.keyed_by.compute_key(task_ctx, inputs, flow_parameters, **kwargs)
        storage = task_ctx.result_store.result_storage or get_default_result_storage()
        if key is None or not isinstance(storage, LocalFileSystem):
            return key
        record = Path(storage.basepath).expanduser() / key
        try:
            stored_ns, content = record.stat().st_mtime_ns, record.read_bytes()
        except FileNotFoundError:
            return key
        if not _untouched_since(ResultRecord.deserialize(content).result, stored_ns):
            record.unlink(missing_ok=True)
        return key


def content_policy(config_sections: tuple[str, ...] | None = None) -> CachePolicy:
    """A pipeline task's policy: unchanged files, code and parameters mean a cache hit.

    With `config_sections`, the `cfg` parameter counts only by those sections. A hit whose
    output files were since rewritten is none (`OutputsUntouched`).
    """
    if config_sections is None:
        return OutputsUntouched(keyed_by=FileContent() + CoreSource() + TASK_SOURCE + INPUTS)
    return OutputsUntouched(keyed_by=FileContent() + CoreSource() + TASK_SOURCE
                            + (INPUTS - "cfg") + ConfigSections(sections=config_sections))
