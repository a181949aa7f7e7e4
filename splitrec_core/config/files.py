"""Reading a configuration: TOML files, `extends`, and validation.

A validation error names the file and the key.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from splitrec_core.config.run import Config
from splitrec_core.errors import InputError

M = TypeVar("M", bound=BaseModel)


def load_config(path: Path) -> Config:
    """Read and validate a TOML config; an error names the file and the offending key.

    `extends = "other.toml"` (relative to this file) starts from that config: tables merge key by
    key, and everything else given here replaces the value there.
    """
    return parse_config(read_toml(Path(path)), source=path)


def read_toml(path: Path) -> dict[str, object]:
    """A TOML file's settings, `extends` resolved; an unreadable file is an error naming it."""
    try:
        settings = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(path, None, "config file does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(path, None, f"config file is unreadable: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise InputError(path, None, f"not valid TOML: {exc}") from None
    base = settings.pop("extends", None)
    if base is None:
        return settings
    return _merge(read_toml(path.parent / str(base)), settings)


def _merge(base: dict[str, object], override: dict[str, object]) -> dict[str, object]:
    merged = dict(base)
    for key, value in override.items():
        old = merged.get(key)
        if isinstance(old, dict) and isinstance(value, dict):
            merged[key] = _merge(old, value)
        else:
            merged[key] = value
    return merged


def parse_config(settings: dict[str, object], source: Path | str = "<config>") -> Config:
    """Validate a config mapping, turning pydantic's report into one readable error."""
    return validated(Config, settings, source)


def with_changes(cfg: M, changes: dict[str, object], source: str) -> M:
    """`cfg` with `changes` ({"section.key": value}, None = unchanged) applied and checked again.

    A bad value is an error naming `source` and the key.
    """
    settings = cfg.model_dump()
    for dotted, value in changes.items():
        if value is not None:
            section, key = dotted.split(".")
            settings[section][key] = value
    return validated(type(cfg), settings, source)


def validated(model: type[M], settings: dict[str, object], source: Path | str) -> M:
    """`settings` as a `model`; pydantic's report becomes one error naming `source` and the keys."""
    try:
        return model.model_validate(settings)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            message = err["msg"].removeprefix("Value error, ")
            key = ".".join(str(part) for part in err["loc"])
            # a check across keys (no location) names its keys in its own message
            problems.append(f"key '{key}': {message}" if key else message)
        raise InputError(source, None, "; ".join(problems)) from None
