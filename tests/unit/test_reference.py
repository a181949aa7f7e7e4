"""docs/reference.md stays true: every key of every table, with the code's default.

Each table of the config, federation and party files lists exactly the fields of its model (its
sections have tables of their own), each default as it would be written in TOML; the metrics.json
table lists exactly the keys a report with every optional part writes.
"""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from splitrec_core.config import (
    ChannelConfig,
    Config,
    EngineConfig,
    ModelConfig,
    NotifyConfig,
    PartyConfig,
    PrivacyConfig,
    PsiConfig,
    RegistryConfig,
    ScheduleConfig,
    SweepConfig,
    TaskConfig,
    TrainingConfig,
)
from splitrec_core.config.sections import BottomConfig
from splitrec_core.federation import (
    CredentialFiles,
    Federation,
    Member,
    PrivateParty,
    TimeoutConfig,
)
from splitrec_core.registry.promotion import Verdict
from splitrec_core.report import Report
from tests.conftest import REPO

REFERENCE = REPO / "docs" / "reference.md"

#: (section, heading) → the model whose fields the table lists
TABLES: dict[tuple[str, str], type[BaseModel]] = {
    ("The config file", "Top level"): Config,
    ("The config file", "`[[parties]]`, one per party"): PartyConfig,
    ("The config file", "`[parties.engine]`"): EngineConfig,
    ("The config file", "`[[tasks]]`, one per binary task"): TaskConfig,
    ("The config file", "`[model]`"): ModelConfig,
    ("The config file", "`[training]`"): TrainingConfig,
    ("The config file", "`[privacy]`"): PrivacyConfig,
    ("The config file", "`[psi]`"): PsiConfig,
    ("The config file", "`[channel]`"): ChannelConfig,
    ("The config file", "`[schedule]`"): ScheduleConfig,
    ("The config file", "`[sweep]`"): SweepConfig,
    ("The config file", "`[registry]`"): RegistryConfig,
    ("The config file", "`[notify]`"): NotifyConfig,
    (FEDERATION := "The federation file and a party's private file",
     "federation.toml, alike at every party"): Federation,
    (FEDERATION, "federation.toml `[[parties]]`, one per party"): Member,
    (FEDERATION, "federation.toml `[timeouts]`"): TimeoutConfig,
    (FEDERATION, "party.toml, private to its party"): PrivateParty,
    (FEDERATION, "party.toml `[bottom]`"): BottomConfig,
    (FEDERATION, "party.toml `[engine]`"): EngineConfig,
    (FEDERATION, "party.toml `[credentials]`"): CredentialFiles,
}

#: a config's sections and lists of sections, each documented by a table of its own
SECTIONS = {"parties", "tasks", "model", "training", "privacy", "psi", "channel", "schedule",
            "sweep", "registry", "notify", "engine", "timeouts", "bottom", "credentials"}


def _tables() -> dict[tuple[str, str], list[list[str]]]:
    """Every table of the reference, by its section and heading: its rows, cells stripped."""
    tables: dict[tuple[str, str], list[list[str]]] = {}
    section = heading = ""
    for line in REFERENCE.read_text().splitlines():
        if line.startswith("## "):
            section, heading = line[3:], ""
        elif line.startswith("### "):
            heading = line[4:]
        elif line.startswith("| ") and not line.startswith(("| key |", "|---")):
            cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
            tables.setdefault((section, heading), []).append(cells)
    return tables


def _as_written(model: type[BaseModel], field: str) -> str:
    """The field's default as the reference writes it: in TOML, `required` or `none`."""
    info = model.model_fields[field]
    default: Any = info.default_factory() if info.default_factory else info.default
    if default is PydanticUndefined:
        return "required"
    if default is None:
        return "none"
    return f"`{json.dumps(default)}`"  # JSON writes numbers, strings and lists as TOML does


@pytest.mark.parametrize("where", list(TABLES), ids=[" / ".join(w) for w in TABLES])
def test_each_table_lists_every_key_of_its_model_with_the_code_s_default(where):
    model = TABLES[where]
    rows = _tables().get(where)
    assert rows, f"docs/reference.md has no table under {where}"

    documented = {row[0].strip("`"): row[1] for row in rows}
    fields = [f for f in model.model_fields if f not in SECTIONS]
    assert sorted(documented) == sorted(fields), f"the keys of {where} are not {model.__name__}'s"
    assert documented == {f: _as_written(model, f) for f in fields}


