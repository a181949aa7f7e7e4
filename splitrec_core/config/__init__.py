"""The run configuration: parties, columns, tasks, model, training and privacy, read from TOML.

The section models are in `sections` (`[training]` in `training`), the run settings and
`Config` in `run`, reading TOML (with `extends`) and validation in `files`.
"""

from splitrec_core.config.files import (
    load_config,
    parse_config,
    read_toml,
    validated,
    with_changes,
)
from splitrec_core.config.run import Config, Roster, RunSettings, check_roster
from splitrec_core.config.sections import (
    BottomConfig,
    ChannelConfig,
    EngineConfig,
    ModelConfig,
    NotifyConfig,
    PartyConfig,
    PrivacyConfig,
    PsiConfig,
    RegistryConfig,
    ScheduleConfig,
    Strict,
    SweepConfig,
    TaskConfig,
    TopConfig,
)
from splitrec_core.config.training import TrainingConfig

__all__ = [
    "BottomConfig", "ChannelConfig", "Config", "EngineConfig", "ModelConfig", "NotifyConfig",
    "PartyConfig", "PrivacyConfig", "PsiConfig", "RegistryConfig", "Roster", "RunSettings",
    "ScheduleConfig", "Strict", "SweepConfig", "TaskConfig", "TopConfig", "TrainingConfig",
    "check_roster",
    "load_config", "parse_config", "read_toml", "validated", "with_changes",
]
