"""The model registry: versions per party, promotion and rollback, the promotion rule.

Promotion and rollback move every party or none, and a move cut short is finished on the next
open; the promotion rule gives verdicts and reasons.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from splitrec_core.config import RegistryConfig
from splitrec_core.errors import InputError
from splitrec_core.registry import Aliases, Registry, SharedModel
from splitrec_core.registry.promotion import judge

PARTIES = ("advertiser", "bank", "media")


def _model(root: Path) -> SharedModel:
    return SharedModel({p: Registry(p, root / p / "models" / "weekly") for p in PARTIES})


def _register(model: SharedModel, root: Path, version: str, auc: float = 0.9) -> None:
    exports = {}
    for party in PARTIES:
        exports[party] = root / "export" / version / party
        exports[party].mkdir(parents=True)
        (exports[party] / "manifest.json").write_text(json.dumps({"party": party}))
    manifest = {"registered_at": version, "metrics": {"income": {"auc": auc, "logloss": 0.2}},
                "leakage": {"income": {"norm_auc": 0.6, "cosine_auc": 0.7}}}
    model.register(version, exports, dict.fromkeys(PARTIES, manifest))


def _current(root: Path) -> dict[str, str | None]:
    return {p: Registry(p, root / p / "models" / "weekly").aliases().current for p in PARTIES}


def test_each_party_keeps_its_own_part_of_a_version(tmp_path):
    model = _model(tmp_path)
    _register(model, tmp_path, "v1")
    for party in PARTIES:
        folder = tmp_path / party / "models" / "weekly" / "v1"
        assert json.loads((folder / "manifest.json").read_text()) == {"party": party}
        assert json.loads((folder / "version.json").read_text())["party"] == party
    # registered, not yet promoted: the candidate everywhere
    assert model.aliases() == Aliases(current=None, candidate="v1")
    assert _current(tmp_path) == dict.fromkeys(PARTIES)


def test_promotion_and_rollback_move_every_party(tmp_path):
    model = _model(tmp_path)
    for version in ("v1", "v2", "v3"):
        _register(model, tmp_path, version)
        model.promote("candidate")
    assert _current(tmp_path) == dict.fromkeys(PARTIES, "v3")
    assert model.aliases().previous == ["v1", "v2"]

    assert model.rollback() == Aliases(current="v2", candidate=None, previous=["v1"])
    assert _current(tmp_path) == dict.fromkeys(PARTIES, "v2")
    model.rollback()
    assert _current(tmp_path) == dict.fromkeys(PARTIES, "v1")
    with pytest.raises(InputError, match="nothing to roll back to"):
        model.rollback()
    bank = Registry("bank", tmp_path / "bank" / "models" / "weekly")
    assert bank.versions() == ["v1", "v2", "v3"]


def test_a_version_one_party_lacks_is_promoted_nowhere(tmp_path):
    model = _model(tmp_path)
    _register(model, tmp_path, "v1")
    model.promote("v1")
    _register(model, tmp_path, "v2")
    # the bank's part of v2 is gone (say, deleted by hand)
    version_json = tmp_path / "bank" / "models" / "weekly" / "v2" / "version.json"
    version_json.unlink()

    with pytest.raises(InputError, match="party 'bank' has no version 'v2'"):
        model.promote("v2")
    assert _current(tmp_path) == dict.fromkeys(PARTIES, "v1")


def test_a_move_cut_short_is_finished_when_the_registries_are_next_opened(tmp_path):
    # Prepare: a promotion that wrote its journal and renamed the advertiser's aliases only
    model = _model(tmp_path)
    _register(model, tmp_path, "v1")
    model.promote("v1")
    _register(model, tmp_path, "v2")
    planned = {p: {"current": "v2", "candidate": None, "previous": ["v1"]} for p in PARTIES}
    model.journal.write_text(json.dumps(planned))
    model.registries["advertiser"].write_aliases(Aliases("v2", None, ["v1"]))
    assert _current(tmp_path) == {"advertiser": "v2", "bank": "v1", "media": "v1"}

    # Execute
    reopened = _model(tmp_path)

    # Assert
    assert _current(tmp_path) == dict.fromkeys(PARTIES, "v2")
    assert not reopened.journal.exists()


def test_unknown_aliases_and_versions_name_the_party(tmp_path):
    model = _model(tmp_path)
    with pytest.raises(InputError, match="party 'advertiser' has no 'current' version yet"):
        model.promote("current")
    _register(model, tmp_path, "v1")
    with pytest.raises(InputError,
                       match=r"party 'advertiser' has no version 'v9' \(registered: v1\)"):
        model.promote("v9")


def _manifest(aucs: dict[str, float], attack: float = 0.6) -> dict:
    return {"metrics": {t: {"auc": a} for t, a in aucs.items()},
            "leakage": {t: {"norm_auc": attack, "cosine_auc": 0.55} for t in aucs}}


def test_a_version_is_promoted_unless_a_task_falls_past_the_margin():
    rules = RegistryConfig(promotion_margin=0.005)
    champion = _manifest({"income": 0.950, "never_married": 0.994})

    first = judge("v1", champion, None, None, rules)
    assert (first.promote, first.reasons) == (True, ["no champion yet"])

    within = judge("v2", _manifest({"income": 0.946, "never_married": 0.995}), "v1", champion,
                   rules)
    assert within.promote
    assert within.reasons[0] == "income test AUC 0.9460 against the champion's 0.9500 (-0.0040)"

    worse = judge("v3", _manifest({"income": 0.930, "never_married": 0.995}), "v1", champion, rules)
    assert not worse.promote
    assert worse.reasons == ["income test AUC 0.9300 against the champion's 0.9500 (-0.0200)",
                             "more than the promotion margin 0.005 below"]


def test_a_version_that_leaks_past_the_bound_is_not_promoted():
    rules = RegistryConfig(max_leakage_auc=0.8)
    leaky = judge("v2", _manifest({"income": 0.96}, attack=0.93), "v1", _manifest({"income": 0.95}),
                  rules)
    assert not leaky.promote
    assert leaky.reasons == ["income leaks: the norm attack reaches AUC 0.930, above the bound 0.8"]


def test_the_default_bound_refuses_no_model_even_one_whose_attack_is_perfect():
    perfect = judge("v1", _manifest({"income": 0.96}, attack=1.0), None, None, RegistryConfig())
    assert (perfect.promote, perfect.reasons) == (True, ["no champion yet"])