def _keys(value: Any, prefix: str, names: dict[str, str]) -> set[str]:
    """The dotted keys of `value`'s leaves, each task or message kind named by its placeholder."""
    if not isinstance(value, dict) or not value:
        return {prefix}
    keys: set[str] = set()
    for key, item in value.items():
        name = names.get(key, key)
        keys |= _keys(item, f"{prefix}.{name}" if prefix else name, names)
    return keys


def test_the_metrics_json_table_lists_every_key_a_report_writes():
    # Prepare: a report with every optional part: events, central training, the verdict
    metrics = {"auc": 0.8, "logloss": 0.4, "predicted_rate": 0.3, "observed_rate": 0.3,
               "positives": 3, "rows": 10, "gauc": 0.7}
    report = Report(
        tasks={"buys": metrics}, intersection=20, train_rows=10, test_rows=10,
        channel={"embedding": {"bytes": 8, "messages": 1}},
        training={"rows_per_s": 1.0, "train_s": 1.0, "cpu_s_per_1k_rows": 1.0, "startup_s": 1.0,
                  "epochs_run": 1, "best_epoch": 1},
        leakage={"buys": {"norm_auc": 0.6, "cosine_auc": 0.5}}, label_only={"buys": metrics},
        central={"buys": metrics}, promotion=Verdict("v2", "v1", True, ["why"]),
        events={"kept": 9, "dropped": 1, "activity_auc": 0.5})

    # Execute
    written = _keys(report.as_json(), "", {"buys": "<task>", "embedding": "<kind>"})

    # Assert: each key once, the metrics of label_only and central as those of tasks
    rows = _tables()[("metrics.json", "")]
    documented = {row[0].strip("*`") for row in rows}
    per_task = {k.removeprefix("tasks.<task>.") for k in documented if k.startswith("tasks.")}
    expanded = {k.replace("<metric>", metric) for k in documented for metric in per_task}
    assert expanded == written


def _readme_section(title: str) -> str:
    text = (REPO / "README.md").read_text()
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start:] if end == -1 else text[start:end]


def test_the_readmes_config_from_scratch_loads_with_the_defaults_it_states():
    from splitrec_core.config import parse_config

    section = _readme_section("Bring your own data")
    config = parse_config(tomllib.loads(section.split("```toml\n")[1].split("```")[0]))

    assert config.run_folder(None) == Path("runs/shop")
    training = config.training
    assert (training.epochs, training.learning_rate, training.batch_size) == (5, 0.001, 1024)
    assert "The defaults train 5 epochs at learning rate 0.001 with batches of 1,024" in section


def _commands_shown() -> list[list[str]]:
    """Every `splitrec` command the README shows to run, as arguments.

    Those are the lines of its bash blocks and the commands of its Measured table; a mention of
    a command in the prose is not a command to run.
    """
    text = (REPO / "README.md").read_text()
    lines = [line for block in re.findall(r"```bash\n(.*?)```", text, re.S)
             for line in block.splitlines()]
    lines += [span for row in _readme_section("Measured").splitlines() if row.startswith("| ")
              for span in re.findall(r"`([^`]+)`", row.split(" | ")[-1])]
    commands = [part.split("#")[0].strip() for line in lines for part in line.split("&&")]
    return [shlex.split(c)[1:] for c in commands if c.startswith("splitrec ")]


def _parsing_only(command: Any) -> None:
    """Make every command of the `splitrec` tree do nothing once its arguments parse."""
    for sub in getattr(command, "commands", {}).values():
        _parsing_only(sub)
    if not hasattr(command, "commands"):
        command.callback = lambda **_: None


def test_every_splitrec_command_the_readme_shows_is_one_the_cli_takes():
    # Prepare: the command line, each command's work replaced by nothing
    import typer

    from flows.cli import app

    cli = typer.main.get_command(app)
    _parsing_only(cli)
    shown = _commands_shown()

    # Execute / Assert: every command, option and required argument is there
    assert len(shown) >= 8
    for args in shown:
        try:
            cli.main(args, prog_name="splitrec", standalone_mode=False)
        except typer.Exit:  # --version prints, then exits
            pass
        except Exception as error:  # noqa: BLE001 - a usage error of the CLI's own click
            raise AssertionError(f"splitrec {' '.join(args)}: {error}") from None
