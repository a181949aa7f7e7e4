"""Config parsing: good configs load, bad keys and unknown names are named in the error."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

from splitrec_core.config import load_config, parse_config
from splitrec_core.errors import InputError
from tests.conftest import REPO, SYNTHETIC_TOML


def _settings() -> dict:
    import tomllib

    return tomllib.loads(SYNTHETIC_TOML.read_text())


def test_shipped_configs_load():
    # Execute
    census = load_config(REPO / "data" / "census.toml")
    synthetic = load_config(SYNTHETIC_TOML)

    # Assert
    assert [p.name for p in census.parties] == ["advertiser", "media", "bank"]
    assert census.label.split_column == "split"
    assert [t.name for t in census.tasks] == ["income_50k", "never_married"]
    assert [p.name for p in synthetic.feature_parties] == ["bank", "media"]


def test_unknown_label_party_is_named():
    # a check across keys names its keys in its own message, not as "(top level)"
    with pytest.raises(InputError) as caught:
        parse_config(_settings() | {"label_party": "retailer"})
    assert str(caught.value) == ("<config>: label_party 'retailer' is not one of the parties "
                                 "['advertiser', 'bank', 'media']")


def test_unknown_key_is_named():
    settings = _settings()
    settings["model"] = settings["model"] | {"num_expert": 3}
    with pytest.raises(InputError, match=r"key 'model.num_expert': Extra inputs are not permitted"):
        parse_config(settings)


def test_wrong_type_is_named():
    settings = _settings()
    settings["training"] = settings["training"] | {"epochs": "many"}
    with pytest.raises(InputError, match=r"key 'training.epochs'"):
        parse_config(settings)


def test_column_declared_twice_is_rejected():
    settings = _settings()
    settings["parties"][1]["numeric"] = ["balance", "product"]
    with pytest.raises(InputError, match="column 'product' is declared twice in party 'bank'"):
        parse_config(settings)


def test_a_feature_party_without_feature_columns_is_rejected_the_label_party_may_have_none():
    settings = _settings()
    settings["parties"][2] = settings["parties"][2] | {"categorical": [], "numeric": []}
    with pytest.raises(InputError, match="feature party 'media' declares no feature columns"):
        parse_config(settings)
    settings = _settings()
    settings["parties"][0] = settings["parties"][0] | {"categorical": [], "numeric": []}
    assert parse_config(settings).label.feature_columns == []


def test_missing_and_malformed_files(tmp_path: Path):
    bad = tmp_path / "bad.toml"
    bad.write_text("name = [unclosed")
    with pytest.raises(InputError, match="does not exist"):
        load_config(tmp_path / "nope.toml")
    with pytest.raises(InputError, match="not valid TOML"):
        load_config(bad)


def test_a_config_can_extend_another():
    private = load_config(REPO / "data" / "census-private.toml")
    census = load_config(REPO / "data" / "census.toml")
    assert private.privacy.gradient_noise == 0.002
    assert private.name == "census-private"
    assert private.parties == census.parties
    assert private.privacy.clip_norm == census.privacy.clip_norm
    fast = load_config(REPO / "data" / "census-fast.toml")
    assert (fast.training.embed_ahead, fast.training.xla) == (1, True)
    assert fast.training.learning_rate == census.training.learning_rate
    if importlib.util.find_spec("spu") is not None:  # the rr22 extra installs where spu ships
        rr22 = load_config(REPO / "data" / "census-rr22.toml")
        assert (rr22.psi.protocol, rr22.psi.rr22_reveal_pairwise) == ("rr22", True)
        assert rr22.psi.domain == census.psi.domain and rr22.training == census.training


def test_sweep_grid_expands_every_combination():
    settings = _settings() | {"sweep": {"num_experts": [2, 4], "expert_units": [8, 16],
                              "task_weights": [[1.0, 1.0]]}}
    variants = parse_config(settings).variants()
    assert [(p["num_experts"], p["expert_units"]) for p, _ in variants] == [
        (2, 8), (2, 16), (4, 8), (4, 16)]
    assert variants[3][1].model.num_experts == 4 and variants[3][1].model.expert_units == 16


def test_removing_a_task_needs_no_sweep_edit_until_a_sweep_runs():
    # Prepare: the synthetic config, whose [sweep] grid weighs two tasks, with one task removed
    settings = _settings()
    settings["tasks"] = settings["tasks"][:1]

    # Execute: the config loads (a run needs no sweep); only asking for the sweep grid fails
    cfg = parse_config(settings)
    with pytest.raises(InputError) as caught:
        cfg.variants("synthetic.toml")

    # Assert: the error names the file and the key, not "(top level)"
    assert str(caught.value) == ("synthetic.toml: key 'sweep.task_weights': [1.0, 1.0] needs one "
                                 "weight per task ['income_50k']")


def test_sweep_task_weights_default_to_the_tasks_own():
    settings = _settings()
    settings["tasks"] = [settings["tasks"][0] | {"weight": 0.5}]
    settings["sweep"] = {"num_experts": [2], "expert_units": [8]}
    [(point, variant)] = parse_config(settings).variants()
    assert point["task_weights"] == [0.5]
    assert [t.weight for t in variant.tasks] == [0.5]


def test_rr22_with_three_parties_needs_the_federation_to_accept_pairwise_intersections():
    # Prepare: the synthetic federation has three parties
    settings = _settings()
    pytest.importorskip("spu", reason="the rr22 extra is not installed")

    # Execute / Assert: refused without the acceptance, loaded with it
    with pytest.raises(InputError, match=r"protocol 'rr22' with 3 parties runs a pair per "
                                         r"feature party: each would learn which of its IDs it "
                                         r"shares with 'advertiser'.*rr22_reveal_pairwise"):
        parse_config(settings | {"psi": {"protocol": "rr22"}})
    accepted = parse_config(settings | {"psi": {"protocol": "rr22", "rr22_reveal_pairwise": True}})
    assert accepted.psi.protocol == "rr22"


def test_rr22_without_spu_installed_is_a_config_error_that_says_how_to_install_it(
        monkeypatch: pytest.MonkeyPatch):
    # Prepare: this interpreter as one where the rr22 extra could not install
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "spu" else find_spec(name, *a))

    # Execute / Assert
    with pytest.raises(InputError, match=r"key 'psi.protocol': .*protocol 'rr22' needs "
                                         r"SecretFlow's spu.*pip install 'splitrec\[rr22\]'"):
        parse_config(_settings() | {"psi": {"protocol": "rr22", "rr22_reveal_pairwise": True}})


@pytest.mark.parametrize("line", ["every monday", "0 25 * * *", "0 3 * *", "H 3 * * *", ""])
def test_a_schedule_that_is_no_cron_line_is_a_config_error(line: str):
    with pytest.raises(InputError,
                       match=rf"key 'schedule.cron': '{re.escape(line)}' is not a cron line"):
        parse_config(_settings() | {"schedule": {"cron": line}})


@pytest.mark.parametrize("line", ["0 3 * * 1", "*/15 6-18 * * MON-FRI", "@daily", "0 3 L * *"])
def test_every_cron_line_the_config_accepts_is_one_prefect_serves(line: str):
    from prefect.client.schemas.schedules import CronSchedule

    schedule = parse_config(_settings() | {"schedule": {"cron": line}}).schedule
    assert CronSchedule(cron=schedule.cron, timezone=schedule.timezone).cron == line


def test_a_notification_block_is_named_by_its_type_and_name():
    with pytest.raises(InputError, match=r"key 'notify.block': 'ops' is not '<block type>/<name>'"):
        parse_config(_settings() | {"notify": {"block": "ops"}})
    assert parse_config(_settings() | {"notify": {"block": "slack-webhook/ops"}}).notify.block
